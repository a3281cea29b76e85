//! Timeline assembly: a chain's events, in any order and with duplicates, become one
//! [`Deployment`] per environment — facts, outcome, stages with start and end, pods, and
//! Conveyor's own overhead. Pure: the same events always give the same deployments.

use std::collections::{BTreeMap, BTreeSet};

use conveyor::events::{ExecutorRun, ImageRef, Operation, PodStep};
use conveyor::{Envelope, Event};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch (what the store keeps and the API returns).
pub type Millis = i64;

/// Milliseconds of `t`.
pub fn millis(t: OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// How a deployment ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Requested, not yet handed to its executor.
    Requested,
    /// Held: its environment is paused or frozen.
    Held,
    /// Launched and rolling out.
    Running,
    /// Every pod runs the new revision.
    Completed,
    /// Failed, with a reason.
    Failed,
    /// Replaced by a newer request before it ran.
    Superseded,
}

impl Status {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Held => "held",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Superseded => "superseded",
        }
    }

    /// Still moving.
    pub fn in_flight(self) -> bool {
        matches!(self, Status::Requested | Status::Held | Status::Running)
    }

    /// Every status still moving.
    pub const IN_FLIGHT: [Status; 3] = [Status::Requested, Status::Held, Status::Running];
}

/// Whose time a stage is: the outside world's (a build, a job, pods starting) or Conveyor's
/// (the time between an outside fact and our reaction to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// GitHub Actions, AWX, Kubernetes.
    External,
    /// Conveyor's overhead.
    Conveyor,
    /// An operator's: the request was held by a pause or a freeze window.
    Operator,
}

impl Owner {
    /// Whose time, in a word: `external`, `Conveyor`, `held`.
    pub fn label(self) -> &'static str {
        match self {
            Owner::External => "external",
            Owner::Conveyor => "Conveyor",
            Owner::Operator => "held",
        }
    }
}

/// One stage of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// What it is, e.g. `AWX job`.
    pub name: String,
    /// Whose time it is.
    pub owner: Owner,
    /// Start.
    pub start: Millis,
    /// End, if it ended.
    pub end: Option<Millis>,
}

/// One pod replaced during the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRow {
    /// Pod name, e.g. `stack-2`.
    pub pod: String,
    /// Ordinal.
    pub ordinal: u32,
    /// When the old pod was deleted.
    pub deleted: Option<Millis>,
    /// When the new pod was created.
    pub created: Option<Millis>,
    /// When the new pod became Ready.
    pub ready: Option<Millis>,
}

/// A commit the deployment carries, with its commit time when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// `owner/name`.
    pub repository: String,
    /// Commit sha.
    pub sha: String,
    /// Commit time (the push's head commit), else the build's start.
    pub committed_at: Option<Millis>,
}

/// What ran the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    /// `awx` or `kubernetes`.
    pub kind: String,
    /// AWX job id.
    pub job_id: Option<u64>,
    /// AWX job page.
    pub url: Option<String>,
    /// Template or StatefulSet.
    pub name: String,
}

/// How a deployment's AWX job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// The job id.
    pub id: u64,
    /// AWX's status (`successful`, `failed`, `error`, `canceled`, or `stuck`).
    pub status: conveyor::events::JobStatus,
    /// Anything but `successful`.
    pub failed: bool,
    /// The task that failed, its host and the module's message.
    #[serde(default)]
    pub failed_task: Option<String>,
    /// AWX's `job_explanation`.
    #[serde(default)]
    pub explanation: Option<String>,
    /// It failed after the StatefulSet had started to roll: the pods may run the new version
    /// however the deployment ended.
    #[serde(default)]
    pub failed_after_rollout_started: bool,
    /// When Conveyor learnt of the end.
    pub at: Millis,
}

/// A deployment: one environment of one chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `<correlation id>.<environment>`.
    pub id: String,
    /// The chain.
    pub correlation_id: String,
    /// The environment.
    pub environment: String,
    /// Repository deployed.
    pub repository: Option<String>,
    /// Commit deployed.
    pub sha: Option<String>,
    /// Ref (`refs/heads/master`, `refs/tags/1.0.3`).
    pub git_ref: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// The image, with its tag and digest when known (what a rollback deploys again).
    #[serde(default)]
    pub image_ref: Option<ImageRef>,
    /// What triggered it, who and why, unless it was a push.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// What holds it, while it is held.
    #[serde(default)]
    pub held: Option<String>,
    /// Commits carried (deployed first, then upstream).
    pub commits: Vec<Commit>,
    /// What ran it.
    pub executor: Option<Executor>,
    /// How its AWX job ended, when it had one and it ended: shown beside the rollout's
    /// outcome, since a job can fail after the pods were replaced (or succeed with nothing
    /// rolled).
    #[serde(default)]
    pub job: Option<JobOutcome>,
    /// Outcome.
    pub status: Status,
    /// Why it failed or what superseded it.
    pub reason: Option<String>,
    /// A rollout stall was reported (even if it recovered).
    pub stalled: bool,
    /// Requested (or first seen).
    pub requested_at: Millis,
    /// Ended.
    pub finished_at: Option<Millis>,
    /// The timeline.
    pub stages: Vec<Stage>,
    /// Pods, in the order they were replaced.
    pub pods: Vec<PodRow>,
    /// Conveyor's own share of the wall time.
    pub overhead_ms: Millis,
    /// Events that make it up.
    pub events: usize,
}

