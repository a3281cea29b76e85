//! ingest: the front door. Verifies webhooks from GitHub, container registries and AWX,
//! normalises them into Conveyor events and publishes them; answers 2xx only once the broker
//! has confirmed, so a 2xx means durable and anything else means "send it again".

pub mod awx;
mod dedup;
pub mod github;
pub mod metrics;
pub mod registry;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use conveyor::config::{Env, Secret, secret};
use conveyor::events::{Envelope, Event, derive_id};
use conveyor::{Bus, BusError};

pub use dedup::DeliveryLog;

/// The `source` of every event ingest publishes.
pub const SOURCE: &str = "conveyor/ingest";
/// GitHub's maximum payload.
pub const DEFAULT_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// What a parser made of a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Events to publish.
    Events(Vec<Event>),
    /// Nothing to publish, and why.
    Ignored(String),
    /// GitHub's ping.
    Pong,
}

/// A payload that is valid JSON of the wrong shape, or not JSON at all: answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPayload(pub String);

/// Why ingest cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] conveyor::config::ConfigError),
    /// No GitHub secret and no explicit insecure flag.
    #[error(
        "GITHUB_WEBHOOK_SECRET is not set: refusing to accept unsigned webhooks (pass --insecure-no-signature to run without verification)"
    )]
    NoSecret,
}

/// ingest's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Accepted GitHub webhook secrets (current first, then the one being rotated out).
    pub github_secrets: Vec<Secret>,
    /// Shared token for registry and AWX webhooks.
    pub webhook_token: Option<Secret>,
    /// Skip all verification (development only; every request logs a warning).
    pub insecure: bool,
    /// Largest accepted body.
    pub body_limit: usize,
    /// How long a delivery id is remembered.
    pub dedup_window: Duration,
    /// How many delivery ids are remembered at most.
    pub dedup_capacity: usize,
    /// How long a request may wait for the broker before answering 503.
    pub publish_timeout: Duration,
}

impl Settings {
    /// Read secrets from the environment: `GITHUB_WEBHOOK_SECRET` (+ `_PREVIOUS` during a
    /// rotation) and `REGISTRY_WEBHOOK_TOKEN`, each also as `*_FILE`.
    pub fn from_env(env: &dyn Env, insecure: bool) -> Result<Self, IngestError> {
        let github_secrets: Vec<Secret> = [
            secret(env, "GITHUB_WEBHOOK_SECRET")?,
            secret(env, "GITHUB_WEBHOOK_SECRET_PREVIOUS")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        if github_secrets.is_empty() && !insecure {
            return Err(IngestError::NoSecret);
        }
        Ok(Self {
            github_secrets,
            webhook_token: secret(env, "REGISTRY_WEBHOOK_TOKEN")?,
            insecure,
            ..Self::default()
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            github_secrets: Vec::new(),
            webhook_token: None,
            insecure: false,
            body_limit: DEFAULT_BODY_LIMIT,
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_capacity: 200_000,
            publish_timeout: Duration::from_secs(8),
        }
    }
}

struct AppState {
    bus: Bus,
    settings: Settings,
    deliveries: DeliveryLog,
}

/// The webhook router: `POST /webhooks/github`, `POST /webhooks/registry/{kind}`,
/// `POST /webhooks/awx`.
pub fn router(bus: Bus, settings: Settings) -> Router {
    let state = Arc::new(AppState {
        deliveries: DeliveryLog::new(settings.dedup_window, settings.dedup_capacity),
        bus,
        settings,
    });
    let limit = state.settings.body_limit;
    Router::new()
        .route("/webhooks/github", post(github_webhook))
        .route("/webhooks/registry/{kind}", post(registry_webhook))
        .route("/webhooks/awx", post(awx_webhook))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conveyor::admin::serve(listener, router, shutdown).await
}

/// A JSON reply.
fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A reply whose outcome the status alone does not say (a 2xx that published nothing).
fn reply_as(outcome: metrics::Outcome, status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = reply(status, body);
    response.extensions_mut().insert(outcome);
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply(status, json!({ "error": message.into() }))
}

async fn github_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state.settings;
    if s.insecure {
        tracing::warn!(
            "accepting a GitHub webhook WITHOUT signature verification (--insecure-no-signature)"
        );
    } else {
        let sig = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok());
        if !signature::verify_github(&s.github_secrets, &body, sig) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or invalid X-Hub-Signature-256",
            );
        }
    }
    let payload = match content_type(&headers) {
        Some(ct) if is_json(&ct) => body,
        Some(ct) if ct == "application/x-www-form-urlencoded" => match form_payload(&body) {
            Some(p) => Bytes::from(p),
            None => return error(StatusCode::BAD_REQUEST, "form body without a payload field"),
        },
        _ => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected application/json or application/x-www-form-urlencoded",
            );
        }
    };
    let Some(event) = header_str(&headers, "x-github-event") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event");
    };
    let Some(delivery) = header_str(&headers, "x-github-delivery") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
    };
    if delivery.len() > 128 {
        return error(StatusCode::BAD_REQUEST, "X-GitHub-Delivery is too long");
    }
    if state.deliveries.contains(&delivery) {
        return reply_as(
            metrics::Outcome::Duplicate,
            StatusCode::OK,
            json!({ "status": "duplicate", "delivery": delivery }),
        );
    }
    let parsed = match github::parse(&event, &payload) {
        Ok(p) => p,
        Err(BadPayload(reason)) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let response = publish(&state, parsed, &format!("github:{delivery}")).await;
    if response.status().is_success() {
        state.deliveries.record(&delivery);
    }
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn registry_webhook(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !registry::KINDS.contains(&kind.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown registry {kind:?}; known: {}",
                registry::KINDS.join(", ")
            ),
        );
    }
    if let Some(refused) = refuse_token_or_type(&state.settings, &headers, query.token.as_deref()) {
        return refused;
    }
    match registry::parse(&kind, &body) {
        Ok(parsed) => {
            publish(
                &state,
                parsed,
                &format!("registry:{kind}:{}", body_key(&body)),
            )
            .await
        }
        Err(BadPayload(reason)) => error(StatusCode::BAD_REQUEST, reason),
    }
}

