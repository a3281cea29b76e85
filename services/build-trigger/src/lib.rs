//! build-trigger: turns facts about builds into the next action — dispatch a downstream build
//! on GitHub, or request a deployment — following the graph declared in `conveyor.toml`.
//!
//! Decisions are serialised (the queue has a single active consumer), so the memory of what was
//! dispatched is consistent; what must survive a crash lives on the broker (a waiting success is
//! a delayed redelivery, not a timer) or on GitHub (a dispatch is looked up before it is sent
//! again).

pub mod github;
pub mod memo;
pub mod rules;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conveyor::bus::queues;
use conveyor::config::{ConfigError, Env, Pipeline};
use conveyor::events::{
    BuildRequested, BuildRun, DeployFailed, ImagePushed, RunConclusion, UpstreamCommit,
};
use conveyor::retry::Policy;
use conveyor::{Bus, BusError, ConsumerOptions, Envelope, Event, Incoming, Outcome};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use github::{GitHub, GitHubError, Workflow};
use memo::{Chain, Memo, Pending};
use rules::{Dispatch, Ignored, Upstream};

/// The event source of everything build-trigger publishes.
pub const SOURCE: &str = "conveyor/build-trigger";

/// How long a success with new inputs waits (as a delayed redelivery) for the pending dispatch
/// of its downstream to start.
pub const COALESCE_WAIT: Duration = Duration::from_secs(30);

/// After this many waits the newer inputs are dispatched anyway: a runner queue that never
/// moves must not swallow a build.
pub const MAX_WAITS: u32 = 10;

/// Dispatch a run of GitHub's created after `since − CLOCK_SKEW` counts as ours when a
/// dispatch's outcome is unknown.
const CLOCK_SKEW: time::Duration = time::Duration::seconds(5);

/// Settings from the environment: GitHub's URL and a token that may dispatch workflows.
pub type Settings = conveyor::github::Settings;

/// Read the settings; the token is required.
pub fn settings_from_env(env: &dyn Env) -> Result<Settings, ConfigError> {
    Settings::required(
        env,
        "is required (a token that may dispatch workflows: `repo` scope or Actions write)",
    )
}

/// What build-trigger did with an event (`build_trigger_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A downstream build dispatched.
    Dispatched,
    /// Folded into a build already running for the same downstream.
    Coalesced,
    /// Waiting for a dispatched run to show up before deciding.
    Waited,
    /// A deployment requested.
    DeployRequested,
    /// Already handled (a redelivery).
    Duplicate,
    /// GitHub refused for good.
    Rejected,
    /// A build failed; its deployments failed with it.
    BuildFailed,
    /// A chain of upstream commits recovered from the journal after a restart.
    ChainFromJournal,
    /// Nothing to do, for this reason.
    Ignored(rules::Ignored),
}

impl conveyor::telemetry::Decision for Decision {
    // Its own decisions, then one per reason to ignore an event.
    const ALL: &'static [Self] = &{
        const OWN: [Decision; 8] = [
            Decision::Dispatched,
            Decision::Coalesced,
            Decision::Waited,
            Decision::DeployRequested,
            Decision::Duplicate,
            Decision::Rejected,
            Decision::BuildFailed,
            Decision::ChainFromJournal,
        ];
        let mut all = [Decision::Dispatched; OWN.len() + Ignored::ALL.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < OWN.len() {
                OWN[i]
            } else {
                Decision::Ignored(Ignored::ALL[i - OWN.len()])
            };
            i += 1;
        }
        all
    };

    fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Decision::Dispatched => "dispatched",
            Decision::Coalesced => "coalesced",
            Decision::Waited => "waited",
            Decision::DeployRequested => "deploy_requested",
            Decision::Duplicate => "duplicate",
            Decision::Rejected => "rejected",
            Decision::BuildFailed => "build_failed",
            Decision::ChainFromJournal => "chain_from_journal",
            Decision::Ignored(why) => why.decision(),
        })
    }

    fn meaning(self) -> &'static str {
        match self {
            Decision::Dispatched => "a downstream build dispatched",
            Decision::Coalesced => "folded into a build already running for that downstream",
            Decision::Waited => "waiting for a dispatched run to appear",
            Decision::DeployRequested => "a deployment requested",
            Decision::Duplicate => "already handled",
            Decision::Rejected => "GitHub refused for good",
            Decision::BuildFailed => "a build failed, and its deployments with it",
            Decision::ChainFromJournal => "a run's upstream chain recovered from the journal",
            Decision::Ignored(why) => why.meaning(),
        }
    }
}