impl Deployment {
    /// The id of `environment`'s deployment in chain `correlation`.
    pub fn id_of(correlation: &str, environment: &str) -> String {
        conveyor::events::deployment_id(correlation, environment)
    }

    /// Wall time from request to end.
    pub fn duration_ms(&self) -> Option<Millis> {
        self.finished_at.map(|f| f - self.requested_at)
    }

    /// The earliest commit time carried (lead time starts there).
    pub fn commit_at(&self) -> Option<Millis> {
        self.commits.iter().filter_map(|c| c.committed_at).min()
    }
}

/// The environment an event concerns, if any.
pub fn environment_of(event: &Event) -> Option<&str> {
    Some(match event {
        Event::DeployRequested(e) => &e.environment,
        Event::DeployHeld(e) => &e.environment,
        Event::DeployAwaitingApproval(e) => &e.environment,
        Event::DeployApproved(e) | Event::DeployRejected(e) => &e.environment,
        Event::DeployVerifying(e) => &e.environment,
        Event::RolloutUnstuck(e) => &e.environment,
        Event::DeploySuperseded(e) => &e.environment,
        Event::DeployLaunched(e) => &e.environment,
        Event::DeployJobFinished(e) => &e.environment,
        Event::DeployCompleted(e) => &e.environment,
        Event::DeployFailed(e) => &e.environment,
        Event::RolloutStarted(e) => &e.environment,
        Event::RolloutProgress(e) => &e.environment,
        Event::RolloutCompleted(e) => &e.environment,
        Event::RolloutStalled(e) => &e.environment,
        Event::RolloutFailed(e) => &e.environment,
        _ => return None,
    })
}

/// The deployments of chain `correlation`, from its events and related ones (the downstream
/// build, the pushes of its commits). Order and duplicates do not matter.
pub fn assemble(correlation: &str, related: &[Envelope]) -> Vec<Deployment> {
    let mut events: Vec<&Envelope> = Vec::new();
    let mut ids = BTreeSet::new();
    for e in related {
        if ids.insert(e.id.as_str()) {
            events.push(e);
        }
    }
    // Placed by their own timestamps, not by arrival.
    events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    let chain: Vec<&Envelope> = events
        .iter()
        .copied()
        .filter(|e| e.correlation_id == correlation)
        .collect();
    let environments: BTreeSet<&str> = chain
        .iter()
        .filter_map(|e| environment_of(&e.event))
        .collect();
    environments
        .into_iter()
        .map(|env| one(correlation, env, &events, &chain))
        .collect()
}

fn one(correlation: &str, env: &str, all: &[&Envelope], chain: &[&Envelope]) -> Deployment {
    let mine: Vec<&Envelope> = chain
        .iter()
        .copied()
        .filter(|e| environment_of(&e.event).is_none_or(|x| x == env))
        .collect();
    let f = Facts::of(env, &mine);
    let mut stages = Stages::default();
    build_stages(&mut stages, &f, all, chain);
    deploy_stages(&mut stages, &f);
    let stages = stages.0;
    let status = match &f.terminal {
        Some((_, s, _)) => *s,
        None if f.launched.is_some() => Status::Running,
        None if f.held.is_some() => Status::Held,
        None => Status::Requested,
    };
    let overhead_ms = stages
        .iter()
        .filter(|s| s.owner == Owner::Conveyor)
        .filter_map(|s| s.end.map(|e| e - s.start))
        .sum();
    let request = f.request;
    let launched = f.launched;
    Deployment {
        id: Deployment::id_of(correlation, env),
        correlation_id: correlation.to_owned(),
        environment: env.to_owned(),
        repository: request.map(|(_, r)| r.repository.clone()),
        // An image pushed without its commit has none to show.
        sha: request
            .map(|(_, r)| r.sha.clone())
            .filter(|s| !s.is_empty()),
        git_ref: request.map(|(_, r)| r.git_ref.full()),
        image: request
            .map(|(_, r)| r.image.reference())
            .or_else(|| launched.map(|(_, l)| l.image.reference())),
        image_ref: request
            .map(|(_, r)| r.image.clone())
            .or_else(|| launched.map(|(_, l)| l.image.clone())),
        operation: request.and_then(|(_, r)| r.operation.carried()),
        held: f
            .held
            .clone()
            .filter(|_| status == Status::Held)
            .map(|(_, why)| why),
        commits: request.map(|(_, r)| commits(r, all)).unwrap_or_default(),
        executor: launched.map(|(_, l)| executor_of(l)),
        job: job_outcome(&f),
        status,
        reason: f.terminal.as_ref().and_then(|(_, _, r)| r.clone()),
        stalled: f.stalled,
        requested_at: f.requested_at,
        finished_at: f.finished_at(),
        stages,
        pods: pods(env, &mine),
        overhead_ms,
        events: mine.len(),
    }
}

