//! Conveyor on a RabbitMQ cluster: three private nodes from the machine's installation, every
//! quorum queue replicated on the three, and the whole pipeline (cli::stack, two replicas of
//! each worker connected to the nodes in different orders) deploying through it while the node
//! that leads the most queues stops, then another, and while one node raises a memory alarm and
//! then a disk alarm. Nothing is lost, nothing runs twice, nothing is parked.

#[path = "support/broker.rs"]
mod broker;
#[path = "support/processes.rs"]
mod processes;

use std::sync::Arc;
use std::time::Duration;

use conveyor::bus::DeadLetterAction;
use conveyor::{Bus, Topology};
use conveyor_cli::stack::{Stack, StackOptions, fan_out_pipeline};
use conveyor_ledger::store::Filter;
use conveyor_ledger::timeline::Status;
use tokio_util::sync::CancellationToken;

const STACK: &str = "xchem/fragalysis-stack";
const ENVIRONMENTS: usize = 3;

struct Pipeline {
    stack: Stack,
    round: usize,
}

impl Pipeline {
    /// Push a stack build and wait until its deployment of every environment has ended;
    /// returns how long that took.
    async fn deploy(&mut self, what: &str) -> Duration {
        self.round += 1;
        let started = tokio::time::Instant::now();
        let sha = conveyor_sim::github::fake_sha(STACK, &format!("cluster-{}", self.round));
        self.stack
            .world
            .github
            .push_build(STACK, "build main", "master", false, &sha)
            .await
            .expect("the stack build starts");
        let want = self.round * ENVIRONMENTS;
        let deadline = started + Duration::from_secs(180);
        loop {
            // A webhook that could not be delivered while publishers were blocked is delivered
            // again, as GitHub's redelivery would.
            if self.stack.world.github.failed_deliveries() > 0 {
                self.stack.world.github.redeliver_failed().await;
            }
            let (all, _) = self
                .stack
                .ledger
                .store()
                .list(&Filter {
                    limit: Some(500),
                    ..Filter::default()
                })
                .await
                .unwrap();
            let ended = all.iter().filter(|d| !d.status.in_flight()).count();
            if all.len() >= want && ended >= want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {ended} of {want} deployments ended; {:?}",
                all.iter()
                    .map(|d| (d.environment.as_str(), d.status.as_str()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = started.elapsed();
        eprintln!(
            "cluster: {what}: {ENVIRONMENTS} environments deployed in {:.1} s",
            took.as_secs_f64()
        );
        took
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_go_through_a_three_node_cluster_while_nodes_stop_and_alarm() {
    let cluster = broker::BrokerCluster::start("conveyor-cluster", 3).await;
    let namespace = conveyor::testing::unique_namespace("cluster");
    let topology = Topology::conveyor(&namespace);
    let mut buses = Vec::new();
    for r in 0..2 {
        buses.push(
            Bus::connect(
                &cluster.url(r),
                &format!("cluster-replica-{r}"),
                topology.clone(),
                Default::default(),
                Duration::from_secs(60),
            )
            .await
            .unwrap(),
        );
    }
    let stop = CancellationToken::new();
    let stack = Stack::start(
        &buses,
        Arc::new(fan_out_pipeline(STACK, ENVIRONMENTS)),
        &StackOptions {
            pod_seconds: 0.2,
            replicas: 2,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let mut pipeline = Pipeline { stack, round: 0 };
    pipeline.deploy("three nodes up").await;

    // The node leading the most queues goes away; the others elect new leaders.
    for round in 0..2 {
        let leaders = cluster.leaders().await;
        let down = (0..leaders.len()).max_by_key(|i| leaders[*i]).unwrap_or(0);
        eprintln!("cluster: queues led per node {leaders:?}; stopping node {down}");
        cluster.stop(down).await;
        pipeline
            .deploy(&format!(
                "node {down} (leading {} queues) down",
                leaders[down]
            ))
            .await;
        cluster.start_node(down).await;
        if round == 0 {
            // Back in the cluster before the next one goes: a majority of each queue's
            // replicas must stay up.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    // A memory alarm on one node blocks publishers across the cluster: publishes wait.
    cluster.nodes[1].block_publishers(true).await;
    let released = {
        let node = &cluster.nodes[1];
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            node.block_publishers(false).await;
        }
    };
    let (took, _) = tokio::join!(
        pipeline.deploy("a memory alarm on node 1 for 3 s"),
        released
    );
    assert!(
        took >= Duration::from_millis(2500),
        "the alarm held the publishers back ({took:?}), and nothing was lost"
    );

    cluster.disk_alarm(2, true).await;
    let released = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.disk_alarm(2, false).await;
    };
    let (took, _) = tokio::join!(pipeline.deploy("a disk alarm on node 2 for 3 s"), released);
    assert!(
        took >= Duration::from_millis(2500),
        "the disk alarm held the publishers back ({took:?})"
    );

    // Every deployment completed, once; nothing was parked.
    let (all, _) = pipeline
        .stack
        .ledger
        .store()
        .list(&Filter {
            limit: Some(500),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        pipeline.round * ENVIRONMENTS,
        "one deployment per environment per build"
    );
    let not_completed: Vec<_> = all
        .iter()
        .filter(|d| d.status != Status::Completed)
        .map(|d| (d.id.clone(), d.status.as_str()))
        .collect();
    assert!(not_completed.is_empty(), "{not_completed:?}");
    let jobs = pipeline.stack.world.awx.jobs();
    assert_eq!(
        jobs.len(),
        all.len(),
        "one AWX job per deployment, none twice"
    );
    let dead = buses[0].dead_letters(DeadLetterAction::Peek).await.unwrap();
    assert!(dead.is_empty(), "nothing parked: {dead:?}");
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
}
