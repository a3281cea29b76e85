//! The GitHub REST client build-trigger needs: resolve a workflow, dispatch it, read runs —
//! with GitHub's rate-limit rules and the shared retry policy, and the token kept out of errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use conveyor::config::Secret;
use conveyor::retry::{Classify, Policy, Transience};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The API version Conveyor speaks; the 2022-11-28 version is the one that answers a
/// dispatch with the run id when asked (`return_run_details`).
pub const API_VERSION: &str = "2022-11-28";

/// A failed GitHub call, classified. Messages carry GitHub's own `message`, never the token.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// GitHub refused, and will refuse again (401, 403 without rate-limit signs, 404, 422, …).
    #[error("GitHub answered {status} to {what}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Which call, e.g. `POST …/dispatches`.
        what: String,
        /// GitHub's message.
        message: String,
    },
    /// Rate limited: wait `wait` before the next call.
    #[error("GitHub rate limit on {what}; retry in {wait:?}")]
    RateLimited {
        /// Which call.
        what: String,
        /// How long GitHub asked us to wait.
        wait: Duration,
    },
    /// 5xx, timeout or network error: the call may or may not have had its effect.
    #[error("GitHub unavailable for {what}: {message}")]
    Unavailable {
        /// Which call.
        what: String,
        /// What went wrong.
        message: String,
    },
}

impl Classify for GitHubError {
    fn transience(&self) -> Transience {
        match self {
            GitHubError::Rejected { .. } => Transience::Permanent,
            GitHubError::RateLimited { wait, .. } => Transience::Transient(Some(*wait)),
            GitHubError::Unavailable { .. } => Transience::Transient(None),
        }
    }
}

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
    pub status: String,
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
        matches!(
            self.status.as_str(),
            "queued" | "requested" | "waiting" | "pending"
        )
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
    http: reqwest::Client,
    base: String,
    token: Secret,
    policy: Policy,
    workflows: Mutex<HashMap<String, Workflow>>,
}

impl GitHub {
    /// A client for `base` (e.g. `https://api.github.com`) with `token`.
    pub fn new(base: &str, token: Secret, policy: Policy) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept",
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "conveyor-build-trigger/",
                env!("CARGO_PKG_VERSION")
            ))
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            // A redirect would replay a POST as a GET elsewhere; GitHub's API answers in place.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            policy,
            workflows: Mutex::new(HashMap::new()),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, Value), GitHubError> {
        let what = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| GitHubError::Unavailable {
            what: what.clone(),
            // Without the URL: a proxy URL or query could carry credentials.
            message: e.without_url().to_string(),
        })?;
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.map_err(|e| GitHubError::Unavailable {
            what: what.clone(),
            message: e.without_url().to_string(),
        })?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok((status, headers, json));
        }
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            });
        Err(classify(
            status,
            &headers,
            what,
            message,
            OffsetDateTime::now_utc(),
        ))
    }

    async fn call_retrying(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(HeaderMap, Value), GitHubError> {
        self.policy
            .run(|| async {
                self.call(method.clone(), path, None)
                    .await
                    .map(|(_, h, v)| (h, v))
            })
            .await
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
            let (headers, body) = self.call_retrying(Method::GET, &path).await?;
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
            let has_next = headers
                .get("link")
                .and_then(|l| l.to_str().ok())
                .is_some_and(|l| l.contains("rel=\"next\""));
            if !has_next || list.is_empty() {
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
        self.workflows.lock().unwrap_or_else(|p| p.into_inner())
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
        let (status, _, answer) = self.call(Method::POST, &path, Some(&body)).await?;
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
        let (_, body) = self.call_retrying(Method::GET, &path).await?;
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
        let (_, body) = self.call_retrying(Method::GET, &path).await?;
        Ok(
            serde_json::from_value(body.get("workflow_runs").cloned().unwrap_or(Value::Null))
                .unwrap_or_default(),
        )
    }
}

/// GitHub's rules for a failed answer (contract §8): `retry-after` wins; else a spent primary
/// limit waits for `x-ratelimit-reset`; else a 429, or a 403 that says "rate limit", is a
/// secondary limit and waits a minute; any other 403 is a permission error. 5xx may have had
/// its effect; every other 4xx is final.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    what: String,
    message: String,
    now: OffsetDateTime,
) -> GitHubError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(wait) =
            header("retry-after").and_then(|v| conveyor::retry::parse_retry_after(v, now))
        {
            return GitHubError::RateLimited { what, wait };
        }
        if header("x-ratelimit-remaining") == Some("0") {
            let reset = header("x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(now.unix_timestamp() + 60);
            let wait = Duration::from_secs(
                u64::try_from(reset - now.unix_timestamp())
                    .unwrap_or(0)
                    .max(1),
            );
            return GitHubError::RateLimited { what, wait };
        }
        if status == StatusCode::TOO_MANY_REQUESTS
            || message.to_ascii_lowercase().contains("rate limit")
        {
            return GitHubError::RateLimited {
                what,
                wait: Duration::from_secs(60),
            };
        }
    }
    if status.is_server_error() {
        return GitHubError::Unavailable {
            what,
            message: format!("{status}: {message}"),
        };
    }
    GitHubError::Rejected {
        status: status.as_u16(),
        what,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    #[test]
    fn retry_after_wins_over_reset() {
        let h = headers(&[
            ("retry-after", "7"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2000"),
        ]);
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            "x".into(),
            "m".into(),
            at(1000),
        );
        assert!(
            matches!(e, GitHubError::RateLimited { wait, .. } if wait == Duration::from_secs(7))
        );
    }

    #[test]
    fn spent_primary_limit_waits_for_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1300"),
        ]);
        let e = classify(
            StatusCode::FORBIDDEN,
            &h,
            "x".into(),
            "API rate limit exceeded".into(),
            at(1000),
        );
        assert!(
            matches!(e, GitHubError::RateLimited { wait, .. } if wait == Duration::from_secs(300))
        );
    }

    #[test]
    fn secondary_limit_without_headers_waits_a_minute() {
        let e = classify(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            "x".into(),
            "You have exceeded a secondary rate limit".into(),
            at(0),
        );
        assert!(
            matches!(e, GitHubError::RateLimited { wait, .. } if wait == Duration::from_secs(60))
        );
    }

    #[test]
    fn plain_403_is_a_permission_error_and_5xx_is_ambiguous() {
        let h = headers(&[("x-ratelimit-remaining", "4999")]);
        let e = classify(
            StatusCode::FORBIDDEN,
            &h,
            "x".into(),
            "Resource not accessible by integration".into(),
            at(0),
        );
        assert_eq!(e.transience(), Transience::Permanent);
        let e = classify(
            StatusCode::BAD_GATEWAY,
            &h,
            "x".into(),
            "Server Error".into(),
            at(0),
        );
        assert_eq!(e.transience(), Transience::Transient(None));
        let e = classify(
            StatusCode::UNPROCESSABLE_ENTITY,
            &h,
            "x".into(),
            "No ref found for: nope".into(),
            at(0),
        );
        assert!(e.to_string().contains("No ref found for: nope"));
    }
}
