//! Every binary on its own: SIGTERM is obeyed at once even while a service still waits for the
//! broker (started against an address nobody answers, each stops within seconds instead of after
//! its minute-long connect gives up, past Kubernetes' 30 s grace), and each one's `/metrics` is
//! valid Prometheus text by `promtool check metrics`.

#[path = "support/processes.rs"]
mod processes;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conveyor::testing;
use processes::{Fleet, Spec, binary, free_port, ready};

/// Each service, with the settings it needs to get as far as connecting.
fn services() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml").to_owned();
    let common = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("CONVEYOR_CONFIG", config.clone()),
            (
                "CONVEYOR_ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        env.extend(extra);
        env.push((
            "CONVEYOR_ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        ));
        env
    };
    vec![
        (
            "ingest",
            common(vec![
                ("GITHUB_WEBHOOK_SECRET", "shutdown-test-secret".into()),
                ("INGEST_LISTEN", format!("127.0.0.1:{}", free_port())),
            ]),
        ),
        (
            "build-trigger",
            common(vec![("GITHUB_TOKEN", "ghp_shutdown_test_token".into())]),
        ),
        (
            "awx-launcher",
            common(vec![
                ("AWX_URL", "http://127.0.0.1:9".into()),
                ("AWX_TOKEN", "awx-shutdown-test-token".into()),
            ]),
        ),
        (
            "rollout-watcher",
            common(vec![("CONVEYOR_KUBE_API_URL", "http://127.0.0.1:9".into())]),
        ),
        ("notifier", common(vec![])),
        (
            "ledger",
            common(vec![
                ("LEDGER_LISTEN", format!("127.0.0.1:{}", free_port())),
                ("LEDGER_DATABASE_URL", "sqlite::memory:".into()),
            ]),
        ),
    ]
}

#[tokio::test]
async fn every_service_is_live_and_stops_on_sigterm_while_the_broker_does_not_answer() {
    let logs = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for (name, env) in services() {
        let admin = env.last().unwrap().1.clone();
        let log = logs.path().join(format!("{name}.log"));
        let child = Command::new(binary(name))
            .envs(env)
            // Nothing listens on port 1: every connect attempt is refused, and retried.
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        running.push((name, child, log, admin));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, child, log, admin) in &mut running {
        // Waiting for the broker, the process is live (a liveness probe must not kill it) and
        // says it is not ready.
        let status = |path: &str| {
            let url = format!("http://{admin}{path}");
            async move { reqwest::get(url).await.map(|r| r.status().as_u16()).ok() }
        };
        assert_eq!(status("/live").await, Some(200), "{name} is not live");
        assert_eq!(status("/ready").await, Some(503), "{name} says it is ready");
        let early = child.try_wait().unwrap();
        assert!(
            early.is_none(),
            "{name} stopped before the signal ({early:?}): {}",
            std::fs::read_to_string(&*log).unwrap()
        );
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }
    let signalled = Instant::now();
    for (name, child, log, _) in &mut running {
        // Generous for a loaded machine; the connect alone would take a minute.
        let deadline = signalled + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} ignored SIGTERM while connecting");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = std::fs::read_to_string(&*log).unwrap();
        assert!(
            text.contains("shutdown requested while waiting for the broker"),
            "{name} ({status}) does not say why it stopped: {text}"
        );
        println!(
            "{name}: stopped {:.1} s after SIGTERM",
            signalled.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn every_service_serves_metrics_promtool_accepts() {
    let promtool = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("promtool"))
                .find(|p| p.exists())
        })
        .expect("promtool is not installed: run scripts/test, which installs it (Debian package prometheus)");
    let namespace = testing::unique_namespace("binaries-metrics");
    let _cleanup = testing::Cleanup::new(conveyor::Topology::conveyor(&namespace));
    let mut fleet = Fleet::default();
    let mut admins = Vec::new();
    for (name, env) in services() {
        let admin = env.last().unwrap().1.clone();
        let mut env: Vec<(String, String)> =
            env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        env.push(("AMQP_URL".into(), testing::amqp_url()));
        env.push(("CONVEYOR_EXCHANGE".into(), namespace.clone()));
        fleet.start(Spec {
            name: name.into(),
            args: Vec::new(),
            env,
            ready: Some(format!("http://{admin}/ready")),
        });
        admins.push((name, admin));
    }
    fleet.all_ready().await;
    for (name, admin) in admins {
        ready(&format!("http://{admin}/ready")).await;
        // What a classic scraper gets (no Accept): the text format promtool checks.
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("conveyor_bus_connected 1"), "{name}: {text}");
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
