//! A GitHub simulator: the REST endpoints Conveyor calls (workflows, dispatch, runs), rate-limit
//! headers, scriptable faults, and runs that move queued → in_progress → completed and deliver
//! signed `workflow_run` webhooks, as `docs/simulators.md` (GitHub) describes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod deployments;
pub use deployments::{CommitStatus, Deployment, DeploymentStatus};

/// The answer GitHub gives for a workflow run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Created, waiting for a runner.
    Queued,
    /// Running.
    InProgress,
    /// Done; see the conclusion.
    Completed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Completed => "completed",
        }
    }
}

/// How runs move on their own (the demo); tests leave it `Manual` and step runs explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Runs move only when [`GitHubSim::start_run`] / [`GitHubSim::complete_run`] are called.
    Manual,
    /// Runs start after `queued` and complete (successfully) after `running`.
    Auto {
        /// Time in `queued`.
        queued: Duration,
        /// Time in `in_progress`.
        running: Duration,
    },
}

/// A fault the simulator answers with instead of the real response, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Secondary rate limit: 429 (or 403) with an optional `retry-after` in seconds.
    RateLimited {
        /// The status: 403 or 429.
        status: u16,
        /// `retry-after` seconds, if sent.
        retry_after: Option<u64>,
    },
    /// Primary limit exhausted: 403 with `x-ratelimit-remaining: 0` and a reset in `reset_in` s.
    Exhausted {
        /// Seconds until `x-ratelimit-reset`.
        reset_in: u64,
    },
    /// A server error with GitHub's JSON body.
    ServerError(u16),
    /// Answer normally, but only after this delay.
    Slow(Duration),
}

/// One request as the simulator saw it (the log tests assert on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Status answered.
    pub status: u16,
    /// When it arrived (simulator clock, tokio time).
    pub at: tokio::time::Instant,
    /// Request body (for dispatches).
    pub body: Option<Value>,
}

/// A workflow in a simulated repository.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    /// Display name (`name:`).
    pub name: String,
    /// File, e.g. `.github/workflows/build-main.yaml`.
    pub path: String,
    /// Declared `workflow_dispatch` inputs; `None` means the workflow has no dispatch trigger.
    pub dispatch_inputs: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Workflow {
    id: u64,
    spec: WorkflowSpec,
}

#[derive(Debug, Clone)]
struct Repo {
    id: u64,
    full_name: String,
    branches: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    workflows: Vec<Workflow>,
}

/// A workflow run as the simulator holds it.
#[derive(Debug, Clone)]
pub struct Run {
    /// Run id.
    pub id: u64,
    /// Repository `owner/name`.
    pub repository: String,
    /// Workflow id.
    pub workflow_id: u64,
    /// `push`, `workflow_dispatch`, `pull_request`, …
    pub event: String,
    /// Branch or tag name.
    pub head_branch: String,
    /// Commit.
    pub head_sha: String,
    /// Status.
    pub status: RunStatus,
    /// Conclusion once completed.
    pub conclusion: Option<String>,
    /// Inputs of a dispatch.
    pub inputs: BTreeMap<String, String>,
    /// Run number within the workflow.
    pub run_number: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// When it left the queue.
    pub run_started_at: Option<OffsetDateTime>,
}

/// One webhook delivery as GitHub keeps it: a redelivery sends the same GUID and body.
#[derive(Debug, Clone)]
struct Delivery {
    guid: String,
    action: String,
    body: Vec<u8>,
}

/// Where webhooks go.
#[derive(Debug, Clone)]
struct WebhookTarget {
    url: String,
    secret: String,
}

struct State_ {
    base_url: String,
    token: String,
    repos: Vec<Repo>,
    runs: Vec<Run>,
    next_id: u64,
    faults: crate::plumbing::FaultScript<Fault>,
    log: Vec<LoggedRequest>,
    webhook: Option<WebhookTarget>,
    pace: Pace,
    rate_limit: u64,
    rate_used: u64,
    rate_reset: OffsetDateTime,
    deliveries: Vec<(String, u16)>,
    /// Deliveries that got no 2xx: what GitHub lists as failed and offers to redeliver.
    failed_deliveries: Vec<Delivery>,
    run_details: bool,
    records: deployments::Records,
}

