//! Deployments, deployment statuses and commit statuses (contract §6–7): the records GitHub keeps
//! of what reached which environment, with its status codes — 201, 202 after an auto-merge, 409
//! when required contexts fail, 422 for validation (a description over 140 characters).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{GitHubSim, Paging, State_, api_error, error, next_id, page, ts, with_link};

/// The states a deployment status may take.
const DEPLOYMENT_STATES: &[&str] = &[
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];
/// The states a commit status may take.
const COMMIT_STATES: &[&str] = &["error", "failure", "pending", "success"];
/// GitHub's limit on a status description.
const MAX_DESCRIPTION: usize = 140;
/// GitHub's limit on statuses per sha and context.
const MAX_STATUSES_PER_CONTEXT: usize = 1000;

/// A deployment as the simulator holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// Id.
    pub id: u64,
    /// Repository `owner/name`.
    pub repository: String,
    /// The ref asked for.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit it resolved to.
    pub sha: String,
    /// `deploy` unless said otherwise.
    pub task: String,
    /// Environment name.
    pub environment: String,
    /// Payload as sent (object or string).
    pub payload: Value,
    /// Description.
    pub description: Option<String>,
    /// Whether it is a production environment.
    pub production_environment: bool,
    /// Whether it is transient.
    pub transient_environment: bool,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its statuses, oldest first.
    pub statuses: Vec<DeploymentStatus>,
}

/// One status of a deployment.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    /// Id.
    pub id: u64,
    /// `queued`, `in_progress`, `success`, …
    pub state: String,
    /// Description.
    pub description: String,
    /// `log_url` (or `target_url`).
    pub log_url: Option<String>,
    /// `environment_url`.
    pub environment_url: Option<String>,
    /// Set by GitHub itself (auto-inactivation), not by a client.
    pub automatic: bool,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A commit status.
#[derive(Debug, Clone, Serialize)]
pub struct CommitStatus {
    /// Id.
    pub id: u64,
    /// Repository `owner/name`.
    pub repository: String,
    /// Commit.
    pub sha: String,
    /// `pending`, `success`, `failure`, `error`.
    pub state: String,
    /// Context, e.g. `conveyor/staging`.
    pub context: String,
    /// Description.
    pub description: Option<String>,
    /// Link.
    pub target_url: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The simulator's deployment records.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub deployments: Vec<Deployment>,
    pub commit_statuses: Vec<CommitStatus>,
    /// Branches that are behind the default branch: the next deployment of one with
    /// `auto_merge` merges it and answers 202 instead of creating a deployment.
    pub behind: Vec<(String, String)>,
}

impl GitHubSim {
    /// Every deployment with its statuses, oldest first.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.lock().records.deployments.clone()
    }

    /// Every commit status, oldest first.
    pub fn commit_statuses(&self) -> Vec<CommitStatus> {
        self.lock().records.commit_statuses.clone()
    }

    /// Mark `branch` of `repo` as behind the default branch: the next deployment of it that
    /// asks for `auto_merge` (GitHub's default) gets a 202 and no deployment.
    pub fn set_behind_default(&self, repo: &str, branch: &str) {
        self.lock()
            .records
            .behind
            .push((repo.to_owned(), branch.to_owned()));
    }
}

fn validation(resource: &str, field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "field": field, "message": message}],
            "documentation_url": "https://docs.github.com/rest/deployments/deployments#create-a-deployment",
            "status": "422",
        })),
    )
        .into_response()
}

/// GitHub's 422 for a description over 140 characters, if `description` is one.
fn too_long(resource: &str, description: Option<&str>) -> Option<Response> {
    description
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        .then(|| {
            validation(
                resource,
                "description",
                "description is too long (maximum is 140 characters)",
            )
        })
}

/// A request body that must be a JSON object, or GitHub's 400.
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, super::ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(api_error(StatusCode::BAD_REQUEST, "Problems parsing JSON")),
    }
}

