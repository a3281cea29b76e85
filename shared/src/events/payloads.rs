//! The `data` schemas (v1) of every event in the catalogue.
//!
//! Rules for evolving them: add fields as `Option` or with `#[serde(default)]` (old producers
//! omit them, old consumers ignore them); never rename or retype a field without a new major
//! version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{JobStatus, RunConclusion, RunStatus};
use time::OffsetDateTime;

/// Whether a git ref names a branch or a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// `refs/heads/…`
    Branch,
    /// `refs/tags/…`
    Tag,
}

/// A git ref split into its kind and short name (`refs/heads/feature/x` → branch `feature/x`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRef {
    /// Branch or tag.
    pub kind: RefKind,
    /// The short name; branch names keep their slashes.
    pub name: String,
}

impl GitRef {
    /// Parse a full ref (`refs/heads/x`, `refs/tags/x`); anything else is `None`.
    pub fn parse_full(full: &str) -> Option<Self> {
        if let Some(name) = full.strip_prefix("refs/heads/") {
            Some(Self::branch(name))
        } else {
            full.strip_prefix("refs/tags/").map(Self::tag)
        }
    }

    /// A branch ref.
    pub fn branch(name: impl Into<String>) -> Self {
        Self {
            kind: RefKind::Branch,
            name: name.into(),
        }
    }

    /// A tag ref.
    pub fn tag(name: impl Into<String>) -> Self {
        Self {
            kind: RefKind::Tag,
            name: name.into(),
        }
    }

    /// The full ref form, `refs/heads/<name>` or `refs/tags/<name>`.
    pub fn full(&self) -> String {
        match self.kind {
            RefKind::Branch => format!("refs/heads/{}", self.name),
            RefKind::Tag => format!("refs/tags/{}", self.name),
        }
    }
}

/// A commit as GitHub reports it in a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Full sha.
    pub sha: String,
    /// Commit time (author's clock), the start of DORA lead time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub timestamp: Option<OffsetDateTime>,
    /// First line of the message.
    #[serde(default)]
    pub message: Option<String>,
}

/// `scm.push`: a branch or tag was pushed, created or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScmPush {
    /// `owner/name`.
    pub repository: String,
    /// The ref pushed.
    pub git_ref: GitRef,
    /// Sha before the push (all zeros on creation).
    pub before: String,
    /// Sha after the push (all zeros on deletion).
    pub after: String,
    /// The ref was created by this push.
    #[serde(default)]
    pub created: bool,
    /// The ref was deleted: nothing to build or deploy.
    #[serde(default)]
    pub deleted: bool,
    /// A force push.
    #[serde(default)]
    pub forced: bool,
    /// Who pushed.
    #[serde(default)]
    pub pusher: Option<String>,
    /// The head commit, when there is one.
    #[serde(default)]
    pub head_commit: Option<CommitInfo>,
    /// Number of commits in the push.
    #[serde(default)]
    pub commit_count: usize,
}

/// `build.started`, `build.succeeded`, `build.failed`: a GitHub Actions workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRun {
    /// `owner/name` of the repository the run belongs to.
    pub repository: String,
    /// The workflow's display name (`name:`), e.g. `build main`.
    pub workflow_name: String,
    /// The workflow file, e.g. `.github/workflows/build-main.yaml`.
    #[serde(default)]
    pub workflow_path: Option<String>,
    /// Run id.
    pub run_id: u64,
    /// Run number.
    #[serde(default)]
    pub run_number: Option<u64>,
    /// Attempt (re-runs increment it).
    #[serde(default)]
    pub run_attempt: Option<u64>,
    /// What triggered the run: `push`, `workflow_dispatch`, `pull_request`, …
    #[serde(default)]
    pub trigger: Option<String>,
    /// The branch (or tag) the run built; `None` for some dynamic runs.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// The commit built.
    pub head_sha: String,
    /// `queued`, `in_progress`, `completed`, …
    pub status: RunStatus,
    /// `success`, `failure`, `cancelled`, … once completed.
    #[serde(default)]
    pub conclusion: Option<RunConclusion>,
    /// The run's display title (dispatches can echo a correlation id into it).
    #[serde(default)]
    pub display_title: Option<String>,
    /// Link for humans.
    #[serde(default)]
    pub html_url: Option<String>,
    /// The repository the head commit lives in, when it differs (a fork).
    #[serde(default)]
    pub head_repository: Option<String>,
    /// Run creation time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// Last update (completion time for completed runs).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

