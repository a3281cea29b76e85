//! Configuration: the pipeline file (`conveyor.toml`, the same for every service), the
//! environment-variable wiring, and secrets that never print.
//!
//! Everything is parsed once at start; a problem stops the service with a message naming the
//! key. The environment is read through the [`Env`] trait so tests can fake it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

mod safety;

pub use safety::{Approval, HttpCheck, OnFailure, PrometheusCheck, Requires, Verify};

use crate::events::{GitRef, RefKind};
use crate::freeze::{FreezeSpec, FreezeWindow, Frozen};

/// Placeholders a `dispatch_inputs` value may use.
pub const INPUT_PLACEHOLDERS: &[&str] = &[
    "upstream.tag",
    "upstream.sha",
    "upstream.short_sha",
    "upstream.branch",
    "upstream.ref",
    "upstream.repository",
    "upstream.run_id",
];

/// One problem in the configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `environment[1].repository`, or an environment variable name.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// An error with one problem.
    pub fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// A secret value: `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value, registering it with [`crate::redact`] so that it is scrubbed from every
    /// log line, error, event and dead letter.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::redact::register(&value);
        Self(value)
    }

    /// The value, for the one place that must send it (an Authorization header, an HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where environment variables come from (the process, or a map in tests).
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl Env for BTreeMap<&str, &str> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| (*v).to_owned())
    }
}

