//! The ledger without a broker: its handler records events into SQLite and exports the DORA
//! keys as Prometheus gauges; retention deletes only finished deployments past it.

use conveyor::Incoming;
use conveyor_ledger::store::Store;
use conveyor_ledger::timeline::{Deployment, Status, millis};
use conveyor_ledger::{Decision, Ledger, Metrics};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

#[path = "fixture/chain.rs"]
mod chain;

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let store = Store::open(&url).await.unwrap();
    (dir, store)
}

fn incoming(envelope: &conveyor::Envelope) -> Incoming {
    Incoming {
        envelope: envelope.clone(),
        attempt: 1,
        redelivered: false,
        held: None,
        queue: "test".into(),
    }
}

#[tokio::test]
async fn dora_keys_are_exported_as_gauges_per_environment() {
    let (_dir, store) = sqlite().await;
    let mut registry = Registry::default();
    let metrics = conveyor_ledger::register_metrics(&mut registry);
    let ledger = Ledger::new(store, metrics.clone(), 30);
    let now = OffsetDateTime::now_utc();
    let ok = chain::deployment("c1", "staging", now - time::Duration::hours(5), "a", false);
    let bad = chain::deployment("c2", "staging", now - time::Duration::hours(4), "b", true);
    for e in ok.iter().chain(&bad) {
        let outcome = ledger.handle(incoming(e)).await;
        assert_eq!(outcome, conveyor::Outcome::ack());
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"ledger_dora_change_failure_rate{environment="staging"} 0.5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ledger_dora_deployments_per_day{environment="staging"} 0.0333"#),
        "{text}"
    );
    assert_eq!(
        metrics.decisions.get(Decision::Recorded),
        (ok.len() + bad.len()) as u64
    );
}

#[tokio::test]
async fn retention_deletes_finished_deployments_past_it_and_keeps_in_flight_ones() {
    let (_dir, store) = sqlite().await;
    let now = millis(OffsetDateTime::now_utc());
    let day = 86_400_000;
    let ledger = Ledger::new(store.clone(), Metrics::default(), 30);
    // Old finished, old but still running, recent finished.
    let t0 = OffsetDateTime::now_utc();
    let old_done = chain::deployment(
        "old-done",
        "staging",
        t0 - time::Duration::days(50),
        "1",
        false,
    );
    let old_running = chain::deployment(
        "old-running",
        "staging",
        t0 - time::Duration::days(50),
        "2",
        false,
    );
    let recent = chain::deployment(
        "recent",
        "staging",
        t0 - time::Duration::days(1),
        "3",
        false,
    );
    for e in old_done.iter().chain(&old_running[..4]).chain(&recent) {
        ledger.handle(incoming(e)).await;
    }
    let status = |d: Option<Deployment>| d.map(|d| d.status);
    assert_eq!(
        status(store.get("old-running.staging").await.unwrap()),
        Some(Status::Running)
    );

    assert_eq!(store.purge(now - 40 * day).await.unwrap(), 1);
    assert_eq!(status(store.get("old-done.staging").await.unwrap()), None);
    assert_eq!(
        status(store.get("old-running.staging").await.unwrap()),
        Some(Status::Running)
    );
    assert_eq!(
        status(store.get("recent.staging").await.unwrap()),
        Some(Status::Completed)
    );
    // The running one's events were kept: the rest of its chain still completes it.
    for e in &old_running[4..] {
        ledger.handle(incoming(e)).await;
    }
    let d = store.get("old-running.staging").await.unwrap().unwrap();
    assert_eq!((d.status, d.events), (Status::Completed, old_running.len()));
}

#[tokio::test]
async fn sqlite_commits_through_a_write_ahead_log() {
    let (dir, store) = sqlite().await;
    let ledger = Ledger::new(store, Metrics::default(), 30);
    let now = OffsetDateTime::now_utc();
    for e in chain::deployment("wal", "staging", now, "a", false) {
        assert_eq!(ledger.handle(incoming(&e)).await, conveyor::Outcome::ack());
    }
    // The rollback journal leaves no file between transactions; the write-ahead log stays
    // beside the database while it is open.
    assert!(
        dir.path().join("l.db-wal").exists(),
        "no write-ahead log beside the database: {:?}",
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}
