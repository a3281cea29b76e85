//! What the three simulators share: scripted faults, a network's latency, serving a router until
//! shutdown, and carrying out a request whose client went away.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Largest request body a simulator reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Middleware: a request received in full is carried out even if its client goes away, as
/// Django (AWX) and Rails (GitHub) do — only the answer is lost. axum alone would drop the
/// handler with the connection, which would hide the race a dead client's write leaves behind.
pub async fn finish_what_was_received(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::BAD_REQUEST, "incomplete request body").into_response();
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// How long a simulator takes to answer, as a real server across a network does: a range each
/// answer's time is drawn from (none: at once). Shared by a simulator's clones.
#[derive(Clone, Default)]
pub struct Latency(Arc<Mutex<Option<(Duration, Duration)>>>);

impl Latency {
    /// Answer each request after a time between `min` and `max`.
    pub fn set(&self, min: Duration, max: Duration) {
        *conveyor::sync::lock(&self.0) = Some((min, max.max(min)));
    }

    /// One answer's wait: spread over the range by the clock's nanoseconds (no randomness
    /// needs to be reproducible here).
    fn draw(&self) -> Option<Duration> {
        let (min, max) = (*conveyor::sync::lock(&self.0))?;
        let span = (max - min).as_nanos().max(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Some(min + Duration::from_nanos((u128::from(nanos) * 7919 % span) as u64))
    }
}

/// Middleware: wait the simulator's latency before answering (a watch's stream is not delayed
/// event by event: only the request that opens it).
pub async fn with_latency(
    axum::extract::State(latency): axum::extract::State<Latency>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(wait) = latency.draw() {
        tokio::time::sleep(wait).await;
    }
    next.run(req).await
}

/// Faults to answer instead of the real response, each once, in the order they were scripted:
/// for a request with a method (any when `None`) and a path containing a text (any when `None`).
#[derive(Debug)]
pub struct FaultScript<F> {
    queue: VecDeque<(Option<Method>, Option<String>, F)>,
}

impl<F> Default for FaultScript<F> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<F> FaultScript<F> {
    /// Answer the next matching request with `fault`.
    pub fn push(&mut self, method: Option<Method>, path_contains: Option<&str>, fault: F) {
        self.queue
            .push_back((method, path_contains.map(str::to_owned), fault));
    }

    /// The first fault scripted for a `method` request to `path`, removed.
    pub fn take(&mut self, method: &Method, path: &str) -> Option<F> {
        let pos = self.queue.iter().position(|(wanted, contains, _)| {
            wanted.as_ref().is_none_or(|w| w == method)
                && contains.as_deref().is_none_or(|c| path.contains(c))
        })?;
        self.queue.remove(pos).map(|(_, _, f)| f)
    }
}

/// Serve `router` on `listener` until `shutdown`.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_once_in_order_by_method_and_path() {
        let mut script = FaultScript::default();
        script.push(Some(Method::POST), Some("/launch/"), 1);
        script.push(None, Some("/jobs/"), 2);
        script.push(None, None, 3);
        assert_eq!(script.take(&Method::GET, "/api/v2/jobs/7/"), Some(2));
        assert_eq!(
            script.take(&Method::GET, "/api/v2/job_templates/1/launch/"),
            Some(3)
        );
        assert_eq!(
            script.take(&Method::GET, "/api/v2/job_templates/1/launch/"),
            None
        );
        assert_eq!(
            script.take(&Method::POST, "/api/v2/job_templates/1/launch/"),
            Some(1)
        );
        assert_eq!(script.take(&Method::POST, "/"), None);
    }

    #[tokio::test]
    async fn a_request_waits_the_latency_drawn_from_its_range() {
        let latency = Latency::default();
        assert_eq!(latency.draw(), None, "no latency unless one is set");
        let (min, max) = (Duration::from_millis(120), Duration::from_millis(180));
        latency.set(min, max);
        for _ in 0..50 {
            let wait = latency.draw().unwrap();
            assert!(
                min <= wait && wait <= max,
                "{wait:?} outside {min:?}..{max:?}"
            );
        }

        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                latency.clone(),
                with_latency,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(serve(router, listener, std::future::pending()));
        let started = std::time::Instant::now();
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert_eq!(body, "ok");
        assert!(
            started.elapsed() >= min,
            "answered after {:?}",
            started.elapsed()
        );
    }
}
