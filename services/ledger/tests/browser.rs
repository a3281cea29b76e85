//! The dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core
//! (`tests/browser/*.mjs`) against a ledger fed over RabbitMQ. The overview shows the
//! environments, a timeline has a row per stage and per pod, an in-flight deployment completes
//! on screen without a reload; the operator's buttons pause, roll back (after a confirmation
//! that names the image) and resume. Screenshots land in `target/tmp/ledger-browser/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use conveyor::{Topology, testing};
use conveyor_ledger::{Decision, Metrics};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[path = "fixture/chain.rs"]
mod chain;

#[tokio::test]
async fn the_dashboard_renders_and_updates_live_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let topology = Topology::conveyor(testing::unique_namespace("ledger-browser"));
    let _cleanup = testing::Cleanup::new(topology.clone());
    let bus = testing::connect("ledger-browser", topology).await.unwrap();
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
    while metrics.decisions.get(Decision::Recorded) < first.len() as u64 {
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

/// Run `script` with `args` in node; its stdout lines (it must end with `OK`).
fn node(script: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (scripts/ensure-browser installs Chromium and playwright-core)");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(out.status.success(), "browser checks failed: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("OK"), "{lines:?}");
    lines
}

#[tokio::test]
async fn the_operator_pauses_rolls_back_and_resumes_from_the_dashboard_in_chromium() {
    use conveyor::events::Trigger;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
    let bus = testing::connect(
        "ledger-browser-controls",
        Topology::conveyor(testing::unique_namespace("ledger-browser-controls")),
    )
    .await
    .unwrap();
    let tokens = dir.path().join("operators.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[operator]]\nname = \"browser-operator\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n",
            conveyor_ledger::auth::token_hash("browser-token")
        ),
    )
    .unwrap();
    let pipeline =
        conveyor::config::Pipeline::parse(include_str!("../../../conveyor.toml")).unwrap();
    let control = std::sync::Arc::new(conveyor_ledger::control::Control {
        bus: bus.clone(),
        pipeline: std::sync::Arc::new(pipeline),
        operators: conveyor_ledger::auth::Operators::new(Some(tokens), false).unwrap(),
    });
    let metrics = Metrics::default();
    let stop = CancellationToken::new();
    let base = chain::spawn_ledger_with(&bus, &db, &metrics, &stop, Some(control)).await;
    let now = OffsetDateTime::now_utc();
    let mut history = chain::deployment(
        "c1",
        "staging",
        now - time::Duration::hours(2),
        "2026.11.1",
        false,
    );
    history.extend(chain::deployment(
        "c2",
        "staging",
        now - time::Duration::hours(1),
        "2026.11.2",
        false,
    ));
    for e in &history {
        bus.publish(e).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.decisions.get(Decision::Recorded) < history.len() as u64 {
        assert!(tokio::time::Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut observer = testing::Observer::new(&bus).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/controls.mjs");
    let artifacts = concat!(env!("CARGO_TARGET_TMPDIR"), "/ledger-browser");
    let base2 = base.clone();
    let lines =
        tokio::task::spawn_blocking(move || node(script, &[&base2, "browser-token", artifacts]))
            .await
            .unwrap();
    let rollback = lines
        .iter()
        .find_map(|l| l.strip_prefix("ROLLBACK "))
        .expect("the rollback's deployment")
        .to_owned();

    // What the buttons did, on the bus: pause, one rollback (the dismissed one sent nothing),
    // resume — each by the operator the token names.
    observer.drain().await;
    let keys: Vec<String> = observer.seen.iter().map(|e| e.routing_key()).collect();
    assert_eq!(
        keys,
        [
            "control.paused.staging",
            "deploy.requested.staging",
            "control.resumed.staging"
        ]
    );
    let request = &observer.seen[1];
    assert_eq!(format!("{}.staging", request.correlation_id), rollback);
    match &request.event {
        conveyor::Event::DeployRequested(r) => {
            assert_eq!(r.image.reference(), "xchem/fragalysis-stack:2026.11.1");
            assert_eq!(r.operation.trigger, Trigger::Rollback);
            assert_eq!(
                r.operation.actor.as_ref().map(|a| a.name.as_str()),
                Some("browser-operator")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!conveyor::control::is_paused(&bus, "staging").await.unwrap());
    let shot = std::path::Path::new(artifacts).join("controls.png");
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000));
    stop.cancel();
    bus.delete_topology().await.unwrap();
}
