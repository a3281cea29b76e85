//! The GitHub channel: one GitHub deployment per Conveyor deployment, its statuses as the chain
//! moves (queued → in_progress → success | failure | error | inactive), and a `conveyor/<env>`
//! commit status on every commit it carries.
//!
//! GitHub is the record: each deployment carries its correlation id in `payload.conveyor`, and
//! is looked up by it before one is created, so a redelivery — even after a crash — never
//! creates a second one. Statuses only move forward; a late or repeated event changes nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use conveyor::bounded::BoundedMap;
use conveyor::config::{Environment, Pipeline};
use conveyor::events::{DeployRequested, UpstreamCommit};
use conveyor::fence::Fences;
use conveyor::github::{GitHubApi, GitHubError};
use conveyor::retry::{Classify, Policy, Transience};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::report::{self, Report, Step};
use crate::{Delivered, NotifyError, Settings};

/// GitHub's limit on a status description.
pub const MAX_DESCRIPTION: usize = 140;

/// Deployments remembered in process (GitHub holds the rest).
const REMEMBERED: usize = 1024;

/// Pages of an environment's deployments (100 each, newest first) searched for a chain's
/// deployment before it counts as not created.
pub const LOOKUP_PAGES: u32 = 10;

/// How far a deployment's statuses have gone: they only move forward.
fn rank(state: &str) -> u8 {
    match state {
        "queued" => 1,
        // Waiting for an approval, after it was queued (GitHub has no "waiting" state for a
        // deployment status: `pending` with the approvers in the description).
        "pending" => 2,
        "in_progress" => 3,
        "success" | "failure" | "error" | "inactive" => 4,
        _ => 0,
    }
}

/// What the channel knows about one GitHub deployment.
#[derive(Debug, Clone)]
struct Known {
    repository: String,
    id: u64,
    commits: Vec<UpstreamCommit>,
    /// Deployment states already posted (and, as `commit <repo> <sha> <state>`, commit states).
    posted: BTreeSet<String>,
    /// Learned from GitHub after a restart: commit statuses are checked before posting.
    recovered: bool,
}

impl Known {
    fn highest(&self) -> u8 {
        self.posted.iter().map(|s| rank(s)).max().unwrap_or(0)
    }
}

/// The channel.
pub struct GitHubChannel {
    api: GitHubApi,
    pipeline: Arc<Pipeline>,
    ledger: Option<String>,
    known: Mutex<BoundedMap<String, Known>>,
    /// Per deployment: a create a lost worker sent may still land on GitHub.
    fences: Fences,
}

/// A refused write had no effect, so only it is retried in process; an ambiguous failure (5xx,
/// timeout) goes back to the broker, whose redelivery looks before it writes again.
struct Write(GitHubError);

impl Classify for Write {
    fn transience(&self) -> Transience {
        match &self.0 {
            GitHubError::RateLimited { .. } => self.0.transience(),
            _ => Transience::Permanent,
        }
    }
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl GitHubChannel {
    /// A channel talking to GitHub as `github` says, for `pipeline`'s environments.
    pub fn new(
        pipeline: Arc<Pipeline>,
        github: &conveyor::github::Settings,
        settings: &Settings,
    ) -> Self {
        Self {
            api: GitHubApi::new(
                &github.api_url,
                github.token.clone(),
                Policy::HTTP,
                concat!("conveyor-notifier/", env!("CARGO_PKG_VERSION")),
            ),
            pipeline,
            ledger: settings.ledger_url.clone(),
            known: Mutex::new(BoundedMap::new(REMEMBERED)),
            fences: Fences::new(conveyor::github::REQUEST_TIMEOUT),
        }
    }

    fn known(&self) -> MutexGuard<'_, BoundedMap<String, Known>> {
        conveyor::sync::lock(&self.known)
    }

    async fn write(&self, path: &str, body: &Value) -> Result<(StatusCode, Value), GitHubError> {
        Policy::HTTP
            .run(|| async {
                self.api
                    .call(Method::POST, path, Some(body))
                    .await
                    .map(|(status, _, v)| (status, v))
                    .map_err(Write)
            })
            .await
            .map_err(|w| w.0)
    }