fn is_sha(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl State_ {
    fn deployment_json(&self, d: &Deployment) -> Value {
        let url = format!(
            "{}/repos/{}/deployments/{}",
            self.base_url, d.repository, d.id
        );
        json!({
            "url": url,
            "id": d.id,
            "node_id": format!("DE_{}", d.id),
            "sha": d.sha,
            "ref": d.git_ref,
            "task": d.task,
            "payload": d.payload,
            "original_environment": d.environment,
            "environment": d.environment,
            "description": d.description,
            "creator": super::shapes::token_owner(&self.base_url),
            "created_at": ts(d.created_at),
            "updated_at": ts(d.created_at),
            "performed_via_github_app": null,
            "statuses_url": format!("{url}/statuses"),
            "repository_url": format!("{}/repos/{}", self.base_url, d.repository),
            "transient_environment": d.transient_environment,
            "production_environment": d.production_environment,
        })
    }

    fn deployment_status_json(&self, d: &Deployment, st: &DeploymentStatus) -> Value {
        let url = format!(
            "{}/repos/{}/deployments/{}",
            self.base_url, d.repository, d.id
        );
        json!({
            "url": format!("{url}/statuses/{}", st.id),
            "id": st.id,
            "node_id": format!("DES_{}", st.id),
            "state": st.state,
            "creator": super::shapes::token_owner(&self.base_url),
            "description": st.description,
            "environment": d.environment,
            "target_url": st.log_url.clone().unwrap_or_default(),
            "log_url": st.log_url.clone().unwrap_or_default(),
            "environment_url": st.environment_url.clone().unwrap_or_default(),
            "deployment_url": url,
            "repository_url": format!("{}/repos/{}", self.base_url, d.repository),
            "created_at": ts(st.created_at),
            "updated_at": ts(st.created_at),
            "performed_via_github_app": null,
        })
    }

    /// The commit `git_ref` names in `repo`: a branch, a tag or a sha.
    fn resolve(&self, repo: &str, git_ref: &str) -> Option<String> {
        let r = self.repo(repo)?;
        let name = git_ref
            .strip_prefix("refs/heads/")
            .or_else(|| git_ref.strip_prefix("refs/tags/"))
            .unwrap_or(git_ref);
        r.branches
            .get(name)
            .or_else(|| r.tags.get(name))
            .cloned()
            .or_else(|| is_sha(git_ref).then(|| git_ref.to_owned()))
    }
}

#[derive(Deserialize)]
pub(super) struct DeploymentFilter {
    sha: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    task: Option<String>,
    environment: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

pub(super) async fn create_deployment(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let full = format!("{owner}/{repo}");
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let mut s = sim.lock();
    if s.repo(&full).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(git_ref) = body.get("ref").and_then(Value::as_str) else {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        )
        .into_response();
    };
    let Some(sha) = s.resolve(&full, git_ref) else {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("No ref found for: {git_ref}"),
        )
        .into_response();
    };
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(refused) = too_long("Deployment", description.as_deref()) {
        return refused;
    }
    if let Some(refused) = merge_or_checks(&mut s, &full, git_ref, &sha, &body) {
        return refused;
    }
    let environment = body
        .get("environment")
        .and_then(Value::as_str)
        .unwrap_or("production")
        .to_owned();
    let payload = match body.get("payload") {
        None | Some(Value::Null) => json!({}),
        Some(v @ (Value::Object(_) | Value::String(_))) => v.clone(),
        Some(_) => {
            return validation(
                "Deployment",
                "payload",
                "payload is not an object or string",
            );
        }
    };
    let id = next_id(&mut s);
    let deployment = Deployment {
        id,
        repository: full,
        git_ref: git_ref.to_owned(),
        sha,
        task: body
            .get("task")
            .and_then(Value::as_str)
            .unwrap_or("deploy")
            .to_owned(),
        production_environment: body
            .get("production_environment")
            .and_then(Value::as_bool)
            .unwrap_or(environment == "production"),
        transient_environment: body
            .get("transient_environment")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        environment,
        payload,
        description,
        created_at: OffsetDateTime::now_utc(),
        statuses: Vec::new(),
    };
    let answer = s.deployment_json(&deployment);
    s.records.deployments.push(deployment);
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// What GitHub answers instead of creating a deployment: 202 after auto-merging the default
/// branch into a ref behind it, or 409 while a required commit status is not `success`
/// (without `required_contexts`, every context reported on the commit is required).
fn merge_or_checks(
    s: &mut State_,
    full: &str,
    git_ref: &str,
    sha: &str,
    body: &serde_json::Map<String, Value>,
) -> Option<Response> {
    let auto_merge = body
        .get("auto_merge")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if auto_merge
        && let Some(pos) = s
            .records
            .behind
            .iter()
            .position(|(r, b)| r.eq_ignore_ascii_case(full) && b == git_ref)
    {
        s.records.behind.remove(pos);
        return Some(
            (
                StatusCode::ACCEPTED,
                Json(json!({"message": format!("Auto-merged main into {git_ref} on deployment.")})),
            )
                .into_response(),
        );
    }
    let required = body.get("required_contexts").and_then(Value::as_array);
    let latest_per_context = latest_statuses(&s.records.commit_statuses, full, sha);
    let failing: Vec<&str> = latest_per_context
        .iter()
        .filter(|c| {
            c.state != "success"
                && required.is_none_or(|req| req.iter().any(|r| r.as_str() == Some(&c.context)))
        })
        .map(|c| c.context.as_str())
        .collect();
    if !failing.is_empty() {
        return Some(
            api_error(
                StatusCode::CONFLICT,
                format!(
                    "Conflict: Commit status checks failed for {git_ref}. {}",
                    failing.join(", ")
                ),
            )
            .into_response(),
        );
    }
    None
}

pub(super) async fn list_deployments(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
    Query(f): Query<DeploymentFilter>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = sim.lock();
    if s.repo(&full).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    // Newest first, as GitHub lists them.
    let all: Vec<Value> = s
        .records
        .deployments
        .iter()
        .rev()
        .filter(|d| d.repository.eq_ignore_ascii_case(&full))
        .filter(|d| f.sha.as_ref().is_none_or(|x| *x == d.sha))
        .filter(|d| f.git_ref.as_ref().is_none_or(|x| *x == d.git_ref))
        .filter(|d| f.task.as_ref().is_none_or(|x| *x == d.task))
        .filter(|d| f.environment.as_ref().is_none_or(|x| *x == d.environment))
        .map(|d| s.deployment_json(d))
        .collect();
    let base = format!("{}/repos/{full}/deployments", s.base_url);
    let paging = Paging {
        per_page: f.per_page,
        page: f.page,
    };
    let (items, link) = page(&all, &paging, &base);
    with_link(Json(items).into_response(), link)
}

fn find<'a>(s: &'a State_, full: &str, id: &str) -> Option<&'a Deployment> {
    let id: u64 = id.parse().ok()?;
    s.records
        .deployments
        .iter()
        .find(|d| d.id == id && d.repository.eq_ignore_ascii_case(full))
}

