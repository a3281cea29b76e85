//! Partitioned stages against the real RabbitMQ: replicas share a stage's partitions evenly,
//! each key's events are handled in order by one replica at a time, a dead replica's partitions
//! are taken over within seconds, and a message that names no partition is not lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor::bus::partition::PartitionBy;
use conveyor::bus::{ConsumerOptions, Outcome, Topology};
use conveyor::events::{DeployFailed, Envelope, Event, Stage};
use conveyor::telemetry::{BusMetrics, QueueLabels};
use conveyor::{Bus, testing};
use tokio_util::sync::CancellationToken;

const STAGE: &str = "executor.requests";

fn topology(label: &str) -> Topology {
    Topology::new(testing::unique_namespace(label))
        .with_partitioned_queue(STAGE, PartitionBy::Environment, &["deploy.failed.*"])
        .with_partitions(4)
        .with_retry_tiers(&[Duration::from_millis(200)])
}

fn event(environment: &str, n: usize) -> Envelope {
    Envelope::new(
        "conveyor/test",
        Event::DeployFailed(DeployFailed {
            environment: environment.into(),
            stage: Stage::Job,
            reason: n.to_string(),
            operation: None,
        }),
    )
}

/// What each replica handled: (replica, environment, sequence number, partition queue).
type Seen = Arc<Mutex<Vec<(String, String, usize, String)>>>;