/// The simulator: cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct GitHubSim {
    state: Arc<Mutex<State_>>,
    http: reqwest::Client,
}

/// The message GitHub sends with a 404.
const NOT_FOUND_DOC: &str = "https://docs.github.com/rest";

impl GitHubSim {
    /// An empty simulated GitHub that accepts `token` as its only valid credential.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State_ {
                base_url: "http://github.invalid".into(),
                token: token.into(),
                repos: Vec::new(),
                runs: Vec::new(),
                next_id: 29_000_000_000,
                faults: Default::default(),
                log: Vec::new(),
                webhook: None,
                pace: Pace::Manual,
                rate_limit: 5000,
                rate_used: 0,
                rate_reset: OffsetDateTime::now_utc() + time::Duration::hours(1),
                deliveries: Vec::new(),
                failed_deliveries: Vec::new(),
                run_details: true,
                records: deployments::Records::default(),
            })),
            http: reqwest::Client::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State_> {
        conveyor::sync::lock(&self.state)
    }

    /// Add a repository with a default branch `main` at a fixed sha.
    pub fn add_repo(&self, full_name: &str) {
        let mut s = self.lock();
        let id = next_id(&mut s);
        let mut branches = BTreeMap::new();
        branches.insert("main".to_owned(), fake_sha(full_name, "main"));
        s.repos.push(Repo {
            id,
            full_name: full_name.to_owned(),
            branches,
            tags: BTreeMap::new(),
            workflows: Vec::new(),
        });
    }

    /// Create (or move) a branch.
    pub fn set_branch(&self, repo: &str, branch: &str, sha: &str) {
        if let Some(r) = self.lock().repo_mut(repo) {
            r.branches.insert(branch.to_owned(), sha.to_owned());
        }
    }

    /// Create a tag.
    pub fn set_tag(&self, repo: &str, tag: &str, sha: &str) {
        if let Some(r) = self.lock().repo_mut(repo) {
            r.tags.insert(tag.to_owned(), sha.to_owned());
        }
    }

    /// Add a workflow to a repository; returns its id.
    pub fn add_workflow(&self, repo: &str, spec: WorkflowSpec) -> u64 {
        let mut s = self.lock();
        let id = next_id(&mut s);
        if let Some(r) = s.repo_mut(repo) {
            r.workflows.push(Workflow { id, spec });
        }
        id
    }

    /// Deliver `workflow_run` webhooks to `url`, signed with `secret`.
    pub fn deliver_webhooks_to(&self, url: impl Into<String>, secret: impl Into<String>) {
        self.lock().webhook = Some(WebhookTarget {
            url: url.into(),
            secret: secret.into(),
        });
    }

    /// Behave like a GitHub that predates run ids in dispatch answers (before the 2026-02-19
    /// change, or GitHub Enterprise Server): always 204, whatever `return_run_details` says.
    pub fn without_run_details(&self) {
        self.lock().run_details = false;
    }

    /// Let runs move on their own.
    pub fn set_pace(&self, pace: Pace) {
        self.lock().pace = pace;
    }

    /// Answer the next request whose path contains `path_contains` (any request if `None`)
    /// with `fault`, once. Faults queue in order.
    pub fn inject(&self, path_contains: Option<&str>, fault: Fault) {
        self.lock().faults.push(None, path_contains, fault);
    }

    /// Answer the next `method` request whose path contains `path_contains` with `fault`, once.
    pub fn inject_on(&self, method: Method, path_contains: &str, fault: Fault) {
        self.lock()
            .faults
            .push(Some(method), Some(path_contains), fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Every run so far.
    pub fn runs(&self) -> Vec<Run> {
        self.lock().runs.clone()
    }

    /// Webhook deliveries so far: (action, HTTP status answered).
    pub fn deliveries(&self) -> Vec<(String, u16)> {
        self.lock().deliveries.clone()
    }

    /// A run of `workflow` (display name) triggered by a push of `git_ref` (a branch or tag
    /// name) at `sha`, as GitHub creates it when the workflow has `on: push`; delivers the
    /// `requested` webhook. Returns the run id.
    pub async fn push_run(&self, repo: &str, workflow: &str, head: &str, sha: &str) -> Option<u64> {
        let id = {
            let mut s = self.lock();
            let wf = s
                .repo(repo)?
                .workflows
                .iter()
                .find(|w| w.spec.name == workflow)?
                .id;
            s.create_run(repo, wf, "push", head, sha, BTreeMap::new())
        };
        self.deliver(id, "requested").await;
        Some(id)
    }

    /// A push of `head` (a branch, or a tag when `tag`) at `sha` to `repo`, and the run of its
    /// build workflow `workflow` that it triggers; with an automatic pace the run goes on to
    /// succeed. Returns the run id.
    pub async fn push_build(
        &self,
        repo: &str,
        workflow: &str,
        head: &str,
        tag: bool,
        sha: &str,
    ) -> Option<u64> {
        if tag {
            self.set_tag(repo, head, sha);
        } else {
            self.set_branch(repo, head, sha);
        }
        let id = self.push_run(repo, workflow, head, sha).await?;
        self.schedule(id);
        Some(id)
    }

    /// Move a queued run to `in_progress` and deliver the webhook.
    pub async fn start_run(&self, id: u64) {
        let moved = {
            let mut s = self.lock();
            match s.runs.iter_mut().find(|r| r.id == id) {
                Some(r) if r.status == RunStatus::Queued => {
                    let now = OffsetDateTime::now_utc();
                    r.status = RunStatus::InProgress;
                    r.run_started_at = Some(now);
                    r.updated_at = now;
                    true
                }
                _ => false,
            }
        };
        if moved {
            self.deliver(id, "in_progress").await;
        }
    }

    /// Complete a run with `conclusion` (`success`, `failure`, `cancelled`, …), starting it first
    /// if it is still queued, and deliver the webhooks.
    pub async fn complete_run(&self, id: u64, conclusion: &str) {
        self.start_run(id).await;
        let moved = {
            let mut s = self.lock();
            match s.runs.iter_mut().find(|r| r.id == id) {
                Some(r) if r.status != RunStatus::Completed => {
                    r.status = RunStatus::Completed;
                    r.conclusion = Some(conclusion.to_owned());
                    r.updated_at = OffsetDateTime::now_utc();
                    true
                }
                _ => false,
            }
        };
        if moved {
            self.deliver(id, "completed").await;
        }
    }

    /// Serve the REST API on `listener` until `shutdown` resolves. The base URL other parts
    /// see (run URLs) is the listener's address.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        self.lock().base_url = format!("http://{addr}");
        crate::plumbing::serve(self.router(), listener, shutdown).await
    }

    /// The REST router (for serving it yourself).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/workflows",
                get(list_workflows),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                post(dispatch),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
                get(list_workflow_runs),
            )
            .route("/repos/{owner}/{repo}/actions/runs", get(list_runs))
            .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
            .route(
                "/repos/{owner}/{repo}/deployments",
                get(deployments::list_deployments).post(deployments::create_deployment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}",
                get(deployments::get_deployment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                get(deployments::list_deployment_statuses)
                    .post(deployments::create_deployment_status),
            )
            .route(
                "/repos/{owner}/{repo}/statuses/{sha}",
                post(deployments::create_commit_status),
            )
            .route(
                "/repos/{owner}/{repo}/commits/{git_ref}/status",
                get(deployments::combined_status),
            )
            .route("/rate_limit", get(rate_limit))
            // Faults, authentication, rate-limit headers and the request log, for every API
            // route (the control endpoint below is not GitHub's and is not gated).
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                gate_layer,
            ))
            .route("/_sim/push", post(control_push))
            .route("/_sim/deployments", get(deployments::control_records))
            .fallback(not_found)
            .layer(axum::middleware::from_fn(
                crate::plumbing::finish_what_was_received,
            ))
            .with_state(self.clone())
    }

    async fn deliver(&self, id: u64, action: &str) {
        let body = {
            let s = self.lock();
            if s.webhook.is_none() {
                return;
            }
            let Some(run) = s.runs.iter().find(|r| r.id == id) else {
                return;
            };
            let Some(repo) = s.repo(&run.repository) else {
                return;
            };
            let Some(wf) = repo.workflows.iter().find(|w| w.id == run.workflow_id) else {
                return;
            };
            let body = json!({
                "action": action,
                "workflow_run": s.run_json(run),
                "workflow": s.workflow_json(repo, wf),
                "repository": s.repo_json(repo),
                "sender": {"login": "conveyor-sim", "id": 1, "type": "User"},
            });
            serde_json::to_vec(&body).unwrap_or_default()
        };
        let delivery = Delivery {
            guid: uuid::Uuid::now_v7().to_string(),
            action: action.to_owned(),
            body,
        };
        self.send(delivery).await;
    }

    /// Send one delivery; a delivery that gets no 2xx is kept for [`GitHubSim::redeliver_failed`].
    async fn send(&self, delivery: Delivery) -> u16 {
        let Some(target) = self.lock().webhook.clone() else {
            return 0;
        };
        let signature = conveyor::signature::sign(target.secret.as_bytes(), &delivery.body);
        let answer = self
            .http
            .post(&target.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/conveyor-sim")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", &delivery.guid)
            .header("x-github-hook-id", "1")
            .header("x-hub-signature-256", signature)
            .body(delivery.body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let status = match answer {
            Ok(r) => r.status().as_u16(),
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery failed");
                0
            }
        };
        let mut s = self.lock();
        s.deliveries.push((delivery.action.clone(), status));
        if !(200..300).contains(&status) {
            s.failed_deliveries.push(delivery);
        }
        status
    }

    /// Deliveries that got no 2xx so far (GitHub's "failed" list), not yet redelivered.
    pub fn failed_deliveries(&self) -> usize {
        self.lock().failed_deliveries.len()
    }

    /// Redeliver every failed delivery once, with its original GUID and body, as an operator
    /// does from the webhook's "Recent Deliveries" page (GitHub never redelivers by itself).
    /// Returns how many got a 2xx this time; the others stay failed.
    pub async fn redeliver_failed(&self) -> usize {
        let failed = std::mem::take(&mut self.lock().failed_deliveries);
        let mut ok = 0;
        for delivery in failed {
            if (200..300).contains(&self.send(delivery).await) {
                ok += 1;
            }
        }
        ok
    }

    fn schedule(&self, id: u64) {
        let Pace::Auto { queued, running } = self.lock().pace else {
            return;
        };
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(queued).await;
            sim.start_run(id).await;
            tokio::time::sleep(running).await;
            sim.complete_run(id, "success").await;
        });
    }
}

