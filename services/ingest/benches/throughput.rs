//! Ingest throughput: signed GitHub webhooks accepted per second end to end (HTTP → verified →
//! parsed → confirmed publish → 200), with 1, 8 and 64 concurrent senders, against a bare
//! lapin confirmed-publish loop with the same concurrency and body, in the same run.
//! `cargo bench -p conveyor-ingest --bench throughput`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::config::Secret;
use conveyor::{Topology, testing};
use conveyor_ingest::{Settings, router, signature::sign_github};
use lapin::options::*;

const SECRET: &str = "bench-secret";

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(mut lat: Vec<Duration>, wall: Duration) -> Run {
    lat.sort();
    Run {
        rate: lat.len() as f64 / wall.as_secs_f64(),
        p50: testing::percentile(&lat, 0.5),
        p99: testing::percentile(&lat, 0.99),
    }
}

/// Run `total` timed operations spread over `concurrency` workers (worker `w` does operations
/// `w, w + concurrency, …`); returns the summary of every operation's latency.
async fn measure<F, Fut>(concurrency: usize, total: usize, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..total).step_by(concurrency) {
                let t0 = Instant::now();
                op(w, i).await;
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    summarise(lat, start.elapsed())
}

async fn ingest(concurrency: usize, total: usize, body: Arc<Vec<u8>>) -> Run {
    let t = Topology::new(testing::unique_namespace("bench-ingest")).with_queue("sink", &["#"]);
    let bus = testing::connect("bench-ingest", t).await.unwrap();
    let app = router(
        bus.clone(),
        Settings {
            github_secrets: vec![Secret::new(SECRET)],
            ..Settings::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Arc::new(format!(
        "http://{}/webhooks/github",
        listener.local_addr().unwrap()
    ));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let sig = Arc::new(sign_github(SECRET, &body));
    let run = measure(concurrency, total, move |w, i| {
        let (client, url, body, sig) = (client.clone(), url.clone(), body.clone(), sig.clone());
        async move {
            let res = client
                .post(url.as_str())
                .header("x-github-event", "push")
                .header(
                    "x-github-delivery",
                    format!("bench-{w}-{i}-{:?}", Instant::now()),
                )
                .header("x-hub-signature-256", sig.as_str())
                .header("content-type", "application/json")
                .body(body.as_ref().clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    })
    .await;
    server.abort();
    bus.delete_topology().await.unwrap();
    run
}

async fn bare(concurrency: usize, total: usize, body: Arc<Vec<u8>>) -> Run {
    let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = Arc::new(testing::unique_namespace("bench-bare"));
    testing::bare_quorum_queue(&ch, &queue).await.unwrap();
    let (c, q) = (ch.clone(), queue.clone());
    let run = measure(concurrency, total, move |_, _| {
        let (ch, queue, body) = (c.clone(), q.clone(), body.clone());
        async move { testing::bare_publish(&ch, &queue, &body).await.unwrap() }
    })
    .await;
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    run
}

fn main() {
    let body = Arc::new(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/github/push.branch.json"
        ))
        .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!(
            "ingest throughput: signed push webhooks ({} bytes), HTTP → confirmed publish",
            body.len()
        );
        println!(
            "{:>11} {:>14} {:>10} {:>10} | {:>14} {:>10} {:>10} | {:>6}",
            "concurrency", "ingest req/s", "p50", "p99", "bare pub/s", "p50", "p99", "ratio"
        );
        let mut summary = Vec::new();
        for (c, total) in [(1, 1500), (8, 4000), (64, 6000)] {
            // Warm up both paths, then measure bare and ingest back to back.
            let _ = bare(c, 200, body.clone()).await;
            let _ = ingest(c, 200, body.clone()).await;
            let b = bare(c, total, body.clone()).await;
            let i = ingest(c, total, body.clone()).await;
            println!(
                "{:>11} {:>14.0} {:>10.2?} {:>10.2?} | {:>14.0} {:>10.2?} {:>10.2?} | {:>6.2}",
                c,
                i.rate,
                i.p50,
                i.p99,
                b.rate,
                b.p50,
                b.p99,
                i.rate / b.rate
            );
            summary.push(format!(
                "SUMMARY|ingest throughput, {c} sender(s)|{:.0} req/s|{:.0} pub/s (bare lapin)|{:.2}|≥ 0.80|{}",
                i.rate,
                b.rate,
                i.rate / b.rate,
                if i.rate / b.rate >= 0.8 { "pass" } else { "FAIL" }
            ));
        }
        println!("goal: ratio ≥ 0.80");
        for line in summary {
            println!("{line}");
        }
    });
}
