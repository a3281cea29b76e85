//! The bus against the real RabbitMQ: routing, confirms, delayed retries, dead letters,
//! reconnection after the broker drops the connection, and graceful shutdown. Each test owns a
//! namespace (exchange + queues) and deletes it at the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor::bus::{ConsumerOptions, Incoming, Outcome, Topology};
use conveyor::events::{DeployFailed, Envelope, Event};
use conveyor::testing;
use conveyor::{Bus, BusError};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "worker.events";

fn topology(label: &str) -> Topology {
    Topology::new(testing::unique_namespace(label))
        .with_queue(QUEUE, &["deploy.failed.*"])
        .with_retry_tiers(&[Duration::from_millis(200), Duration::from_millis(400)])
}

fn event(n: usize) -> Envelope {
    Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: "staging".into(),
            stage: conveyor::events::Stage::Job,
            reason: format!("message {n}"),
            operation: None,
        }),
    )
}

fn number(e: &Envelope) -> usize {
    match &e.event {
        Event::DeployFailed(d) => d.reason.trim_start_matches("message ").parse().unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Run a consumer in the background; every delivery is reported on the channel.
fn spawn_consumer<F, Fut>(
    bus: &Bus,
    options: ConsumerOptions,
    handler: F,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), BusError>>,
)
where
    F: Fn(Incoming) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let queue = bus.topology().queue(QUEUE);
    let (b, s) = (bus.clone(), shutdown.clone());
    let task = tokio::spawn(async move { b.consume(&queue, options, handler, s).await });
    (shutdown, task)
}

type ConsumerTask = tokio::task::JoinHandle<Result<(), BusError>>;

/// A consumer that acks everything and reports each delivery on the returned channel.
fn recording_consumer(
    bus: &Bus,
) -> (
    mpsc::UnboundedReceiver<Incoming>,
    CancellationToken,
    ConsumerTask,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, task) = spawn_consumer(bus, ConsumerOptions::default(), move |i| {
        let tx = tx.clone();
        async move {
            tx.send(i).unwrap();
            Outcome::ack()
        }
    });
    (rx, stop, task)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> Incoming {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a delivery within 20 s")
        .expect("channel open")
}

