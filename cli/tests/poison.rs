//! Poison on every queue: undecodable bytes, a CloudEvent of another spec version, an unknown
//! schema version, and a valid envelope with an impossible payload are published under routing
//! keys that reach every service's queue while the whole pipeline runs. Each copy is
//! dead-lettered at once with a reason — no crash loop — and a deployment behind them still goes
//! through.

use std::sync::Arc;
use std::time::Duration;

use conveyor::bus::{DeadLetterAction, topic_matches};
use conveyor::config::Pipeline;
use conveyor::{Topology, testing};
use conveyor_cli::stack::{Stack, StackOptions};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn envelope(kind: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "conveyor/attacker",
        "type": kind,
        "time": "2026-11-27T12:00:00Z",
        "correlationid": "poison",
        "datacontenttype": "application/json",
        "data": data,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_is_dead_lettered_on_every_queue_and_blocks_nothing() {
    let topology = Topology::conveyor(testing::unique_namespace("poison"));
    let bus = testing::connect("poison", topology.clone()).await.unwrap();
    let mut obs = testing::Observer::new(&bus).await.unwrap();
    let stop = CancellationToken::new();
    let pipeline = Pipeline::parse(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conveyor.toml"
    )))
    .unwrap();
    let stack = Stack::start(
        std::slice::from_ref(&bus),
        Arc::new(pipeline),
        &StackOptions {
            notifier: true,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();

    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("scm.push", b"{not json".to_vec()),
        ("build.succeeded", b"\xff\xfe\x00garbage".to_vec()),
        (
            "deploy.requested.staging",
            envelope("conveyor.deploy.requested.v9", json!({})),
        ),
        (
            "deploy.launched.staging",
            envelope(
                "conveyor.deploy.launched.v1",
                json!({"environment": 42, "executor": "nope"}),
            ),
        ),
        (
            "deploy.job_finished.production",
            serde_json::to_vec(&json!({"specversion": "0.3", "id": "x", "type": "conveyor.deploy.job_finished.v1"}))
                .unwrap(),
        ),
        (
            "awx.job.finished",
            envelope("conveyor.no.such.event.v1", json!({"job_id": 1})),
        ),
        (
            "rollout.progress.staging",
            envelope(
                "conveyor.rollout.progress.v1",
                json!({"environment": "staging", "pod": null}),
            ),
        ),
    ];
    // How many copies of each reach a queue: the dead-letter count to expect.
    let expected: usize = poison
        .iter()
        .map(|(key, _)| {
            topology
                .queues
                .iter()
                .filter(|q| q.bindings.iter().any(|b| topic_matches(b, key)))
                .count()
        })
        .sum();
    assert!(expected >= 15, "the poison reaches most queues: {expected}");

    let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (key, body) in &poison {
        ch.basic_publish(
            topology.exchange().into(),
            (*key).into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let parked = bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
        if parked.len() >= expected {
            break parked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} dead-lettered: {:#?}",
            parked.len(),
            parked
                .iter()
                .map(|d| (&d.origin_queue, &d.routing_key, &d.reason))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(parked.len(), expected, "each copy parked once, none twice");
    for d in &parked {
        assert!(!d.reason.is_empty(), "{d:?}");
        assert_eq!(d.attempts, 1, "dead-lettered at once, not retried: {d:?}");
    }

    // Behind the poison, a real deployment goes through every queue.
    let sha = conveyor_sim::github::fake_sha("xchem/fragalysis-frontend", "after-poison");
    stack
        .world
        .github
        .push_build(
            "xchem/fragalysis-frontend",
            "build main",
            "staging",
            false,
            &sha,
        )
        .await
        .unwrap();
    obs.until(
        "deploy.completed.staging after the poison",
        Duration::from_secs(40),
        |e| e.routing_key() == "deploy.completed.staging",
    )
    .await;
    stop.cancel();
    bus.delete_topology().await.unwrap();
}