async fn awx_webhook(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_token_or_type(&state.settings, &headers, query.token.as_deref()) {
        return refused;
    }
    match awx::parse(&body) {
        Ok(parsed) => publish(&state, parsed, &format!("awx:{}", body_key(&body))).await,
        Err(BadPayload(reason)) => error(StatusCode::BAD_REQUEST, reason),
    }
}

/// The checks registry and AWX webhooks share: the token, then a JSON content type.
fn refuse_token_or_type(
    s: &Settings,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response> {
    check_token(s, headers, query).or_else(|| {
        (!content_type(headers).is_some_and(|ct| is_json(&ct))).then(|| {
            error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a JSON content type",
            )
        })
    })
}

/// The shared token, from `X-Conveyor-Token`, `Authorization: Bearer …` or `?token=`.
fn check_token(s: &Settings, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    if s.insecure {
        tracing::warn!("accepting a webhook WITHOUT token verification (--insecure-no-signature)");
        return None;
    }
    let Some(expected) = &s.webhook_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "registry and AWX webhooks are disabled: REGISTRY_WEBHOOK_TOKEN is not set",
        ));
    };
    let presented = header_str(headers, "x-conveyor-token")
        .or_else(|| {
            header_str(headers, "authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        })
        .or_else(|| query.map(str::to_owned));
    match presented {
        Some(p) if signature::token_matches(expected, &p) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid webhook token",
        )),
    }
}

/// Publish every event (ids derived from `key`, so a resent webhook yields the same ids) and
/// answer only after the broker confirmed them all.
async fn publish(state: &AppState, parsed: Parsed, key: &str) -> Response {
    let events = match parsed {
        Parsed::Pong => {
            return reply_as(
                metrics::Outcome::Ignored,
                StatusCode::OK,
                json!({ "status": "pong" }),
            );
        }
        Parsed::Ignored(reason) => {
            return reply_as(
                metrics::Outcome::Ignored,
                StatusCode::ACCEPTED,
                json!({ "status": "ignored", "reason": reason }),
            );
        }
        Parsed::Events(events) => events,
    };
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| Envelope::new(SOURCE, e).with_derived_id(&format!("{key}:{i}")))
        .collect();
    let all = async {
        for e in &envelopes {
            state.bus.publish(e).await?;
        }
        Ok::<(), BusError>(())
    };
    match tokio::time::timeout(state.settings.publish_timeout, all).await {
        Ok(Ok(())) => {
            for e in &envelopes {
                tracing::info!(id = %e.id, routing_key = %e.routing_key(), subject = e.subject.as_deref().unwrap_or(""), "published");
            }
            reply(
                StatusCode::OK,
                json!({
                    "status": "published",
                    "events": envelopes.iter().map(|e| json!({"id": e.id, "type": e.type_name(), "routing_key": e.routing_key()})).collect::<Vec<_>>(),
                }),
            )
        }
        Ok(Err(e @ (BusError::Unavailable(_) | BusError::Nacked(_))))
        | Ok(Err(e @ BusError::Topology(_))) => {
            tracing::warn!(error = %e, "cannot publish; asking the sender to retry");
            unavailable()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "publish failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        Err(_) => {
            tracing::warn!("broker did not confirm in time; asking the sender to retry");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "event bus unavailable; retry later",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, "5".parse().expect("static header"));
    r
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "content-type").map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

fn is_json(ct: &str) -> bool {
    ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
}

fn form_payload(body: &[u8]) -> Option<Vec<u8>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_bytes())
}

/// A stable key for a body without a delivery id (registries, AWX).
fn body_key(body: &[u8]) -> String {
    use sha2::Digest;
    derive_id(&hex::encode(sha2::Sha256::digest(body)))
}

/// Where the webhook server listens: `INGEST_LISTEN` (default `0.0.0.0:8080`).
pub fn listen_address(env: &dyn Env) -> Result<SocketAddr, conveyor::config::ConfigError> {
    let raw = env
        .var("INGEST_LISTEN")
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    raw.parse().map_err(|_| conveyor::config::ConfigError {
        problems: vec![conveyor::config::Problem {
            key: "INGEST_LISTEN".into(),
            message: format!("{raw:?} is not an address like 0.0.0.0:8080"),
        }],
    })
}
