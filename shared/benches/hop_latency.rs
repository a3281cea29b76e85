//! Hop latency: `Bus::publish` (confirmed) → consumer handler running, over the real broker,
//! against a bare lapin publisher/consumer pair measured in the same run (the broker's floor).
//! Prints p50/p99 for both and their ratio. `cargo bench -p conveyor --bench hop_latency`.

use std::time::{Duration, Instant};

use conveyor::bus::{ConsumerOptions, Outcome, Topology};
use conveyor::events::{DeployFailed, Envelope, Event};
use conveyor::testing;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const N: usize = 2000;
const WARMUP: usize = 100;

fn event() -> Envelope {
    Envelope::new(
        "conveyor/bench",
        Event::DeployFailed(DeployFailed {
            environment: "staging".into(),
            stage: conveyor::events::Stage::Job,
            reason: "x".into(),
            operation: None,
        }),
    )
}

async fn conveyor_bus() -> Vec<Duration> {
    let t = Topology::new(testing::unique_namespace("bench")).with_queue("q", &["deploy.failed.*"]);
    let bus = testing::connect("bench-bus", t).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let stop = CancellationToken::new();
    let (b, s, q) = (bus.clone(), stop.clone(), bus.topology().queue("q"));
    let consumer = tokio::spawn(async move {
        b.consume(
            &q,
            ConsumerOptions::default(),
            move |_| {
                let _ = tx.send(Instant::now());
                async { Outcome::ack() }
            },
            s,
        )
        .await
    });
    let mut samples = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let e = event();
        let start = Instant::now();
        bus.publish(&e).await.unwrap();
        let running = rx.recv().await.unwrap();
        if i >= WARMUP {
            samples.push(running - start);
        }
    }
    stop.cancel();
    consumer.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
    samples
}

async fn bare_lapin() -> Vec<Duration> {
    let conn =
        lapin::Connection::connect(&testing::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = testing::unique_namespace("bench-bare");
    testing::bare_quorum_queue(&ch, &queue).await.unwrap();
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(16, BasicQosOptions::default()).await.unwrap();
    let mut consumer = cch
        .basic_consume(
            queue.clone().into(),
            "bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let body = event().to_json();
    let mut samples = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let start = Instant::now();
        testing::bare_publish(&ch, &queue, &body).await.unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        let running = Instant::now();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        if i >= WARMUP {
            samples.push(running - start);
        }
    }
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    samples
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Interleave to share the machine's noise fairly.
        let mut bus = Vec::new();
        let mut bare = Vec::new();
        for _ in 0..2 {
            bare.extend(bare_lapin().await);
            bus.extend(conveyor_bus().await);
        }
        bus.sort();
        bare.sort();
        let (b50, b99) = (
            testing::percentile(&bus, 0.5),
            testing::percentile(&bus, 0.99),
        );
        let (r50, r99) = (
            testing::percentile(&bare, 0.5),
            testing::percentile(&bare, 0.99),
        );
        println!(
            "hop latency over {} messages (publish confirmed → handler running)",
            bus.len()
        );
        println!("{:<24}{:>12}{:>12}", "", "p50", "p99");
        println!("{:<24}{:>12.3?}{:>12.3?}", "conveyor bus", b50, b99);
        println!("{:<24}{:>12.3?}{:>12.3?}", "bare lapin (floor)", r50, r99);
        println!(
            "{:<24}{:>12.2}{:>12.2}",
            "ratio",
            b50.as_secs_f64() / r50.as_secs_f64(),
            b99.as_secs_f64() / r99.as_secs_f64()
        );
        println!("target: p50 < 2 ms, p99 < 10 ms");
        for (what, ours, floor, target) in [("p50", b50, r50, 2.0), ("p99", b99, r99, 10.0)] {
            let ms = ours.as_secs_f64() * 1e3;
            println!(
                "SUMMARY|hop latency {what}|{ms:.2} ms|{:.2} ms (bare lapin)|{:.2}|< {target} ms|{}",
                floor.as_secs_f64() * 1e3,
                ours.as_secs_f64() / floor.as_secs_f64(),
                if ms < target { "pass" } else { "FAIL" }
            );
        }
    });
}
