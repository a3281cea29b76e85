//! End to end: the real binaries as separate processes — `conveyor-sim all`, ingest,
//! build-trigger, awx-launcher, rollout-watcher, notifier, ledger — over the real broker. A push
//! on the simulated GitHub goes all the way to the StatefulSet, for staging and then production;
//! and none of the recognisable secrets they run with shows up in a log line or an event.

#[path = "support/processes.rs"]
mod processes;

use std::time::Duration;

use conveyor::{Topology, testing};
use processes::{Fleet, Spec, free_port, ready};

/// Recognisable secret values every process runs with; none may ever be printed or published.
const SECRETS: [(&str, &str); 4] = [
    ("GITHUB_TOKEN", "ghp_E2eSecretGithubToken7f3a9c"),
    ("GITHUB_WEBHOOK_SECRET", "whsec_E2eSecretHookSecret51d0"),
    ("AWX_TOKEN", "awx_E2eSecretAwxToken2b8e44"),
    ("REGISTRY_WEBHOOK_TOKEN", "reg_E2eSecretHookToken90ca1f"),
];

/// The five binaries on a fresh namespace; `crash_image` makes matching pods crash-loop and
/// `fail_grace_secs` shortens the wait before a stall fails the deployment.
struct Pipeline {
    obs: testing::Observer,
    bus: conveyor::Bus,
    github_port: u16,
    ledger_port: u16,
    _procs: Fleet,
    _config: tempfile::NamedTempFile,
    _ledger_dir: tempfile::TempDir,
}