/// Read secret `name` from `$NAME`, or from the file named by `$NAME_FILE` (trailing newline
/// trimmed). Both set is an error, as is an unreadable file. The value is never echoed.
pub fn secret(env: &dyn Env, name: &str) -> Result<Option<Secret>, ConfigError> {
    let file_key = format!("{name}_FILE");
    match (env.var(name), env.var(&file_key)) {
        (Some(_), Some(_)) => Err(ConfigError::one(
            name,
            format!("set either {name} or {file_key}, not both"),
        )),
        (Some(v), None) if v.is_empty() => Ok(None),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(Secret::new(v.trim_end_matches(['\n', '\r'])))),
            Err(e) => Err(ConfigError::one(
                file_key,
                format!("cannot read {path}: {e}"),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// Wiring every service reads from the environment.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// `AMQP_URL` (or `AMQP_URL_FILE`); may hold a password, hence a secret.
    pub amqp_url: Secret,
    /// The PEM certificates in `AMQP_CA_FILE`: what an `amqps://` broker's certificate must
    /// chain to (default: the system's roots).
    pub amqp_ca: Option<String>,
    /// `CONVEYOR_EXCHANGE`: the exchange name and queue prefix.
    pub exchange: String,
    /// `CONVEYOR_ADMIN_LISTEN`: where `/live`, `/ready`, `/metrics` are served.
    pub admin_listen: SocketAddr,
    /// `CONVEYOR_CONFIG`: the pipeline file.
    pub config_path: PathBuf,
    /// `CONVEYOR_PARTITIONS`: partitions of each partitioned stage (every process of an
    /// installation the same; default [`crate::bus::DEFAULT_PARTITIONS`]).
    pub partitions: u16,
}

/// Default broker URL.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Wiring {
    /// Read the wiring; `config_override` (from `--config`) wins over `CONVEYOR_CONFIG`.
    pub fn from_env(env: &dyn Env, config_override: Option<&Path>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let amqp_url = match secret(env, "AMQP_URL") {
            Ok(v) => v.unwrap_or_else(|| Secret::new(DEFAULT_AMQP_URL)),
            Err(e) => {
                problems.extend(e.problems);
                Secret::new(DEFAULT_AMQP_URL)
            }
        };
        // One URL, or a cluster's nodes separated by commas.
        if !amqp_url
            .expose()
            .split(',')
            .map(str::trim)
            .all(|u| u.starts_with("amqp://") || u.starts_with("amqps://"))
        {
            problems.push(Problem {
                key: "AMQP_URL".into(),
                message: "must be amqp:// or amqps:// URLs (several, comma-separated, for a cluster's nodes)".into(),
            });
        }
        let amqp_ca =
            env.var("AMQP_CA_FILE")
                .and_then(|path| match std::fs::read_to_string(&path) {
                    Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
                    Ok(_) => {
                        problems.push(Problem {
                            key: "AMQP_CA_FILE".into(),
                            message: format!("{path} holds no PEM certificate"),
                        });
                        None
                    }
                    Err(e) => {
                        problems.push(Problem {
                            key: "AMQP_CA_FILE".into(),
                            message: format!("cannot read {path}: {e}"),
                        });
                        None
                    }
                });
        let exchange = env
            .var("CONVEYOR_EXCHANGE")
            .unwrap_or_else(|| "conveyor".into());
        if exchange.is_empty()
            || !exchange
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push(Problem {
                key: "CONVEYOR_EXCHANGE".into(),
                message: format!("{exchange:?} is not a valid name ([A-Za-z0-9._-]+)"),
            });
        }
        let admin = env
            .var("CONVEYOR_ADMIN_LISTEN")
            .unwrap_or_else(|| "0.0.0.0:9090".into());
        let admin_listen = admin.parse().unwrap_or_else(|_| {
            problems.push(Problem {
                key: "CONVEYOR_ADMIN_LISTEN".into(),
                message: format!("{admin:?} is not an address like 0.0.0.0:9090"),
            });
            SocketAddr::from(([0, 0, 0, 0], 9090))
        });
        let config_path = config_override
            .map(Path::to_path_buf)
            .or_else(|| env.var("CONVEYOR_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("conveyor.toml"));
        let partitions = match env.var("CONVEYOR_PARTITIONS") {
            None => crate::bus::DEFAULT_PARTITIONS,
            Some(n) => match n.parse::<u16>() {
                Ok(n @ 1..=256) => n,
                _ => {
                    problems.push(Problem {
                        key: "CONVEYOR_PARTITIONS".into(),
                        message: format!("{n:?} is not a number from 1 to 256"),
                    });
                    crate::bus::DEFAULT_PARTITIONS
                }
            },
        };
        if problems.is_empty() {
            Ok(Self {
                amqp_url,
                amqp_ca,
                exchange,
                admin_listen,
                config_path,
                partitions,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

impl Pipeline {
    /// Each repository's group: the repositories `downstream` links (build-trigger's work is
    /// ordered per group; see [`crate::bus::partition`]).
    pub fn repository_groups(&self) -> std::collections::BTreeMap<String, String> {
        let edges: Vec<(String, String)> = self
            .repositories
            .iter()
            .flat_map(|r| {
                std::iter::once((r.name.clone(), r.name.clone()))
                    .chain(r.downstream.iter().map(|d| (r.name.clone(), d.clone())))
            })
            .collect();
        crate::bus::partition::repository_groups(&edges)
    }
}

/// The pipeline: repositories, how they feed each other, and environments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Repositories whose builds Conveyor follows.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<Repository>,
    /// Environments Conveyor deploys to.
    #[serde(default, rename = "environment")]
    pub environments: Vec<Environment>,
    /// AWX client settings.
    #[serde(default)]
    pub awx: AwxSettings,
    /// Rollout-watching settings.
    #[serde(default)]
    pub rollout: RolloutSettings,
}

/// A repository whose builds matter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// `owner/name`.
    pub name: String,
    /// The workflow (display name or file name) whose success means "image built".
    pub build_workflow: String,
    /// Branches whose successful builds count (empty: every branch).
    #[serde(default)]
    pub branches: Vec<String>,
    /// A tag regex whose successful builds count too.
    #[serde(default)]
    pub tags: Option<String>,
    /// Repositories whose build is dispatched when this one's succeeds.
    #[serde(default)]
    pub downstream: Vec<String>,
    /// The ref this repository's build is dispatched on when an upstream succeeds.
    #[serde(default)]
    pub dispatch_ref: Option<String>,
    /// Inputs sent with every dispatch of this repository's workflow; values may use
    /// `{upstream.tag}`, `{upstream.sha}`, … (see [`INPUT_PLACEHOLDERS`]).
    #[serde(default)]
    pub dispatch_inputs: BTreeMap<String, String>,
    /// Inputs this repository's success adds when it dispatches a downstream build (merged
    /// over the downstream's `dispatch_inputs`): how the frontend says `fe_image_tag` and the
    /// backend `be_image_tag` to the same stack workflow.
    #[serde(default)]
    pub downstream_inputs: BTreeMap<String, String>,
    /// The image this repository's build pushes (default: the repository name).
    #[serde(default)]
    pub image: Option<String>,
    /// The image tag a branch build pushes (tag builds push the tag's name).
    #[serde(default = "default_branch_image_tag")]
    pub branch_image_tag: String,
    #[serde(skip)]
    tag_regex: Option<Regex>,
}

fn default_branch_image_tag() -> String {
    "latest".into()
}

impl Repository {
    /// The image repository this build produces.
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(&self.name)
    }

    /// Whether a successful build of `git_ref` counts.
    pub fn watches(&self, git_ref: &GitRef) -> bool {
        match git_ref.kind {
            RefKind::Branch => self.branches.is_empty() || self.branches.contains(&git_ref.name),
            RefKind::Tag => self
                .tag_regex
                .as_ref()
                .is_some_and(|r| r.is_match(&git_ref.name)),
        }
    }
}

/// What selects a build for an environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Builds of this branch.
    Branch(String),
    /// Builds of tags matching this regex.
    Tag(String),
}

/// How an environment is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Executor {
    /// Launch an AWX job template.
    Awx(AwxExecutor),
    /// Patch the StatefulSet directly.
    Kubernetes(KubernetesExecutor),
}

/// AWX executor settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwxExecutor {
    /// Job template name (exact, case-sensitive).
    pub template: String,
    /// The extra variable that carries the image tag (the template must prompt for it).
    pub image_var: String,
}

/// Kubernetes executor settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesExecutor {
    /// The container whose image is replaced.
    pub container: String,
}

