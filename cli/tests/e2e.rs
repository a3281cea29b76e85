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

/// The operator the ledger knows, and their token (and one that expired).
const OPERATOR: &str = "e2e-operator";
const OPERATOR_TOKEN: &str = "cvy_E2eOperatorToken8d1f";
const EXPIRED_TOKEN: &str = "cvy_E2eExpiredToken0000";

/// The five binaries on a fresh namespace; `crash_image` makes matching pods crash-loop and
/// `fail_grace_secs` shortens the wait before a stall fails the deployment.
struct Pipeline {
    obs: testing::Observer,
    bus: conveyor::Bus,
    github_port: u16,
    ledger_port: u16,
    awx_port: u16,
    kube_port: u16,
    ingest_port: u16,
    _procs: Fleet,
    _config: tempfile::NamedTempFile,
    _ledger_dir: tempfile::TempDir,
}

async fn start_pipeline(label: &str, crash_image: Option<&str>, fail_grace_secs: u64) -> Pipeline {
    start_pipeline_with(label, crash_image, fail_grace_secs, "").await
}

/// [`start_pipeline`] with `extra` appended to the shipped pipeline file.
async fn start_pipeline_with(
    label: &str,
    crash_image: Option<&str>,
    fail_grace_secs: u64,
    extra: &str,
) -> Pipeline {
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
        )
        .replace("[awx]\n", &format!("{extra}\n[awx]\n"));
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
    // One ledger, on a SQLite file (its queue has one active consumer anyway), with the
    // control API and its operators.
    let ledger_dir = tempfile::tempdir().unwrap();
    let tokens = ledger_dir.path().join("operators.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[operator]]\nname = \"{OPERATOR}\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"gone\"\nroles = [\"operator\"]\nsha256 = \"{}\"\nexpires = \"2020-01-01T00:00:00Z\"\n",
            conveyor_ledger::auth::token_hash(OPERATOR_TOKEN),
            conveyor_ledger::auth::token_hash(EXPIRED_TOKEN),
        ),
    )
    .unwrap();
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
            (
                "CONVEYOR_OPERATOR_TOKENS_FILE",
                tokens.display().to_string(),
            ),
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
        awx_port,
        kube_port,
        ingest_port,
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
        ..
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

/// The `conveyor` CLI against the ledger at `ledger_port`, as the operator `token`.
fn cli(ledger_port: u16, token: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .env(
            "CONVEYOR_LEDGER_URL",
            format!("http://127.0.0.1:{ledger_port}"),
        )
        .env("CONVEYOR_TOKEN", token)
        .output()
        .expect("the conveyor binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn cli_async(ledger_port: u16, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(ledger_port, OPERATOR_TOKEN, &refs)
    })
    .await
    .unwrap()
}

