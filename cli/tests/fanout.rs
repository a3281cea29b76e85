//! One build that deploys several environments at once (one chain, one correlation id, three
//! deployments): every environment is followed, completed, recorded and reported on its own.
//! Found by the scale benchmark: per-deployment state keyed by the correlation id alone made the
//! second environment wait on the first's follow and then end unfollowed, and gave its
//! `deploy.completed` the first one's event id.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor::{Topology, testing};
use conveyor_cli::stack::{Stack, StackOptions, fan_out_pipeline};
use conveyor_ledger::store::Filter;
use conveyor_ledger::timeline::Status;
use tokio_util::sync::CancellationToken;

const STACK: &str = "xchem/fragalysis-stack";

#[tokio::test(flavor = "multi_thread")]
async fn one_build_deploys_three_environments_each_followed_recorded_and_reported() {
    let topology = Topology::conveyor(testing::unique_namespace("fanout"));
    let bus = testing::connect("fanout", topology).await.unwrap();
    let mut obs = testing::Observer::new(&bus).await.unwrap();
    let stop = CancellationToken::new();
    let stack = Stack::start(
        std::slice::from_ref(&bus),
        Arc::new(fan_out_pipeline(STACK, 3)),
        &StackOptions {
            notifier: true,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let sha = conveyor_sim::github::fake_sha(STACK, "fanout");
    stack
        .world
        .github
        .push_build(STACK, "build main", "master", false, &sha)
        .await
        .unwrap();

    obs.until_all("three deploy.completed", Duration::from_secs(40), |seen| {
        seen.iter()
            .filter(|e| e.routing_key().starts_with("deploy.completed."))
            .count()
            == 3
    })
    .await;
    let completed: Vec<_> = obs
        .seen
        .iter()
        .filter(|e| e.routing_key().starts_with("deploy.completed."))
        .collect();
    let ids: BTreeSet<&str> = completed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each completion has its own event id");
    let chains: BTreeSet<&str> = completed
        .iter()
        .map(|e| e.correlation_id.as_str())
        .collect();
    assert_eq!(chains.len(), 1, "one chain");

    // The ledger holds three completed deployments of that chain.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (all, _) = stack.ledger.store().list(&Filter::default()).await.unwrap();
        let done = all.iter().filter(|d| d.status == Status::Completed).count();
        if done == 3 && all.iter().all(|d| d.pods.len() == 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ledger: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // GitHub got one deployment per environment, each with its whole life.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let deployments = stack.world.github.deployments();
        let lives: BTreeSet<(String, Vec<String>)> = deployments
            .iter()
            .map(|d| {
                (
                    d.environment.clone(),
                    d.statuses.iter().map(|s| s.state.clone()).collect(),
                )
            })
            .collect();
        let want: BTreeSet<(String, Vec<String>)> = (0..3)
            .map(|i| {
                (
                    format!("env-{i}"),
                    vec!["queued".into(), "in_progress".into(), "success".into()],
                )
            })
            .collect();
        if deployments.len() == 3 && lives == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GitHub deployments: {lives:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    bus.delete_topology().await.unwrap();
}