/// A container image reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Repository, e.g. `xchem/fragalysis-stack` or `ghcr.io/o/r`.
    pub repository: String,
    /// Tag, when known.
    #[serde(default)]
    pub tag: Option<String>,
    /// Digest (`sha256:…`), when known.
    #[serde(default)]
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse `REPOSITORY[:TAG][@sha256:DIGEST]` (a registry host with a port is part of the
    /// repository: `registry.example:5000/team/app:1.2`). Says what is wrong otherwise.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let reference = reference.trim();
        let bad = |why: &str| Err(format!("{reference:?} is not an image reference: {why}"));
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => {
                let hex = digest.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad("a digest is sha256: and 64 hex digits");
                }
                (name, Some(digest.to_ascii_lowercase()))
            }
            None => (reference, None),
        };
        // A colon after the last slash starts the tag; one before it is a registry's port.
        let (repository, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
            _ => (name, None),
        };
        if repository.is_empty()
            || repository.starts_with('/')
            || repository.ends_with('/')
            || repository.contains("//")
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        {
            return bad("the repository is lowercase letters, digits, '.', '_', '-' and '/'");
        }
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || tag.starts_with(['.', '-'])
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return bad("a tag is up to 128 letters, digits, '.', '_' and '-'");
        }
        if tag.is_none() && digest.is_none() {
            return bad("name a tag (:1.0.3) or a digest (@sha256:…)");
        }
        Ok(Self {
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The most precise pullable reference: by digest when known, else by tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repository),
            (None, Some(t)) => format!("{}:{t}", self.repository),
            (None, None) => self.repository.clone(),
        }
    }
}

/// `image.pushed`: a registry says an image was pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePushed {
    /// Which registry told us: `dockerhub`, `quay`, `harbor`, `distribution`, `ghcr`.
    pub registry: String,
    /// The image.
    pub image: ImageRef,
    /// Who pushed, when the registry says.
    #[serde(default)]
    pub pusher: Option<String>,
    /// The source repository (`owner/name`) when the registry knows it (GHCR).
    #[serde(default)]
    pub source_repository: Option<String>,
    /// The commit the image was built from, when the registry says (GHCR: the image's
    /// `org.opencontainers.image.revision` label or the package's target commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// `build.requested`: build-trigger dispatched a downstream workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRequested {
    /// The downstream repository.
    pub repository: String,
    /// The workflow dispatched (name or file).
    pub workflow: String,
    /// The ref dispatched on.
    pub git_ref: String,
    /// Inputs sent.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// The run id, when GitHub returned it.
    #[serde(default)]
    pub run_id: Option<u64>,
    /// The upstream repository whose success caused this.
    pub upstream_repository: String,
    /// The upstream commit.
    pub upstream_sha: String,
    /// How many upstream successes this request stands for (coalescing).
    #[serde(default = "one")]
    pub coalesced: u32,
    /// Set when nothing was dispatched because this success joined a dispatch that had not
    /// started yet: the correlation id of that dispatch's chain.
    #[serde(default)]
    pub coalesced_into: Option<String>,
}

fn one() -> u32 {
    1
}

/// Why a deployment was requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The pipeline: a build succeeded or an image was pushed.
    #[default]
    Push,
    /// An operator deployed an image of their choice.
    Manual,
    /// An earlier deployment's image again: an operator's rollback, or Conveyor's own after a
    /// failed rollout.
    Rollback,
    /// The running image again, restarting the pods.
    Redeploy,
    /// A trigger this build does not know (a newer producer's).
    #[serde(other)]
    Unknown,
}

impl Trigger {
    /// Every trigger this build knows.
    pub const ALL: &'static [Trigger] = &[
        Trigger::Push,
        Trigger::Manual,
        Trigger::Rollback,
        Trigger::Redeploy,
    ];

    /// The name on the wire, in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Manual => "manual",
            Trigger::Rollback => "rollback",
            Trigger::Redeploy => "redeploy",
            Trigger::Unknown => "unknown",
        }
    }

    /// How a report says it: "Rolled back", "Redeployed", …
    pub fn past_tense(self) -> &'static str {
        match self {
            Trigger::Push | Trigger::Unknown => "Deployed",
            Trigger::Manual => "Deployed by hand",
            Trigger::Rollback => "Rolled back",
            Trigger::Redeploy => "Redeployed",
        }
    }
}

