//! No configured secret leaves the real notifier when every receiver answers like a careless
//! server — a 500 that echoes the request line and headers, then an Express-style 404 that
//! names the URL with its query: not in a log line, not in a dead letter's reason, not in
//! `conveyor dead list` or `dead show`. What the receivers said is still there, scrubbed.

#[path = "support/processes.rs"]
mod processes;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use conveyor::bus::DeadLetterAction;
use conveyor::events::{
    DeployFailed, DeployRequested, Envelope, Event, GitRef, ImageRef, Operation, Stage,
};
use conveyor::{Topology, testing};
use processes::{Fleet, Spec, free_port};

const GITHUB_TOKEN: &str = "ghp_leakcheck0123456789abcdefABCDEF0123";
const WEBHOOK_TOKEN: &str = "whk-token-5f1e2d3c4b5a69788796";
const SLACK_CREDENTIAL: &str = "SlackLeakCheckCredential24";
const HMAC_KEY: &str = "hmac-key-for-the-leak-check";

/// Answers each path's first request with a 500 quoting the request line and every header,
/// and every later one with Express's 404 page text.
async fn careless_receiver() -> (String, Arc<Mutex<u32>>) {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let requests = Arc::new(Mutex::new(0));
    let counter = requests.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let (seen, counter) = (seen.clone(), counter.clone());
        async move {
            *conveyor::sync::lock(&counter) += 1;
            let path = uri.path().to_owned();
            let n = {
                let mut seen = conveyor::sync::lock(&seen);
                let n = seen.entry(path).or_default();
                *n += 1;
                *n
            };
            if n == 1 {
                let mut echo = format!("upstream failed for POST {uri}\n");
                for (name, value) in &headers {
                    echo.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
                (StatusCode::INTERNAL_SERVER_ERROR, echo)
            } else {
                (StatusCode::NOT_FOUND, format!("Cannot POST {uri}"))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, requests)
}

/// Every form of every secret the notifier was given that must not appear anywhere.
fn forbidden(receiver: &str) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        GITHUB_TOKEN.to_owned(),
        b64(GITHUB_TOKEN),
        WEBHOOK_TOKEN.to_owned(),
        SLACK_CREDENTIAL.to_owned(),
        format!("{receiver}/services/T0001/B0001/{SLACK_CREDENTIAL}"),
        HMAC_KEY.to_owned(),
    ]
}

fn conveyor_dead(namespace: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("dead")
        .args(args)
        .env("AMQP_URL", testing::amqp_url())
        .env("CONVEYOR_EXCHANGE", namespace)
        .output()
        .unwrap();
    assert!(out.status.success(), "conveyor dead {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_a_dead_letter_when_receivers_echo_requests() {
    let namespace = testing::unique_namespace("secrets");
    let topology = Topology::conveyor(&namespace);
    let _cleanup = testing::Cleanup::new(topology.clone());
    let bus = testing::connect("secrets-test", topology).await.unwrap();
    let (receiver, requests) = careless_receiver().await;

    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml");
    let admin = free_port();
    let mut fleet = Fleet::default();
    fleet.start(Spec {
        name: "notifier".into(),
        args: Vec::new(),
        env: vec![
            ("AMQP_URL".into(), testing::amqp_url()),
            ("CONVEYOR_EXCHANGE".into(), namespace.clone()),
            ("CONVEYOR_CONFIG".into(), config.into()),
            ("CONVEYOR_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")),
            (
                "RUST_LOG".into(),
                "debug,lapin=info,hyper=info,hyper_util=info".into(),
            ),
            ("GITHUB_API_URL".into(), receiver.clone()),
            ("GITHUB_TOKEN".into(), GITHUB_TOKEN.into()),
            (
                "SLACK_WEBHOOK_URL".into(),
                format!("{receiver}/services/T0001/B0001/{SLACK_CREDENTIAL}"),
            ),
            (
                "NOTIFIER_WEBHOOK_URL".into(),
                format!("{receiver}/hook?token={WEBHOOK_TOKEN}&team=ops"),
            ),
            ("NOTIFIER_WEBHOOK_SECRET".into(), HMAC_KEY.into()),
        ],
        ready: Some(format!("http://127.0.0.1:{admin}/ready")),
    });
    fleet.all_ready().await;

    // A production deployment that failed: every channel reports it.
    let requested = Envelope::new(
        "conveyor/build-trigger",
        Event::DeployRequested(DeployRequested {
            environment: "production".into(),
            repository: "xchem/fragalysis-stack".into(),
            sha: "b".repeat(40),
            git_ref: GitRef::tag("1.2.3"),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("1.2.3".into()),
                digest: None,
            },
            upstream: Vec::new(),
            origin_time: Some(time::OffsetDateTime::now_utc()),
            operation: Operation::default(),
        }),
    );
    bus.publish(&requested).await.unwrap();
    let failed = Envelope::caused_by(
        &requested,
        "conveyor/rollout-watcher",
        Event::DeployFailed(DeployFailed {
            environment: "production".into(),
            stage: Stage::Rollout,
            reason: "stack-0: CrashLoopBackOff".into(),
            operation: None,
        }),
    );
    bus.publish(&failed).await.unwrap();

    // Each channel's 404 is permanent: the deliveries are parked, with a reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
        let queues: std::collections::BTreeSet<&str> =
            dead.iter().map(|d| d.origin_queue.as_str()).collect();
        if ["github", "slack", "webhook"]
            .iter()
            .all(|c| queues.iter().any(|q| q.contains(&format!("notifier.{c}"))))
        {
            break dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every channel dead-lettered: {queues:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        *conveyor::sync::lock(&requests) >= 6,
        "each channel got a 500, then a 404"
    );

    let listed = conveyor_dead(&namespace, &["list"]);
    let shown: Vec<String> = dead
        .iter()
        .map(|d| conveyor_dead(&namespace, &["show", &d.id]))
        .collect();
    // Give the notifier's last log lines a moment to reach the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs: Vec<String> = fleet.log_lines().into_iter().map(|(_, l)| l).collect();

    let mut places: Vec<(&str, String)> = vec![("conveyor dead list", listed)];
    places.extend(shown.into_iter().map(|s| ("conveyor dead show", s)));
    places.extend(
        dead.iter()
            .map(|d| ("a dead letter's reason", d.reason.clone())),
    );
    places.extend(logs.iter().map(|l| ("the notifier's log", l.clone())));
    for (place, text) in &places {
        for secret in forbidden(&receiver) {
            assert!(!text.contains(&secret), "{place} shows a secret: {text}");
        }
    }
    // What the receivers said is kept, scrubbed: the reasons are not silence.
    let webhook = dead
        .iter()
        .find(|d| d.origin_queue.contains("notifier.webhook"))
        .unwrap();
    assert!(
        webhook
            .reason
            .contains("Cannot POST /hook?token=***&team=ops"),
        "{}",
        webhook.reason
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("upstream failed for POST /hook?token=***&team=ops")),
        "the 500's echo is logged, scrubbed"
    );
}