/// build metrics: `build_trigger_decisions_total{decision}`.
pub type Metrics = conveyor::telemetry::Decisions<Decision>;

/// Register this service's decision counter.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    Metrics::register(
        registry,
        "build_trigger_decisions",
        "What build-trigger did with each event",
    )
}

/// What to do with one downstream of a success, decided on one look at the memory.
#[derive(Debug, PartialEq, Eq)]
enum DownstreamAction {
    /// Fold it into this chain's dispatch (its run, when known).
    Coalesce { into: String, run_id: Option<u64> },
    /// Come back once the pending dispatch has started.
    Wait,
    /// Dispatch it.
    Dispatch,
}

/// `pending`: the dispatch for the downstream that has not started yet; `newer`: the chain of
/// a newer success for it already handled.
fn plan(
    pending: Option<&Pending>,
    newer: Option<String>,
    d: &Dispatch,
    attempt: u32,
) -> DownstreamAction {
    match (pending, newer) {
        // The same inputs are already on their way.
        (Some(p), _) if p.inputs == d.inputs => DownstreamAction::Coalesce {
            into: p.correlation_id.clone(),
            run_id: p.run_id,
        },
        // A newer success for the same downstream wins; one seen with nothing pending counts
        // only once this one has waited (a redelivery): it was handled meanwhile.
        (Some(_), Some(newer)) => DownstreamAction::Coalesce {
            into: newer,
            run_id: None,
        },
        (None, Some(newer)) if attempt > 1 => DownstreamAction::Coalesce {
            into: newer,
            run_id: None,
        },
        // Different inputs while a dispatch waits to start: wait for it, a few times.
        (Some(_), None) if attempt <= MAX_WAITS => DownstreamAction::Wait,
        _ => DownstreamAction::Dispatch,
    }
}

/// What happened to one downstream of a success.
enum Step {
    /// Publish this `build.requested`.
    Requested(Box<Envelope>),
    /// Come back later (delayed redelivery).
    Wait(String),
}

/// The service: the pipeline, a GitHub client and the memory of recent dispatches.
pub struct BuildTrigger {
    pipeline: Arc<Pipeline>,
    github: GitHub,
    memo: Mutex<Memo>,
    metrics: Metrics,
    /// The bus whose dispatch journal tells which chain a run continues when the memo does not
    /// know (set by [`run`]; without it the memo is all there is).
    journal: std::sync::OnceLock<Bus>,
}

impl BuildTrigger {
    /// A build-trigger for `pipeline` talking to GitHub as `settings` say.
    pub fn new(pipeline: Arc<Pipeline>, settings: &Settings, metrics: Metrics) -> Self {
        Self {
            pipeline,
            github: GitHub::new(&settings.api_url, settings.token.clone(), Policy::HTTP),
            memo: Mutex::new(Memo::default()),
            metrics,
            journal: std::sync::OnceLock::new(),
        }
    }

    /// The `build.requested` events in the dispatch journal, oldest first (none without a bus).
    async fn dispatches(&self) -> Result<Vec<(u64, Envelope)>, BusError> {
        let Some(bus) = self.journal.get() else {
            return Ok(Vec::new());
        };
        Ok(bus
            .journal(queues::BUILD_TRIGGER_DISPATCHES)
            .await?
            .into_iter()
            .filter_map(|e| match &e.event {
                Event::BuildRequested(r) => r.run_id.map(|id| (id, e.clone())),
                _ => None,
            })
            .collect())
    }

    /// The chain a run continues: remembered, or found in the dispatch journal (a run another
    /// replica dispatched, or this process before it restarted).
    async fn chain_of(&self, run: &BuildRun) -> Result<Option<Chain>, BusError> {
        if let Some(chain) = self.memo().chain_of(run.run_id) {
            return Ok(Some(chain));
        }
        if run.trigger.as_deref() != Some("workflow_dispatch") {
            return Ok(None);
        }
        let found = self
            .dispatches()
            .await?
            .into_iter()
            .find(|(id, _)| *id == run.run_id)
            .and_then(|(_, e)| match e.event {
                Event::BuildRequested(r) => Some(Chain {
                    correlation_id: e.correlation_id,
                    upstream: vec![UpstreamCommit {
                        repository: r.upstream_repository,
                        sha: r.upstream_sha,
                    }],
                }),
                _ => None,
            });
        if let Some(chain) = &found {
            self.metrics.count(Decision::ChainFromJournal);
            self.memo().remember_chain(run.run_id, chain.clone());
        }
        Ok(found)
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        conveyor::sync::lock(&self.memo)
    }

