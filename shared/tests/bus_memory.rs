//! The in-memory transport keeps the broker's semantics: topic routing, unroutable errors,
//! delayed retries with attempt counts, dead letters with reasons. Runs on a paused clock.

use std::time::Duration;

use conveyor::bus::{ConsumerOptions, Incoming, Outcome, Topology};
use conveyor::events::{DeployFailed, Envelope, Event};
use conveyor::telemetry::BusMetrics;
use conveyor::{Bus, BusError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn failed(env: &str) -> Envelope {
    Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: env.into(),
            stage: conveyor::events::Stage::Job,
            reason: "r".into(),
            operation: None,
        }),
    )
}

fn bus() -> Bus {
    let t = Topology::new("mem")
        .with_queue("staging", &["deploy.*.staging"])
        .with_queue("all", &["deploy.#"])
        .with_retry_tiers(&[Duration::from_secs(1), Duration::from_secs(30)]);
    Bus::in_memory(t, BusMetrics::default())
}

fn consume(
    bus: &Bus,
    queue: &str,
    outcome: fn(&Incoming) -> Outcome,
) -> (mpsc::UnboundedReceiver<Incoming>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (b, s, q) = (bus.clone(), stop.clone(), bus.topology().queue(queue));
    let options = ConsumerOptions {
        max_attempts: 3,
        ..Default::default()
    };
    tokio::spawn(async move {
        b.consume(
            &q,
            options,
            move |i: Incoming| {
                let out = outcome(&i);
                let _ = tx.send(i);
                async move { out }
            },
            s,
        )
        .await
    });
    (rx, stop)
}

#[tokio::test(start_paused = true)]
async fn routing_follows_topic_bindings() {
    let bus = bus();
    let (mut staging, _s1) = consume(&bus, "staging", |_| Outcome::ack());
    let (mut all, _s2) = consume(&bus, "all", |_| Outcome::ack());
    bus.publish(&failed("production")).await.unwrap();
    bus.publish(&failed("staging")).await.unwrap();
    assert_eq!(
        staging.recv().await.unwrap().envelope.routing_key(),
        "deploy.failed.staging"
    );
    assert_eq!(
        all.recv().await.unwrap().envelope.routing_key(),
        "deploy.failed.production"
    );
    assert_eq!(
        all.recv().await.unwrap().envelope.routing_key(),
        "deploy.failed.staging"
    );
    let unroutable = Envelope::new("t", Event::ScmPush(serde_json::from_value(serde_json::json!({
        "repository": "o/r", "git_ref": {"kind": "branch", "name": "x"}, "before": "0", "after": "1"
    })).unwrap()));
    assert!(matches!(
        bus.publish(&unroutable).await,
        Err(BusError::Unroutable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_their_tier_then_dead_letter() {
    let bus = bus();
    let (mut rx, _stop) = consume(&bus, "staging", |_| {
        Outcome::retry(Duration::from_secs(10), "502")
    });
    bus.publish(&failed("staging")).await.unwrap();
    let start = tokio::time::Instant::now();
    let attempts: Vec<u32> = vec![
        rx.recv().await.unwrap().attempt,
        rx.recv().await.unwrap().attempt,
        rx.recv().await.unwrap().attempt,
    ];
    assert_eq!(attempts, [1, 2, 3]);
    // 10 s asked for → the 30 s tier, twice.
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let dead = bus.take_dead_letter().await.unwrap().expect("parked");
    assert_eq!(dead.reason, "gave up after 3 attempts: 502");
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.origin_queue, "mem.staging");
    assert_eq!(dead.routing_key, "deploy.failed.staging");
    assert!(bus.take_dead_letter().await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn effects_are_published_before_the_ack() {
    let bus = bus();
    // The staging consumer reacts to a staging failure by publishing a production failure.
    let (_rx, _stop) = consume(&bus, "staging", |i| {
        Outcome::publish(vec![Envelope::caused_by(
            &i.envelope,
            "t",
            failed("production").event,
        )])
    });
    let (mut all, _s2) = consume(&bus, "all", |_| Outcome::ack());
    let first = failed("staging");
    bus.publish(&first).await.unwrap();
    let a = all.recv().await.unwrap().envelope;
    let b = all.recv().await.unwrap().envelope;
    assert_eq!(a, first);
    assert_eq!(b.routing_key(), "deploy.failed.production");
    assert_eq!(b.causation_id.as_deref(), Some(first.id.as_str()));
    assert_eq!(b.correlation_id, first.correlation_id);
}