/// The StatefulSet an environment runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatefulSetRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// kubeconfig context (default: the current one).
    #[serde(default)]
    pub context: Option<String>,
}

/// A deployment target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Name, also the routing-key qualifier: `[a-z0-9_-]+`.
    pub name: String,
    /// The repository whose builds deploy here.
    pub repository: String,
    /// Which builds.
    pub on: Trigger,
    /// How.
    pub executor: Executor,
    /// What runs it.
    pub statefulset: StatefulSetRef,
    /// This is a production environment (GitHub Deployments, DORA).
    #[serde(default)]
    pub production: Option<bool>,
    /// Which fact requests the deployment: the build's success (default) or the registry's
    /// push notification (which carries the image digest). Never both, or every build would
    /// deploy twice.
    #[serde(default)]
    pub deploy_on: DeployOn,
    /// Where people reach the environment (GitHub's `environment_url`), if anywhere.
    #[serde(default)]
    pub url: Option<String>,
    /// Which notification channels hear about this environment, and how much.
    #[serde(default)]
    pub notify: NotifyRouting,
    /// When deployments are held as if the environment were paused (`--force` overrides).
    #[serde(default)]
    pub freeze: Vec<FreezeSpec>,
    /// Checks after the last pod is Ready, before the deployment counts as completed.
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Deploy here only what completed (and passed verification) in another environment.
    #[serde(default)]
    pub requires: Option<Requires>,
    /// A person approves each deployment here before it is launched.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// What happens when a rollout or its verification fails.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Delete pods stuck on a broken revision once a newer one is applied (the Kubernetes
    /// executor; for AWX environments, `conveyor unstick`). Needs `pods: delete` in RBAC.
    #[serde(default)]
    pub unstick: bool,
    #[serde(skip)]
    tag_regex: Option<Regex>,
    #[serde(skip)]
    freeze_windows: Vec<FreezeWindow>,
}

/// How much of an environment's deployments a notification channel reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    /// Start, progress and end of every deployment.
    #[default]
    All,
    /// Only how each deployment ended (completed, failed, superseded).
    Finished,
    /// Only failed deployments.
    Failures,
    /// Nothing.
    None,
}

impl NotifyLevel {
    /// Whether an event of this kind is reported at this level.
    pub fn admits(self, kind: NotifyKind) -> bool {
        match self {
            NotifyLevel::All => true,
            NotifyLevel::Finished => kind != NotifyKind::Progress,
            NotifyLevel::Failures => kind == NotifyKind::Failure,
            NotifyLevel::None => false,
        }
    }
}