async fn start_pipeline(label: &str, crash_image: Option<&str>, fail_grace_secs: u64) -> Pipeline {
    let namespace = testing::unique_namespace(label);
    let bus = testing::connect("e2e-observer", Topology::conveyor(&namespace))
        .await
        .unwrap();
    let obs = testing::Observer::new(&bus).await.unwrap();
    let mut config_file = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml"))
        .unwrap()
        .replace(
            "fail_grace_secs = 120",
            &format!("fail_grace_secs = {fail_grace_secs}"),
        );
    std::io::Write::write_all(&mut config_file, text.as_bytes()).unwrap();
    let config = config_file.path().to_str().unwrap().to_owned();
    let config = config.as_str();
    let (ingest_port, github_port, awx_port, kube_port) =
        (free_port(), free_port(), free_port(), free_port());
    let mut procs = Fleet::default();
    let log = "debug,lapin=info,amq_protocol=info,hyper=info,hyper_util=info,h2=info,\
               rustls=info,tower=info,reqwest=info,kube=info,kube_client=info,sqlx=info";
    let mut start = |name: &str, args: &[String], extra: &[(&str, String)]| {
        let mut env: Vec<(String, String)> = SECRETS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend([
            ("AMQP_URL".to_owned(), testing::amqp_url()),
            ("CONVEYOR_EXCHANGE".to_owned(), namespace.clone()),
            ("CONVEYOR_CONFIG".to_owned(), config.to_owned()),
            ("RUST_LOG".to_owned(), log.to_owned()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        procs.start(Spec {
            name: name.to_owned(),
            args: args.to_vec(),
            env,
            ready: None,
        });
    };
    start(
        "conveyor-sim",
        &[
            "all".into(),
            "--config".into(),
            config.into(),
            "--ingest-url".into(),
            format!("http://127.0.0.1:{ingest_port}"),
            "--github-listen".into(),
            format!("127.0.0.1:{github_port}"),
            "--awx-listen".into(),
            format!("127.0.0.1:{awx_port}"),
            "--kube-listen".into(),
            format!("127.0.0.1:{kube_port}"),
            "--pod-seconds".into(),
            "0.5".into(),
        ]
        .into_iter()
        .chain(
            crash_image
                .map(|c| vec!["--crash-image".to_owned(), c.to_owned()])
                .into_iter()
                .flatten(),
        )
        .collect::<Vec<String>>(),
        &[],
    );
    let mut admin = Vec::new();
    // Two replicas of every worker (ingest once: the simulators post to one address): the
    // outcome must be the same, nothing dispatched, launched or reported twice.
    let workers = [
        (
            "build-trigger",
            vec![("GITHUB_API_URL", format!("http://127.0.0.1:{github_port}"))],
        ),
        (
            "awx-launcher",
            vec![("AWX_URL", format!("http://127.0.0.1:{awx_port}"))],
        ),
        (
            "rollout-watcher",
            vec![(
                "CONVEYOR_KUBE_API_URL",
                format!("http://127.0.0.1:{kube_port}"),
            )],
        ),
        (
            "notifier",
            vec![("GITHUB_API_URL", format!("http://127.0.0.1:{github_port}"))],
        ),
    ];
    let ingest = (
        "ingest",
        vec![("INGEST_LISTEN", format!("127.0.0.1:{ingest_port}"))],
    );
    for (name, extra) in std::iter::once(ingest)
        .chain(workers.iter().cloned())
        .chain(workers.iter().cloned())
    {
        let port = free_port();
        let mut env = extra;
        env.push(("CONVEYOR_ADMIN_LISTEN", format!("127.0.0.1:{port}")));
        start(name, &[], &env);
        admin.push(format!("http://127.0.0.1:{port}/ready"));
    }
    // One ledger, on a SQLite file (its queue has one active consumer anyway).
    let ledger_dir = tempfile::tempdir().unwrap();
    let ledger_port = free_port();
    let port = free_port();
    start(
        "ledger",
        &[],
        &[
            (
                "LEDGER_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    ledger_dir.path().join("ledger.db").display()
                ),
            ),
            ("LEDGER_LISTEN", format!("127.0.0.1:{ledger_port}")),
            ("CONVEYOR_ADMIN_LISTEN", format!("127.0.0.1:{port}")),
        ],
    );
    admin.push(format!("http://127.0.0.1:{port}/ready"));
    for url in &admin {
        ready(url).await;
    }
    ready(&format!("http://127.0.0.1:{kube_port}/version")).await;

    Pipeline {
        obs,
        bus,
        github_port,
        _procs: procs,
        ledger_port,
        _config: config_file,
        _ledger_dir: ledger_dir,
    }
}

async fn push(github_port: u16, repository: &str, head: &str, tag: bool) {
    let body = serde_json::json!({"repository": repository, "workflow": "build main", "head": head, "tag": tag});
    let url = format!("http://127.0.0.1:{github_port}/_sim/push");
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Each GitHub deployment's environment and status states, from the simulator's record.
async fn github_deployments(github_port: u16) -> Vec<(String, Vec<String>)> {
    let url = format!("http://127.0.0.1:{github_port}/_sim/deployments");
    let record: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    record["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let states = d["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["state"].as_str().unwrap().to_owned())
                .collect();
            (d["environment"].as_str().unwrap().to_owned(), states)
        })
        .collect()
}

#[tokio::test]
async fn a_push_goes_from_github_to_both_statefulsets_across_separate_processes_with_two_replicas_each()
 {
    let Pipeline {
        mut obs,
        bus,
        github_port,
        ledger_port,
        _procs,
        _config,
        _ledger_dir,
    } = start_pipeline("e2e", None, 120).await;
    push(github_port, "xchem/fragalysis-frontend", "staging", false).await;
    let staged = obs
        .until("deploy.completed.staging", Duration::from_secs(90), |e| {
            e.routing_key() == "deploy.completed.staging"
        })
        .await;
    push(github_port, "xchem/fragalysis-stack", "1.0.3", true).await;
    obs.until(
        "deploy.completed.production",
        Duration::from_secs(90),
        |e| e.routing_key() == "deploy.completed.production",
    )
    .await;

    // One chain from the frontend commit to the staging StatefulSet, each step once.
    let chain: Vec<String> = obs
        .seen
        .iter()
        .filter(|e| e.correlation_id == staged.correlation_id)
        .map(|e| e.routing_key())
        .collect();
    for step in [
        "build.succeeded",
        "build.requested",
        "deploy.requested.staging",
        "deploy.launched.staging",
        "rollout.started.staging",
        "rollout.completed.staging",
        "deploy.completed.staging",
    ] {
        assert_eq!(
            chain.iter().filter(|k| *k == step).count(),
            1,
            "{step} once in {chain:?}"
        );
    }
    let ready_events = obs
        .seen
        .iter()
        .filter(|e| matches!(&e.event, conveyor::Event::RolloutProgress(p) if p.step == conveyor::events::PodStep::Ready))
        .count();
    assert_eq!(ready_events, 6, "3 pods in each environment");

    // Two notifier replicas told GitHub once: one deployment per environment, whole life.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let want = |env: &str| {
        (
            env.to_owned(),
            vec!["queued".to_owned(), "in_progress".into(), "success".into()],
        )
    };
    loop {
        let got = github_deployments(github_port).await;
        if got == [want("staging"), want("production")] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GitHub deployments: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ledger process recorded both, with the whole staging chain's stages.
    let staging_id = format!("{}.staging", staged.correlation_id);
    let url = format!("http://127.0.0.1:{ledger_port}/api/deployments/{staging_id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d: serde_json::Value = reqwest::get(&url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if d["status"] == "completed" && d["pods"].as_array().is_some_and(|p| p.len() == 3) {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "ledger: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stages: Vec<&str> = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "upstream build",
            "dispatch downstream build",
            "build",
            "request deployment",
            "launch",
            "AWX job",
            "rollout",
            "completion noticed"
        ],
        "{d}"
    );
    // Production's end may still be on its way to the ledger.
    let url = format!("http://127.0.0.1:{ledger_port}/api/deployments?status=completed");
    loop {
        let list: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if list["deployments"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ledger: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No secret in any log line of any process, nor in any event published.
    let lines = _procs.log_lines();
    assert!(lines.len() > 50, "the processes logged: {}", lines.len());
    for (_, secret) in SECRETS {
        let leaks: Vec<_> = lines.iter().filter(|(_, l)| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a secret was logged: {leaks:?}");
        for e in &obs.seen {
            let json = String::from_utf8(e.to_json()).unwrap();
            assert!(!json.contains(secret), "a secret was published: {json}");
        }
    }
    drop(_procs);
    bus.delete_topology().await.unwrap();
}

#[tokio::test]
async fn a_crash_looping_rollout_fails_the_deployment_with_the_stall_reason() {
    let Pipeline {
        mut obs,
        bus,
        github_port,
        _procs,
        _config,
        ..
    } = start_pipeline("e2e-fail", Some(":latest"), 2).await;
    push(github_port, "xchem/fragalysis-frontend", "staging", false).await;
    let stalled = obs
        .until("rollout.stalled.staging", Duration::from_secs(90), |e| {
            e.routing_key() == "rollout.stalled.staging"
        })
        .await;
    let failed = obs
        .until("deploy.failed.staging", Duration::from_secs(90), |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    assert_eq!(stalled.correlation_id, failed.correlation_id);
    match failed.event {
        conveyor::Event::DeployFailed(f) => {
            assert_eq!(f.stage, conveyor::events::Stage::Rollout);
            assert!(
                f.reason.contains("stack-2") && f.reason.contains("CrashLoopBackOff"),
                "{}",
                f.reason
            );
        }
        _ => unreachable!(),
    }
    assert!(
        !obs.seen
            .iter()
            .any(|e| e.routing_key() == "deploy.completed.staging")
    );
    drop(_procs);
    bus.delete_topology().await.unwrap();
}
