//! The operator's commands — `conveyor status`, `deploy`, `redeploy`, `rollback`, `pause`,
//! `resume` — through the ledger's control API (`--ledger` or `CONVEYOR_LEDGER_URL`, the token
//! in `CONVEYOR_TOKEN`), and `conveyor token` to make the entries of the operator tokens file.

use anyhow::{Context, bail};
use conveyor_ledger::control::EnvironmentStatus;
use conveyor_ledger::dashboard::when;
use serde_json::{Value, json};

/// An action and what it sends.
#[derive(Debug, Clone)]
pub enum Act {
    /// Deploy an image of the operator's choice.
    Deploy {
        /// `REPOSITORY:TAG` or `REPOSITORY@sha256:…`.
        image: String,
    },
    /// The image running now, again.
    Redeploy,
    /// An earlier completed deployment's image.
    Rollback {
        /// The deployment to return to (default: the one before the current one).
        to: Option<String>,
    },
    /// Hold every deployment of the environment.
    Pause,
    /// Let them go again.
    Resume,
    /// Delete the environment's pods stuck on a broken revision.
    Unstick,
    /// Approve a deployment awaiting approval.
    Approve {
        /// Also lift its `requires` hold.
        override_requires: bool,
    },
    /// Reject a deployment awaiting approval.
    Reject,
}

impl Act {
    fn path(&self) -> &'static str {
        match self {
            Act::Deploy { .. } => "deploy",
            Act::Redeploy => "redeploy",
            Act::Rollback { .. } => "rollback",
            Act::Pause => "pause",
            Act::Resume => "resume",
            Act::Unstick => "unstick",
            Act::Approve { .. } => "approve",
            Act::Reject => "reject",
        }
    }

    /// Whether it acts on one deployment (`/api/deployments/ID/…`) rather than an environment.
    fn on_deployment(&self) -> bool {
        matches!(self, Act::Approve { .. } | Act::Reject)
    }
}

/// The token: `CONVEYOR_TOKEN`, or the file named by `CONVEYOR_TOKEN_FILE`.
pub fn token() -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("CONVEYOR_TOKEN")
        && !t.is_empty()
    {
        return Ok(t);
    }
    if let Ok(path) = std::env::var("CONVEYOR_TOKEN_FILE") {
        return Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("CONVEYOR_TOKEN_FILE {path}"))?
            .trim()
            .to_owned());
    }
    bail!("set CONVEYOR_TOKEN (or CONVEYOR_TOKEN_FILE) to your operator token")
}

