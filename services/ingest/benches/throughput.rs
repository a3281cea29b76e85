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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(mut lat: Vec<Duration>, wall: Duration) -> Run {
    lat.sort();
    Run {
        rate: lat.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
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
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let sig = sign_github(SECRET, &body);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, url, body, sig) = (client.clone(), url.clone(), body.clone(), sig.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..total).step_by(concurrency) {
                let t0 = Instant::now();
                let res = client
                    .post(&url)
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("bench-{w}-{i}-{:?}", t0))
                    .header("x-hub-signature-256", &sig)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    server.abort();
    bus.delete_topology().await.unwrap();
    summarise(lat, wall)
}

async fn bare(concurrency: usize, total: usize, body: Arc<Vec<u8>>) -> Run {
    let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = testing::unique_namespace("bench-bare");
    testing::bare_quorum_queue(&ch, &queue).await.unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (ch, queue, body) = (ch.clone(), queue.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in (w..total).step_by(concurrency) {
                let t0 = Instant::now();
                ch.basic_publish(
                    "".into(),
                    queue.clone().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    summarise(lat, wall)
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
        }
        println!("goal: ratio ≥ 0.80");
    });
}
