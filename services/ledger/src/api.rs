//! The JSON API: environments, deployments (filtered, cursor-paginated), one deployment with its
//! timeline, DORA metrics, and the live feed of deployment updates (Server-Sent Events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Ledger;
use crate::store::{Filter, StoreError};
use crate::timeline::{Deployment, Millis};

/// What the overview shows of one environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentView {
    /// Name.
    pub name: String,
    /// What runs there now: the newest completed deployment.
    pub current: Option<Deployment>,
    /// The newest deployment, whatever its outcome.
    pub last: Option<Deployment>,
    /// Deployments still moving.
    pub in_flight: Vec<Deployment>,
    /// Durations of recent completed deployments, oldest first (the sparkline).
    pub recent_durations_ms: Vec<Millis>,
}

/// Every environment's view.
pub async fn environments(ledger: &Ledger) -> Result<Vec<EnvironmentView>, StoreError> {
    let store = ledger.store();
    let mut views = Vec::new();
    for name in store.environments().await? {
        let (recent, _) = store
            .list(&Filter {
                environment: Some(name.clone()),
                limit: Some(20),
                ..Filter::default()
            })
            .await?;
        let mut recent_durations_ms: Vec<Millis> = recent
            .iter()
            .filter(|d| d.status == crate::timeline::Status::Completed)
            .filter_map(Deployment::duration_ms)
            .collect();
        recent_durations_ms.reverse();
        views.push(EnvironmentView {
            current: store.current(&name).await?,
            last: recent.first().cloned(),
            in_flight: recent
                .iter()
                .filter(|d| d.status.in_flight())
                .cloned()
                .collect(),
            recent_durations_ms,
            name,
        });
    }
    Ok(views)
}

/// A store failure as an HTTP answer: the database is down, come back later.
pub struct ApiError(StoreError);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self.0, "ledger query failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "5")],
            Json(json!({"error": self.0.to_string()})),
        )
            .into_response()
    }
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no deployment {what:?}")})),
    )
        .into_response()
}

/// Query of `GET /api/deployments`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page.
    pub before: Option<String>,
}

impl From<ListQuery> for Filter {
    fn from(q: ListQuery) -> Self {
        let blank = |v: Option<String>| v.filter(|s| !s.is_empty());
        Filter {
            environment: blank(q.environment),
            status: blank(q.status),
            limit: q.limit,
            before: blank(q.before),
        }
    }
}

/// Query of `GET /api/dora`.
#[derive(Debug, Deserialize)]
pub struct DoraQuery {
    /// One environment (default: every one).
    pub environment: Option<String>,
    /// Window in days (default 30).
    pub days: Option<u32>,
}

async fn list_environments(State(ledger): State<Arc<Ledger>>) -> Result<Response, ApiError> {
    Ok(Json(environments(&ledger).await?).into_response())
}

async fn list_deployments(
    State(ledger): State<Arc<Ledger>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (deployments, next) = ledger.store().list(&q.into()).await?;
    Ok(Json(json!({"deployments": deployments, "next": next})).into_response())
}

async fn one_deployment(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(match ledger.store().get(&id).await? {
        Some(d) => Json(d).into_response(),
        None => not_found(&id),
    })
}

async fn dora(
    State(ledger): State<Arc<Ledger>>,
    Query(q): Query<DoraQuery>,
) -> Result<Response, ApiError> {
    let days = q.days.unwrap_or(30).clamp(1, 3650);
    let names = match q.environment.filter(|e| !e.is_empty()) {
        Some(e) => vec![e],
        None => ledger.store().environments().await?,
    };
    let mut all = Vec::new();
    for name in names {
        all.push(ledger.dora(&name, days).await?);
    }
    Ok(Json(all).into_response())
}

/// `deployment` events, one per update, for as long as the client listens.
pub fn feed(ledger: &Ledger) -> impl Stream<Item = Result<SseEvent, Infallible>> + use<> {
    let rx = ledger.subscribe();
    futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(d) => {
                let data = serde_json::to_string(&d).unwrap_or_default();
                SseEvent::default().event("deployment").data(data)
            }
            // A slow client missed some: tell it to reload rather than show a gap.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().event("reload").data("{}")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    })
}

async fn events(State(ledger): State<Arc<Ledger>>) -> impl IntoResponse {
    Sse::new(feed(&ledger)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The API routes.
pub fn router(ledger: Arc<Ledger>) -> Router {
    Router::new()
        .route("/api/environments", get(list_environments))
        .route("/api/deployments", get(list_deployments))
        .route("/api/deployments/{id}", get(one_deployment))
        .route("/api/dora", get(dora))
        .route("/api/events", get(events))
        .with_state(ledger)
}