/// Carry out `act` on `environment` (a deployment id for approve and reject); the line to
/// print on success.
pub async fn act(
    ledger: &str,
    token: &str,
    environment: &str,
    act: &Act,
    reason: Option<String>,
    force: bool,
) -> anyhow::Result<String> {
    let mut body = json!({});
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    match act {
        Act::Deploy { image } => {
            body["image"] = json!(image);
            body["force"] = json!(force);
        }
        Act::Rollback { to } => {
            if let Some(to) = to {
                body["to"] = json!(to);
            }
            body["force"] = json!(force);
        }
        Act::Redeploy => body["force"] = json!(force),
        Act::Approve { override_requires } => {
            body["override_requires"] = json!(override_requires);
        }
        Act::Pause | Act::Resume | Act::Unstick | Act::Reject => {}
    }
    let path = if act.on_deployment() {
        format!("/api/deployments/{environment}/{}", act.path())
    } else {
        format!("/api/environments/{environment}/{}", act.path())
    };
    let (status, reply) = post(ledger, &path, token, &body).await?;
    if !status.is_success() {
        bail!(
            "{} {environment} refused ({status}): {}",
            act.path(),
            reply["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(match act {
        Act::Pause => format!("paused {environment}"),
        Act::Resume => format!("resumed {environment}"),
        Act::Unstick => format!("asked rollout-watcher to unstick {environment}"),
        Act::Approve { .. } => format!(
            "approved {environment} ({})",
            reply["image"].as_str().unwrap_or("?")
        ),
        Act::Reject => format!("rejected {environment}"),
        _ => format!(
            "{} {environment}: {} requested as deployment {}{}",
            act.path(),
            reply["image"].as_str().unwrap_or("?"),
            reply["deployment"].as_str().unwrap_or("?"),
            if reply["forced"] == json!(true) {
                " (forced)"
            } else {
                ""
            }
        ),
    })
}

/// POST `body` to the ledger's control API at `path` as the operator of `token`: the status
/// and the answer. The ledger records a deployment from its events, a moment after the
/// executors saw them, so a decision on one it does not know yet is asked again for a while.
pub async fn post(
    ledger: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let url = format!("{ledger}{path}");
    let http = conveyor::http::client(&conveyor::http::user_agent("cli"), REQUEST_TIMEOUT);
    let deadline = tokio::time::Instant::now() + NOT_RECORDED_YET;
    loop {
        let answer = http
            .post(&url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the ledger at {ledger}"))?;
        let status = answer.status();
        let reply: Value = answer.json().await.unwrap_or(Value::Null);
        let unknown = status == reqwest::StatusCode::NOT_FOUND
            && reply["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no deployment"));
        if !unknown || tokio::time::Instant::now() > deadline {
            return Ok((status, reply));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How long a deployment the ledger has not recorded yet is asked about again.
const NOT_RECORDED_YET: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one control request may take: the ledger answers once the action is durable.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `conveyor status [ENV]`: what runs where, what moves, what holds.
pub async fn status(ledger: &str, environment: Option<&str>) -> anyhow::Result<String> {
    let url = match environment {
        Some(e) => format!("{ledger}/api/status/{e}"),
        None => format!("{ledger}/api/status"),
    };
    let answer = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the ledger at {ledger}"))?;
    let code = answer.status();
    if !code.is_success() {
        let v: Value = answer.json().await.unwrap_or(Value::Null);
        bail!(
            "the ledger answered {code}: {}",
            v["error"].as_str().unwrap_or("")
        );
    }
    let all: Vec<EnvironmentStatus> = if environment.is_some() {
        vec![answer.json().await.context("an unexpected status answer")?]
    } else {
        answer.json().await.context("an unexpected status answer")?
    };
    Ok(render(&all))
}

/// The status of environments as text.
pub fn render(all: &[EnvironmentStatus]) -> String {
    let mut out = String::new();
    for s in all {
        out.push_str(&format!("{} ({})\n", s.environment, s.executor));
        match &s.current {
            Some(d) => out.push_str(&format!(
                "  runs      {}{}{}\n",
                d.image.as_deref().unwrap_or("?"),
                d.sha
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(" (commit {})", &s[..s.len().min(7)]))
                    .unwrap_or_default(),
                d.finished_at
                    .map(|t| format!(" since {}", when(t)))
                    .unwrap_or_default()
            )),
            None => out.push_str("  runs      nothing on record\n"),
        }
        if let Some(p) = &s.paused {
            out.push_str(&format!(
                "  PAUSED    by {}{}{}\n",
                p.by.as_deref().unwrap_or("?"),
                p.since
                    .map(|t| format!(" since {}", when(t)))
                    .unwrap_or_default(),
                p.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(f) = &s.frozen {
            out.push_str(&format!(
                "  FROZEN    until {}: {}\n",
                when(f.until),
                f.reason
            ));
        }
        for d in &s.in_flight {
            out.push_str(&format!(
                "  {:<9} {} ({}){}\n",
                d.status.as_str(),
                d.image.as_deref().unwrap_or("?"),
                d.id,
                d.held
                    .as_deref()
                    .map(|h| format!(" — {h}"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// `conveyor token new NAME`: a fresh random token and the tokens-file entry that admits it.
pub fn new_token(name: &str, roles: &[String]) -> (String, String) {
    let bytes: [u8; 24] = rand::random();
    let token = format!(
        "cvy_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    (token.clone(), entry(name, roles, &token))
}

/// The tokens-file entry for `token`.
pub fn entry(name: &str, roles: &[String], token: &str) -> String {
    format!(
        "[[operator]]\nname = {}\nroles = [{}]\nsha256 = \"{}\"\n",
        toml_string(name),
        roles
            .iter()
            .map(|r| toml_string(r))
            .collect::<Vec<_>>()
            .join(", "),
        conveyor_ledger::auth::token_hash(token)
    )
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