pub(super) async fn get_deployment(
    State(sim): State<GitHubSim>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Response {
    let s = sim.lock();
    match find(&s, &format!("{owner}/{repo}"), &id) {
        Some(d) => Json(s.deployment_json(d)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

pub(super) async fn list_deployment_statuses(
    State(sim): State<GitHubSim>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    Query(paging): Query<Paging>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = sim.lock();
    let Some(d) = find(&s, &full, &id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let all: Vec<Value> = d
        .statuses
        .iter()
        .rev()
        .map(|st| s.deployment_status_json(d, st))
        .collect();
    let base = format!("{}/repos/{full}/deployments/{id}/statuses", s.base_url);
    let (items, link) = page(&all, &paging, &base);
    with_link(Json(items).into_response(), link)
}

pub(super) async fn create_deployment_status(
    State(sim): State<GitHubSim>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let full = format!("{owner}/{repo}");
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let mut s = sim.lock();
    let Some(index) =
        find(&s, &full, &id).and_then(|d| s.records.deployments.iter().position(|x| x.id == d.id))
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let state = body.get("state").and_then(Value::as_str).unwrap_or("");
    if !DEPLOYMENT_STATES.contains(&state) {
        return validation(
            "DeploymentStatus",
            "state",
            &format!("state is not included in the list ({state:?})"),
        );
    }
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(refused) = too_long("DeploymentStatus", Some(&description)) {
        return refused;
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let status_id = next_id(&mut s);
    let status = DeploymentStatus {
        id: status_id,
        state: state.to_owned(),
        description,
        log_url: text("log_url").or_else(|| text("target_url")),
        environment_url: text("environment_url"),
        automatic: false,
        created_at: OffsetDateTime::now_utc(),
    };
    // auto_inactive (default true): a success makes earlier non-transient, non-production
    // successful deployments to the same environment inactive.
    let auto_inactive = body
        .get("auto_inactive")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let (environment, production) = {
        let d = &s.records.deployments[index];
        (d.environment.clone(), d.production_environment)
    };
    if state == "success" && auto_inactive && !production {
        let mut inactive = Vec::new();
        for (i, d) in s.records.deployments.iter().enumerate() {
            let last_success = d.statuses.last().is_some_and(|st| st.state == "success");
            if i != index
                && d.repository.eq_ignore_ascii_case(&full)
                && d.environment == environment
                && !d.transient_environment
                && !d.production_environment
                && last_success
            {
                inactive.push(i);
            }
        }
        for i in inactive {
            let id = next_id(&mut s);
            s.records.deployments[i].statuses.push(DeploymentStatus {
                id,
                state: "inactive".into(),
                description: String::new(),
                log_url: None,
                environment_url: None,
                automatic: true,
                created_at: OffsetDateTime::now_utc(),
            });
        }
    }
    s.records.deployments[index].statuses.push(status.clone());
    let d = &s.records.deployments[index];
    let answer = s.deployment_status_json(d, &status);
    let mut r = (StatusCode::CREATED, Json(answer)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}/repos/{full}/deployments/{id}/statuses/{status_id}",
        s.base_url
    )) {
        r.headers_mut().insert("location", v);
    }
    r
}

/// The newest status of each context on `sha`.
fn latest_statuses<'a>(all: &'a [CommitStatus], repo: &str, sha: &str) -> Vec<&'a CommitStatus> {
    let mut latest: Vec<&CommitStatus> = Vec::new();
    for st in all.iter().rev() {
        if st.repository.eq_ignore_ascii_case(repo)
            && st.sha == sha
            && !latest
                .iter()
                .any(|l| l.context.eq_ignore_ascii_case(&st.context))
        {
            latest.push(st);
        }
    }
    latest
}

fn commit_status_json(s: &State_, st: &CommitStatus) -> Value {
    let creator = super::shapes::token_owner(&s.base_url);
    json!({
        "url": format!("{}/repos/{}/statuses/{}", s.base_url, st.repository, st.sha),
        "avatar_url": creator["avatar_url"],
        "id": st.id,
        "node_id": format!("SC_{}", st.id),
        "state": st.state,
        "description": st.description,
        "target_url": st.target_url,
        "context": st.context,
        "created_at": ts(st.created_at),
        "updated_at": ts(st.created_at),
        "creator": creator,
    })
}

pub(super) async fn create_commit_status(
    State(sim): State<GitHubSim>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let full = format!("{owner}/{repo}");
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let mut s = sim.lock();
    if s.repo(&full).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if !is_sha(&sha) {
        return validation("Status", "sha", &format!("No commit found for SHA: {sha}"));
    }
    let state = body.get("state").and_then(Value::as_str).unwrap_or("");
    if !COMMIT_STATES.contains(&state) {
        return validation(
            "Status",
            "state",
            &format!("state is not included in the list ({state:?})"),
        );
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let context = text("context").unwrap_or_else(|| "default".into());
    let description = text("description");
    if let Some(refused) = too_long("Status", description.as_deref()) {
        return refused;
    }
    let count = s
        .records
        .commit_statuses
        .iter()
        .filter(|c| c.sha == sha && c.context.eq_ignore_ascii_case(&context))
        .count();
    if count >= MAX_STATUSES_PER_CONTEXT {
        return validation(
            "Status",
            "context",
            "This SHA and context has reached the maximum number of statuses.",
        );
    }
    let id = next_id(&mut s);
    let status = CommitStatus {
        id,
        repository: full.clone(),
        sha: sha.clone(),
        state: state.to_owned(),
        context,
        description,
        target_url: text("target_url"),
        created_at: OffsetDateTime::now_utc(),
    };
    let answer = commit_status_json(&s, &status);
    s.records.commit_statuses.push(status);
    let mut r = (StatusCode::CREATED, Json(answer)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/repos/{full}/statuses/{sha}", s.base_url)) {
        r.headers_mut().insert("location", v);
    }
    r
}

pub(super) async fn combined_status(
    State(sim): State<GitHubSim>,
    Path((owner, repo, git_ref)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = sim.lock();
    let Some(sha) = s.resolve(&full, &git_ref) else {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("No commit found for SHA: {git_ref}"),
        )
        .into_response();
    };
    let latest = latest_statuses(&s.records.commit_statuses, &full, &sha);
    let state = if latest
        .iter()
        .any(|c| c.state == "error" || c.state == "failure")
    {
        "failure"
    } else if latest.is_empty() || latest.iter().any(|c| c.state == "pending") {
        "pending"
    } else {
        "success"
    };
    let statuses: Vec<Value> = latest.iter().map(|c| commit_status_json(&s, c)).collect();
    let repository = s
        .repo(&full)
        .map(|r| super::shapes::minimal_repository(&s.base_url, &r.full_name, r.id))
        .unwrap_or(Value::Null);
    Json(json!({
        "state": state,
        "sha": sha,
        "total_count": statuses.len(),
        "statuses": statuses,
        "repository": repository,
        "commit_url": format!("{}/repos/{full}/commits/{sha}", s.base_url),
        "url": format!("{}/repos/{full}/commits/{sha}/status", s.base_url),
    }))
    .into_response()
}

/// Not GitHub: the records as JSON, for tests and the demo in another process
/// (`GET /_sim/deployments`).
pub(super) async fn control_records(State(sim): State<GitHubSim>) -> Response {
    Json(json!({
        "deployments": sim.deployments(),
        "commit_statuses": sim.commit_statuses(),
    }))
    .into_response()
}
