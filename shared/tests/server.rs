//! The HTTP servers' limits, on real sockets: a client that sends half its headers, one that
//! sends nothing and one that trickles its body are closed within their limits while valid
//! requests keep being answered, and a connection over the cap is closed at once.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use conveyor::server::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: Limits = Limits {
    header_read: Duration::from_millis(500),
    body_read: Duration::from_millis(800),
    max_connections: 40,
    max_head: 16 * 1024,
};

/// Long enough for a loaded machine, far shorter than the minutes an unlimited server holds on.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

async fn start() -> (String, tokio_util::sync::CancellationToken) {
    let app = Router::new().route(
        "/echo",
        post(|body: axum::body::Bytes| async move { format!("got {} bytes", body.len()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let cancelled = stop.clone();
    tokio::spawn(serve(listener, app, LIMITS, async move {
        cancelled.cancelled().await
    }));
    (address, stop)
}

/// Read until the server closes the connection; what it sent, or `None` if it is still open
/// after [`CLOSED_WITHIN`].
async fn closed_by_server(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(CLOSED_WITHIN, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

async fn valid_request(address: &str) -> String {
    let mut s = TcpStream::connect(address).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    closed_by_server(&mut s).await.expect("answered and closed")
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_while_valid_requests_are_answered() {
    let (address, stop) = start().await;
    let mut half_headers = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..15 {
        let mut s = TcpStream::connect(&address).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        half_headers.push(s);
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let mut trickling = TcpStream::connect(&address).await.unwrap();
    trickling
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if trickling.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = String::new();
        let _ = trickling.read_to_string(&mut rest).await;
        rest
    });

    // Meanwhile a valid request is answered.
    assert!(valid_request(&address).await.contains("got 5 bytes"));

    for mut s in half_headers.into_iter().chain(idle) {
        closed_by_server(&mut s)
            .await
            .expect("a client that never finishes its headers is closed");
    }
    let answer = tokio::time::timeout(CLOSED_WITHIN * 2, trickle)
        .await
        .expect("a trickled body is cut off")
        .unwrap();
    assert!(
        !answer.contains("got 100 bytes"),
        "the trickled body was accepted: {answer}"
    );
    assert!(valid_request(&address).await.contains("got 5 bytes"));
    stop.cancel();
}

#[tokio::test]
async fn a_head_over_the_limit_is_answered_431() {
    let (address, stop) = start().await;
    let mut s = TcpStream::connect(&address).await.unwrap();
    let long = "x".repeat(60 * 1024);
    let request =
        format!("POST /echo HTTP/1.1\r\nhost: x\r\nx-long: {long}\r\ncontent-length: 0\r\n\r\n");
    // The server may answer (and close) before it has read all of it.
    let _ = s.write_all(request.as_bytes()).await;
    let answer = closed_by_server(&mut s).await.expect("answered and closed");
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        answer.lines().next().unwrap_or("")
    );
    assert!(valid_request(&address).await.contains("got 5 bytes"));
    stop.cancel();
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_at_once() {
    let (address, stop) = start().await;
    let mut open = Vec::new();
    for _ in 0..LIMITS.max_connections {
        open.push(TcpStream::connect(&address).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(&address).await.unwrap();
    let closed = tokio::time::timeout(LIMITS.header_read / 2, async {
        let mut buf = [0u8; 16];
        matches!(over.read(&mut buf).await, Ok(0) | Err(_))
    })
    .await;
    assert_eq!(closed, Ok(true), "closed before any timeout could have");
    drop(open);
    // With the others gone, the server takes requests again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(valid_request(&address).await.contains("got 5 bytes"));
    stop.cancel();
}