    /// Handle one delivery.
    pub async fn handle(&self, incoming: Incoming) -> Outcome {
        let env = &incoming.envelope;
        match &env.event {
            Event::BuildSucceeded(run) => self.on_success(&incoming, run).await,
            Event::BuildStarted(run) => {
                self.on_started(run);
                Outcome::ack()
            }
            Event::BuildFailed(run) => self.on_failed(env, run),
            Event::ImagePushed(pushed) => self.on_image(env, pushed),
            Event::ScmPush(push) if push.deleted => self.ignore(env, Ignored::RefDeleted),
            _ => self.ignore(env, Ignored::NotActedOn),
        }
    }

    fn ignore(&self, env: &Envelope, why: Ignored) -> Outcome {
        tracing::debug!(event = env.event.name(), id = %env.id, reason = why.decision(), "ignored");
        self.metrics.count(Decision::Ignored(why));
        Outcome::ack()
    }

    async fn on_success(&self, incoming: &Incoming, run: &BuildRun) -> Outcome {
        let env = &incoming.envelope;
        let (repo, git_ref) = match rules::classify_run(&self.pipeline, run) {
            Ok(x) => x,
            Err(why) => return self.ignore(env, why),
        };
        let plan = rules::plan_success(&self.pipeline, repo, git_ref, run);
        // A run this service dispatched continues the chain that dispatched it.
        let chain = match self.chain_of(run).await {
            Ok(chain) => chain.unwrap_or_else(|| Chain {
                correlation_id: env.correlation_id.clone(),
                upstream: Vec::new(),
            }),
            Err(e) => return Outcome::retry_later(incoming.attempt, e.to_string()),
        };
        let mut upstream = chain.upstream.clone();
        upstream.push(UpstreamCommit {
            repository: repo.name.clone(),
            sha: run.head_sha.clone(),
        });
        let chain = Chain {
            correlation_id: chain.correlation_id,
            upstream,
        };

        let mut events = Vec::new();
        for d in &plan.dispatches {
            match self
                .dispatch_or_coalesce(incoming, &plan.upstream, d, &chain)
                .await
            {
                Ok(Step::Requested(e)) => events.push(*e),
                Ok(Step::Wait(reason)) => {
                    self.metrics.count(Decision::Waited);
                    return Outcome::retry(COALESCE_WAIT, reason);
                }
                Err(e) => return self.github_failure(e, incoming.attempt),
            }
        }
        for mut deploy in plan.deploys {
            deploy.upstream = chain.upstream.clone();
            let environment = deploy.environment.clone();
            let e = Envelope::caused_by(env, SOURCE, Event::DeployRequested(deploy))
                .with_derived_id(&format!("{}:deploy:{environment}", env.id))
                .with_correlation_id(&chain.correlation_id);
            self.memo().deployed(&chain.correlation_id, &environment);
            self.metrics.count(Decision::DeployRequested);
            tracing::info!(environment, correlation = %chain.correlation_id, "deployment requested");
            events.push(e);
        }
        Outcome::publish(events)
    }

    fn github_failure(&self, e: GitHubError, attempt: u32) -> Outcome {
        let outcome = Outcome::failure(&e, attempt);
        if outcome.is_dead_letter() {
            self.metrics.count(Decision::Rejected);
        }
        outcome
    }