fn next_id(s: &mut State_) -> u64 {
    s.next_id += 1;
    s.next_id
}

/// A deterministic fake commit sha.
pub fn fake_sha(repo: &str, seed: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{repo}@{seed}")))[..40].to_owned()
}

fn ts(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl State_ {
    fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos
            .iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(name))
    }

    fn repo_mut(&mut self, name: &str) -> Option<&mut Repo> {
        self.repos
            .iter_mut()
            .find(|r| r.full_name.eq_ignore_ascii_case(name))
    }

    fn create_run(
        &mut self,
        repo: &str,
        workflow_id: u64,
        event: &str,
        head: &str,
        sha: &str,
        inputs: BTreeMap<String, String>,
    ) -> u64 {
        let id = next_id(self);
        let run_number = self
            .runs
            .iter()
            .filter(|r| r.workflow_id == workflow_id)
            .count() as u64
            + 1;
        let now = OffsetDateTime::now_utc();
        self.runs.push(Run {
            id,
            repository: repo.to_owned(),
            workflow_id,
            event: event.to_owned(),
            head_branch: head.to_owned(),
            head_sha: sha.to_owned(),
            status: RunStatus::Queued,
            conclusion: None,
            inputs,
            run_number,
            created_at: now,
            updated_at: now,
            run_started_at: None,
        });
        id
    }

    fn repo_json(&self, r: &Repo) -> Value {
        let (owner, name) = r.full_name.split_once('/').unwrap_or(("", &r.full_name));
        json!({
            "id": r.id,
            "node_id": format!("R_{}", r.id),
            "name": name,
            "full_name": r.full_name,
            "private": false,
            "owner": {"login": owner, "id": r.id + 1, "type": "Organization"},
            "html_url": format!("https://github.com/{}", r.full_name),
            "fork": false,
            "url": format!("{}/repos/{}", self.base_url, r.full_name),
            "default_branch": "main",
        })
    }

    fn workflow_json(&self, r: &Repo, w: &Workflow) -> Value {
        let file = w.spec.path.rsplit('/').next().unwrap_or(&w.spec.path);
        json!({
            "id": w.id,
            "node_id": format!("W_{}", w.id),
            "name": w.spec.name,
            "path": w.spec.path,
            "state": "active",
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "url": format!("{}/repos/{}/actions/workflows/{}", self.base_url, r.full_name, w.id),
            "html_url": format!("https://github.com/{}/blob/main/{}", r.full_name, w.spec.path),
            "badge_url": format!("https://github.com/{}/workflows/{file}/badge.svg", r.full_name),
        })
    }

    fn run_json(&self, run: &Run) -> Value {
        let repo = self.repo(&run.repository);
        let wf = repo.and_then(|r| r.workflows.iter().find(|w| w.id == run.workflow_id));
        let name = wf.map(|w| w.spec.name.clone()).unwrap_or_default();
        let path = wf.map(|w| w.spec.path.clone()).unwrap_or_default();
        let url = format!(
            "{}/repos/{}/actions/runs/{}",
            self.base_url, run.repository, run.id
        );
        let repo_json = repo.map(|r| self.repo_json(r)).unwrap_or(Value::Null);
        json!({
            "id": run.id,
            "name": name,
            "node_id": format!("WFR_{}", run.id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": path,
            "display_title": name,
            "run_number": run.run_number,
            "event": run.event,
            "status": run.status.as_str(),
            "conclusion": run.conclusion,
            "workflow_id": run.workflow_id,
            "url": url,
            "html_url": format!("https://github.com/{}/actions/runs/{}", run.repository, run.id),
            "pull_requests": [],
            "created_at": ts(run.created_at),
            "updated_at": ts(run.updated_at),
            "actor": {"login": "conveyor-sim", "id": 1},
            "run_attempt": 1,
            "run_started_at": run.run_started_at.map(ts),
            "jobs_url": format!("{url}/jobs"),
            "logs_url": format!("{url}/logs"),
            "cancel_url": format!("{url}/cancel"),
            "rerun_url": format!("{url}/rerun"),
            "previous_attempt_url": null,
            "workflow_url": format!("{}/repos/{}/actions/workflows/{}", self.base_url, run.repository, run.workflow_id),
            "head_commit": {"id": run.head_sha, "message": "simulated commit", "timestamp": ts(run.created_at)},
            "repository": repo_json.clone(),
            "head_repository": repo_json,
        })
    }

    fn find_workflow(&self, repo: &Repo, key: &str) -> Option<Workflow> {
        repo.workflows
            .iter()
            .find(|w| {
                w.id.to_string() == key
                    || w.spec.path.rsplit('/').next() == Some(key)
                    || w.spec.path == key
            })
            .cloned()
    }
}

