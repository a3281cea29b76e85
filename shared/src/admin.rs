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
/// says so, else 503), `GET /metrics` (OpenMetrics text to a scraper that asks for it, as
/// Prometheus does; the classic text format 0.0.4 to any other).
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

async fn metrics_handler(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let mut body = String::new();
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) if openmetrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            classic(&body),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        )
            .into_response(),
    }
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4 (what `promtool check metrics`
/// and older scrapers read): no `# EOF` or `# UNIT`, a counter's `# HELP` and `# TYPE` name its
/// `_total` samples, and its `_created` samples are left out.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}").trim_end().to_owned())
        });
        if let Some(renamed) = renamed {
            out.push_str(&renamed);
        } else {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            if sample
                .strip_suffix("_created")
                .is_some_and(|base| counters.contains(base))
            {
                continue;
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    out
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

        // Prometheus asks for OpenMetrics and gets it.
        let scrape = Request::get("/metrics")
            .header(
                header::ACCEPT,
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
            )
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(scrape).await.unwrap();
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
        assert!(
            text.contains("# TYPE conveyor_bus_reconnects counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));

        // Anything else gets the classic format.
        let res = app.oneshot(get("/metrics")).await.unwrap();
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("conveyor_bus_connected 1"), "{text}");
        assert!(
            text.contains("# TYPE conveyor_bus_reconnects_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP conveyor_bus_reconnects_total "),
            "{text}"
        );
        assert!(text.contains("conveyor_bus_reconnects_total 0"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn classic_text_drops_what_the_old_format_lacks() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\n# UNIT a_requests requests\na_requests_total{x=\"1\"} 3\na_requests_created{x=\"1\"} 1.7e9\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n# TYPE b gauge\nb 1\n"
        );
    }
}
