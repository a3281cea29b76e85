//! ingest's own metrics: every request by source, event and outcome, and how long answering it
//! took — so a secret rotation gone wrong (a wall of `unauthorised`) or a broker that stopped
//! confirming (`unavailable`) can be alerted on.

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What ingest did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its events were published and confirmed.
    Published,
    /// A delivery already published (GitHub redelivered it).
    Duplicate,
    /// Valid, but nothing Conveyor acts on (a ping, another branch's build).
    Ignored,
    /// A bad or missing signature or token, or a disabled endpoint.
    Unauthorised,
    /// Malformed: a missing header, a wrong content type, a payload that does not parse.
    BadRequest,
    /// Over the body limit.
    TooLarge,
    /// An unknown path or registry kind.
    NotFound,
    /// The broker did not confirm: the sender is asked to retry.
    Unavailable,
    /// Anything else (a bug).
    Error,
}

impl Outcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Unauthorised => "unauthorised",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }

    /// What a response without an explicit outcome says by its status alone.
    fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::Unauthorised,
            StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Outcome::NotFound,
            StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
            s if s.is_client_error() => Outcome::BadRequest,
            s if s.is_success() => Outcome::Published,
            _ => Outcome::Error,
        }
    }
}

/// Labels of one request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `github`, `registry`, `awx`, or `other`.
    pub source: String,
    /// GitHub's event name, the registry kind, `job` for AWX; empty when the request was
    /// refused before it could be trusted (a client must not be able to invent label values).
    pub event: String,
    /// [`Outcome::label`].
    pub outcome: String,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// As in [`RequestLabels`].
    pub source: String,
}

/// `ingest_requests_total{source,event,outcome}` and `ingest_request_seconds{source}`.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<SourceLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(conveyor::telemetry::handler_histogram),
        }
    }
}

/// `router` with every request counted and timed in `metrics`.
pub fn instrument(router: Router, metrics: Metrics) -> Router {
    router.layer(axum::middleware::from_fn_with_state(metrics, record))
}

async fn record(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let (source, claimed) = match path.strip_prefix("/webhooks/") {
        Some("github") => (
            "github",
            request
                .headers()
                .get("x-github-event")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Some("awx") => ("awx", Some("job".to_owned())),
        Some(p) if p.starts_with("registry/") => (
            "registry",
            p.strip_prefix("registry/")
                .filter(|kind| crate::registry::KINDS.contains(kind))
                .map(str::to_owned),
        ),
        _ => ("other", None),
    };
    let response = next.run(request).await;
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .copied()
        .unwrap_or_else(|| Outcome::from_status(response.status()));
    let trusted = !matches!(
        outcome,
        Outcome::Unauthorised | Outcome::TooLarge | Outcome::NotFound
    );
    // Even a verified GitHub event name is bounded: a label is a time series.
    let event = claimed
        .filter(|e| {
            trusted && e.len() <= 48 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .unwrap_or_default();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            source: source.into(),
            event,
            outcome: outcome.label().into(),
        })
        .inc();
    metrics
        .seconds
        .get_or_create(&SourceLabels {
            source: source.into(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
/// Create ingest's metrics and register them under `ingest_*`.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    let m = Metrics::default();
    registry.register(
        "ingest_requests",
        "Webhook requests, by source, event and outcome (published, duplicate, ignored, unauthorised, bad_request, too_large, not_found, unavailable, error)",
        m.requests.clone(),
    );
    registry.register(
        "ingest_request_seconds",
        "Time to answer a webhook request, by source",
        m.seconds.clone(),
    );
    m
}