async fn gate_layer(
    State(sim): State<GitHubSim>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    // The log keeps request bodies (dispatch inputs) for tests to assert on.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let logged: Option<Value> = serde_json::from_slice(&bytes).ok();
    match Gate::check(
        &sim,
        parts.method.clone(),
        &parts.uri,
        &parts.headers,
        logged,
    )
    .await
    {
        Err(r) => r,
        Ok(gate) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            gate.finish(next.run(req).await)
        }
    }
}

/// A GitHub error body.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": NOT_FOUND_DOC,
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// An error answer, kept small until it becomes a response.
pub(crate) struct ApiError(StatusCode, String);

fn api_error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// What every request goes through: the fault script, authentication, the user agent, the
/// rate limit, and the request log.
struct Gate {
    sim: GitHubSim,
    method: Method,
    uri: String,
    body: Option<Value>,
}

impl Gate {
    async fn check(
        sim: &GitHubSim,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Option<Value>,
    ) -> Result<Self, Response> {
        let gate = Gate {
            sim: sim.clone(),
            method,
            uri: uri.to_string(),
            body,
        };
        let fault = {
            let mut s = sim.lock();
            s.faults.take(&gate.method, uri.path())
        };
        if let Some(fault) = fault {
            match fault {
                Fault::Slow(d) => tokio::time::sleep(d).await,
                Fault::RateLimited {
                    status,
                    retry_after,
                } => {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
                    let mut r = error(
                        status,
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    );
                    if let Some(secs) = retry_after {
                        r.headers_mut()
                            .insert("retry-after", HeaderValue::from(secs));
                    }
                    return Err(gate.finish(r));
                }
                Fault::Exhausted { reset_in } => {
                    let mut r = error(
                        StatusCode::FORBIDDEN,
                        "API rate limit exceeded for user ID 1.",
                    );
                    let reset = OffsetDateTime::now_utc().unix_timestamp() + reset_in as i64;
                    let h = r.headers_mut();
                    h.insert("x-ratelimit-remaining", HeaderValue::from(0));
                    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
                    return Err(gate.finish(r));
                }
                Fault::ServerError(code) => {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                    return Err(gate.finish(error(status, "Server Error")));
                }
            }
        }
        if headers.get("user-agent").is_none() {
            return Err(gate.finish(error(
                StatusCode::FORBIDDEN,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
            )));
        }
        let token = sim.lock().token.clone();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ok = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("token "))
            == Some(token.as_str());
        if !ok {
            return Err(gate.finish(error(StatusCode::UNAUTHORIZED, "Bad credentials")));
        }
        Ok(gate)
    }

    /// Add the rate-limit headers and log the request.
    fn finish(self, mut response: Response) -> Response {
        let mut s = self.sim.lock();
        let now = OffsetDateTime::now_utc();
        if now >= s.rate_reset {
            s.rate_used = 0;
            s.rate_reset = now + time::Duration::hours(1);
        }
        s.rate_used += 1;
        let h = response.headers_mut();
        if !h.contains_key("x-ratelimit-remaining") {
            h.insert("x-ratelimit-limit", HeaderValue::from(s.rate_limit));
            h.insert(
                "x-ratelimit-remaining",
                HeaderValue::from(s.rate_limit.saturating_sub(s.rate_used)),
            );
            h.insert("x-ratelimit-used", HeaderValue::from(s.rate_used));
            h.insert(
                "x-ratelimit-reset",
                HeaderValue::from(s.rate_reset.unix_timestamp()),
            );
        }
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        h.insert(
            "x-github-api-version-selected",
            HeaderValue::from_static("2022-11-28"),
        );
        s.log.push(LoggedRequest {
            method: self.method.to_string(),
            uri: self.uri,
            status: response.status().as_u16(),
            at: tokio::time::Instant::now(),
            body: self.body,
        });
        response
    }
}

