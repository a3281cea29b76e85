//! The REST surface: authentication and rate limits, workflows, dispatches, runs, and the
//! simulator's control endpoints, with GitHub's status codes and error bodies.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

pub(super) async fn gate_layer(
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
pub(super) fn error(status: StatusCode, message: &str) -> Response {
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

pub(super) fn api_error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

/// What every request goes through: the fault script, authentication, the user agent, the
/// rate limit, and the request log.
pub(super) struct Gate {
    pub(super) sim: GitHubSim,
    pub(super) method: Method,
    pub(super) uri: String,
    pub(super) body: Option<Value>,
}

impl Gate {
    pub(super) async fn check(
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
    pub(super) fn finish(self, mut response: Response) -> Response {
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
    pub(super) per_page: Option<usize>,
    pub(super) page: Option<usize>,
}

/// Slice `items` for `paging` and build the `Link` header GitHub sends.
pub(super) fn page<T: Clone>(items: &[T], paging: &Paging, base: &str) -> (Vec<T>, Option<String>) {
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

pub(super) fn with_link(mut r: Response, link: Option<String>) -> Response {
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert("link", l);
    }
    r
}

pub(super) async fn list_workflows(
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
pub(super) struct DispatchBody {
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    #[serde(default)]
    pub(super) inputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub(super) return_run_details: Option<bool>,
}

pub(super) async fn dispatch(
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

pub(super) fn dispatch_locked(
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
pub(super) struct RunFilter {
    pub(super) event: Option<String>,
    pub(super) status: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) head_sha: Option<String>,
    pub(super) created: Option<String>,
    pub(super) per_page: Option<usize>,
    pub(super) page: Option<usize>,
}

pub(super) fn run_matches(run: &Run, f: &RunFilter) -> bool {
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

pub(super) fn list_runs_of(
    sim: &GitHubSim,
    full: &str,
    workflow: Option<&str>,
    f: &RunFilter,
) -> Response {
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

pub(super) async fn list_runs(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
    Query(filter): Query<RunFilter>,
) -> Response {
    list_runs_of(&sim, &format!("{owner}/{repo}"), None, &filter)
}

pub(super) async fn list_workflow_runs(
    State(sim): State<GitHubSim>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(filter): Query<RunFilter>,
) -> Response {
    list_runs_of(&sim, &format!("{owner}/{repo}"), Some(&workflow), &filter)
}

pub(super) async fn get_run(
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

/// `GET /rate_limit` (`rate-limit-overview`): `rate` is the `core` limit again.
pub(super) async fn rate_limit(State(sim): State<GitHubSim>) -> Response {
    let body = {
        let s = sim.lock();
        let core = json!({
            "limit": s.rate_limit,
            "remaining": s.rate_limit.saturating_sub(s.rate_used),
            "used": s.rate_used,
            "reset": s.rate_reset.unix_timestamp(),
        });
        let other = |limit: u64| {
            json!({"limit": limit, "remaining": limit, "used": 0,
                                        "reset": s.rate_reset.unix_timestamp()})
        };
        json!({"resources": {"core": core, "search": other(30), "graphql": other(5000),
                             "integration_manifest": other(5000)},
               "rate": core})
    };
    Json(body).into_response()
}

/// `GET /repos/{owner}/{repo}` (`repos/get`).
pub(super) async fn get_repo(
    State(sim): State<GitHubSim>,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let s = sim.lock();
    match s.repo(&format!("{owner}/{repo}")) {
        Some(r) => Json(s.full_repo_json(r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}`: by id or file name
/// (`actions/get-workflow`).
pub(super) async fn get_workflow(
    State(sim): State<GitHubSim>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
) -> Response {
    let s = sim.lock();
    let found = s
        .repo(&format!("{owner}/{repo}"))
        .and_then(|r| s.find_workflow(r, &workflow).map(|w| (r, w)));
    match found {
        Some((r, w)) => Json(s.workflow_json(r, &w)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
pub(super) struct ControlPush {
    pub(super) repository: String,
    pub(super) workflow: String,
    pub(super) head: String,
    #[serde(default)]
    pub(super) tag: bool,
}

/// Not GitHub: the simulator's control endpoint, so a test or the demo in another process can
/// make a push happen (`POST /_sim/push {"repository","workflow","head","tag"}`).
pub(super) async fn control_push(
    State(sim): State<GitHubSim>,
    Json(push): Json<ControlPush>,
) -> Response {
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

pub(super) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}
