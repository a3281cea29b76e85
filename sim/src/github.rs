//! A GitHub simulator: the REST endpoints Conveyor calls (workflows, dispatch, runs), rate-limit
//! headers, scriptable faults, and runs that move queued → in_progress → completed and deliver
//! signed `workflow_run` webhooks, as `docs/simulators.md` (GitHub) describes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod deployments;
mod http;
mod shapes;
mod store;
mod webhooks;

pub use deployments::{CommitStatus, Deployment, DeploymentStatus};
use http::*;

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
            .route("/repos/{owner}/{repo}", get(get_repo))
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}",
                get(get_workflow),
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