    /// Report one event; `redelivered` when the broker redelivered it (its previous worker
    /// was lost, perhaps mid-write).
    pub async fn handle(
        &self,
        report: &Report<'_>,
        redelivered: bool,
    ) -> Result<Delivered, NotifyError> {
        let Some(environment) = self.pipeline.environment(report.environment) else {
            return Ok(Delivered::Nothing);
        };
        if report.operation().is_some_and(|o| o.untracked) {
            // No commit to deploy on GitHub or to post statuses to: Slack and webhooks say it.
            return Ok(Delivered::Nothing);
        }
        if let Step::Requested(request) = report.step {
            return self.on_requested(report, request, redelivered).await;
        }
        let Some(update) = self.update_for(report, environment) else {
            return Ok(Delivered::Nothing);
        };
        let Some(mut known) = self.lookup(report).await? else {
            return Err(NotifyError::NoDeployment {
                correlation_id: report.correlation_id().to_owned(),
                environment: report.environment.to_owned(),
            });
        };
        let sent = self
            .post_status(
                report,
                &mut known,
                update.state,
                &update.description,
                update.url,
            )
            .await?;
        let sent_commits = match update.commit_state {
            Some(c) => {
                self.post_commit_statuses(&mut known, report, c, &update.description)
                    .await?
            }
            None => false,
        };
        Ok(delivered(sent || sent_commits))
    }

    /// A request: find or create its deployment, mark it queued and its commits pending.
    async fn on_requested(
        &self,
        report: &Report<'_>,
        request: &DeployRequested,
        redelivered: bool,
    ) -> Result<Delivered, NotifyError> {
        let Some(mut known) = self.find_or_create(report, request, redelivered).await? else {
            let wait = self
                .fences
                .remaining(&report.deployment_id())
                .unwrap_or_default();
            return Ok(Delivered::Later(wait));
        };
        let description = said(report, format!("Queued: {}", request.image.reference()));
        let sent = self
            .post_status(report, &mut known, "queued", &description, None)
            .await?;
        // A request replayed after its deployment moved on leaves the commits alone.
        let sent_commits = known.highest() <= rank("queued")
            && self
                .post_commit_statuses(&mut known, report, "pending", "Deploying")
                .await?;
        Ok(delivered(sent || sent_commits))
    }

    /// The deployment status (and commit status) a later step posts, if it posts one.
    fn update_for(&self, report: &Report<'_>, environment: &Environment) -> Option<Update> {
        let correlation = report.correlation_id();
        let ledger_page =
            || crate::ledger_page(self.ledger.as_deref(), correlation, report.environment);
        let (state, description, commit_state, url) = match report.step {
            Step::Launched(launched) => (
                "in_progress",
                said(
                    report,
                    format!("Running: {}", report::executor_summary(launched)),
                ),
                None,
                ledger_page().or_else(|| report::executor_url(launched).map(str::to_owned)),
            ),
            Step::Completed(done) => (
                "success",
                said(report, format!("Deployed {}", done.image.reference())),
                Some("success"),
                environment.url.clone(),
            ),
            Step::Failed(failed) => {
                let state = if report::is_deployment_failure(failed) {
                    "failure"
                } else {
                    "error"
                };
                (
                    state,
                    said(report, report::cause(failed)),
                    Some(state),
                    None,
                )
            }
            Step::Superseded(_) => (
                "inactive",
                said(
                    report,
                    "Superseded by a newer deployment before it ran".to_owned(),
                ),
                Some("error"),
                None,
            ),
            Step::AwaitingApproval(a) => (
                "pending",
                format!(
                    "Waiting for approval by {} (until {})",
                    a.approvers.join(" or "),
                    a.expires_at.date()
                ),
                None,
                ledger_page(),
            ),
            Step::Requested(_) | Step::JobFinished(_) | Step::Held(_) | Step::Rollout => {
                return None;
            }
        };
        Some(Update {
            state,
            description,
            commit_state,
            url,
        })
    }