/// The events of one environment's deployment that its record is made of.
struct Facts<'a> {
    request: Option<(&'a Envelope, &'a conveyor::events::DeployRequested)>,
    launched: Option<(&'a Envelope, &'a conveyor::events::DeployLaunched)>,
    /// When it was held first, and why.
    held: Option<(&'a Envelope, String)>,
    verifying: Option<&'a Envelope>,
    job: Option<&'a Envelope>,
    rollout_started: Option<&'a Envelope>,
    rollout_done: Option<(&'a Envelope, &'a conveyor::events::RolloutCompleted)>,
    /// Its end: the status, and the reason of a failure or a supersession.
    terminal: Option<(&'a Envelope, Status, Option<String>)>,
    stalled: bool,
    /// The request's time, or the first event's of the environment.
    requested_at: Millis,
    /// When the watcher saw the last pod Ready (its progress event).
    last_ready_seen: Option<Millis>,
}

impl<'a> Facts<'a> {
    fn of(env: &str, mine: &[&'a Envelope]) -> Self {
        let first = |pred: &dyn Fn(&Event) -> bool| mine.iter().copied().find(|e| pred(&e.event));
        let request = mine.iter().find_map(|e| match &e.event {
            Event::DeployRequested(r) if r.environment == env => Some((*e, r)),
            _ => None,
        });
        Facts {
            request,
            launched: mine.iter().find_map(|e| match &e.event {
                Event::DeployLaunched(l) if l.environment == env => Some((*e, l)),
                _ => None,
            }),
            held: mine.iter().find_map(|e| match &e.event {
                Event::DeployHeld(h) if h.environment == env => Some((*e, h.reason.clone())),
                Event::DeployAwaitingApproval(a) if a.environment == env => Some((
                    *e,
                    format!("awaiting approval by {}", a.approvers.join(" or ")),
                )),
                _ => None,
            }),
            verifying: first(&|e| matches!(e, Event::DeployVerifying(v) if v.environment == env)),
            job: first(&|e| matches!(e, Event::DeployJobFinished(j) if j.environment == env)),
            rollout_started: first(
                &|e| matches!(e, Event::RolloutStarted(r) if r.environment == env),
            ),
            rollout_done: mine.iter().find_map(|e| match &e.event {
                Event::RolloutCompleted(r) if r.environment == env => Some((*e, r)),
                _ => None,
            }),
            terminal: mine.iter().find_map(|e| terminal(env, e)),
            stalled: mine
                .iter()
                .any(|e| matches!(&e.event, Event::RolloutStalled(s) if s.environment == env)),
            requested_at: request
                .map(|(e, _)| millis(e.time))
                .or_else(|| {
                    mine.iter()
                        .find(|e| environment_of(&e.event).is_some())
                        .map(|e| millis(e.time))
                })
                .unwrap_or_default(),
            last_ready_seen: mine
                .iter()
                .filter(|e| {
                    matches!(&e.event, Event::RolloutProgress(p) if p.environment == env && p.step == PodStep::Ready)
                })
                .map(|e| millis(e.time))
                .max(),
        }
    }

    fn finished_at(&self) -> Option<Millis> {
        self.terminal.as_ref().map(|(e, _, _)| millis(e.time))
    }

    fn requested(&self) -> Option<Millis> {
        self.request.map(|(e, _)| millis(e.time))
    }

    fn launched_at(&self) -> Option<Millis> {
        self.launched.map(|(e, _)| millis(e.time))
    }

    /// The last pod Ready: Kubernetes stamps conditions to the second; the moment the watcher
    /// saw it is the sharper bound for when Conveyor could have known.
    fn last_ready(&self) -> Option<Millis> {
        self.rollout_done
            .and_then(|(_, r)| r.last_ready_at.map(millis))
            .map(|t| self.last_ready_seen.map_or(t, |seen| seen.max(t)))
    }
}

/// `e` as the end of `env`'s deployment, if it is one.
fn terminal<'a>(env: &str, e: &'a Envelope) -> Option<(&'a Envelope, Status, Option<String>)> {
    match &e.event {
        Event::DeployCompleted(c) if c.environment == env => Some((e, Status::Completed, None)),
        Event::DeployFailed(f) if f.environment == env => Some((
            e,
            Status::Failed,
            Some(if f.stage == conveyor::events::Stage::Rollout {
                f.reason.clone()
            } else {
                format!("{}: {}", f.stage, f.reason)
            }),
        )),
        Event::DeploySuperseded(s) if s.environment == env => Some((
            e,
            Status::Superseded,
            Some(format!("superseded by {}", s.superseded_by)),
        )),
        _ => None,
    }
}

/// The stages found so far; one without a start is left out, an end before its start dropped.
#[derive(Default)]
struct Stages(Vec<Stage>);

impl Stages {
    fn add(&mut self, name: &str, owner: Owner, start: Option<Millis>, end: Option<Millis>) {
        if let Some(start) = start {
            self.0.push(Stage {
                name: name.to_owned(),
                owner,
                start,
                end: end.filter(|e| *e >= start),
            });
        }
    }
}

fn at(e: Option<&Envelope>) -> Option<Millis> {
    e.map(|e| millis(e.time))
}

/// The builds before the request: the upstream success that opened the chain, the dispatch,
/// and the downstream build whose success requested the deployment.
fn build_stages(stages: &mut Stages, f: &Facts<'_>, all: &[&Envelope], chain: &[&Envelope]) {
    let deployed_repo = f.request.map(|(_, r)| r.repository.as_str());
    let upstream_ok = chain.iter().copied().find(|e| {
        matches!(&e.event, Event::BuildSucceeded(b) if Some(b.repository.as_str()) != deployed_repo)
    });
    let dispatch = chain
        .iter()
        .copied()
        .find(|e| matches!(&e.event, Event::BuildRequested(b) if b.coalesced_into.is_none()));
    let downstream_ok = f
        .request
        .and_then(|(e, _)| e.causation_id.as_deref())
        .and_then(|id| all.iter().copied().find(|e| e.id == id))
        .filter(|e| matches!(e.event, Event::BuildSucceeded(_)));
    let run_start = |succeeded: Option<&Envelope>| -> Option<Millis> {
        let Event::BuildSucceeded(b) = &succeeded?.event else {
            return None;
        };
        all.iter()
            .find_map(|e| match &e.event {
                Event::BuildStarted(s) if s.run_id == b.run_id => Some(millis(e.time)),
                _ => None,
            })
            .or(b.created_at.map(millis))
    };
    if upstream_ok.is_some() && downstream_ok.is_some() {
        stages.add(
            "upstream build",
            Owner::External,
            run_start(upstream_ok),
            at(upstream_ok),
        );
        stages.add(
            "dispatch downstream build",
            Owner::Conveyor,
            at(upstream_ok),
            at(dispatch),
        );
    }
    if downstream_ok.is_some() {
        stages.add(
            "build",
            Owner::External,
            at(dispatch).or(run_start(downstream_ok)),
            at(downstream_ok),
        );
    }
    stages.add(
        "request deployment",
        Owner::Conveyor,
        at(downstream_ok).or(at(upstream_ok)),
        f.requested(),
    );
}

/// From the request to the end: launch, hold, AWX job, rollout, verification.
fn deploy_stages(stages: &mut Stages, f: &Facts<'_>) {
    let (launched_at, finished_at) = (f.launched_at(), f.finished_at());
    let held_at = f.held.as_ref().map(|(e, _)| millis(e.time));
    // A request that ended unlaunched (superseded, refused) has no launch stage; one still
    // waiting shows it open. Time held by a pause or a freeze is the operator's, not Conveyor's.
    if f.launched.is_some() || f.terminal.is_none() || f.held.is_some() {
        stages.add(
            "launch",
            Owner::Conveyor,
            f.requested(),
            held_at.or(launched_at),
        );
    }
    if held_at.is_some() {
        stages.add(
            "held",
            Owner::Operator,
            held_at,
            launched_at.or(finished_at),
        );
    }
    if let Some((_, l)) = f.launched
        && matches!(l.executor, ExecutorRun::Awx { .. })
    {
        stages.add(
            "AWX job",
            Owner::External,
            launched_at,
            at(f.job).or(finished_at),
        );
    }
    let last_ready = f.last_ready();
    stages.add(
        "rollout",
        Owner::External,
        at(f.rollout_started),
        last_ready
            .or(f.rollout_done.map(|(e, _)| millis(e.time)))
            .or(finished_at),
    );
    match (&f.terminal, f.verifying) {
        // Verified: Conveyor's share is noticing the last Ready; the checks are the service's.
        (_, Some(v)) => {
            stages.add(
                "completion noticed",
                Owner::Conveyor,
                last_ready,
                at(Some(v)),
            );
            stages.add("verification", Owner::External, at(Some(v)), finished_at);
        }
        (Some((e, Status::Completed, _)), None) => stages.add(
            "completion noticed",
            Owner::Conveyor,
            last_ready,
            Some(millis(e.time)),
        ),
        _ => {}
    }
}

/// The pods the rollout replaced, in the order it touched them.
fn pods(env: &str, mine: &[&Envelope]) -> Vec<PodRow> {
    let mut pods: BTreeMap<String, PodRow> = BTreeMap::new();
    for e in mine {
        if let Event::RolloutProgress(p) = &e.event
            && p.environment == env
        {
            let row = pods.entry(p.pod.clone()).or_insert_with(|| PodRow {
                pod: p.pod.clone(),
                ordinal: p.ordinal,
                deleted: None,
                created: None,
                ready: None,
            });
            let at = Some(millis(p.at));
            match p.step {
                PodStep::Deleted => row.deleted = row.deleted.or(at),
                PodStep::Created => row.created = row.created.or(at),
                PodStep::Ready => row.ready = row.ready.or(at),
            }
        }
    }
    let mut pods: Vec<PodRow> = pods.into_values().collect();
    pods.sort_by_key(|p| p.deleted.or(p.created).or(p.ready).unwrap_or(Millis::MAX));
    pods
}

/// The commits a request deploys (its own, then its upstream chain's), each with when it was
/// committed: from its push, or else from the build of it.
fn commits(r: &conveyor::events::DeployRequested, all: &[&Envelope]) -> Vec<Commit> {
    let commit_time = |sha: &str| -> Option<Millis> {
        all.iter().find_map(|e| match &e.event {
            Event::ScmPush(p) if p.after == sha => Some(
                p.head_commit
                    .as_ref()
                    .filter(|c| c.sha == sha)
                    .and_then(|c| c.timestamp)
                    .map(millis)
                    .unwrap_or_else(|| millis(e.time)),
            ),
            _ => None,
        })
    };
    let build_time = |sha: &str| -> Option<Millis> {
        all.iter().find_map(|e| match &e.event {
            Event::BuildSucceeded(b) | Event::BuildStarted(b) if b.head_sha == sha => {
                b.created_at.map(millis)
            }
            _ => None,
        })
    };
    let mut commits: Vec<Commit> = Vec::new();
    let shas = std::iter::once((&r.repository, &r.sha))
        .chain(r.upstream.iter().map(|u| (&u.repository, &u.sha)));
    for (repository, sha) in shas {
        if sha.is_empty() || commits.iter().any(|c| &c.sha == sha) {
            continue;
        }
        commits.push(Commit {
            committed_at: commit_time(sha).or_else(|| build_time(sha)),
            repository: repository.clone(),
            sha: sha.clone(),
        });
    }
    commits
}

fn executor_of(l: &conveyor::events::DeployLaunched) -> Executor {
    match &l.executor {
        ExecutorRun::Awx {
            job_id,
            url,
            template,
        } => Executor {
            kind: "awx".into(),
            job_id: Some(*job_id),
            url: Some(url.clone()),
            name: template.clone(),
        },
        ExecutorRun::Kubernetes { .. } => Executor {
            kind: "kubernetes".into(),
            job_id: None,
            url: None,
            name: format!("{}/{}", l.namespace, l.statefulset),
        },
    }
}

fn job_outcome(f: &Facts<'_>) -> Option<JobOutcome> {
    let e = f.job?;
    let Event::DeployJobFinished(j) = &e.event else {
        return None;
    };
    Some(JobOutcome {
        id: j.job_id,
        status: j.status,
        failed: j.failed,
        failed_task: j.failed_task.clone(),
        explanation: j.explanation.clone(),
        failed_after_rollout_started: j.failed
            && f.rollout_started.is_some_and(|r| r.time <= e.time),
        at: millis(e.time),
    })
}

#[cfg(test)]
mod tests;