#[derive(Deserialize)]
pub(crate) struct Paging {
    per_page: Option<usize>,
    page: Option<usize>,
}

/// Slice `items` for `paging` and build the `Link` header GitHub sends.
fn page<T: Clone>(items: &[T], paging: &Paging, base: &str) -> (Vec<T>, Option<String>) {
    let per_page = paging.per_page.unwrap_or(30).clamp(1, 100);
    let page = paging.page.unwrap_or(1).max(1);
    let start = (page - 1) * per_page;
    let slice = items.iter().skip(start).take(per_page).cloned().collect();
    let last = items.len().div_ceil(per_page).max(1);
    let mut links = Vec::new();
    let sep = if base.contains('?') { '&' } else { '?' };
    if page < last {
        links.push(format!(
            "<{base}{sep}per_page={per_page}&page={}>; rel=\"next\"",
            page + 1
        ));
        links.push(format!(
            "<{base}{sep}per_page={per_page}&page={last}>; rel=\"last\""
        ));
    }
    if page > 1 {
        links.push(format!(
            "<{base}{sep}per_page={per_page}&page=1>; rel=\"first\""
        ));
        links.push(format!(
            "<{base}{sep}per_page={per_page}&page={}>; rel=\"prev\"",
            page - 1
        ));
    }
    (slice, (!links.is_empty()).then(|| links.join(", ")))
}

