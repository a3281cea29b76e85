//! The ledger over the real broker, with SQLite and with PostgreSQL: a Fragalysis deployment's
//! events — shuffled and duplicated — become one deployment with its stages, pods and
//! durations in the API; pagination, DORA, the live feed and the dashboard pages serve it.

use std::time::Duration;

use conveyor::{Bus, Envelope, Topology, testing};
use conveyor_ledger::{Decision, Metrics};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[path = "fixture/chain.rs"]
mod chain;
use chain::deployment;

/// A database for one test: a temporary SQLite file, or a fresh PostgreSQL database.
enum Db {
    /// Held for its lifetime: the directory goes with it.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
}

impl Db {
    async fn sqlite() -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ledger.db").display()
        );
        (Db::Sqlite(dir), url)
    }

    async fn postgres() -> (Self, String) {
        use sqlx::Connection;
        let admin = std::env::var("LEDGER_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("ledger_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL at LEDGER_TEST_POSTGRES_URL (scripts/test starts it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        (Db::Postgres(name.clone()), format!("{base}/{name}"))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres(name) = self {
            // Best effort, out of the async context: the database is unique to this test.
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        }
    }
}

struct Harness {
    bus: Bus,
    url: String,
    metrics: Metrics,
    stop: CancellationToken,
    http: reqwest::Client,
    _cleanup: testing::Cleanup,
}

impl Harness {
    async fn start(label: &str, database: &str) -> Self {
        let topology = Topology::conveyor(testing::unique_namespace(label));
        let _cleanup = testing::Cleanup::new(topology.clone());
        let bus = testing::connect(&format!("ledger-test-{label}"), topology)
            .await
            .unwrap();
        let metrics = Metrics::default();
        let stop = CancellationToken::new();
        let url = Self::spawn(&bus, database, &metrics, &stop).await;
        Self {
            bus,
            url,
            metrics,
            stop,
            http: reqwest::Client::new(),
            _cleanup,
        }
    }

    /// A ledger process: store, consumer and server.
    async fn spawn(
        bus: &Bus,
        database: &str,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> String {
        chain::spawn_ledger(bus, database, metrics, stop).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn until(&self, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = self.get(path).await;
            if ok(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out: {what}; last {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn records_serves_and_survives_a_restart(label: &str, db: &str) {
    let h = Harness::start(label, db).await;
    let now = OffsetDateTime::now_utc();
    let first = deployment(
        "chain-a",
        "staging",
        now - time::Duration::hours(3),
        "2026.11.1",
        false,
    );
    let failed = deployment(
        "chain-b",
        "staging",
        now - time::Duration::hours(2),
        "2026.11.2",
        true,
    );
    let last = deployment(
        "chain-c",
        "staging",
        now - time::Duration::hours(1),
        "2026.11.3",
        false,
    );
    // Shuffled, with every event of the first deployment sent twice.
    let mut all: Vec<&Envelope> = first.iter().chain(&failed).chain(&last).collect();
    all.reverse();
    all.extend(first.iter());
    for e in all {
        h.bus.publish(e).await.unwrap();
    }
    // Every event recorded once, every repeat seen as a duplicate.
    let unique = (first.len() + failed.len() + last.len()) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.metrics.decisions.get(Decision::Recorded) < unique
        || h.metrics.decisions.get(Decision::Duplicate) < first.len() as u64
    {
        assert!(tokio::time::Instant::now() < deadline, "not all recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.metrics.decisions.get(Decision::Recorded), unique);
    let d = h
        .until(
            "/api/deployments/chain-c.staging",
            "chain-c completed",
            |v| v["status"] == "completed",
        )
        .await;
    h.until(
        "/api/deployments?environment=staging",
        "3 deployments",
        |v| {
            v["deployments"].as_array().is_some_and(|a| a.len() == 3)
                && v["deployments"][1]["status"] == "failed"
                && v["deployments"][2]["status"] == "completed"
        },
    )
    .await;

    assert_eq!(d["image"], "xchem/fragalysis-stack:2026.11.3");
    assert_eq!(d["executor"]["job_id"], 968);
    let stages: Vec<&str> = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["launch", "AWX job", "rollout", "completion noticed"],
        "{d}"
    );
    let requested = d["requested_at"].as_i64().unwrap();
    assert_eq!(d["finished_at"].as_i64().unwrap() - requested, 189_200);
    assert_eq!(
        d["overhead_ms"], 400,
        "0.2 s launch + 0.2 s completion noticed"
    );
    let pods: Vec<&str> = d["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pods, ["stack-2", "stack-1", "stack-0"]);
    assert_eq!(d["events"], 15);
    // The correlation id alone finds the chain's only deployment; an unknown id is a 404.
    let (code, by_chain) = h.get("/api/deployments/chain-c").await;
    assert_eq!(
        (code, &by_chain["id"]),
        (200, &Value::from("chain-c.staging"))
    );
    assert_eq!(h.get("/api/deployments/nope").await.0, 404);

    let (_, f) = h.get("/api/deployments/chain-b.staging").await;
    assert_eq!(f["reason"], "stack-1: ImagePullBackOff");
    assert_eq!(f["stalled"], false);
    assert_eq!(f["pods"][1]["ready"], Value::Null);

    // Cursor pagination, newest first.
    let (_, p1) = h.get("/api/deployments?limit=2").await;
    let ids: Vec<&str> = p1["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chain-c.staging", "chain-b.staging"]);
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = h
        .get(&format!("/api/deployments?limit=2&before={next}"))
        .await;
    assert_eq!(p2["deployments"][0]["id"], "chain-a.staging");
    assert_eq!(p2["next"], Value::Null);
    let (_, failed_only) = h.get("/api/deployments?status=failed").await;
    assert_eq!(failed_only["deployments"].as_array().unwrap().len(), 1);

    // What runs now, and the DORA keys of the window.
    let (_, envs) = h.get("/api/environments").await;
    assert_eq!(envs[0]["name"], "staging");
    assert_eq!(envs[0]["current"]["id"], "chain-c.staging");
    assert_eq!(envs[0]["recent_durations_ms"].as_array().unwrap().len(), 2);
    let (_, dora) = h.get("/api/dora?environment=staging&days=1").await;
    assert_eq!(dora[0]["deployments"], 2);
    assert_eq!(dora[0]["change_failure_rate"], 1.0 / 3.0);
    // chain-b failed at (now − 2 h) + 200 s; chain-c restored it at
    // (now − 1 h) + 189.2 s.
    let ttr = dora[0]["time_to_restore_seconds"].as_f64().unwrap();
    assert!((ttr - (3600.0 - 200.0 + 189.2)).abs() < 0.01, "{ttr}");

    // The dashboard renders the same record.
    let overview = h.text("/").await;
    assert!(
        overview.contains(r#"data-environment="staging""#),
        "{overview}"
    );
    assert!(overview.contains("xchem/fragalysis-stack:2026.11.3"));
    let page = h.text("/deployments/chain-c.staging").await;
    assert_eq!(
        page.matches(r#"<g class="row"#).count(),
        4 + 3,
        "stages + pods"
    );
    assert!(page.contains("row stage conveyor"));
    let list = h.text("/deployments?status=failed").await;
    assert!(list.contains("stack-1: ImagePullBackOff"));

    // A restarted ledger on the same database: a duplicate changes nothing.
    let recorded = h.metrics.decisions.get(Decision::Recorded);
    h.stop.cancel();
    let stop = CancellationToken::new();
    let metrics = Metrics::default();
    let url = Harness::spawn(&h.bus, db, &metrics, &stop).await;
    h.bus.publish(&last[0]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.decisions.get(Decision::Duplicate) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "duplicate not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.decisions.get(Decision::Recorded), 0);
    assert!(recorded > 0);
    let again: Value = reqwest::get(format!("{url}/api/deployments/chain-c.staging"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, d);
    stop.cancel();
}

#[tokio::test]
async fn sqlite_records_serves_and_survives_a_restart() {
    let (_db, url) = Db::sqlite().await;
    records_serves_and_survives_a_restart("ledger-sqlite", &url).await;
}

#[tokio::test]
async fn postgres_records_serves_and_survives_a_restart() {
    let (_db, url) = Db::postgres().await;
    records_serves_and_survives_a_restart("ledger-postgres", &url).await;
}

#[tokio::test]
async fn the_live_feed_announces_each_update() {
    let (_db, db) = Db::sqlite().await;
    let h = Harness::start("ledger-feed", &db).await;
    let mut feed = h
        .http
        .get(format!("{}/api/events", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        feed.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = deployment(
        "chain-live",
        "staging",
        OffsetDateTime::now_utc(),
        "latest",
        false,
    );
    h.bus.publish(&events[0]).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("chain-live.staging") {
        let chunk = tokio::time::timeout_at(deadline, feed.chunk())
            .await
            .expect("an update within 10 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: deployment"), "{seen}");
    assert!(seen.contains(r#""status":"requested""#), "{seen}");
}

#[tokio::test]
async fn a_rollback_is_a_remediation_and_what_it_replaced_a_failed_change() {
    let (_db, db) = Db::sqlite().await;
    let h = Harness::start("ledger-dora-rollback", &db).await;
    let now = OffsetDateTime::now_utc();
    let t = |hours: i64| now - time::Duration::hours(hours);
    let good = deployment("chain-good", "production", t(3), "1.0.3", false);
    let bad = deployment("chain-bad", "production", t(2), "1.0.4", false);
    // 1.0.4 completed, then an operator rolled it back to 1.0.3.
    let mut back = deployment("chain-back", "production", t(1), "1.0.3", false);
    if let conveyor::Event::DeployRequested(r) = &mut back[0].event {
        r.operation = conveyor::events::Operation {
            trigger: conveyor::events::Trigger::Rollback,
            actor: Some(conveyor::events::Actor {
                name: "alice".into(),
                via: "token".into(),
                from: None,
            }),
            reason: Some("500s on /api".into()),
            forced: false,
            source_deployment: Some("chain-good.production".into()),
            untracked: false,
            replaces: Some("chain-bad.production".into()),
        };
    }
    for e in good.iter().chain(&bad).chain(&back) {
        h.bus.publish(e).await.unwrap();
    }
    let dora = h
        .until(
            "/api/dora?environment=production&days=1",
            "the rollback recorded",
            |v| v[0]["time_to_restore_seconds"].is_number(),
        )
        .await;
    assert_eq!(
        dora[0]["deployments"], 2,
        "the rollback is no change: {dora}"
    );
    assert_eq!(dora[0]["change_failure_rate"], 0.5, "{dora}");
    assert_eq!(dora[0]["failures"], 0, "nothing failed to deploy");
    // Broken from 1.0.4's completion to the rollback's, an hour apart in the same chain shape.
    let ttr = dora[0]["time_to_restore_seconds"].as_f64().unwrap();
    assert!((ttr - 3600.0).abs() < 0.01, "{ttr}");
}