    async fn dispatch_or_coalesce(
        &self,
        incoming: &Incoming,
        upstream: &Upstream,
        d: &Dispatch,
        chain: &Chain,
    ) -> Result<Step, GitHubError> {
        let env = &incoming.envelope;
        if let Some(done) = self.already_requested(env, d).await? {
            self.metrics.count(Decision::Duplicate);
            return Ok(Step::Requested(Box::new(done)));
        }
        let workflow = self.github.workflow(&d.repository, &d.workflow).await?;
        // One look at the memory, then decide: other deliveries change it meanwhile.
        let (pending, newer) = {
            let mut memo = self.memo();
            memo.saw_success(&d.repository, env.time, &chain.correlation_id);
            (
                memo.pending(&d.repository),
                memo.newer_success(&d.repository, env.time),
            )
        };
        let pending = match pending {
            Some(p) if self.still_pending(&d.repository, &workflow, &p).await? => Some(p),
            Some(started) => {
                // Its build started: nothing to fold into or wait for.
                self.memo().clear_pending(&d.repository, started.run_id);
                return self.send(incoming, upstream, d, chain, &workflow).await;
            }
            None => None,
        };
        match plan(pending.as_ref(), newer, d, incoming.attempt) {
            DownstreamAction::Coalesce { into, run_id } => {
                Ok(self.coalesced(env, upstream, d, &into, run_id))
            }
            DownstreamAction::Wait => Ok(Step::Wait(format!(
                "{}'s dispatched build has not started; dispatching newer inputs after it does",
                d.repository
            ))),
            DownstreamAction::Dispatch => self.send(incoming, upstream, d, chain, &workflow).await,
        }
    }

    /// The `build.requested` this success already caused for `d`: in this process's memory,
    /// or — for a repeat that outlived it (a late redelivery after a restart) — in the
    /// journal, under its derived id.
    async fn already_requested(
        &self,
        env: &Envelope,
        d: &Dispatch,
    ) -> Result<Option<Envelope>, GitHubError> {
        if let Some(done) = self.memo().done(&env.id, &d.repository) {
            return Ok(Some(done));
        }
        let requested_id = conveyor::events::derive_id(&dispatch_key(env, d));
        Ok(self
            .dispatches()
            .await
            .map_err(|e| GitHubError::Unavailable {
                what: "the dispatch journal".into(),
                message: e.to_string(),
            })?
            .into_iter()
            .find(|(_, e)| e.id == requested_id)
            .map(|(_, e)| e))
    }

    /// Dispatch `d` (or adopt the run a dispatch with a lost answer created), then remember it
    /// in one step.
    async fn send(
        &self,
        incoming: &Incoming,
        upstream: &Upstream,
        d: &Dispatch,
        chain: &Chain,
        workflow: &Workflow,
    ) -> Result<Step, GitHubError> {
        let env = &incoming.envelope;
        // A redelivery may follow a dispatch whose answer was lost (crash, timeout): look for
        // the run before sending another.
        let since = env.time - CLOCK_SKEW;
        let maybe_sent = incoming.redelivered || self.memo().was_ambiguous(&env.id, &d.repository);
        let adopted = if maybe_sent {
            self.unattributed_run(&d.repository, workflow, since)
                .await?
        } else {
            None
        };
        let run_id = match adopted {
            Some(id) => Some(id),
            None => match self.dispatch(&d.repository, workflow, d, since).await {
                Ok(id) => id,
                Err(e) => {
                    if matches!(e, GitHubError::Unavailable { .. }) {
                        self.memo().ambiguous(&env.id, &d.repository);
                    }
                    return Err(e);
                }
            },
        };
        let e = build_requested(env, upstream, d, run_id, None)
            .with_correlation_id(&chain.correlation_id);
        let mut memo = self.memo();
        memo.set_pending(
            &d.repository,
            Pending {
                run_id,
                inputs: d.inputs.clone(),
                correlation_id: chain.correlation_id.clone(),
                dispatched_at: OffsetDateTime::now_utc(),
            },
        );
        if let Some(id) = run_id {
            memo.remember_chain(id, chain.clone());
        }
        memo.record_done(&env.id, &d.repository, e.clone());
        self.metrics.count(Decision::Dispatched);
        tracing::info!(downstream = %d.repository, ?run_id, correlation = %chain.correlation_id, "dispatched");
        Ok(Step::Requested(Box::new(e)))
    }