/// The `stack_image_tag` of every job of the AWX template `name`, oldest first.
async fn awx_tags(awx_port: u16, name: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let get = |url: String| client.get(url).bearer_auth(SECRETS[2].1).send();
    let base = format!("http://127.0.0.1:{awx_port}");
    let templates: serde_json::Value = get(format!(
        "{base}/api/v2/job_templates/?name={}",
        name.replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = templates["results"][0]["id"]
        .as_u64()
        .expect("the template");
    let jobs: serde_json::Value = get(format!(
        "{base}/api/v2/job_templates/{id}/jobs/?order_by=created&page_size=200"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    jobs["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let vars: serde_json::Value =
                serde_json::from_str(j["extra_vars"].as_str().unwrap_or("{}")).unwrap_or_default();
            vars["stack_image_tag"].as_str().unwrap_or("").to_owned()
        })
        .collect()
}

/// The image of the StatefulSet `ns/name`'s first container.
async fn statefulset_image(kube_port: u16, ns: &str, name: &str) -> String {
    let sts: serde_json::Value = reqwest::get(format!(
        "http://127.0.0.1:{kube_port}/apis/apps/v1/namespaces/{ns}/statefulsets/{name}"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    sts["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

const DIRECT: &str = r#"
[[environment]]
name = "direct"
repository = "xchem/fragalysis-stack"
on = { branch = "release" }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-direct", name = "stack" }
"#;

const STAGING_TEMPLATE: &str = "Staging Fragalysis Stack (Version Change)";

#[tokio::test]
async fn an_operator_pauses_resumes_deploys_and_rolls_back_both_executors_through_the_cli() {
    let Pipeline {
        mut obs,
        bus,
        github_port,
        ledger_port,
        awx_port,
        kube_port,
        _procs,
        _config,
        _ledger_dir,
        ..
    } = start_pipeline_with("e2e-operator", None, 120, DIRECT).await;
    let end = |env: &'static str| {
        move |e: &conveyor::Envelope| e.routing_key() == format!("deploy.completed.{env}")
    };

    // Bad input is refused with its reason, and changes nothing.
    for (args, says) in [
        (vec!["resume", "staging"], "staging is not paused"),
        (vec!["rollback", "staging"], "nothing to roll back to"),
        (
            vec!["deploy", "nowhere", "--image", "x/y:1"],
            "no environment \"nowhere\"",
        ),
        (
            vec!["deploy", "staging", "--image", "xchem/fragalysis-stack"],
            "name a tag",
        ),
    ] {
        let (ok, out) = cli_async(ledger_port, &args).await;
        assert!(!ok && out.contains(says), "{args:?}: {out}");
    }
    let ledger = ledger_port;
    let (ok, out) = tokio::task::spawn_blocking(move || {
        cli(
            ledger,
            EXPIRED_TOKEN,
            &["pause", "staging", "--reason", "x"],
        )
    })
    .await
    .unwrap();
    assert!(
        !ok && out.contains("401") && out.contains("expired"),
        "{out}"
    );

    // The pipeline deploys staging once; then the operator pauses it.
    push(github_port, "xchem/fragalysis-frontend", "staging", false).await;
    let first = obs
        .until(
            "the first staging deployment",
            Duration::from_secs(90),
            end("staging"),
        )
        .await;
    let (ok, out) = cli_async(ledger_port, &["pause", "staging", "--reason", "incident 7"]).await;
    assert!(ok && out.contains("paused staging"), "{out}");

    // A new push is held, not launched.
    push(github_port, "xchem/fragalysis-stack", "master", false).await;
    let held = obs
        .until("deploy.held.staging", Duration::from_secs(90), |e| {
            e.routing_key() == "deploy.held.staging"
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        awx_tags(awx_port, STAGING_TEMPLATE).await.len(),
        1,
        "no job while paused"
    );
    let (ok, out) = cli_async(ledger_port, &["status", "staging"]).await;
    assert!(
        ok && out.contains(&format!("PAUSED    by {OPERATOR}")) && out.contains("incident 7"),
        "{out}"
    );
    assert!(out.contains("held"), "{out}");

    // The resume runs it, once.
    let (ok, out) = cli_async(ledger_port, &["resume", "staging"]).await;
    assert!(ok && out.contains("resumed staging"), "{out}");
    obs.until("the held one completed", Duration::from_secs(90), |e| {
        e.correlation_id == held.correlation_id && e.routing_key() == "deploy.completed.staging"
    })
    .await;
    assert_eq!(
        awx_tags(awx_port, STAGING_TEMPLATE).await,
        ["latest", "latest"]
    );

    // A manual deployment of a chosen tag, then a rollback to the image before it.
    let (ok, out) = cli_async(
        ledger_port,
        &[
            "deploy",
            "staging",
            "--image",
            "xchem/fragalysis-stack:2026.12.1",
            "--reason",
            "try the release candidate",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let manual = obs
        .until("the manual one completed", Duration::from_secs(90), |e| {
            e.routing_key() == "deploy.completed.staging"
                && matches!(&e.event, conveyor::Event::DeployCompleted(c) if c.image.tag.as_deref() == Some("2026.12.1"))
        })
        .await;
    // The ledger records the completion on its own queue: the rollback reads the record.
    let status_url = format!("http://127.0.0.1:{ledger_port}/api/status/staging");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s: serde_json::Value = reqwest::get(&status_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["current"]["id"] == format!("{}.staging", manual.correlation_id) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = cli_async(
        ledger_port,
        &["rollback", "staging", "--reason", "the candidate 500s"],
    )
    .await;
    assert!(ok && out.contains("xchem/fragalysis-stack:latest"), "{out}");
    obs.until("the rollback completed", Duration::from_secs(90), |e| {
        e.routing_key() == "deploy.completed.staging"
            && matches!(&e.event, conveyor::Event::DeployCompleted(c) if c.operation.as_ref().is_some_and(|o| o.trigger == conveyor::events::Trigger::Rollback))
    })
    .await;
    assert_eq!(
        awx_tags(awx_port, STAGING_TEMPLATE).await,
        ["latest", "latest", "2026.12.1", "latest"],
        "the rollback's AWX job has the rolled-back tag"
    );

    // The Kubernetes executor: two digests, then a rollback patches the first one back.
    let (a, b) = (
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "b".repeat(64)),
    );
    for digest in [&a, &b] {
        let image = format!("xchem/fragalysis-stack@{digest}");
        let (ok, out) = cli_async(ledger_port, &["deploy", "direct", "--image", &image]).await;
        assert!(ok, "{out}");
        let id = out.split("deployment ").nth(1).unwrap().trim().to_owned();
        obs.until("the direct deployment", Duration::from_secs(60), |e| {
            format!("{}.direct", e.correlation_id) == id
                && e.routing_key() == "deploy.completed.direct"
        })
        .await;
        assert_eq!(
            statefulset_image(kube_port, "fragalysis-direct", "stack").await,
            image
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (ok, out) = loop {
        let (ok, out) = cli_async(ledger_port, &["rollback", "direct"]).await;
        if ok || tokio::time::Instant::now() > deadline {
            break (ok, out);
        }
        // The record may not have the second completion yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ok && out.contains(&a), "{out}");
    let id = out.split("deployment ").nth(1).unwrap().trim().to_owned();
    obs.until("the direct rollback", Duration::from_secs(60), |e| {
        format!("{}.direct", e.correlation_id) == id && e.routing_key() == "deploy.completed.direct"
    })
    .await;
    assert_eq!(
        statefulset_image(kube_port, "fragalysis-direct", "stack").await,
        format!("xchem/fragalysis-stack@{a}"),
        "patched back to the previous digest"
    );

    // GitHub heard the rollback of staging with who and why; the record has every action once.
    let record: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{github_port}/_sim/deployments"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let said: Vec<String> = record["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["description"].as_str().map(str::to_owned))
        .collect();
    assert!(
        said.iter()
            .any(|d| d == &format!("Rolled back by {OPERATOR}: the candidate 500s")),
        "{said:?}"
    );
    let actions_url = format!("http://127.0.0.1:{ledger_port}/api/actions");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let kinds = loop {
        let list: serde_json::Value = reqwest::get(&actions_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|a| {
                format!(
                    "{} {}",
                    a["action"].as_str().unwrap(),
                    a["environment"].as_str().unwrap()
                )
            })
            .collect();
        if kinds.len() >= 7 || tokio::time::Instant::now() > deadline {
            break kinds;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        kinds,
        [
            "pause staging",
            "resume staging",
            "deploy staging",
            "rollback staging",
            "deploy direct",
            "deploy direct",
            "rollback direct"
        ]
    );
    assert_ne!(first.correlation_id, held.correlation_id);
    drop(_procs);
    bus.delete_topology().await.unwrap();
}

/// Two environments that deploy on registry pushes rather than builds: one on release tags,
/// one on the branch image.
const IMAGES: &str = r#"
[[environment]]
name = "images"
repository = "xchem/fragalysis-stack"
on = { tag = '^\d+\.\d+\.\d+$' }
deploy_on = "image"
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-images", name = "stack" }

[[environment]]
name = "nightly"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
deploy_on = "image"
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-nightly", name = "stack" }
"#;

#[tokio::test]
async fn a_registry_push_deploys_by_digest_and_is_reported_on_the_tags_commit_or_not_at_all() {
    let Pipeline {
        mut obs,
        github_port,
        ledger_port,
        kube_port,
        ingest_port,
        _procs,
        _config,
        _ledger_dir,
        ..
    } = start_pipeline_with("e2e-image", None, 120, IMAGES).await;
    // The release tag exists on GitHub (its build deploys production, which deploys on
    // builds; the image environments ignore builds).
    push(github_port, "xchem/fragalysis-stack", "1.0.3", true).await;
    obs.until(
        "deploy.completed.production",
        Duration::from_secs(90),
        |e| e.routing_key() == "deploy.completed.production",
    )
    .await;
    assert!(
        !obs.seen
            .iter()
            .any(|e| e.routing_key().starts_with("deploy.requested.images")),
        "a build does not deploy an environment that deploys on images"
    );

    // The registry says: the release tag and the branch image were pushed; it knows neither's
    // commit.
    let (release, nightly) = (
        format!("sha256:{}", "1e".repeat(32)),
        format!("sha256:{}", "2f".repeat(32)),
    );
    let manifest = |tag: &str, digest: &str| {
        serde_json::json!({
            "id": format!("push-{tag}"),
            "timestamp": "2026-12-02T09:15:30.123456789Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "repository": "xchem/fragalysis-stack",
                "tag": tag,
            },
            "actor": {"name": "xchemci"},
        })
    };
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{ingest_port}/webhooks/registry/distribution"
        ))
        .header("x-conveyor-token", SECRETS[3].1)
        .json(&serde_json::json!({"events": [manifest("1.0.3", &release), manifest("latest", &nightly)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let completed = |env: &'static str| {
        move |e: &conveyor::Envelope| e.routing_key() == format!("deploy.completed.{env}")
    };
    let images = obs
        .until(
            "deploy.completed.images",
            Duration::from_secs(90),
            completed("images"),
        )
        .await;
    let nightly_done = obs
        .until(
            "deploy.completed.nightly",
            Duration::from_secs(90),
            completed("nightly"),
        )
        .await;
    let request = |corr: &str, env: &str| {
        obs.seen
            .iter()
            .find_map(|e| match &e.event {
                conveyor::Event::DeployRequested(r)
                    if e.correlation_id == corr && r.environment == env =>
                {
                    Some(r.clone())
                }
                _ => None,
            })
            .expect("the request")
    };
    let r = request(&images.correlation_id, "images");
    assert_eq!(
        (r.sha.as_str(), r.git_ref.full()),
        ("", "refs/tags/1.0.3".to_owned())
    );
    assert!(!r.operation.untracked);
    let n = request(&nightly_done.correlation_id, "nightly");
    assert!(
        n.operation.untracked,
        "a branch image without its commit: {n:?}"
    );

    // Deployed by digest: the exact image pushed, whatever the tag points at later.
    for (ns, digest) in [
        ("fragalysis-images", &release),
        ("fragalysis-nightly", &nightly),
    ] {
        let image = statefulset_image(kube_port, ns, "stack").await;
        assert!(image.ends_with(digest.as_str()), "{ns}: {image}");
    }

    // GitHub: the tag's deployment, on the commit GitHub resolved the tag to, with the whole
    // life and the commit status; nothing at all for the branch image (and no status ever
    // posted to an empty sha).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{github_port}/_sim/deployments"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let deployments = record["deployments"].as_array().unwrap();
        let of = |env: &'static str| deployments.iter().filter(move |d| d["environment"] == env);
        let production_sha = of("production").next().map(|d| d["sha"].clone());
        let tagged: Vec<&serde_json::Value> = of("images").collect();
        let states: Vec<&str> = tagged
            .iter()
            .flat_map(|d| d["statuses"].as_array().unwrap())
            .filter_map(|s| s["state"].as_str())
            .collect();
        let commit_states: Vec<(&str, &str)> = record["commit_statuses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["context"] == "conveyor/images")
            .map(|c| (c["sha"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        let done = tagged.len() == 1
            && tagged[0]["ref"] == "1.0.3"
            && Some(&tagged[0]["sha"]) == production_sha.as_ref()
            && states == ["queued", "in_progress", "success"]
            && commit_states.last().map(|c| c.1) == Some("success");
        if done {
            let sha = tagged[0]["sha"].as_str().unwrap();
            assert!(
                commit_states.iter().all(|c| c.0 == sha),
                "{commit_states:?}"
            );
            assert_eq!(of("nightly").count(), 0, "the branch image is untracked");
            assert!(
                record["commit_statuses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["sha"].as_str().is_some_and(|s| s.len() == 40)),
                "{record}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GitHub never showed the tag's deployment: {record}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The ledger: completed, with the tag and no made-up commit.
    let url = format!(
        "http://127.0.0.1:{ledger_port}/api/deployments/{}.images",
        images.correlation_id
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d: serde_json::Value = reqwest::get(&url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if d["status"] == "completed" {
            assert_eq!(d["git_ref"], "refs/tags/1.0.3", "{d}");
            assert!(
                d["sha"].is_null() && d["commits"] == serde_json::json!([]),
                "{d}"
            );
            assert!(d["image"].as_str().unwrap().ends_with(&release), "{d}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ledger: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No notifier looked for a GitHub deployment of the untracked one (it would retry, then
    // dead-letter, every later step).
    let looked: Vec<String> = _procs
        .log_lines()
        .into_iter()
        .filter(|(name, line)| {
            name.starts_with("notifier") && line.contains("no GitHub deployment")
        })
        .map(|(_, line)| line)
        .collect();
    assert!(looked.is_empty(), "{looked:#?}");
}
