//! The dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core
//! (`tests/browser/dashboard.mjs`) against a ledger fed over RabbitMQ. The overview shows the
//! environments, a timeline has a row per stage and per pod, an in-flight deployment completes
//! on screen without a reload. Screenshots land in `target/tmp/ledger-browser/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use conveyor::{Topology, testing};
use conveyor_ledger::Metrics;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[path = "fixture/chain.rs"]
mod chain;

#[tokio::test]
async fn the_dashboard_renders_and_updates_live_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let bus = testing::connect(
        "ledger-browser",
        Topology::conveyor(testing::unique_namespace("ledger-browser")),
    )
    .await
    .unwrap();
    let metrics = Metrics::default();
    let stop = CancellationToken::new();
    let base = chain::spawn_ledger(&bus, &db, &metrics, &stop).await;

    let now = OffsetDateTime::now_utc();
    let production = chain::deployment(
        "chain-p",
        "production",
        now - time::Duration::hours(3),
        "1.0.3",
        false,
    );
    let staging = chain::deployment(
        "chain-s",
        "staging",
        now - time::Duration::hours(2),
        "2026.11.1",
        false,
    );
    let live = chain::deployment(
        "chain-live",
        "staging",
        now - time::Duration::seconds(200),
        "2026.11.2",
        false,
    );
    // In flight: requested, launched, rollout started, the first pod replaced.
    let (before, after) = live.split_at(6);
    let first: Vec<_> = production.iter().chain(&staging).chain(before).collect();
    for e in &first {
        bus.publish(e).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.decisions.get("recorded") < first.len() as u64 {
        assert!(tokio::time::Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.mjs");
    let artifacts = concat!(env!("CARGO_TARGET_TMPDIR"), "/ledger-browser");
    let mut node = Command::new("node")
        .args([script, &base, "chain-live.staging", artifacts])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (scripts/ensure-browser installs Chromium and playwright-core)");
    let stdout = node.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the browser script said READY within a minute")
            .unwrap_or_else(|| panic!("the browser script ended early: {seen:?}"));
        seen.push(line.clone());
        if line == "READY" {
            break;
        }
    }
    // The rest of the rollout, while the page is open.
    for e in after {
        bus.publish(e).await.unwrap();
    }
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    assert!(status.success(), "browser checks failed: {seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("OK"), "{seen:?}");
    for shot in [
        "overview.png",
        "timeline.png",
        "timeline-phone.png",
        "live-completed.png",
    ] {
        let path = std::path::Path::new(artifacts).join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "{} was not written",
            path.display()
        );
    }
    stop.cancel();
}
