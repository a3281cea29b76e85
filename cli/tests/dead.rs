//! `conveyor dead` against the real broker: a parked message is listed, shown, replayed to its
//! queue once the cause is fixed, and the dead queue is then empty.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use conveyor::bus::{DeadLetterAction, queues};
use conveyor::events::{DeployFailed, Envelope, Event};
use conveyor::{ConsumerOptions, Outcome, Topology, testing};
use tokio_util::sync::CancellationToken;

fn conveyor(namespace: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("dead")
        .args(args)
        .env("AMQP_URL", testing::amqp_url())
        .env("CONVEYOR_EXCHANGE", namespace)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn list_show_replay_and_the_queue_is_empty_after() {
    let namespace = testing::unique_namespace("cli-dead");
    let bus = testing::connect("cli-dead-test", Topology::conveyor(&namespace))
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let (f, h, b, s) = (fixed.clone(), handled.clone(), bus.clone(), stop.clone());
    let queue = bus.topology().queue(queues::NOTIFIER_SLACK);
    tokio::spawn(async move {
        b.consume(
            &queue,
            ConsumerOptions::default(),
            move |_| {
                let (f, h) = (f.clone(), h.clone());
                async move {
                    if f.load(Ordering::SeqCst) {
                        h.store(true, Ordering::SeqCst);
                        Outcome::ack()
                    } else {
                        Outcome::dead_letter("Slack answered 404: channel_not_found")
                    }
                }
            },
            s,
        )
        .await
    });
    let event = Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: "staging".into(),
            stage: conveyor::events::Stage::Job,
            reason: "x".into(),
            operation: None,
        }),
    );
    bus.publish(&event).await.unwrap();
    // The ledger queue parks nothing; the notifier queue's handler parks it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bus
        .dead_letters(DeadLetterAction::Peek)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ok, out) = conveyor(&namespace, &["list"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 parked"), "{out}");
    assert!(
        out.contains(&event.id)
            && out.contains("channel_not_found")
            && out.contains("notifier.slack"),
        "{out}"
    );
    let (ok, out) = conveyor(&namespace, &["show", &event.id]);
    assert!(ok && out.contains("conveyor.deploy.failed.v1"), "{out}");
    let (ok, out) = conveyor(&namespace, &["replay"]);
    assert!(
        !ok && out.contains("--all"),
        "replay without ids or --all refuses: {out}"
    );

    fixed.store(true, Ordering::SeqCst);
    let (ok, out) = conveyor(&namespace, &["replay", &event.id]);
    assert!(ok && out.contains("replayed"), "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handled.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay was not handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out) = conveyor(&namespace, &["list"]);
    assert!(ok && out.contains("0 parked"), "{out}");
    stop.cancel();
    bus.delete_topology().await.unwrap();
}