fn with_link(mut r: Response, link: Option<String>) -> Response {
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert("link", l);
    }
    r
}

async fn list_workflows(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
    Query(paging): Query<Paging>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = sim.lock();
    match s.repo(&full) {
        None => error(StatusCode::NOT_FOUND, "Not Found"),
        Some(r) => {
            let all: Vec<Value> = r.workflows.iter().map(|w| s.workflow_json(r, w)).collect();
            let base = format!("{}/repos/{full}/actions/workflows", s.base_url);
            let (items, link) = page(&all, &paging, &base);
            with_link(
                Json(json!({"total_count": all.len(), "workflows": items})).into_response(),
                link,
            )
        }
    }
}

#[derive(Deserialize)]
struct DispatchBody {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    return_run_details: Option<bool>,
}

async fn dispatch(
    State(sim): State<GitHubSim>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let full = format!("{owner}/{repo}");
    let outcome = {
        let mut s = sim.lock();
        dispatch_locked(&mut s, &full, &workflow, parsed)
    };
    match outcome {
        Err(r) => r.into_response(),
        Ok((id, details)) => {
            sim.schedule(id);
            let deliver = sim.clone();
            tokio::spawn(async move { deliver.deliver(id, "requested").await });
            if details {
                let base = sim.lock().base_url.clone();
                Json(json!({
                    "workflow_run_id": id,
                    "run_url": format!("{base}/repos/{full}/actions/runs/{id}"),
                    "html_url": format!("https://github.com/{full}/actions/runs/{id}"),
                }))
                .into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
    }
}

fn dispatch_locked(
    s: &mut State_,
    full: &str,
    workflow: &str,
    body: Option<Value>,
) -> Result<(u64, bool), ApiError> {
    let repo = s
        .repo(full)
        .cloned()
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "Not Found"))?;
    let wf = s
        .find_workflow(&repo, workflow)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "Not Found"))?;
    let body: DispatchBody = body
        .and_then(|b| serde_json::from_value(b).ok())
        .ok_or_else(|| api_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))?;
    let Some(git_ref) = body.git_ref else {
        return Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        ));
    };
    let Some(declared) = &wf.spec.dispatch_inputs else {
        return Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Workflow does not have 'workflow_dispatch' trigger",
        ));
    };
    let short = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(&git_ref);
    let sha = repo
        .branches
        .get(short)
        .or_else(|| repo.tags.get(short))
        .cloned()
        .ok_or_else(|| {
            api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("No ref found for: {git_ref}"),
            )
        })?;
    let inputs = body.inputs.unwrap_or_default();
    if inputs.len() > 25 {
        return Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "you may only define up to 25 `inputs` for a `workflow_dispatch` event",
        ));
    }
    let unexpected: Vec<&String> = inputs.keys().filter(|k| !declared.contains(k)).collect();
    if !unexpected.is_empty() {
        return Err(api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Unexpected inputs provided: {unexpected:?}"),
        ));
    }
    let inputs = inputs
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    let id = s.create_run(
        &repo.full_name,
        wf.id,
        "workflow_dispatch",
        short,
        &sha,
        inputs,
    );
    Ok((id, s.run_details && body.return_run_details == Some(true)))
}