/// Who did something: an operator (authenticated by a token or by the auth proxy in front of
/// the control API) or Conveyor itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The operator's name (the token's name, or the user the proxy vouched for), or `conveyor`.
    pub name: String,
    /// How they were authenticated: `token`, `proxy` or `conveyor`.
    pub via: String,
    /// The client address the action came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Actor {
    /// Conveyor acting on its own (an automatic rollback).
    pub fn conveyor() -> Self {
        Self {
            name: "conveyor".into(),
            via: "conveyor".into(),
            from: None,
        }
    }
}

/// The hand behind a deployment: what triggered it, who, why. Every event of the deployment
/// carries it, so the ledger, GitHub and Slack can say "Rolled back by alice: 500s on /api".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// What triggered it.
    #[serde(default)]
    pub trigger: Trigger,
    /// Who (none for a push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Why, in the operator's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// It overrides a pause or a freeze window (`--force`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// For a rollback or a redeploy: the deployment whose image it deploys again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_deployment: Option<String>,
    /// The request names no commit (an image deployed by hand that no recorded build made):
    /// what is reported per commit (GitHub deployments and statuses) cannot be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// For a rollback: the deployment it undoes (what ran when it was requested), which DORA
    /// counts as a failed change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

impl Operation {
    /// A push: the pipeline's own deployment.
    pub fn is_push(&self) -> bool {
        self.trigger == Trigger::Push && self.actor.is_none()
    }

    /// "Rolled back by alice: 500s on /api", or `None` for a push.
    pub fn describe(&self) -> Option<String> {
        if self.is_push() {
            return None;
        }
        let mut s = self.trigger.past_tense().to_owned();
        if let Some(actor) = &self.actor {
            s.push_str(&format!(" by {}", actor.name));
        }
        if self.forced {
            s.push_str(" (forced)");
        }
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str(&format!(": {reason}"));
        }
        Some(s)
    }

    /// `None` for a push (later events omit it), else a copy.
    pub fn carried(&self) -> Option<Operation> {
        (!self.is_plain_push()).then(|| self.clone())
    }

    /// A push that names its commit: nothing about it needs saying downstream.
    pub fn is_plain_push(&self) -> bool {
        self.is_push() && !self.untracked
    }
}

/// `deploy.requested.<env>`: deploy this image of this commit to this environment.
///
/// Schema v2 adds [`DeployRequested::operation`]; a v1 event decodes as a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequested {
    /// Target environment (also the routing-key qualifier).
    pub environment: String,
    /// The repository deployed.
    pub repository: String,
    /// The commit deployed.
    pub sha: String,
    /// The ref that selected this deployment.
    pub git_ref: GitRef,
    /// The image to run.
    pub image: ImageRef,
    /// Upstream commits that fed this deployment (for commit statuses and DORA lead time).
    #[serde(default)]
    pub upstream: Vec<UpstreamCommit>,
    /// When the change this request carries out came to be (the build run's creation), the
    /// same in every copy of the request however often it is published; newest-wins orders
    /// requests by it, by the envelope's time when absent (`supersede::request_order`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub origin_time: Option<OffsetDateTime>,
    /// What triggered it, who and why (v2; a push when absent).
    #[serde(default)]
    pub operation: Operation,
}

/// A commit of an upstream repository that reached a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCommit {
    /// `owner/name`.
    pub repository: String,
    /// Sha.
    pub sha: String,
}

/// `deploy.superseded.<env>`: a newer request for the environment won.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySuperseded {
    /// The environment.
    pub environment: String,
    /// Correlation id of the deployment that replaces this one.
    pub superseded_by: String,
    /// The superseded request's operation, unless it was a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Why a request waits instead of being carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// An operator paused the environment.
    Paused,
    /// A freeze window of the pipeline file is open.
    Frozen,
    /// It has not completed (and passed verification) in the environment it must pass first.
    Requires,
    /// It waits for a person's approval.
    Approval,
    /// A hold this build does not know.
    #[serde(other)]
    Unknown,
}

/// `deploy.held.<env>`: the request waits — it is neither lost nor launched — until the hold
/// lifts; then the newest held request of the environment runs, once, and the others are
/// superseded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployHeld {
    /// The environment.
    pub environment: String,
    /// What holds it.
    pub kind: HoldKind,
    /// Said for people: "paused by alice: incident 42", "frozen until Mon 08:00 Europe/London".
    pub reason: String,
    /// When the hold lifts by itself (a freeze window's end), if it does.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub until: Option<OffsetDateTime>,
}

