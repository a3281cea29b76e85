//! `conveyor deployments` and `conveyor deployment` read a running ledger's API and print a
//! table and a text Gantt chart.

use std::process::Command;
use std::sync::Arc;

use conveyor_ledger::store::Store;
use conveyor_ledger::timeline::{Deployment, Owner, PodRow, Stage, Status};
use conveyor_ledger::{Ledger, Metrics};

fn deployment(id: &str, env: &str, status: Status, start: i64) -> Deployment {
    let stage = |name: &str, owner, from: i64, to: i64| Stage {
        name: name.into(),
        owner,
        start: start + from,
        end: Some(start + to),
    };
    Deployment {
        id: format!("{id}.{env}"),
        correlation_id: id.into(),
        environment: env.into(),
        repository: Some("xchem/fragalysis-stack".into()),
        sha: Some("a".repeat(40)),
        git_ref: Some("refs/heads/master".into()),
        image: Some("xchem/fragalysis-stack:latest".into()),
        image_ref: None,
        operation: None,
        held: None,
        commits: vec![],
        executor: None,
        job: None,
        status,
        reason: (status == Status::Failed).then(|| "stack-1: ImagePullBackOff".into()),
        stalled: false,
        requested_at: start,
        finished_at: Some(start + 180_000),
        stages: vec![
            stage("launch", Owner::Conveyor, 0, 40),
            stage("AWX job", Owner::External, 40, 179_000),
            stage("rollout", Owner::External, 5_000, 179_900),
            stage("completion noticed", Owner::Conveyor, 179_900, 180_000),
        ],
        pods: vec![PodRow {
            pod: "stack-0".into(),
            ordinal: 0,
            deleted: Some(start + 6_000),
            created: Some(start + 7_000),
            ready: Some(start + 179_900),
        }],
        overhead_ms: 140,
        events: 9,
    }
}

fn conveyor(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn deployments_table_and_one_deployments_gantt() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let store = Store::open(&url).await.unwrap();
    let t = 1_795_000_000_000;
    store
        .put(&deployment("c1", "staging", Status::Completed, t))
        .await
        .unwrap();
    store
        .put(&deployment("c2", "production", Status::Failed, t + 60_000))
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::new(store, Metrics::default(), 30));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(conveyor_ledger::serve(
        listener,
        ledger,
        None,
        std::future::pending(),
    ));

    let b = base.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || conveyor(&["deployments", "--ledger", &b]))
        .await
        .unwrap();
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REQUESTED"), "{out}");
    assert!(
        lines[1].contains("production") && lines[1].contains("failed"),
        "{out}"
    );
    assert!(
        lines[2].contains("staging") && lines[2].contains("3 min 0 s"),
        "{out}"
    );
    let b = base.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        conveyor(&["deployments", "--env", "staging", "--ledger", &b])
    })
    .await
    .unwrap();
    assert!(ok && out.lines().count() == 2, "{out}");

    let b = base.clone();
    let (ok, out) =
        tokio::task::spawn_blocking(move || conveyor(&["deployment", "c2", "--ledger", &b]))
            .await
            .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("status failed (stack-1: ImagePullBackOff)"),
        "{out}"
    );
    let bars: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
    assert_eq!(bars.len(), 5, "4 stages + 1 pod:\n{out}");
    assert!(
        bars[0].starts_with("launch") && bars[0].contains('▓') && bars[0].ends_with("Conveyor")
    );
    assert!(bars[1].contains('█') && bars[4].contains('▒'), "{out}");

    let (ok, out) =
        tokio::task::spawn_blocking(move || conveyor(&["deployment", "nope", "--ledger", &base]))
            .await
            .unwrap();
    assert!(!ok && out.contains("404"), "{out}");
}
