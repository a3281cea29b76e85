//! What the three simulators share: scripted faults, serving a router until shutdown, and
//! carrying out a request whose client went away.

use std::collections::VecDeque;

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
}