/// `control.paused.<env>`: an operator paused the environment's deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentPaused {
    /// The environment.
    pub environment: String,
    /// Who.
    pub actor: Actor,
    /// Why.
    pub reason: String,
}

/// `control.resumed.<env>`: an operator resumed the environment's deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentResumed {
    /// The environment.
    pub environment: String,
    /// Who.
    pub actor: Actor,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a deployment is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorRun {
    /// An AWX job.
    Awx {
        /// Job id.
        job_id: u64,
        /// Job URL for humans.
        url: String,
        /// Template name.
        template: String,
    },
    /// Conveyor patched the StatefulSet itself.
    Kubernetes {
        /// The StatefulSet generation after the patch.
        generation: i64,
    },
}

/// `deploy.launched.<env>`: the executor accepted the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployLaunched {
    /// The environment.
    pub environment: String,
    /// What runs it.
    pub executor: ExecutorRun,
    /// The image being deployed.
    pub image: ImageRef,
    /// Namespace of the StatefulSet to follow.
    pub namespace: String,
    /// Name of the StatefulSet to follow.
    pub statefulset: String,
    /// The request's operation, unless it was a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The commit deployed, when the request names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

/// `deploy.job_finished.<env>`: the AWX job reached a terminal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployJobFinished {
    /// The environment.
    pub environment: String,
    /// Job id.
    pub job_id: u64,
    /// `successful`, `failed`, `error`, `canceled`, or `stuck` when the pending deadline passed.
    pub status: JobStatus,
    /// `status` counts as a failure (anything but `successful`).
    pub failed: bool,
    /// AWX's `elapsed`, seconds.
    #[serde(default)]
    pub elapsed_seconds: f64,
    /// AWX's `job_explanation`.
    #[serde(default)]
    pub explanation: Option<String>,
    /// For a failure, the task that failed, its host and the module's message, from the job's
    /// events (`task "Wait for stack-1" (role fragalysis-stack, …) failed on localhost: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Last lines of stdout for failures (bounded).
    #[serde(default)]
    pub stdout_tail: Option<String>,
}

/// `deploy.completed.<env>`: the new version runs everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployCompleted {
    /// The environment.
    pub environment: String,
    /// The image now running.
    pub image: ImageRef,
    /// The StatefulSet revision now current.
    #[serde(default)]
    pub revision: Option<String>,
    /// The request's operation, unless it was a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The commit now running, when known (an environment that requires this one matches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// It passed its verification (an environment with `verify` completes only so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
}

/// `deploy.verifying.<env>`: every pod is Ready; the checks run before it counts as completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployVerifying {
    /// The environment.
    pub environment: String,
    /// The checks, said for people: `GET https://… → 200, 3 in a row within 300 s`.
    pub checks: Vec<String>,
    /// How long the checks keep running after they first pass.
    #[serde(default)]
    pub soak_secs: u64,
}

/// `deploy.awaiting_approval.<env>`: the request waits for one of `approvers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployAwaitingApproval {
    /// The environment.
    pub environment: String,
    /// Who may approve (operator names or roles).
    pub approvers: Vec<String>,
    /// When the request fails if nobody approved it.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The request's operation, unless it was a push (so a channel knows, e.g., that an image
    /// deployed by hand has no commit to report on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `deploy.approved.<env>` / `deploy.rejected.<env>`: a person decided on a request awaiting
/// approval (in the request's chain, so it is part of the deployment's record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployDecided {
    /// The environment.
    pub environment: String,
    /// Who.
    pub actor: Actor,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An approval that also lifts the `requires` hold (the change did not pass the required
    /// environment first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overrides_requires: bool,
}

/// `rollout.unstuck.<env>`: a pod stuck on a broken revision was deleted, so the controller
/// replaces it at the revision now wanted (it never does so by itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutUnstuck {
    /// The environment.
    pub environment: String,
    /// The pod deleted.
    pub pod: String,
    /// Its revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// Why it was stuck: `CrashLoopBackOff`, `ImagePullBackOff`, `Unschedulable`.
    pub reason: String,
}