#[derive(Deserialize)]
struct RunFilter {
    event: Option<String>,
    status: Option<String>,
    branch: Option<String>,
    head_sha: Option<String>,
    created: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

fn run_matches(run: &Run, f: &RunFilter) -> bool {
    if f.event.as_deref().is_some_and(|e| e != run.event) {
        return false;
    }
    if f.branch.as_deref().is_some_and(|b| b != run.head_branch) {
        return false;
    }
    if f.head_sha.as_deref().is_some_and(|h| h != run.head_sha) {
        return false;
    }
    if let Some(status) = f.status.as_deref() {
        let ok = status == run.status.as_str() || run.conclusion.as_deref() == Some(status);
        if !ok {
            return false;
        }
    }
    if let Some(created) = f.created.as_deref() {
        // Search syntax: `>=T`, `>T`, `<=T`, `<T`, `A..B`, or a date/time.
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
        let c = run.created_at;
        let ok = if let Some(t) = created.strip_prefix(">=") {
            at(t).is_none_or(|t| c >= t)
        } else if let Some(t) = created.strip_prefix('>') {
            at(t).is_none_or(|t| c > t)
        } else if let Some(t) = created.strip_prefix("<=") {
            at(t).is_none_or(|t| c <= t)
        } else if let Some(t) = created.strip_prefix('<') {
            at(t).is_none_or(|t| c < t)
        } else if let Some((a, b)) = created.split_once("..") {
            at(a).is_none_or(|a| c >= a) && at(b).is_none_or(|b| c <= b)
        } else {
            true
        };
        if !ok {
            return false;
        }
    }
    true
}

fn list_runs_of(sim: &GitHubSim, full: &str, workflow: Option<&str>, f: &RunFilter) -> Response {
    let s = sim.lock();
    let Some(repo) = s.repo(full) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let wf_id = match workflow {
        None => None,
        Some(key) => match s.find_workflow(repo, key) {
            Some(w) => Some(w.id),
            None => return error(StatusCode::NOT_FOUND, "Not Found"),
        },
    };
    // Newest first, as GitHub lists them.
    let runs: Vec<Value> = s
        .runs
        .iter()
        .rev()
        .filter(|r| r.repository.eq_ignore_ascii_case(full))
        .filter(|r| wf_id.is_none_or(|w| r.workflow_id == w))
        .filter(|r| run_matches(r, f))
        .map(|r| s.run_json(r))
        .collect();
    let base = format!("{}/repos/{full}/actions/runs", s.base_url);
    let paging = Paging {
        per_page: f.per_page,
        page: f.page,
    };
    let (items, link) = page(&runs, &paging, &base);
    with_link(
        Json(json!({"total_count": runs.len(), "workflow_runs": items})).into_response(),
        link,
    )
}

async fn list_runs(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
    Query(filter): Query<RunFilter>,
) -> Response {
    list_runs_of(&sim, &format!("{owner}/{repo}"), None, &filter)
}

async fn list_workflow_runs(
    State(sim): State<GitHubSim>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(filter): Query<RunFilter>,
) -> Response {
    list_runs_of(&sim, &format!("{owner}/{repo}"), Some(&workflow), &filter)
}

async fn get_run(
    State(sim): State<GitHubSim>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = sim.lock();
    let run = id.parse::<u64>().ok().and_then(|id| {
        s.runs
            .iter()
            .find(|r| r.id == id && r.repository.eq_ignore_ascii_case(&full))
    });
    match run {
        Some(r) => Json(s.run_json(r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn rate_limit(State(sim): State<GitHubSim>) -> Response {
    let body = {
        let s = sim.lock();
        json!({"resources": {"core": {
            "limit": s.rate_limit,
            "remaining": s.rate_limit.saturating_sub(s.rate_used),
            "used": s.rate_used,
            "reset": s.rate_reset.unix_timestamp(),
        }}})
    };
    Json(body).into_response()
}

#[derive(Deserialize)]
struct ControlPush {
    repository: String,
    workflow: String,
    head: String,
    #[serde(default)]
    tag: bool,
}

/// Not GitHub: the simulator's control endpoint, so a test or the demo in another process can
/// make a push happen (`POST /_sim/push {"repository","workflow","head","tag"}`).
async fn control_push(State(sim): State<GitHubSim>, Json(push): Json<ControlPush>) -> Response {
    let sha = fake_sha(
        &push.repository,
        &format!("{}-{}", push.head, sim.runs().len()),
    );
    match sim
        .push_build(&push.repository, &push.workflow, &push.head, push.tag, &sha)
        .await
    {
        Some(id) => Json(json!({"run_id": id, "head_sha": sha})).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such repository or workflow"),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}
