//! The GitHub REST client build-trigger needs: resolve a workflow, dispatch it, read runs —
//! with GitHub's rate-limit rules and the shared retry policy, and the token kept out of errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use conveyor::config::Secret;
use conveyor::github::GitHubApi;
pub use conveyor::github::GitHubError;
use conveyor::retry::Policy;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// A workflow in the list GitHub returns.
#[derive(Debug, Clone, Deserialize)]
pub struct Workflow {
    /// Numeric id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// File path, `.github/workflows/x.yaml`.
    pub path: String,
}

/// A workflow run, with the fields build-trigger reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    /// Run id.
    pub id: u64,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    pub status: conveyor::events::RunStatus,
    /// What triggered it.
    #[serde(default)]
    pub event: String,
    /// When GitHub created it.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Run {
    /// The run has not left the queue yet: its inputs could still be replaced by a newer run
    /// without wasting a runner.
    pub fn not_started(&self) -> bool {
        self.status.not_started()
    }
}

/// What a dispatch returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The run id (200 answer), or `None` (204 answer of older API versions).
    pub run_id: Option<u64>,
}

/// The client: one per process, cheap to share.
pub struct GitHub {
    api: GitHubApi,
    workflows: Mutex<HashMap<String, Workflow>>,
}

impl GitHub {
    /// A client for `base` (e.g. `https://api.github.com`) with `token`.
    pub fn new(base: &str, token: Secret, policy: Policy) -> Self {
        Self {
            api: GitHubApi::new(
                base,
                token,
                policy,
                concat!("conveyor-build-trigger/", env!("CARGO_PKG_VERSION")),
            ),
            workflows: Mutex::new(HashMap::new()),
        }
    }

    /// Find `name` (display name, file name or path) among `repo`'s workflows, reading every
    /// page of the list; cached for the life of the process.
    pub async fn workflow(&self, repo: &str, name: &str) -> Result<Workflow, GitHubError> {
        let key = format!("{repo}\n{name}");
        if let Some(w) = self.lock_cache().get(&key) {
            return Ok(w.clone());
        }
        let mut page = 1;
        loop {
            let path = format!("/repos/{repo}/actions/workflows?per_page=100&page={page}");
            let (headers, body) = self.api.call_retrying(Method::GET, &path).await?;
            let list: Vec<Workflow> =
                serde_json::from_value(body.get("workflows").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            let found = list.iter().find(|w| {
                w.name == name || w.path == name || w.path.rsplit('/').next() == Some(name)
            });
            if let Some(w) = found {
                self.lock_cache().insert(key, w.clone());
                return Ok(w.clone());
            }
            if !conveyor::github::has_next_page(&headers) || list.is_empty() {
                return Err(GitHubError::Rejected {
                    status: 404,
                    what: format!("GET /repos/{repo}/actions/workflows"),
                    message: format!("no workflow named {name:?} in {repo}"),
                });
            }
            page += 1;
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Workflow>> {
        conveyor::sync::lock(&self.workflows)
    }

    /// Forget a cached workflow (after a 404 on dispatch: it may have been renamed).
    pub fn forget_workflow(&self, repo: &str, name: &str) {
        self.lock_cache().remove(&format!("{repo}\n{name}"));
    }

    /// One dispatch POST, asking for the run id. Never retried here: a 5xx or timeout leaves
    /// it unknown whether the run was created, and only the caller can look for it.
    pub async fn dispatch_once(
        &self,
        repo: &str,
        workflow: &Workflow,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<Dispatched, GitHubError> {
        let body = json!({"ref": git_ref, "inputs": inputs, "return_run_details": true});
        let path = format!("/repos/{repo}/actions/workflows/{}/dispatches", workflow.id);
        let (status, _, answer) = self.api.call(Method::POST, &path, Some(&body)).await?;
        let run_id = if status == StatusCode::NO_CONTENT {
            None
        } else {
            answer.get("workflow_run_id").and_then(Value::as_u64)
        };
        Ok(Dispatched { run_id })
    }

    /// A run by id.
    pub async fn run(&self, repo: &str, id: u64) -> Result<Run, GitHubError> {
        let path = format!("/repos/{repo}/actions/runs/{id}");
        let (_, body) = self.api.call_retrying(Method::GET, &path).await?;
        serde_json::from_value(body).map_err(|e| GitHubError::Unavailable {
            what: format!("GET {path}"),
            message: format!("unexpected run body: {e}"),
        })
    }

    /// Dispatched runs of `workflow` created at or after `since` (newest first).
    pub async fn dispatched_runs_since(
        &self,
        repo: &str,
        workflow: &Workflow,
        since: OffsetDateTime,
    ) -> Result<Vec<Run>, GitHubError> {
        let since = since
            .replace_nanosecond(0)
            .unwrap_or(since)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let path = format!(
            "/repos/{repo}/actions/workflows/{}/runs?event=workflow_dispatch&created=%3E%3D{since}&per_page=100",
            workflow.id
        );
        let (_, body) = self.api.call_retrying(Method::GET, &path).await?;
        Ok(
            serde_json::from_value(body.get("workflow_runs").cloned().unwrap_or(Value::Null))
                .unwrap_or_default(),
        )
    }
}