    /// The deployment of this chain: remembered, found on GitHub by its correlation id, or
    /// created. `None` while a create that a lost worker may still have on the wire could land
    /// (a `redelivered` request raises that fence): finding nothing proves nothing until then.
    async fn find_or_create(
        &self,
        report: &Report<'_>,
        request: &DeployRequested,
        redelivered: bool,
    ) -> Result<Option<Known>, NotifyError> {
        if redelivered {
            self.fences.raise(&report.deployment_id());
        }
        if let Some(k) = self.lookup(report).await? {
            return Ok(Some(k));
        }
        if self.fences.remaining(&report.deployment_id()).is_some() {
            return Ok(None);
        }
        let production = self
            .pipeline
            .environment(report.environment)
            .is_some_and(|e| e.is_production());
        // An image pushed without its commit names a tag (a branch one is untracked and never
        // gets here): GitHub resolves it, and its answer names the commit.
        let by_commit = !request.sha.is_empty();
        let mut commits: Vec<UpstreamCommit> = by_commit
            .then(|| UpstreamCommit {
                repository: request.repository.clone(),
                sha: request.sha.clone(),
            })
            .into_iter()
            .collect();
        for u in &request.upstream {
            if !commits.contains(u) {
                commits.push(u.clone());
            }
        }
        let body = json!({
            // The exact commit built, not the branch: a branch may have moved on. A tag
            // stays where it was pushed.
            "ref": if by_commit { &request.sha } else { &request.git_ref.name },
            "task": "deploy",
            "auto_merge": false,
            "required_contexts": [],
            "environment": report.environment,
            "production_environment": production,
            "description": conveyor::text::truncate_chars(&request.operation.describe().unwrap_or_else(|| format!("Conveyor: {}", request.image.reference())), MAX_DESCRIPTION),
            "payload": {"conveyor": {
                "correlation_id": report.correlation_id(),
                "image": request.image.reference(),
                "ref": request.git_ref.full(),
                "commits": commits,
            }},
        });
        let path = format!("/repos/{}/deployments", request.repository);
        let (status, answer) = self.write(&path, &body).await?;
        if status == StatusCode::ACCEPTED {
            // GitHub merged the default branch into the ref instead; the contract says to send
            // again. With `auto_merge: false` it should never happen.
            return Err(NotifyError::GitHub(GitHubError::Unavailable {
                what: format!("POST {path}"),
                message: "202: GitHub merged instead of deploying; sending again".into(),
            }));
        }
        let id =
            answer
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| GitHubError::Unavailable {
                    what: format!("POST {path}"),
                    message: "created deployment has no id".into(),
                })?;
        if let Some(sha) = resolved_commit(&request.repository, &commits, &answer) {
            commits.insert(0, sha);
        }
        let known = Known {
            repository: request.repository.clone(),
            id,
            commits,
            posted: BTreeSet::new(),
            recovered: false,
        };
        self.known().insert(report.deployment_id(), known.clone());
        tracing::info!(
            environment = report.environment,
            deployment = id,
            correlation = report.correlation_id(),
            "GitHub deployment created"
        );
        Ok(Some(known))
    }

    /// The deployment of this chain, if it exists: from memory, else from GitHub — the
    /// environment's deployments (of the commit, when the event names it), newest first, page
    /// by page up to [`LOOKUP_PAGES`], matched on the payload's correlation id.
    async fn lookup(&self, report: &Report<'_>) -> Result<Option<Known>, NotifyError> {
        let correlation = report.correlation_id();
        if let Some(k) = self.known().get(&report.deployment_id()) {
            return Ok(Some(k.clone()));
        }
        let Some(environment) = self.pipeline.environment(report.environment) else {
            return Ok(None);
        };
        let repository = &environment.repository;
        // A busy environment has more deployments than one page holds; the commit narrows
        // the list to this chain's few.
        let sha = match report.step {
            Step::Requested(r) if !r.sha.is_empty() => format!("&sha={}", r.sha),
            _ => String::new(),
        };
        let mut found: Option<Value> = None;
        for page in 1..=LOOKUP_PAGES {
            let path = format!(
                "/repos/{repository}/deployments?environment={}{sha}&per_page=100&page={page}",
                report.environment
            );
            let (headers, list) = self.api.call_retrying(Method::GET, &path).await?;
            found = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| {
                    d.pointer("/payload/conveyor/correlation_id")
                        .and_then(Value::as_str)
                        == Some(correlation)
                })
                .cloned();
            if found.is_some() || !conveyor::github::has_next_page(&headers) {
                break;
            }
        }
        let Some(d) = found else {
            return Ok(None);
        };
        let Some(id) = d.get("id").and_then(Value::as_u64) else {
            return Ok(None);
        };
        let mut commits: Vec<UpstreamCommit> = d
            .pointer("/payload/conveyor/commits")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        if let Some(sha) = resolved_commit(repository, &commits, &d) {
            commits.insert(0, sha);
        }
        let path = format!("/repos/{repository}/deployments/{id}/statuses?per_page=100");
        let (_, statuses) = self.api.call_retrying(Method::GET, &path).await?;
        let posted = statuses
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("state").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let known = Known {
            repository: repository.clone(),
            id,
            commits,
            posted,
            recovered: true,
        };
        self.known().insert(report.deployment_id(), known.clone());
        Ok(Some(known))
    }

    fn remember(&self, report: &Report<'_>, known: &Known) {
        self.known().insert(report.deployment_id(), known.clone());
    }

    /// Post `state` unless the deployment already reached it or went past it.
    async fn post_status(
        &self,
        report: &Report<'_>,
        known: &mut Known,
        state: &str,
        description: &str,
        url: Option<String>,
    ) -> Result<bool, NotifyError> {
        if known.highest() >= rank(state) {
            return Ok(false);
        }
        let environment_url = if state == "success" {
            url.clone()
        } else {
            None
        };
        let log_url = if state == "success" { None } else { url };
        let mut body = json!({
            "state": state,
            "description": conveyor::text::truncate_chars(description, MAX_DESCRIPTION),
            // Only a success of a later deployment makes an earlier one inactive.
            "auto_inactive": state == "success",
        });
        if let Some(u) = log_url {
            body["log_url"] = json!(u);
        }
        if let Some(u) = environment_url {
            body["environment_url"] = json!(u);
        }
        let path = format!(
            "/repos/{}/deployments/{}/statuses",
            known.repository, known.id
        );
        self.write(&path, &body).await?;
        known.posted.insert(state.to_owned());
        self.remember(report, known);
        Ok(true)
    }

    /// Post the `conveyor/<env>` commit status `state` on every commit of the deployment.
    async fn post_commit_statuses(
        &self,
        known: &mut Known,
        report: &Report<'_>,
        state: &str,
        description: &str,
    ) -> Result<bool, NotifyError> {
        let context = format!("conveyor/{}", report.environment);
        let target = crate::ledger_page(
            self.ledger.as_deref(),
            report.correlation_id(),
            report.environment,
        );
        let mut sent = false;
        for commit in known.commits.clone() {
            let key = format!("commit {} {} {state}", commit.repository, commit.sha);
            if known.posted.contains(&key) {
                continue;
            }
            if known.recovered && self.commit_state_rank(&commit, &context).await? >= rank(state) {
                known.posted.insert(key);
                continue;
            }
            let mut body = json!({
                "state": state,
                "context": context,
                "description": conveyor::text::truncate_chars(description, MAX_DESCRIPTION),
            });
            if let Some(t) = &target {
                body["target_url"] = json!(t);
            }
            let path = format!("/repos/{}/statuses/{}", commit.repository, commit.sha);
            let result = self.write(&path, &body).await;
            if let Err(e) = result {
                // Keep what went out, so the retry does not send it twice.
                self.remember(report, known);
                return Err(e.into());
            }
            known.posted.insert(key);
            sent = true;
        }
        self.remember(report, known);
        Ok(sent)
    }

    /// How far `context` has gone on `commit` (after a restart, before posting again).
    async fn commit_state_rank(
        &self,
        commit: &UpstreamCommit,
        context: &str,
    ) -> Result<u8, NotifyError> {
        let path = format!("/repos/{}/commits/{}/status", commit.repository, commit.sha);
        let (_, combined) = self.api.call_retrying(Method::GET, &path).await?;
        Ok(combined
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| s.get("context").and_then(Value::as_str) == Some(context))
            .filter_map(|s| s.get("state").and_then(Value::as_str))
            .map(rank)
            .max()
            .unwrap_or(0))
    }
}