/// The notification weight of a deployment event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// Requested, launched, job finished.
    Progress,
    /// Completed or superseded.
    Finished,
    /// Failed.
    Failure,
}

/// Per-channel levels of one environment. A channel that is not configured (no token, URL
/// or secret in the environment) reports nothing whatever its level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyRouting {
    /// GitHub Deployments and commit statuses: `all` or `none` (a GitHub deployment is a
    /// lifecycle; reporting only its end would leave it without a start).
    pub github: NotifyLevel,
    /// Slack.
    pub slack: NotifyLevel,
    /// Generic CloudEvents webhooks.
    pub webhook: NotifyLevel,
}

/// Which event requests a deployment of an environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOn {
    /// `build.succeeded` of the environment's repository.
    #[default]
    Build,
    /// `image.pushed` of the repository's image.
    Image,
}

impl Environment {
    /// Whether a build of `git_ref` deploys here.
    pub fn accepts(&self, git_ref: &GitRef) -> bool {
        match (&self.on, git_ref.kind) {
            (Trigger::Branch(b), RefKind::Branch) => *b == git_ref.name,
            (Trigger::Tag(_), RefKind::Tag) => self
                .tag_regex
                .as_ref()
                .is_some_and(|r| r.is_match(&git_ref.name)),
            _ => false,
        }
    }

    /// Production unless said otherwise, judged by name.
    pub fn is_production(&self) -> bool {
        self.production.unwrap_or(self.name == "production")
    }

    /// The ref a deployment of unknown provenance is filed under: the environment's branch,
    /// or the image's tag for a tag-fed environment.
    pub fn fallback_ref(&self, image: &crate::events::ImageRef) -> GitRef {
        match &self.on {
            Trigger::Branch(b) => GitRef::branch(b.clone()),
            Trigger::Tag(_) => GitRef::tag(image.tag.clone().unwrap_or_else(|| "unknown".into())),
        }
    }

    /// Whether a person must approve this environment's deployments.
    pub fn needs_approval(&self) -> bool {
        self.approval.as_ref().is_some_and(|a| a.required)
    }

    /// The freeze window open at `at`, if any.
    pub fn frozen_at(&self, at: time::OffsetDateTime) -> Option<Frozen> {
        crate::freeze::frozen(&self.freeze_windows, at)
    }
}

/// AWX client settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwxSettings {
    /// API prefix: `/api/v2` (AWX) or `/api/controller/v2` (AAP 2.5+).
    pub api_prefix: String,
    /// A job pending longer than this is reported (seconds).
    pub pending_deadline_secs: u64,
    /// Cancel a job that passed the pending deadline.
    pub cancel_stuck: bool,
    /// An AWX request unanswered after this long fails (seconds). It also bounds how long a
    /// launch sent by a worker that died may still land, so a redelivered request waits this
    /// long before it concludes that no job was launched.
    pub request_timeout_secs: u64,
}

impl Default for AwxSettings {
    fn default() -> Self {
        Self {
            api_prefix: "/api/v2".into(),
            pending_deadline_secs: 1800,
            cancel_stuck: false,
            request_timeout_secs: 15,
        }
    }
}

/// Rollout-watching settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// No progress for this long is a stall (seconds).
    pub stall_after_secs: u64,
    /// After a stall, wait this long for recovery before `deploy.failed` (seconds).
    pub fail_grace_secs: u64,
    /// An AWX job that succeeded although, this long after the launch, the StatefulSet shows
    /// no new revision and no replaced pod changed nothing (a role that skipped the task, a
    /// wrong variable name): the deployment fails at stage `job` then, not after a stall.
    pub start_within_secs: u64,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            stall_after_secs: 600,
            fail_grace_secs: 120,
            start_within_secs: 120,
        }
    }
}

