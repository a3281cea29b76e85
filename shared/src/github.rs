//! The GitHub REST plumbing every Conveyor client of GitHub shares: authentication, API
//! version, GitHub's rate-limit rules (contract §8) and errors that never carry the token.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::{ConfigError, Env, Secret, secret};
use crate::retry::{Classify, Policy, Transience};

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

/// Where GitHub is and the token to use, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `GITHUB_API_URL` (default `https://api.github.com`; GitHub Enterprise or the simulator).
    pub api_url: String,
    /// `GITHUB_TOKEN` / `GITHUB_TOKEN_FILE`.
    pub token: Secret,
}

impl Settings {
    /// Read the settings; `None` when no token is set (the caller decides whether that is
    /// an error).
    pub fn from_env(env: &dyn Env) -> Result<Option<Self>, ConfigError> {
        let Some(token) = secret(env, "GITHUB_TOKEN")? else {
            return Ok(None);
        };
        let api_url = env
            .var("GITHUB_API_URL")
            .unwrap_or_else(|| "https://api.github.com".into());
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(ConfigError::one("GITHUB_API_URL", "must be an http(s) URL"));
        }
        Ok(Some(Self { api_url, token }))
    }

    /// Read the settings; a missing token is an error that says what it needs (`why`).
    pub fn required(env: &dyn Env, why: &str) -> Result<Self, ConfigError> {
        Self::from_env(env)?.ok_or_else(|| ConfigError::one("GITHUB_TOKEN", why))
    }
}

/// How long a GitHub call may take before it is given up. A write sent by a worker that died
/// may still land within this long, so a redelivery that finds nothing waits it out before it
/// writes again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a list answer has a further page (`Link: <…>; rel="next"`).
pub fn has_next_page(headers: &HeaderMap) -> bool {
    headers
        .get("link")
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.contains("rel=\"next\""))
}

/// An authenticated GitHub REST caller: one per process, cheap to share.
pub struct GitHubApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
    policy: Policy,
}

impl GitHubApi {
    /// A caller for `base` (e.g. `https://api.github.com`) with `token`, identifying itself as
    /// `user_agent` (GitHub refuses requests without one).
    pub fn new(base: &str, token: Secret, policy: Policy, user_agent: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            "accept",
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        // GitHub's API answers in place: no redirect is followed.
        let http = crate::http::build(
            crate::http::builder(user_agent, REQUEST_TIMEOUT).default_headers(headers),
        );
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            policy,
        }
    }

    /// One call, not retried: the status, headers and JSON body of a 2xx answer, or the
    /// classified error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, HeaderMap, Value), GitHubError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
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
        // GitHub's message, or whatever a proxy answered: scrubbed before it is cut, since a
        // proxy may echo the request's Authorization header.
        let message = match json.get("message").and_then(Value::as_str) {
            Some(m) => crate::redact::excerpt(m, 1000),
            None => crate::redact::excerpt(&String::from_utf8_lossy(&bytes), 200),
        };
        Err(classify(
            status,
            &headers,
            what,
            message,
            OffsetDateTime::now_utc(),
        ))
    }

    /// A call that is safe to repeat (a read), retried under the client's policy.
    pub async fn call_retrying(
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
            header("retry-after").and_then(|v| crate::retry::parse_retry_after(v, now))
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
