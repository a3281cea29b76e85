//! SIGTERM is obeyed at once even while a service still waits for the broker: every binary,
//! started against a broker address nobody answers, stops within seconds of the signal instead
//! of after its minute-long connect gives up (past Kubernetes' 30 s grace, it would be killed).

#[path = "support/processes.rs"]
mod processes;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use processes::{binary, free_port};

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

#[test]
fn every_service_stops_on_sigterm_while_the_broker_does_not_answer() {
    let logs = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for (name, env) in services() {
        let log = logs.path().join(format!("{name}.log"));
        let child = Command::new(binary(name))
            .envs(env)
            // Nothing listens on port 1: every connect attempt is refused, and retried.
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        running.push((name, child, log));
    }
    std::thread::sleep(Duration::from_secs(2));
    for (name, child, log) in &mut running {
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
    for (name, child, log) in &mut running {
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
            std::thread::sleep(Duration::from_millis(50));
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