/// The deployment's own commit as GitHub resolved its ref, when the payload's commits do not
/// name one for its repository (an image deployed by tag).
fn resolved_commit(
    repository: &str,
    commits: &[UpstreamCommit],
    deployment: &Value,
) -> Option<UpstreamCommit> {
    if commits
        .iter()
        .any(|c| c.repository.eq_ignore_ascii_case(repository))
    {
        return None;
    }
    let sha = deployment.get("sha").and_then(Value::as_str)?;
    (!sha.is_empty()).then(|| UpstreamCommit {
        repository: repository.to_owned(),
        sha: sha.to_owned(),
    })
}
/// What a step after the request posts.
struct Update {
    /// The deployment status's state.
    state: &'static str,
    description: String,
    /// The commit status's state, when the step ends the deployment.
    commit_state: Option<&'static str>,
    /// The status's log or environment URL.
    url: Option<String>,
}

/// `base`, prefixed with who asked for the operation when an operator did.
fn said(report: &Report<'_>, base: String) -> String {
    match report.operation().and_then(|o| o.describe()) {
        Some(who) => format!("{who} · {base}"),
        None => base,
    }
}

fn delivered(sent: bool) -> Delivered {
    if sent {
        Delivered::Sent
    } else {
        Delivered::Nothing
    }
}