/// `control.unstick.<env>`: an operator asks rollout-watcher to delete the environment's pods
/// stuck on a broken revision (for AWX environments, where the role owns the rollout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnstickRequested {
    /// The environment.
    pub environment: String,
    /// Who.
    pub actor: Actor,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a deployment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The request itself is wrong (an environment no executor knows).
    Request,
    /// The build that was to produce the image.
    Build,
    /// Handing it to the executor (AWX refused the launch, the patch was refused).
    Launch,
    /// The AWX job failed.
    Job,
    /// The StatefulSet did not roll out.
    Rollout,
    /// The service did not pass its checks after the rollout.
    Verify,
    /// Nobody approved it in time, or someone rejected it.
    Approval,
    /// A stage this build does not know (a newer producer's).
    #[serde(other)]
    Unknown,
}

impl Stage {
    /// Every stage this build knows.
    pub const ALL: &'static [Stage] = &[
        Stage::Request,
        Stage::Build,
        Stage::Launch,
        Stage::Job,
        Stage::Rollout,
        Stage::Verify,
        Stage::Approval,
    ];

    /// The name on the wire and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::Build => "build",
            Stage::Launch => "launch",
            Stage::Job => "job",
            Stage::Rollout => "rollout",
            Stage::Verify => "verify",
            Stage::Approval => "approval",
            Stage::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deploy.failed.<env>`: the deployment ended without the new version running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployFailed {
    /// The environment.
    pub environment: String,
    /// Where it failed.
    pub stage: Stage,
    /// A human-readable cause, e.g. `stack-1: ImagePullBackOff`.
    pub reason: String,
    /// The request's operation, unless it was a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `rollout.started.<env>`: the StatefulSet began moving to a new revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStarted {
    /// The environment.
    pub environment: String,
    /// Namespace.
    pub namespace: String,
    /// StatefulSet name.
    pub statefulset: String,
    /// Revision pods ran before.
    #[serde(default)]
    pub from_revision: Option<String>,
    /// Target revision.
    pub to_revision: String,
    /// Desired replicas.
    pub replicas: i32,
}

/// What happened to a pod during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodStep {
    /// The old pod is terminating.
    Deleted,
    /// The replacement exists (Pending).
    Created,
    /// The replacement is Running and Ready.
    Ready,
}

/// `rollout.progress.<env>`: one pod moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The environment.
    pub environment: String,
    /// Pod name.
    pub pod: String,
    /// Pod ordinal.
    pub ordinal: u32,
    /// What happened.
    pub step: PodStep,
    /// The pod's revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// When it happened (cluster clock, e.g. the Ready condition's transition time).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Pods at the update revision.
    pub updated: i32,
    /// Ready pods.
    pub ready: i32,
    /// Desired replicas.
    pub replicas: i32,
}

/// Per-pod timing in a completed rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodTiming {
    /// Pod name.
    pub pod: String,
    /// Deleted (or first seen) at.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started: Option<OffsetDateTime>,
    /// Ready at.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ready: Option<OffsetDateTime>,
}

/// `rollout.completed.<env>`: kubectl's completion rule holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutCompleted {
    /// The environment.
    pub environment: String,
    /// The revision now running.
    pub revision: String,
    /// Replicas.
    pub replicas: i32,
    /// Per pod.
    #[serde(default)]
    pub pods: Vec<PodTiming>,
    /// Time from rollout start to completion, milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// When the last pod turned Ready (cluster clock).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_ready_at: Option<OffsetDateTime>,
}

/// `rollout.stalled.<env>`: the rollout is not progressing, with the cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStalled {
    /// The environment.
    pub environment: String,
    /// The pod that blocks.
    pub pod: String,
    /// Its container, when the cause is a container's.
    #[serde(default)]
    pub container: Option<String>,
    /// `CrashLoopBackOff`, `ImagePullBackOff`, `Unschedulable`, `NoProgress`, …
    pub reason: String,
    /// Kubernetes' message.
    #[serde(default)]
    pub message: Option<String>,
    /// Container restarts so far.
    #[serde(default)]
    pub restarts: i32,
    /// What an operator should do.
    #[serde(default)]
    pub hint: Option<String>,
}

/// `rollout.failed.<env>`: the rollout will not complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutFailed {
    /// The environment.
    pub environment: String,
    /// Why.
    pub reason: String,
}

/// `awx.job.started` / `awx.job.finished`: an AWX notification webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwxJobNotification {
    /// Job id.
    pub job_id: u64,
    /// Template name.
    #[serde(default)]
    pub template: Option<String>,
    /// Status as AWX reported it.
    pub status: JobStatus,
    /// Job URL.
    #[serde(default)]
    pub url: Option<String>,
}
