//! Every HTTP server Conveyor runs (ingest, the ledger, each admin endpoint) under the same
//! limits: a client gets [`Limits::header_read`] to send its request head — which is also how
//! long an idle connection is kept — [`Limits::body_read`] for its whole body, and at most
//! [`Limits::max_connections`] connections are open at once; the rest are closed on accept.
//!
//! `axum::serve` has none of these: half-sent headers were held for minutes, a trickled body
//! was accepted after 42 s, and 10,000 idle connections held 2,594 file descriptors (with a
//! 1024-descriptor limit, an outage).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What a server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To send a request's head, from the moment the server waits for it (so also the most a
    /// kept-alive connection may sit idle).
    pub header_read: Duration,
    /// To send a request's whole body, from the moment the handler reads it.
    pub body_read: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Bytes a request's head may take (request line and headers): a longer one is answered
    /// `431 Request Header Fields Too Large`. At least 8192 (hyper's floor).
    pub max_head: usize,
}

impl Limits {
    /// The limits every server runs with unless told otherwise: generous for GitHub, AWX and a
    /// browser, short for a client that holds a connection without using it.
    pub const DEFAULT: Self = Self {
        header_read: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
        max_connections: 512,
        // GitHub's and AWX's heads are a few KiB; nginx allows 32 KiB in all by default.
        max_head: 32 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long open requests may go on after `shutdown` before the server stops regardless.
const DRAIN: Duration = Duration::from_secs(5);

/// Serve `router` (HTTP/1.1) on `listener` under `limits` until `shutdown` resolves; open
/// requests then get a few seconds to finish. Handlers may extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyDeadlineLayer::new(
        limits.body_read,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, mostly: wait for some to be released.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = limits.max_connections, "too many connections; closing one");
            drop(stream);
            continue;
        };
        let service = router
            .clone()
            .map_request(move |mut request: axum::http::Request<_>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .max_buf_size(limits.max_head.max(8192))
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {}
    }
    Ok(())
}
