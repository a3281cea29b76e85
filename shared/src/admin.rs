//! The admin HTTP server every service runs: `/live`, `/ready`, `/metrics`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Answers whether the service can do its work right now (connected, consuming).
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

/// The admin router: `GET /live` (the process answers), `GET /ready` (200 only while `ready`
/// says so, else 503), `GET /metrics` (OpenMetrics text).
pub fn router(registry: Arc<Registry>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { registry, ready })
}

async fn ready_handler(State(state): State<AdminState>) -> impl IntoResponse {
    if (state.ready)() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Serve `router` on `listener` under the default [`crate::server::Limits`] until `shutdown`
/// resolves; open connections get a few seconds to finish, then the server stops regardless.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::server::serve(listener, router, crate::server::Limits::DEFAULT, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    #[tokio::test]
    async fn ready_follows_the_check_and_metrics_are_openmetrics() {
        let mut registry = Registry::default();
        let metrics = crate::telemetry::BusMetrics::register(&mut registry);
        metrics.connected.set(1);
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let app = router(
            Arc::new(registry),
            Arc::new(move || f.load(Ordering::SeqCst)),
        );

        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get("/live")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.clone().oneshot(get("/ready")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        flag.store(true, Ordering::SeqCst);
        let res = app.clone().oneshot(get("/ready")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        let res = app.oneshot(get("/metrics")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("conveyor_bus_connected 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