struct Replica {
    name: String,
    metrics: BusMetrics,
    /// Deliveries that reached the handler marked redelivered (a lost worker's, as it seems).
    redelivered: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(name: &str, topology: &Topology, seen: &Seen) -> Self {
        let metrics = BusMetrics::default();
        let bus = Bus::connect(
            &testing::amqp_url(),
            name,
            topology.clone(),
            metrics.clone(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let (stop, queue, seen, me) = (
            CancellationToken::new(),
            topology.queue(STAGE),
            seen.clone(),
            name.to_owned(),
        );
        let redelivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, r) = (stop.clone(), redelivered.clone());
        let task = tokio::spawn(async move {
            let handler = move |i: conveyor::Incoming| {
                let (seen, me) = (seen.clone(), me.clone());
                if i.redelivered {
                    r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                async move {
                    if let Event::DeployFailed(d) = &i.envelope.event {
                        // Slow enough that two replicas' work interleaves.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let n = d.reason.parse().unwrap();
                        conveyor::sync::lock(&seen).push((
                            me,
                            d.environment.clone(),
                            n,
                            i.queue.clone(),
                        ));
                    }
                    Outcome::ack()
                }
            };
            let options = ConsumerOptions {
                prefetch: 1,
                ..ConsumerOptions::default()
            };
            let _ = bus.consume(&queue, options, handler, s).await;
        });
        Self {
            name: name.to_owned(),
            metrics,
            redelivered,
            stop,
            task,
        }
    }

    fn owned(&self, topology: &Topology) -> i64 {
        self.metrics
            .partitions_owned
            .get_or_create(&QueueLabels {
                queue: topology.queue(STAGE),
            })
            .get()
    }
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_partitions_and_each_environment_keeps_its_order() {
    let topology = topology("partitions-share");
    let _cleanup = testing::Cleanup::new(topology.clone());
    let seen: Seen = Arc::default();
    let a = Replica::start("replica-a", &topology, &seen).await;
    let b = Replica::start("replica-b", &topology, &seen).await;
    until(
        "the replicas settle on two partitions each",
        Duration::from_secs(15),
        || a.owned(&topology) == 2 && b.owned(&topology) == 2,
    )
    .await;

    let publisher = testing::connect("partitions-publisher", topology.clone())
        .await
        .unwrap();
    let environments: Vec<String> = (0..16).map(|i| format!("env-{i}")).collect();
    for n in 0..10 {
        for env in &environments {
            publisher.publish(&event(env, n)).await.unwrap();
        }
    }
    until("every event handled", Duration::from_secs(30), || {
        conveyor::sync::lock(&seen).len() == 160
    })
    .await;

    let seen = conveyor::sync::lock(&seen).clone();
    let mut by_env: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
    for (replica, env, n, _) in &seen {
        by_env.entry(env).or_default().push((replica, *n));
    }
    for (env, handled) in &by_env {
        let order: Vec<usize> = handled.iter().map(|(_, n)| *n).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "{env} kept its order");
        let replicas: std::collections::BTreeSet<&str> = handled.iter().map(|(r, _)| *r).collect();
        assert_eq!(replicas.len(), 1, "{env} was handled by one replica");
    }
    for r in [&a, &b] {
        assert!(
            seen.iter().any(|(replica, _, _, _)| *replica == r.name),
            "{} did some of the work",
            r.name
        );
        r.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_partitions_are_taken_over_within_seconds() {
    let topology = topology("partitions-takeover");
    let _cleanup = testing::Cleanup::new(topology.clone());
    let seen: Seen = Arc::default();
    let a = Replica::start("takeover-a", &topology, &seen).await;
    let b = Replica::start("takeover-b", &topology, &seen).await;
    until("the replicas settle", Duration::from_secs(15), || {
        a.owned(&topology) == 2 && b.owned(&topology) == 2
    })
    .await;

    // A dies as a killed process does: its task gone, its connection cut by the broker.
    a.task.abort();
    testing::close_connections_named("takeover-a").unwrap();
    let died = tokio::time::Instant::now();
    until(
        "the survivor takes every partition within seconds",
        Duration::from_secs(10),
        || b.owned(&topology) == 4,
    )
    .await;
    let publisher = testing::connect("takeover-publisher", topology.clone())
        .await
        .unwrap();
    for i in 0..16 {
        publisher
            .publish(&event(&format!("env-{i}"), 0))
            .await
            .unwrap();
    }
    until(
        "the survivor handles every environment",
        Duration::from_secs(10),
        || conveyor::sync::lock(&seen).len() == 16,
    )
    .await;
    assert!(
        conveyor::sync::lock(&seen)
            .iter()
            .all(|(r, _, _, _)| r == "takeover-b")
    );
    eprintln!(
        "taken over and handled {:.1} s after the replica died",
        died.elapsed().as_secs_f64()
    );
    b.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_names_no_partition_reaches_its_keys_partition() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let topology = topology("partitions-unnamed");
    let _cleanup = testing::Cleanup::new(topology.clone());
    let seen: Seen = Arc::default();
    let a = Replica::start("unnamed-a", &topology, &seen).await;
    until(
        "the replica owns every partition",
        Duration::from_secs(15),
        || a.owned(&topology) == 4,
    )
    .await;
    // Published as a client that knows nothing of partitions would.
    let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..8 {
        let e = event(&format!("env-{i}"), i);
        ch.basic_publish(
            topology.exchange().into(),
            e.routing_key().into(),
            BasicPublishOptions::default(),
            &e.to_json(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    until(
        "every one handled, none lost",
        Duration::from_secs(15),
        || conveyor::sync::lock(&seen).len() == 8,
    )
    .await;
    let stage = topology.find(&topology.queue(STAGE)).unwrap();
    for (_, env, n, queue) in conveyor::sync::lock(&seen).iter() {
        let wanted = conveyor::bus::partition::partition_of(env, 4);
        assert_eq!(
            *queue,
            stage.partition_queue(wanted),
            "event {n} of {env} was handled in its key's partition"
        );
    }
    a.stop.cancel();
}

#[tokio::test]
async fn a_process_with_another_partition_count_is_refused_at_start() {
    let four = topology("partitions-count");
    let _cleanup = testing::Cleanup::new(four.clone());
    let _first = testing::connect("count-4", four.clone()).await.unwrap();
    let eight = four.clone().with_partitions(8);
    match testing::connect("count-8", eight).await {
        Err(conveyor::BusError::Topology(why)) => {
            assert!(why.contains("CONVEYOR_PARTITIONS"), "{why}")
        }
        Err(other) => panic!("refused, but not for the topology: {other}"),
        Ok(_) => panic!("a process with another partition count connected"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_released_partition_never_started_reaches_its_next_owner_as_fresh() {
    // A replica giving partitions up (another joined) finishes what it started; what the
    // broker sent it meanwhile goes back unstarted, marked redelivered. The next owner must not
    // take that for a lost worker's (an executor would wait out a fence for each, 15 s).
    let topology = topology("partitions-handover");
    let _cleanup = testing::Cleanup::new(topology.clone());
    let seen: Seen = Arc::default();
    let a = Replica::start("a", &topology, &seen).await;
    until("a holds every partition", Duration::from_secs(10), || {
        a.owned(&topology) == 4
    })
    .await;
    let publisher = testing::connect("handover-publisher", topology.clone())
        .await
        .unwrap();
    for n in 0..300 {
        publisher
            .publish(&event(&format!("env-{}", n % 16), n))
            .await
            .unwrap();
    }
    // a works through them one at a time (5 ms each) when b joins and takes half.
    let b = Replica::start("b", &topology, &seen).await;
    until("every one handled", Duration::from_secs(30), || {
        conveyor::sync::lock(&seen).len() >= 300
    })
    .await;
    let by_b = conveyor::sync::lock(&seen)
        .iter()
        .filter(|(r, ..)| r == "b")
        .count();
    assert!(by_b > 0, "b took partitions while there was work");
    let load = std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        (a.redelivered.load(load), b.redelivered.load(load)),
        (0, 0),
        "no delivery looked like a lost worker's: nobody died"
    );
    assert_eq!(conveyor::sync::lock(&seen).len(), 300, "none handled twice");
    a.stop.cancel();
    b.stop.cancel();
}

#[tokio::test]
async fn a_topology_without_partitioned_stages_agrees_with_any_partition_count() {
    // A tool or a test declares only its own queues beside the services (amqps test): it has
    // no partition count to hold the installation to, before or after them.
    let four = topology("partitions-none");
    let _cleanup = testing::Cleanup::new(four.clone());
    let bare = Topology::new(four.namespace.clone()).with_queue("tool", &["deploy.#"]);
    let _tool = testing::connect("tool-before", bare.clone()).await.unwrap();
    let _service = testing::connect("count-4", four.clone()).await.unwrap();
    let _tool_again = testing::connect("tool-after", bare).await.unwrap();
    // The services' count still holds.
    assert!(
        testing::connect("count-2", four.with_partitions(2))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_runs_its_prefetch_at_once_over_all_the_partitions_it_holds() {
    let topology = topology("partitions-budget");
    let _cleanup = testing::Cleanup::new(topology.clone());
    let bus = testing::connect("budget-replica", topology.clone())
        .await
        .unwrap();
    // (running now, most ever running at once, handled)
    let counts = Arc::new(Mutex::new((0usize, 0usize, 0usize)));
    let stop = CancellationToken::new();
    let (queue, c, s) = (topology.queue(STAGE), counts.clone(), stop.clone());
    tokio::spawn(async move {
        let handler = move |_: conveyor::Incoming| {
            let c = c.clone();
            async move {
                {
                    let mut c = conveyor::sync::lock(&c);
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                let mut c = conveyor::sync::lock(&c);
                c.0 -= 1;
                c.2 += 1;
                Outcome::ack()
            }
        };
        let options = ConsumerOptions {
            prefetch: 2,
            ..ConsumerOptions::default()
        };
        let _ = bus.consume(&queue, options, handler, s).await;
    });

    let publisher = testing::connect("budget-publisher", topology.clone())
        .await
        .unwrap();
    // Enough environments that every one of the four partitions has work waiting.
    for i in 0..40 {
        publisher
            .publish(&event(&format!("env-{i}"), 0))
            .await
            .unwrap();
    }
    until("every event handled", Duration::from_secs(30), || {
        conveyor::sync::lock(&counts).2 == 40
    })
    .await;
    let most = conveyor::sync::lock(&counts).1;
    assert_eq!(
        most, 2,
        "one replica holding four partitions ran {most} handlers at once, not its prefetch of 2"
    );
    stop.cancel();
}
