//! Conformance of the GitHub simulator with what real clients expect of GitHub:
//! - every answer to every operation Conveyor uses validates against GitHub's published OpenAPI
//!   description (`@octokit/openapi`, checked by `clients/openapi.mjs` with ajv);
//! - PyGithub 2.10 drives it (`clients/pygithub.py`, in `scripts/ensure-pyclients`' virtualenv).
//!
//! Both need what `scripts/test` installs: the npm packages in `testdata/` and the virtualenv.

use std::path::{Path, PathBuf};

use conveyor_sim::github::{GitHubSim, WorkflowSpec};
use serde_json::{Value, json};

const TOKEN: &str = "ghp_conformance_0123456789";
const REPO: &str = "xchem/fragalysis-stack";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn served() -> (GitHubSim, String, u64) {
    let sim = GitHubSim::new(TOKEN);
    sim.add_repo(REPO);
    sim.set_branch(REPO, "master", SHA);
    sim.set_tag(REPO, "1.0.3", SHA);
    let workflow = sim.add_workflow(
        REPO,
        WorkflowSpec {
            name: "build main".into(),
            path: ".github/workflows/build-main.yaml".into(),
            dispatch_inputs: Some(vec!["be_image_tag".into(), "fe_branch".into()]),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    (sim, base, workflow)
}

/// Records each answer with the operation it answers.
struct Recorder {
    http: reqwest::Client,
    base: String,
    answers: Vec<Value>,
}

impl Recorder {
    async fn call(
        &mut self,
        operation: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("user-agent", "conveyor-conformance")
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let answer = r.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{operation}: not JSON ({e}): {text}"))
        };
        self.answers
            .push(json!({"operation": operation, "status": status, "body": body}));
        body
    }

    async fn get(&mut self, operation: &str, path: &str) -> Value {
        self.call(operation, reqwest::Method::GET, path, None).await
    }

    async fn post(&mut self, operation: &str, path: &str, body: Value) -> Value {
        self.call(operation, reqwest::Method::POST, path, Some(body))
            .await
    }
}

#[tokio::test]
async fn every_answer_conveyor_reads_validates_against_githubs_openapi_description() {
    let (sim, base, workflow) = served().await;
    let mut api = Recorder {
        http: reqwest::Client::new(),
        base,
        answers: Vec::new(),
    };
    let repo = format!("/repos/{REPO}");
    api.get("repos/get", &repo).await;
    api.get(
        "actions/list-repo-workflows",
        &format!("{repo}/actions/workflows"),
    )
    .await;
    api.get(
        "actions/get-workflow",
        &format!("{repo}/actions/workflows/{workflow}"),
    )
    .await;
    api.get(
        "actions/get-workflow",
        &format!("{repo}/actions/workflows/build-main.yaml"),
    )
    .await;
    let dispatches = format!("{repo}/actions/workflows/{workflow}/dispatches");
    api.post(
        "actions/create-workflow-dispatch",
        &dispatches,
        json!({"ref": "master", "inputs": {"be_image_tag": "1.2"}}),
    )
    .await;
    let details = api
        .post(
            "actions/create-workflow-dispatch",
            &dispatches,
            json!({"ref": "master", "inputs": {"fe_branch": "staging"}, "return_run_details": true}),
        )
        .await;
    let run = details["workflow_run_id"].as_u64().expect("a run id");
    api.post(
        "actions/create-workflow-dispatch",
        &dispatches,
        json!({"ref": "master", "inputs": {"nope": "1"}}),
    )
    .await;
    api.get(
        "actions/get-workflow-run",
        &format!("{repo}/actions/runs/{run}"),
    )
    .await;
    sim.start_run(run).await;
    api.get(
        "actions/get-workflow-run",
        &format!("{repo}/actions/runs/{run}"),
    )
    .await;
    sim.complete_run(run, "success").await;
    api.get(
        "actions/get-workflow-run",
        &format!("{repo}/actions/runs/{run}"),
    )
    .await;
    api.get(
        "actions/list-workflow-runs",
        &format!("{repo}/actions/workflows/{workflow}/runs?event=workflow_dispatch&branch=master"),
    )
    .await;
    api.get(
        "actions/list-workflow-runs-for-repo",
        &format!("{repo}/actions/runs?head_sha={SHA}"),
    )
    .await;
    api.get(
        "actions/get-workflow-run",
        &format!("{repo}/actions/runs/1"),
    )
    .await;

    let deployment = api
        .post(
            "repos/create-deployment",
            &format!("{repo}/deployments"),
            json!({"ref": SHA, "task": "deploy", "auto_merge": false, "required_contexts": [],
                   "environment": "staging", "production_environment": false,
                   "description": "Conveyor: xchem/fragalysis-stack:1.2",
                   "payload": {"conveyor": {"correlation_id": "c-1"}}}),
        )
        .await;
    let id = deployment["id"].as_u64().expect("a deployment id");
    api.post(
        "repos/create-deployment",
        &format!("{repo}/deployments"),
        json!({"ref": "1.0.3", "environment": "production", "auto_merge": false, "required_contexts": []}),
    )
    .await;
    api.get(
        "repos/list-deployments",
        &format!("{repo}/deployments?environment=staging&sha={SHA}"),
    )
    .await;
    api.get("repos/get-deployment", &format!("{repo}/deployments/{id}"))
        .await;
    for state in ["queued", "in_progress", "success"] {
        api.post(
            "repos/create-deployment-status",
            &format!("{repo}/deployments/{id}/statuses"),
            json!({"state": state, "description": format!("{state} by Conveyor"),
                   "log_url": "https://conveyor.example/deployments/c-1.staging",
                   "environment_url": "https://staging.example"}),
        )
        .await;
    }
    api.get(
        "repos/list-deployment-statuses",
        &format!("{repo}/deployments/{id}/statuses"),
    )
    .await;
    api.post(
        "repos/create-commit-status",
        &format!("{repo}/statuses/{SHA}"),
        json!({"state": "success", "context": "conveyor/staging", "description": "Deployed",
               "target_url": "https://conveyor.example/deployments/c-1.staging"}),
    )
    .await;
    api.post(
        "repos/create-commit-status",
        &format!("{repo}/statuses/{SHA}"),
        json!({"state": "nope", "context": "conveyor/staging"}),
    )
    .await;
    api.get(
        "repos/get-combined-status-for-ref",
        &format!("{repo}/commits/{SHA}/status"),
    )
    .await;
    api.get("rate-limit/get", "/rate_limit").await;
    api.get("repos/get", "/repos/xchem/no-such-repository")
        .await;

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&api.answers).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg(here().join("tests/clients/openapi.mjs"))
        .arg(file.path())
        .output()
        .expect("node runs (Node.js 20+; scripts/ensure-testdata installs the description)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the simulator's answers do not validate against GitHub's OpenAPI description:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{} answers checked", api.answers.len())),
        "{text}"
    );
}

/// The virtualenv `scripts/ensure-pyclients` made.
fn clients() -> PathBuf {
    std::env::var_os("CONVEYOR_PYCLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/conveyor/pyclients")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pygithub_drives_the_github_simulator() {
    let (sim, base, workflow) = served().await;
    let python = clients().join("bin/python");
    let out = tokio::process::Command::new(&python)
        .arg(here().join("tests/clients/pygithub.py"))
        .arg(&base)
        .arg(TOKEN)
        .arg(REPO)
        .arg(workflow.to_string())
        .arg(SHA)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); scripts/ensure-pyclients installs it",
                python.display()
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "PyGithub against the simulator:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What PyGithub did reached the simulator.
    assert!(!sim.runs().is_empty(), "PyGithub's dispatch made a run");
    assert!(text.contains("all steps passed"), "{text}");
}