#[tokio::test]
async fn published_events_are_consumed_with_their_envelope() {
    let bus = testing::connect("bus-roundtrip", topology("roundtrip"))
        .await
        .unwrap();
    let (mut rx, stop, task) = recording_consumer(&bus);
    let sent: Vec<Envelope> = (0..5).map(event).collect();
    for e in &sent {
        bus.publish(e).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let i = recv(&mut rx).await;
        assert_eq!(i.attempt, 1);
        assert_eq!(i.queue, bus.topology().queue(QUEUE));
        got.push(i.envelope);
    }
    got.sort_by_key(number);
    assert_eq!(got, sent);
    stop.cancel();
    task.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn retry_redelivers_after_the_delay_with_the_attempt_incremented() {
    let bus = testing::connect("bus-retry", topology("retry"))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, task) = spawn_consumer(&bus, ConsumerOptions::default(), move |i: Incoming| {
        let tx = tx.clone();
        async move {
            let attempt = i.attempt;
            tx.send(i).unwrap();
            if attempt == 1 {
                Outcome::retry(Duration::from_millis(300), "simulated 503")
            } else {
                Outcome::ack()
            }
        }
    });
    let e = event(1);
    bus.publish(&e).await.unwrap();
    let first = recv(&mut rx).await;
    let at = Instant::now();
    let second = recv(&mut rx).await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert_eq!(second.envelope, e);
    // 300 ms asked for → the 400 ms tier; the broker cannot return it sooner.
    assert!(
        at.elapsed() >= Duration::from_millis(350),
        "{:?}",
        at.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(800), rx.recv())
            .await
            .is_err(),
        "acked on attempt 2"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(bus.take_dead_letter().await.unwrap().is_none());
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn exhausted_retries_and_permanent_failures_are_dead_lettered_with_reasons() {
    let bus = testing::connect("bus-dead", topology("dead"))
        .await
        .unwrap();
    let options = ConsumerOptions {
        max_attempts: 3,
        ..Default::default()
    };
    let calls = Arc::new(Mutex::new(HashMap::<usize, u32>::new()));
    let c = calls.clone();
    let (stop, task) = spawn_consumer(&bus, options, move |i: Incoming| {
        let c = c.clone();
        async move {
            let n = number(&i.envelope);
            *conveyor::sync::lock(&c).entry(n).or_default() += 1;
            if n == 1 {
                Outcome::retry(Duration::ZERO, "AWX answered 502")
            } else {
                Outcome::dead_letter("template not found")
            }
        }
    });
    bus.publish(&event(1)).await.unwrap();
    bus.publish(&event(2)).await.unwrap();

    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead.len() < 2 && Instant::now() < deadline {
        match bus.take_dead_letter().await.unwrap() {
            Some(d) => dead.push(d),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(dead.len(), 2, "both parked");
    dead.sort_by_key(|d| number(&Envelope::from_json(&d.body).unwrap()));
    assert_eq!(dead[0].reason, "gave up after 3 attempts: AWX answered 502");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[1].reason, "template not found");
    assert_eq!(dead[1].attempts, 1);
    for d in &dead {
        assert_eq!(d.origin_queue, bus.topology().queue(QUEUE));
        assert_eq!(d.routing_key, "deploy.failed.staging");
    }
    let counts = {
        let calls = conveyor::sync::lock(&calls);
        (calls[&1], calls[&2])
    };
    assert_eq!(counts, (3, 1));
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_and_do_not_block_the_queue() {
    let t = topology("poison").with_queue("other", &["scm.push"]);
    let bus = testing::connect("bus-poison", t).await.unwrap();
    // A raw publisher: garbage and a wrong major version straight onto the exchange.
    let conn =
        lapin::Connection::connect(&testing::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut v2: serde_json::Value = serde_json::from_slice(&event(9).to_json()).unwrap();
    v2["type"] = "conveyor.deploy.failed.v2".into();
    for body in [b"{not json".to_vec(), serde_json::to_vec(&v2).unwrap()] {
        ch.basic_publish(
            bus.topology().exchange().into(),
            "deploy.failed.staging".into(),
            Default::default(),
            &body,
            Default::default(),
        )
        .await
        .unwrap();
    }
    bus.publish(&event(3)).await.unwrap();

    let (mut rx, stop, task) = recording_consumer(&bus);
    assert_eq!(
        number(&recv(&mut rx).await.envelope),
        3,
        "the good message got through"
    );
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reasons.len() < 2 && Instant::now() < deadline {
        match bus.take_dead_letter().await.unwrap() {
            Some(d) => reasons.push(d.reason),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("undecodable: event type"),
        "{reasons:?}"
    );
    assert!(reasons[0].contains("v2"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("undecodable: not a CloudEvents envelope"),
        "{reasons:?}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let _ = conn.close(200, "done".into()).await;
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error() {
    let t = Topology::new(testing::unique_namespace("unroutable")).with_queue(QUEUE, &["scm.push"]);
    let bus = testing::connect("bus-unroutable", t).await.unwrap();
    let err = bus.publish(&event(1)).await.unwrap_err();
    assert!(
        matches!(&err, BusError::Unroutable(k) if k == "deploy.failed.staging"),
        "{err}"
    );
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_dropped_connection_is_recovered_and_no_confirmed_message_is_lost() {
    let name = testing::unique_namespace("conn");
    let bus = testing::connect(&name, topology("reconnect"))
        .await
        .unwrap();
    let (mut rx, stop, task) = recording_consumer(&bus);
    const N: usize = 60;
    let publisher = bus.clone();
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            publisher
                .publish(&event(n))
                .await
                .expect("confirmed despite the outage");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Let some flow, then cut the connection from the broker's side, twice.
    let mut seen: HashMap<usize, Vec<bool>> = HashMap::new();
    let mut cuts = 0;
    while seen.len() < N {
        let i = recv(&mut rx).await;
        seen.entry(number(&i.envelope))
            .or_default()
            .push(i.redelivered);
        if (seen.len() == 15 && cuts == 0) || (seen.len() == 40 && cuts == 1) {
            cuts += 1;
            let closed = testing::close_connections_named(&name).unwrap();
            assert_eq!(closed, 1, "our connection was found and closed");
        }
    }
    publishing.await.unwrap();
    assert_eq!(cuts, 2);
    // Every message arrived; one seen twice must have been redelivered (unacked when cut).
    for (n, deliveries) in &seen {
        assert!(
            deliveries.len() == 1 || deliveries[1..].iter().all(|r| *r),
            "message {n} processed twice without redelivery: {deliveries:?}"
        );
    }
    assert!(bus.is_connected());
    stop.cancel();
    task.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_work_and_leaves_the_rest_queued() {
    let bus = testing::connect("bus-shutdown", topology("shutdown"))
        .await
        .unwrap();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let done = Arc::new(Mutex::new(Vec::new()));
    let (s, r, d) = (started.clone(), release.clone(), done.clone());
    let options = ConsumerOptions {
        prefetch: 1,
        ..Default::default()
    };
    let (stop, task) = spawn_consumer(&bus, options, move |i: Incoming| {
        let (s, r, d) = (s.clone(), r.clone(), d.clone());
        async move {
            s.notify_one();
            r.notified().await;
            conveyor::sync::lock(&d).push(number(&i.envelope));
            Outcome::ack()
        }
    });
    for n in 0..3 {
        bus.publish(&event(n)).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .unwrap();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_one();
    task.await.unwrap().unwrap();
    assert_eq!(
        conveyor::sync::lock(&done).len(),
        1,
        "exactly the in-flight handler completed"
    );

    // The two unstarted deliveries are still queued: a new consumer gets them.
    let (mut rx, stop, task) = recording_consumer(&bus);
    let mut rest = vec![
        number(&recv(&mut rx).await.envelope),
        number(&recv(&mut rx).await.envelope),
    ];
    rest.push(conveyor::sync::lock(&done)[0]);
    rest.sort();
    assert_eq!(rest, [0, 1, 2]);
    stop.cancel();
    task.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn the_full_topology_declares_idempotently() {
    let ns = testing::unique_namespace("full");
    let a = testing::connect("bus-full-a", Topology::conveyor(&ns))
        .await
        .unwrap();
    // A second service declaring the same topology must succeed (same arguments).
    let b = testing::connect("bus-full-b", Topology::conveyor(&ns))
        .await
        .unwrap();
    let e = Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: "production".into(),
            stage: conveyor::events::Stage::Job,
            reason: "x".into(),
            operation: None,
        }),
    );
    b.publish(&e).await.unwrap();
    a.delete_topology().await.unwrap();
}

#[tokio::test]
async fn parked_messages_can_be_listed_replayed_once_fixed_and_purged() {
    use conveyor::bus::DeadLetterAction;
    let bus = testing::connect("bus-dead-tools", topology("deadtools"))
        .await
        .unwrap();
    // The handler is broken until `fixed` is set, then it accepts.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = fixed.clone();
    let (stop, task) = spawn_consumer(&bus, ConsumerOptions::default(), move |i: Incoming| {
        let (f, tx) = (f.clone(), tx.clone());
        async move {
            if f.load(std::sync::atomic::Ordering::SeqCst) {
                tx.send(i).unwrap();
                Outcome::ack()
            } else {
                Outcome::dead_letter("template not found")
            }
        }
    });
    let (one, two) = (event(1), event(2));
    bus.publish(&one).await.unwrap();
    bus.publish(&two).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut parked = Vec::new();
    while parked.len() < 2 {
        assert!(Instant::now() < deadline, "not parked");
        parked = bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A peek changes nothing.
    let again = bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(
        again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [one.id.clone(), two.id.clone()],
        "in order, by event id"
    );
    assert!(again.iter().all(|d| d.reason == "template not found"));

    // Fixed: replay the first; it is handled once, with a fresh attempt count.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let target = one.id.clone();
    let replayed = bus
        .dead_letters(DeadLetterAction::Replay(&|d| d.id == target))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    let handled = recv(&mut rx).await;
    assert_eq!(handled.envelope, one);
    assert_eq!(handled.attempt, 1);
    let left = bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
    assert_eq!(
        left.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        [two.id.as_str()]
    );

    // Purge the rest.
    let purged = bus
        .dead_letters(DeadLetterAction::Purge(&|_| true))
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert!(
        bus.dead_letters(DeadLetterAction::Peek)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "the purged one was never handled"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_handler_whose_connection_is_lost_stops_before_its_side_effect() {
    let name = testing::unique_namespace("fence");
    let bus = testing::connect(&name, topology("fence")).await.unwrap();
    let started = Arc::new(Notify::new());
    let effects = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, fx, c) = (started.clone(), effects.clone(), closed.clone());
    let (stop, task) = spawn_consumer(&bus, ConsumerOptions::default(), move |i: Incoming| {
        let (s, fx, c) = (s.clone(), fx.clone(), c.clone());
        async move {
            s.notify_one();
            // Work that outlasts the connection — however long rabbitmqctl takes to close it
            // on a loaded machine — then the side effect.
            while !c.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            conveyor::sync::lock(&fx).push(i.redelivered);
            Outcome::ack()
        }
    });
    bus.publish(&event(1)).await.unwrap();
    started.notified().await;
    assert_eq!(testing::close_connections_named(&name).unwrap(), 1);
    closed.store(true, std::sync::atomic::Ordering::SeqCst);
    // The delivery comes back (redelivered) and that handler completes; the first one, whose
    // channel is gone, must not carry on to its side effect beside it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while conveyor::sync::lock(&effects).is_empty() {
        assert!(Instant::now() < deadline, "never handled again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        *conveyor::sync::lock(&effects),
        [true],
        "one side effect, by the redelivery"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    bus.delete_topology().await.unwrap();
}