    /// POST the dispatch; on a rate limit wait as GitHub says; after an ambiguous failure (5xx,
    /// timeout) look for the run before posting again, never re-POST blindly.
    async fn dispatch(
        &self,
        repo: &str,
        workflow: &Workflow,
        d: &Dispatch,
        since: OffsetDateTime,
    ) -> Result<Option<u64>, GitHubError> {
        let ambiguous = std::sync::atomic::AtomicBool::new(false);
        let result = Policy::HTTP
            .run(|| async {
                if ambiguous.load(std::sync::atomic::Ordering::SeqCst)
                    && let Some(id) = self.unattributed_run(repo, workflow, since).await?
                {
                    return Ok(Some(id));
                }
                match self
                    .github
                    .dispatch_once(repo, workflow, &d.git_ref, &d.inputs)
                    .await
                {
                    Ok(answer) => Ok(answer.run_id),
                    Err(e) => {
                        if matches!(e, GitHubError::Unavailable { .. }) {
                            ambiguous.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(e)
                    }
                }
            })
            .await;
        if let Err(GitHubError::Rejected { status: 404, .. }) = &result {
            self.github.forget_workflow(repo, &d.workflow);
        }
        result
    }

    /// The newest dispatched run of `workflow` since `since` that no chain claims yet: the run
    /// a dispatch with a lost answer created, if it did.
    async fn unattributed_run(
        &self,
        repo: &str,
        workflow: &Workflow,
        since: OffsetDateTime,
    ) -> Result<Option<u64>, GitHubError> {
        let runs = self
            .github
            .dispatched_runs_since(repo, workflow, since)
            .await?;
        // A run the journal attributes to another upstream build is not ours to adopt, even
        // when this process never saw it dispatched.
        let journaled: std::collections::HashSet<u64> = match self.dispatches().await {
            Ok(d) => d.into_iter().map(|(id, _)| id).collect(),
            Err(e) => {
                return Err(GitHubError::Unavailable {
                    what: "the dispatch journal".into(),
                    message: e.to_string(),
                });
            }
        };
        let memo = self.memo();
        Ok(runs
            .iter()
            .map(|r| r.id)
            .find(|id| memo.chain_of(*id).is_none() && !journaled.contains(id)))
    }

    async fn still_pending(
        &self,
        repo: &str,
        workflow: &Workflow,
        pending: &Pending,
    ) -> Result<bool, GitHubError> {
        match pending.run_id {
            Some(id) => Ok(self.github.run(repo, id).await?.not_started()),
            None => {
                // A 204 dispatch: the run is ours if it was created after we dispatched.
                let runs = self
                    .github
                    .dispatched_runs_since(repo, workflow, pending.dispatched_at - CLOCK_SKEW)
                    .await?;
                Ok(runs.is_empty() || runs.iter().any(|r| r.not_started()))
            }
        }
    }

    fn coalesced(
        &self,
        env: &Envelope,
        upstream: &Upstream,
        d: &Dispatch,
        into: &str,
        run_id: Option<u64>,
    ) -> Step {
        let e = build_requested(env, upstream, d, run_id, Some(into.to_owned()));
        self.memo().record_done(&env.id, &d.repository, e.clone());
        self.metrics.count(Decision::Coalesced);
        tracing::info!(downstream = %d.repository, into, "coalesced into a pending dispatch");
        Step::Requested(Box::new(e))
    }

    fn on_started(&self, run: &BuildRun) {
        let Some(repo) = self.pipeline.repository(&run.repository) else {
            return;
        };
        if run.trigger.as_deref() != Some("workflow_dispatch")
            || !rules::is_build_workflow(repo, run)
        {
            return;
        }
        let started = !run.status.not_started();
        self.memo().run_seen(&repo.name, run.run_id, started);
    }

    fn on_failed(&self, env: &Envelope, run: &BuildRun) -> Outcome {
        let mut memo = self.memo();
        memo.clear_pending(&run.repository, Some(run.run_id));
        let Some(chain) = memo.chain_of(run.run_id) else {
            drop(memo);
            self.metrics.count(Decision::BuildFailed);
            return Outcome::ack();
        };
        let environments = memo.deployments_of(&chain.correlation_id);
        drop(memo);
        self.metrics.count(Decision::BuildFailed);
        let reason = format!(
            "build {} of {} concluded {}",
            run.run_id,
            run.repository,
            run.conclusion.unwrap_or(RunConclusion::Unknown)
        );
        Outcome::publish(
            environments
                .into_iter()
                .map(|environment| {
                    Envelope::caused_by(
                        env,
                        SOURCE,
                        Event::DeployFailed(DeployFailed {
                            environment: environment.clone(),
                            stage: conveyor::events::Stage::Build,
                            reason: reason.clone(),
                            operation: None,
                        }),
                    )
                    .with_derived_id(&format!("{}:failed:{environment}", env.id))
                    .with_correlation_id(&chain.correlation_id)
                })
                .collect(),
        )
    }

    fn on_image(&self, env: &Envelope, pushed: &ImagePushed) -> Outcome {
        match rules::plan_image(&self.pipeline, pushed) {
            Err(why) => self.ignore(env, why),
            Ok(deploys) => Outcome::publish(
                deploys
                    .into_iter()
                    .map(|d| {
                        let environment = d.environment.clone();
                        self.memo().deployed(&env.correlation_id, &environment);
                        self.metrics.count(Decision::DeployRequested);
                        Envelope::caused_by(env, SOURCE, Event::DeployRequested(d))
                            .with_derived_id(&format!("{}:deploy:{environment}", env.id))
                    })
                    .collect(),
            ),
        }
    }
}

/// What the id of the `build.requested` that `env` causes for `d` derives from.
fn dispatch_key(env: &Envelope, d: &Dispatch) -> String {
    format!("{}:dispatch:{}", env.id, d.repository)
}

/// The `build.requested` one upstream success caused for one downstream; its id derives from
/// both, so a repeat of the success republishes the same event.
fn build_requested(
    env: &Envelope,
    upstream: &Upstream,
    d: &Dispatch,
    run_id: Option<u64>,
    coalesced_into: Option<String>,
) -> Envelope {
    let requested = BuildRequested {
        repository: d.repository.clone(),
        workflow: d.workflow.clone(),
        git_ref: d.git_ref.clone(),
        inputs: d.inputs.clone(),
        run_id,
        upstream_repository: upstream.repository.clone(),
        upstream_sha: upstream.sha.clone(),
        coalesced: 1,
        coalesced_into,
    };
    Envelope::caused_by(env, SOURCE, Event::BuildRequested(requested))
        .with_derived_id(&dispatch_key(env, d))
}

/// Consume build-trigger's queue until `shutdown`. One delivery at a time: decisions depend
/// on the ones before them.
pub async fn run(
    bus: Bus,
    trigger: Arc<BuildTrigger>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let queue = bus.topology().queue(queues::BUILD_TRIGGER);
    let _ = trigger.journal.set(bus.clone());
    let options = ConsumerOptions {
        prefetch: 1,
        max_attempts: MAX_WAITS + 4,
        ..ConsumerOptions::default()
    };
    bus.consume(
        &queue,
        options,
        move |incoming| {
            let trigger = trigger.clone();
            async move { trigger.handle(incoming).await }
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(version: &str) -> Dispatch {
        Dispatch {
            repository: "o/stack".into(),
            workflow: "build".into(),
            git_ref: "main".into(),
            inputs: [("be_image_tag".to_owned(), version.to_owned())].into(),
        }
    }

    fn pending(version: &str) -> Pending {
        Pending {
            run_id: Some(7),
            inputs: dispatch(version).inputs,
            correlation_id: "first".into(),
            dispatched_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_downstream_is_folded_waited_for_or_dispatched() {
        let fold_into = |into: &str, run_id| DownstreamAction::Coalesce {
            into: into.into(),
            run_id,
        };
        let same = pending("1.0");
        assert_eq!(
            plan(Some(&same), None, &dispatch("1.0"), 1),
            fold_into("first", Some(7))
        );
        let other = pending("0.9");
        assert_eq!(
            plan(Some(&other), Some("newer".into()), &dispatch("1.0"), 1),
            fold_into("newer", None)
        );
        assert_eq!(
            plan(Some(&other), None, &dispatch("1.0"), 1),
            DownstreamAction::Wait
        );
        assert_eq!(
            plan(Some(&other), None, &dispatch("1.0"), MAX_WAITS + 1),
            DownstreamAction::Dispatch
        );
        assert_eq!(
            plan(None, Some("newer".into()), &dispatch("1.0"), 1),
            DownstreamAction::Dispatch
        );
        assert_eq!(
            plan(None, Some("newer".into()), &dispatch("1.0"), 2),
            fold_into("newer", None)
        );
        assert_eq!(
            plan(None, None, &dispatch("1.0"), 3),
            DownstreamAction::Dispatch
        );
    }
}
