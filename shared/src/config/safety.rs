//! The safe-delivery settings of an environment: verification after the rollout, promotion
//! only after another environment, approvals, and what to do when a release goes bad.

use serde::Deserialize;

/// Checks run after the last pod is Ready; the deployment completes only when they pass.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// An HTTP endpoint that must answer as expected, several times in a row.
    #[serde(default)]
    pub http: Option<HttpCheck>,
    /// A Prometheus instant query whose every sample must stay at or under a threshold.
    #[serde(default)]
    pub prometheus: Option<PrometheusCheck>,
    /// After the HTTP check passed, keep checking this long: any failure in it fails the
    /// deployment (a service that flaps).
    #[serde(default)]
    pub soak_secs: u64,
}

/// `verify.http`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// What to GET.
    pub url: String,
    /// The status a healthy service answers (default 200).
    #[serde(default = "ok")]
    pub expect_status: u16,
    /// How many answers in a row must be as expected (default 3).
    #[serde(default = "three")]
    pub consecutive: u32,
    /// Seconds between two requests (default 10).
    #[serde(default = "ten")]
    pub interval_secs: u64,
    /// The answers must come within this many seconds of the last pod Ready (default 300).
    #[serde(default = "five_minutes")]
    pub within_secs: u64,
}

/// `verify.prometheus`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusCheck {
    /// The Prometheus server, e.g. `http://prometheus:9090`.
    pub url: String,
    /// An instant query, e.g. `sum(rate(http_requests_total{code=~"5.."}[1m]))`.
    pub query: String,
    /// Every sample must be at most this (no sample at all counts as 0).
    pub max: f64,
}

fn ok() -> u16 {
    200
}
fn three() -> u32 {
    3
}
fn ten() -> u64 {
    10
}
fn five_minutes() -> u64 {
    300
}

/// `requires`: deploy here only what completed — and passed verification — in another
/// environment, long enough ago.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// The environment it must have completed in first.
    pub environment: String,
    /// How long ago at least (default 0).
    #[serde(default)]
    pub soak_secs: u64,
}

/// `approval`: a person must approve each deployment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether an approval is needed (default true once the table is there).
    #[serde(default = "yes")]
    pub required: bool,
    /// Who may approve: operator names or roles of the tokens file.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Whether the operator who requested a deployment may approve it (default false).
    #[serde(default)]
    pub allow_self: bool,
    /// A request not approved within this long fails (stage `approval`; default a day).
    #[serde(default = "a_day")]
    pub expires_secs: u64,
}

fn yes() -> bool {
    true
}
fn a_day() -> u64 {
    86_400
}

/// What happens after a deployment's rollout or verification fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Report it; the environment stays as the failure left it.
    #[default]
    Report,
    /// Request the last completed deployment's image again, once (trigger `rollback`, actor
    /// `conveyor`); a failed rollback never triggers another.
    Rollback,
}

/// Check the safety settings of environment `i` (`names`: every environment's name).
pub(super) fn validate(
    i: usize,
    name: &str,
    verify: Option<&Verify>,
    requires: Option<&Requires>,
    approval: Option<&Approval>,
    names: &[String],
    p: &mut dyn FnMut(String, String),
) {
    let k = |f: &str| format!("environment[{i}].{f}");
    let http_url = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    if let Some(v) = verify {
        if v.http.is_none() && v.prometheus.is_none() {
            p(k("verify"), "needs an http or a prometheus check".into());
        }
        if let Some(h) = &v.http {
            if !http_url(&h.url) {
                p(
                    k("verify.http.url"),
                    format!("{:?} is not an http(s) URL", h.url),
                );
            }
            if !(100..=599).contains(&h.expect_status) {
                p(
                    k("verify.http.expect_status"),
                    "is not an HTTP status".into(),
                );
            }
            if h.consecutive == 0 {
                p(k("verify.http.consecutive"), "must be at least 1".into());
            }
            if h.interval_secs == 0 {
                p(k("verify.http.interval_secs"), "must be at least 1".into());
            }
            let needed = h.interval_secs * u64::from(h.consecutive.saturating_sub(1));
            if h.within_secs < needed {
                p(
                    k("verify.http.within_secs"),
                    format!(
                        "{} s cannot hold {} answers {} s apart",
                        h.within_secs, h.consecutive, h.interval_secs
                    ),
                );
            }
        }
        if let Some(q) = &v.prometheus {
            if !http_url(&q.url) {
                p(
                    k("verify.prometheus.url"),
                    format!("{:?} is not an http(s) URL", q.url),
                );
            }
            if q.query.trim().is_empty() {
                p(k("verify.prometheus.query"), "must not be empty".into());
            }
        }
    }
    if let Some(r) = requires {
        if r.environment == name {
            p(
                k("requires.environment"),
                "an environment cannot require itself".into(),
            );
        } else if !names.contains(&r.environment) {
            p(
                k("requires.environment"),
                format!("{:?} is not a declared environment", r.environment),
            );
        }
    }
    if let Some(a) = approval
        && a.required
        && a.approvers.is_empty()
    {
        p(
            k("approval.approvers"),
            "name who may approve (operator names or roles)".into(),
        );
    }
}