impl Pipeline {
    /// Read and validate the pipeline file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::parse(&text)
    }

    /// Parse and validate pipeline TOML.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut pipeline: Pipeline = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(file)".into());
            ConfigError::one(key, e.message().to_owned())
        })?;
        pipeline.validate()?;
        Ok(pipeline)
    }

    /// The repository called `name`.
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The environment called `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut p = |key: String, message: String| problems.push(Problem { key, message });
        let names: BTreeSet<String> = self
            .repositories
            .iter()
            .map(|r| r.name.to_ascii_lowercase())
            .collect();
        let mut seen = BTreeSet::new();
        for (i, r) in self.repositories.iter_mut().enumerate() {
            r.validate(i, &names, &mut seen, &mut p);
        }
        if let Some(cycle) = downstream_cycle(&self.repositories) {
            p("repository".into(), format!("downstream cycle: {cycle}"));
        }
        let mut seen = BTreeSet::new();
        let env_names: Vec<String> = self.environments.iter().map(|e| e.name.clone()).collect();
        for (i, e) in self.environments.iter_mut().enumerate() {
            e.validate(i, &names, &env_names, &mut seen, &mut p);
        }
        self.awx.validate(&mut p);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

impl Repository {
    /// Check the `i`th repository (compiling its tag pattern), given every repository's
    /// lowercased name and the names seen so far.
    fn validate(
        &mut self,
        i: usize,
        names: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        p: &mut dyn FnMut(String, String),
    ) {
        let r = self;
        let k = |f: &str| format!("repository[{i}].{f}");
        if !valid_repo_name(&r.name) {
            p(k("name"), format!("{:?} is not owner/name", r.name));
        }
        if !seen.insert(r.name.to_ascii_lowercase()) {
            p(
                k("name"),
                format!("repository {:?} is declared twice", r.name),
            );
        }
        if r.build_workflow.trim().is_empty() {
            p(
                k("build_workflow"),
                "must name a workflow (display name or file)".into(),
            );
        }
        for (j, d) in r.downstream.iter().enumerate() {
            if !names.contains(&d.to_ascii_lowercase()) {
                p(
                    format!("repository[{i}].downstream[{j}]"),
                    format!("{d:?} is not a declared repository"),
                );
            } else if d.eq_ignore_ascii_case(&r.name) {
                p(
                    format!("repository[{i}].downstream[{j}]"),
                    "a repository cannot be its own downstream".into(),
                );
            }
        }
        if let Some(t) = &r.tags {
            match Regex::new(t) {
                Ok(re) => r.tag_regex = Some(re),
                Err(e) => p(k("tags"), format!("invalid regex: {e}")),
            }
        }
        let inputs = [
            ("dispatch_inputs", &r.dispatch_inputs),
            ("downstream_inputs", &r.downstream_inputs),
        ];
        for (field, map) in inputs {
            for (name, value) in map {
                for placeholder in placeholders(value) {
                    if !INPUT_PLACEHOLDERS.contains(&placeholder) {
                        p(
                            format!("repository[{i}].{field}.{name}"),
                            format!(
                                "unknown placeholder {{{placeholder}}}; known: {}",
                                INPUT_PLACEHOLDERS.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        if !r.downstream_inputs.is_empty() && r.downstream.is_empty() {
            p(
                k("downstream_inputs"),
                "has no effect without downstream repositories".into(),
            );
        }
        if r.branch_image_tag.is_empty()
            || !r
                .branch_image_tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            p(
                k("branch_image_tag"),
                format!("{:?} is not a valid image tag", r.branch_image_tag),
            );
        }
        if r.dispatch_inputs.len() + r.downstream_inputs.len() > 25 {
            p(
                k("dispatch_inputs"),
                "GitHub accepts at most 25 inputs".into(),
            );
        }
    }
}

impl Environment {
    /// Check the `i`th environment (compiling its tag pattern and freeze windows), given every
    /// repository's lowercased name, every environment's name and the names seen so far.
    fn validate(
        &mut self,
        i: usize,
        names: &BTreeSet<String>,
        env_names: &[String],
        seen: &mut BTreeSet<String>,
        p: &mut dyn FnMut(String, String),
    ) {
        let e = self;
        let k = |f: &str| format!("environment[{i}].{f}");
        if e.name.is_empty()
            || !e
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            p(
                k("name"),
                format!(
                    "{:?} must match [a-z0-9_-]+ (it becomes a routing key)",
                    e.name
                ),
            );
        }
        if !seen.insert(e.name.clone()) {
            p(
                k("name"),
                format!("environment {:?} is declared twice", e.name),
            );
        }
        if !names.contains(&e.repository.to_ascii_lowercase()) {
            p(
                k("repository"),
                format!("{:?} is not a declared repository", e.repository),
            );
        }
        match &e.on {
            Trigger::Tag(t) => match Regex::new(t) {
                Ok(re) => e.tag_regex = Some(re),
                Err(err) => p(k("on.tag"), format!("invalid regex: {err}")),
            },
            Trigger::Branch(b) if b.is_empty() => p(k("on.branch"), "must not be empty".into()),
            Trigger::Branch(_) => {}
        }
        e.executor.validate(i, p);
        if !matches!(e.notify.github, NotifyLevel::All | NotifyLevel::None) {
            p(
                k("notify.github"),
                "must be \"all\" or \"none\" (a GitHub deployment needs its start)".into(),
            );
        }
        if let Some(url) = &e.url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            p(k("url"), format!("{url:?} is not an http(s) URL"));
        }
        safety::validate(
            i,
            &e.name,
            e.verify.as_ref(),
            e.requires.as_ref(),
            e.approval.as_ref(),
            env_names,
            p,
        );
        e.freeze_windows.clear();
        for (j, spec) in e.freeze.iter().enumerate() {
            match FreezeWindow::parse(spec) {
                Ok(w) => e.freeze_windows.push(w),
                Err(message) => p(format!("environment[{i}].freeze[{j}]"), message),
            }
        }
        if !dns_label(&e.statefulset.namespace) {
            p(
                k("statefulset.namespace"),
                format!("{:?} is not a valid namespace", e.statefulset.namespace),
            );
        }
        if !dns_label(&e.statefulset.name) {
            p(
                k("statefulset.name"),
                format!("{:?} is not a valid StatefulSet name", e.statefulset.name),
            );
        }
    }
}

impl Executor {
    fn validate(&self, i: usize, p: &mut dyn FnMut(String, String)) {
        let k = |f: &str| format!("environment[{i}].{f}");
        match self {
            Executor::Awx(a) => {
                if a.template.trim().is_empty() {
                    p(
                        k("executor.awx.template"),
                        "must name a job template".into(),
                    );
                }
                if a.image_var.trim().is_empty() {
                    p(
                        k("executor.awx.image_var"),
                        "must name the extra variable for the image tag".into(),
                    );
                }
            }
            Executor::Kubernetes(kx) => {
                if kx.container.trim().is_empty() {
                    p(
                        k("executor.kubernetes.container"),
                        "must name a container".into(),
                    );
                }
            }
        }
    }
}

impl AwxSettings {
    fn validate(&self, p: &mut dyn FnMut(String, String)) {
        if !self.api_prefix.starts_with('/') || self.api_prefix.ends_with('/') {
            p(
                "awx.api_prefix".into(),
                "must start with / and not end with / (e.g. /api/v2)".into(),
            );
        }
        if !(1..=300).contains(&self.request_timeout_secs) {
            p(
                "awx.request_timeout_secs".into(),
                "must be between 1 and 300 seconds".into(),
            );
        }
    }
}

fn valid_repo_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The `{…}` placeholders in a template string.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

fn downstream_cycle(repos: &[Repository]) -> Option<String> {
    fn visit<'a>(
        name: &'a str,
        repos: &'a [Repository],
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(pos) = path.iter().position(|p| p.eq_ignore_ascii_case(name)) {
            let mut cycle: Vec<&str> = path[pos..].to_vec();
            cycle.push(name);
            return Some(cycle.join(" → "));
        }
        if done.contains(&name.to_ascii_lowercase()) {
            return None;
        }
        path.push(name);
        if let Some(r) = repos.iter().find(|r| r.name.eq_ignore_ascii_case(name)) {
            for d in &r.downstream {
                if let Some(c) = visit(d, repos, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(name.to_ascii_lowercase());
        None
    }
    let mut done = BTreeSet::new();
    repos
        .iter()
        .find_map(|r| visit(&r.name, repos, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests;
