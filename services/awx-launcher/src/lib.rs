//! awx-launcher: runs the deployment of an environment whose executor is AWX — exactly one job
//! per deployment, one deployment per environment at a time, newest request wins — and follows
//! the job to its end without holding a delivery open.
//!
//! Two consumers: requests (`deploy.requested.*`, one active consumer across replicas, so
//! launch decisions are serialised) and jobs (`deploy.launched.*`, `awx.job.*`). Following a
//! job is a deferral loop: each look at the job either publishes `deploy.job_finished` or sends
//! the `deploy.launched` message back through a delay tier, so a killed worker loses nothing
//! and another replica carries on. AWX itself is the record of what was launched: a request is
//! matched to its job by the `conveyor_deployment_id` extra variable.

pub mod awx;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conveyor::bounded::BoundedMap;
use conveyor::bus::queues;
use conveyor::config::{AwxExecutor, ConfigError, Env, Environment, Executor, Pipeline, secret};
use conveyor::events::{
    DeployJobFinished, DeployLaunched, ExecutorRun, JobStatus, Stage, Trigger, deployment_id,
};
use conveyor::executor::{Applied, Decider, DecisionKind, Observation, Request};
use conveyor::fence::Fences;
use conveyor::supersede::{RequestOrder, request_order};
use conveyor::{Bus, BusError, ConsumerOptions, Envelope, Event, Incoming, Outcome};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use awx::{AwxClient, AwxError, Credentials, Job};

/// The event source of everything awx-launcher publishes.
pub const SOURCE: &str = "conveyor/awx-launcher";

/// The extra variable that ties a job to its deployment (the correlation id).
pub const DEPLOYMENT_VAR: &str = "conveyor_deployment_id";

/// The extra variables that carry the launched request's newest-wins order
/// (`supersede::RequestOrder`): when its change came to be, and when it was requested.
pub const ORIGIN_VAR: &str = "conveyor_origin_time";
/// See [`ORIGIN_VAR`].
pub const REQUESTED_VAR: &str = "conveyor_requested_at";

/// How far AWX's clock may be behind the clocks that time a request.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// Lines of stdout kept for a failed job, and their byte bound.
const STDOUT_LINES: usize = 20;
const STDOUT_BYTES: usize = 4096;

/// Settings from the environment.
#[derive(Debug)]
pub struct Settings {
    /// `AWX_URL`: the origin, e.g. `https://awx.example`.
    pub url: String,
    /// `AWX_TOKEN`, or `AWX_USERNAME` + `AWX_PASSWORD` (each also `*_FILE`).
    pub credentials: Credentials,
}

impl Settings {
    /// Read the settings; a URL and one form of credentials are required.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let url = env
            .var("AWX_URL")
            .ok_or_else(|| ConfigError::one("AWX_URL", "is required (e.g. https://awx.example)"))?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::one("AWX_URL", "must be an http(s) URL"));
        }
        let credentials = match secret(env, "AWX_TOKEN")? {
            Some(token) => Credentials::Token(token),
            None => {
                let username = env.var("AWX_USERNAME").ok_or_else(|| {
                    ConfigError::one(
                        "AWX_TOKEN",
                        "set AWX_TOKEN, or AWX_USERNAME and AWX_PASSWORD",
                    )
                })?;
                let password = secret(env, "AWX_PASSWORD")?.ok_or_else(|| {
                    ConfigError::one("AWX_PASSWORD", "is required with AWX_USERNAME")
                })?;
                // What the Authorization header carries, as a proxy echoing it would show it.
                conveyor::redact::register(&format!("{username}:{}", password.expose()));
                Credentials::Basic { username, password }
            }
        };
        conveyor::redact::register_url_credentials(&url);
        Ok(Self { url, credentials })
    }
}

conveyor::executor_decisions! {
    /// What awx-launcher did (`awx_launcher_decisions_total{decision}`).
    pub enum Decision (applied = "launched") {
        Polled = "polled": "looked at a running job",
        Finished = "finished": "published a job's end",
        Stuck = "stuck": "gave up on a job that stopped making progress",
    }
}

/// awx metrics: `awx_launcher_decisions_total{decision}`.
pub type Metrics = conveyor::telemetry::Decisions<Decision>;

/// Register this service's decision counter.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    Metrics::register(registry, "awx_launcher_decisions", "What awx-launcher did")
}

#[derive(Default)]
struct Memo {
    /// Jobs whose end was already published.
    finished: Option<BoundedMap<u64, ()>>,
}

impl Memo {
    fn finished(&mut self) -> &mut BoundedMap<u64, ()> {
        self.finished.get_or_insert_with(|| BoundedMap::new(4096))
    }
}

/// The service.
pub struct AwxLauncher {
    pipeline: Arc<Pipeline>,
    client: AwxClient,
    memo: Mutex<Memo>,
    /// The launch decisions (the one executor contract).
    decider: Decider,
    /// Per environment: a launch sent by a worker that lost its deliveries may still land in
    /// AWX (raised by each redelivered request, for `[awx] request_timeout_secs`).
    fences: Fences,
    metrics: Metrics,
    /// Per running job: how long its template's jobs typically run (read once per job).
    typical_runs: Mutex<std::collections::HashMap<u64, Option<Duration>>>,
}

/// How many jobs' typical run times are kept (a job's entry goes when it ends; this bounds
/// what jobs that were never seen to end leave behind).
const TYPICAL_RUNS_KEPT: usize = 1024;

/// Which environment a deployment event is for, if it is one of ours.
fn awx_environment<'p>(
    pipeline: &'p Pipeline,
    name: &str,
) -> Option<(&'p Environment, &'p AwxExecutor)> {
    let env = pipeline.environment(name)?;
    match &env.executor {
        Executor::Awx(a) => Some((env, a)),
        Executor::Kubernetes(_) => None,
    }
}

impl AwxLauncher {
    /// A launcher for `pipeline` talking to AWX as `settings` say; `bus` is where it reads
    /// the environments' holds.
    pub fn new(pipeline: Arc<Pipeline>, settings: &Settings, bus: Bus, metrics: Metrics) -> Self {
        let timeout = Duration::from_secs(pipeline.awx.request_timeout_secs);
        let client = AwxClient::new(
            &settings.url,
            &pipeline.awx.api_prefix,
            settings.credentials.clone(),
            timeout,
        );
        Self {
            decider: Decider::new(SOURCE, bus, pipeline.clone(), metrics.part()),
            pipeline,
            client,
            memo: Mutex::new(Memo::default()),
            fences: Fences::new(timeout),
            metrics,
            typical_runs: Mutex::default(),
        }
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        conveyor::sync::lock(&self.memo)
    }

    /// Handle a delivery from the requests queue.
    pub async fn handle_request(&self, incoming: Incoming) -> Outcome {
        let env = &incoming.envelope;
        let Event::DeployRequested(request) = &env.event else {
            return Outcome::ack();
        };
        let Some((environment, executor)) = awx_environment(&self.pipeline, &request.environment)
        else {
            if self.pipeline.environment(&request.environment).is_none() {
                self.metrics
                    .count(Decision::Executor(DecisionKind::Rejected));
                let reason = format!(
                    "environment {:?} is not in this awx-launcher's pipeline file",
                    request.environment
                );
                return conveyor::executor::failed(
                    SOURCE,
                    env,
                    &request.environment,
                    Stage::Request,
                    reason,
                );
            }
            return Outcome::ack();
        };
        if incoming.redelivered {
            // Raised before deciding, so requests of the environment queued behind this one
            // also wait for the lost worker's launch instead of launching beside it.
            self.fences.raise(&request.environment);
        }
        let launch = Launch {
            launcher: self,
            executor,
        };
        self.decider
            .handle(&launch, &incoming, request, environment)
            .await
    }

    /// The job launched for the deployment `env` requests, if AWX has one.
    async fn launched_job(
        &self,
        executor: &AwxExecutor,
        env: &Envelope,
    ) -> Result<Option<Job>, AwxError> {
        let deployment = env.correlation_id.as_str();
        // No job of the deployment is older than its change (give AWX's clock some slack).
        let since = request_order(env).0 - CLOCK_SKEW;
        let template = self.client.template(&executor.template, false).await?;
        match self
            .client
            .find_job(template.id, DEPLOYMENT_VAR, deployment, since)
            .await
        {
            Err(AwxError::Rejected { status: 404, .. }) => {
                // The cached template id is stale: look the name up again.
                let fresh = self.client.template(&executor.template, true).await?;
                self.client
                    .find_job(fresh.id, DEPLOYMENT_VAR, deployment, since)
                    .await
            }
            other => other,
        }
    }

    fn launched(&self, r: &Request<'_>, executor: &AwxExecutor, job_id: u64) -> Envelope {
        Envelope::caused_by(
            r.envelope,
            SOURCE,
            Event::DeployLaunched(DeployLaunched {
                environment: r.request.environment.clone(),
                executor: ExecutorRun::Awx {
                    job_id,
                    url: self.client.job_url(job_id),
                    template: executor.template.clone(),
                },
                image: r.request.image.clone(),
                namespace: r.environment.statefulset.namespace.clone(),
                statefulset: r.environment.statefulset.name.clone(),
                operation: r.request.operation.carried(),
                sha: Some(r.request.sha.clone()).filter(|s| !s.is_empty()),
            }),
        )
        .with_derived_id(&format!(
            "awx-launched:{}:{job_id}",
            r.envelope.correlation_id
        ))
    }

    /// Handle a delivery from the jobs queue: follow a launched job, or learn of its end from
    /// an AWX notification.
    pub async fn handle_job(&self, incoming: Incoming) -> Outcome {
        let env = &incoming.envelope;
        let (job_id, environment, deployment) = match &env.event {
            Event::DeployLaunched(l) => match &l.executor {
                ExecutorRun::Awx { job_id, .. } => {
                    (*job_id, l.environment.clone(), env.correlation_id.clone())
                }
                ExecutorRun::Kubernetes { .. } => return Outcome::ack(),
            },
            Event::AwxJobFinished(n) => match self.claim(n.job_id).await {
                Ok(Some((environment, deployment))) => (n.job_id, environment, deployment),
                Ok(None) => return Outcome::ack(),
                Err(e) => return Outcome::failure(&e, incoming.attempt),
            },
            _ => return Outcome::ack(),
        };
        if self.memo().finished().contains_key(&job_id) {
            return Outcome::ack();
        }
        let job = match self.client.job(job_id).await {
            Ok(job) => job,
            Err(e) => return Outcome::failure(&e, incoming.attempt),
        };
        if job.is_terminal() {
            return self.finished(env, &environment, &deployment, &job).await;
        }
        let age = job
            .created
            .map(|c| OffsetDateTime::now_utc() - c)
            .unwrap_or_default();
        let deadline = time::Duration::seconds(self.pipeline.awx.pending_deadline_secs as i64);
        if job.status == JobStatus::Pending && age > deadline {
            return self.stuck(env, &environment, &deployment, &job).await;
        }
        self.metrics.count(Decision::Polled);
        let typical = match (job.status, job.job_template) {
            (JobStatus::Running, Some(template)) => self.typical_run(job_id, template).await,
            _ => None,
        };
        let running_for = match job.status {
            JobStatus::Running => time::Duration::seconds_f64(job.elapsed),
            _ => age,
        };
        Outcome::defer(
            poll_interval(running_for, typical),
            format!("job {job_id} is {}", job.status),
        )
    }

    /// A notified job is ours when its extra vars carry a deployment id and its template runs
    /// one of our environments.
    async fn claim(&self, job_id: u64) -> Result<Option<(String, String)>, AwxError> {
        let job = match self.client.job(job_id).await {
            Ok(j) => j,
            Err(AwxError::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(deployment) = job
            .vars()
            .get(DEPLOYMENT_VAR)
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        for env in &self.pipeline.environments {
            if let Executor::Awx(a) = &env.executor
                && let Ok(t) = self.client.template(&a.template, false).await
                && Some(t.id) == job.job_template
            {
                return Ok(Some((env.name.clone(), deployment)));
            }
        }
        Ok(None)
    }

    /// How long `job`'s template typically runs, read once per job (a failed read counts as
    /// none: polling falls back to the job's age).
    async fn typical_run(&self, job: u64, template: u64) -> Option<Duration> {
        let runs = || conveyor::sync::lock(&self.typical_runs);
        if let Some(typical) = runs().get(&job).copied() {
            return typical;
        }
        let typical = self.client.typical_run(template).await.ok().flatten();
        let mut runs = runs();
        if runs.len() >= TYPICAL_RUNS_KEPT {
            runs.clear();
        }
        runs.insert(job, typical);
        typical
    }

    async fn finished(
        &self,
        env: &Envelope,
        environment: &str,
        deployment: &str,
        job: &Job,
    ) -> Outcome {
        let failed = job.status != JobStatus::Successful;
        let (stdout_tail, failed_task) = if failed {
            let tail = self
                .client
                .stdout_tail(job.id, STDOUT_LINES, STDOUT_BYTES)
                .await
                .ok()
                .filter(|s| !s.is_empty());
            // Best effort, like the tail: the end is reported either way.
            let task = self.client.failed_task(job.id).await.ok().flatten();
            (tail, task)
        } else {
            (None, None)
        };
        self.metrics.count(Decision::Finished);
        self.memo().finished().insert(job.id, ());
        conveyor::sync::lock(&self.typical_runs).remove(&job.id);
        tracing::info!(job = job.id, status = %job.status, deployment, "job finished");
        Outcome::publish(vec![self.job_finished(
            env,
            deployment,
            DeployJobFinished {
                environment: environment.to_owned(),
                job_id: job.id,
                status: job.status,
                failed,
                elapsed_seconds: job.elapsed,
                explanation: (!job.job_explanation.is_empty()).then(|| job.job_explanation.clone()),
                failed_task,
                stdout_tail,
            },
        )])
    }

    async fn stuck(
        &self,
        env: &Envelope,
        environment: &str,
        deployment: &str,
        job: &Job,
    ) -> Outcome {
        let mut explanation = if job.job_explanation.is_empty() {
            format!(
                "pending for more than {} s",
                self.pipeline.awx.pending_deadline_secs
            )
        } else {
            job.job_explanation.clone()
        };
        if self.pipeline.awx.cancel_stuck {
            match self.client.cancel(job.id).await {
                Ok(true) => explanation.push_str("; canceled by Conveyor"),
                Ok(false) => explanation.push_str("; it was no longer cancelable"),
                Err(e) => explanation.push_str(&format!("; cancel failed: {e}")),
            }
        }
        self.metrics.count(Decision::Stuck);
        self.memo().finished().insert(job.id, ());
        tracing::warn!(job = job.id, deployment, %explanation, "job stuck in pending");
        Outcome::publish(vec![self.job_finished(
            env,
            deployment,
            DeployJobFinished {
                environment: environment.to_owned(),
                job_id: job.id,
                status: JobStatus::Stuck,
                failed: true,
                elapsed_seconds: 0.0,
                explanation: Some(explanation),
                failed_task: None,
                stdout_tail: None,
            },
        )])
    }

    fn job_finished(&self, env: &Envelope, deployment: &str, data: DeployJobFinished) -> Envelope {
        Envelope::caused_by(env, SOURCE, Event::DeployJobFinished(data.clone()))
            .with_derived_id(&format!("awx-job-finished:{}", data.job_id))
            .with_correlation_id(deployment)
    }
}

/// AWX as an adapter of the one executor contract: AWX's jobs are the record (each carries its
/// deployment id and order as extra variables), and applying is launching the job template.
struct Launch<'a> {
    launcher: &'a AwxLauncher,
    executor: &'a AwxExecutor,
}

impl conveyor::executor::Executor for Launch<'_> {
    type Error = AwxError;
    /// The job template's id.
    type State = u64;

    async fn observe(&self, r: &Request<'_>) -> Result<Observation<u64>, AwxError> {
        let l = self.launcher;
        // Exactly one launch per deployment: a job that carries this deployment id is ours,
        // whether this is a redelivery after a crash or a retry after a lost answer.
        if let Some(job) = l.launched_job(self.executor, r.envelope).await? {
            tracing::info!(job = job.id, deployment = %r.envelope.correlation_id, "found the job launched for this deployment");
            let mut o = Observation::clear(job.job_template.unwrap_or_default());
            let mut launched = l.launched(r, self.executor, job.id);
            // Published again as it was: at the job's launch, not now (a follow resumed from
            // this copy judges by it which pods the launch replaced).
            if let Some(created) = job.created {
                launched.time = created;
            }
            o.applied = Some(Applied::Current(Box::new(launched)));
            return Ok(o);
        }
        // A worker that lost its deliveries may have a launch on the wire that AWX has not
        // committed yet; finding no job now proves nothing until that launch has timed out.
        if let Some(wait) = l.fences.remaining(&r.environment.name) {
            let mut o = Observation::clear(0);
            o.fence = Some(wait);
            return Ok(o);
        }
        let template = l.client.template(&self.executor.template, false).await?;
        let jobs = l.client.recent_jobs(template.id, 20).await?;
        if let Some(active) = jobs.iter().find(|j| j.is_active()) {
            l.stop_replaced_job(r, active).await;
        }
        Ok(Observation {
            applied: None,
            fence: None,
            // Newest wins across replicas and restarts too: the template's last launch by
            // Conveyor carries its request's order.
            last: jobs.iter().find_map(launched_order),
            // One deployment per environment: wait while any job of the template is active.
            busy: jobs.iter().find(|j| j.is_active()).map(|active| {
                format!(
                    "{} is busy with job {} ({})",
                    r.environment.name, active.id, active.status
                )
            }),
            state: template.id,
        })
    }

    async fn apply(&self, r: &Request<'_>, template: u64) -> Result<Envelope, AwxError> {
        let (l, executor) = (self.launcher, self.executor);
        // Never launch a job that would silently deploy the wrong image.
        let info = l.client.launch_info(template).await?;
        if !info.ask_variables_on_launch {
            return Err(AwxError::Rejected {
                status: 400,
                what: format!("launch of {:?}", executor.template),
                detail: format!(
                    "job template {:?} does not prompt for variables on launch, so AWX would ignore {:?} and deploy its default image; enable \"Prompt on launch\" for Variables on the template",
                    executor.template, executor.image_var
                ),
            });
        }
        if !info.passwords_needed_to_start.is_empty() || info.inventory_needed_to_start {
            return Err(AwxError::Rejected {
                status: 400,
                what: format!("launch of {:?}", executor.template),
                detail: format!(
                    "job template {:?} needs input Conveyor cannot give (passwords {:?}, inventory needed: {})",
                    executor.template,
                    info.passwords_needed_to_start,
                    info.inventory_needed_to_start
                ),
            });
        }
        let tag = r
            .request
            .image
            .tag
            .clone()
            .ok_or_else(|| AwxError::Rejected {
                status: 400,
                what: "deploy.requested".into(),
                detail: format!(
                    "the request names no image tag to pass as {:?}",
                    executor.image_var
                ),
            })?;
        let deployment = r.envelope.correlation_id.as_str();
        let mut vars = Map::new();
        vars.insert(executor.image_var.clone(), Value::String(tag));
        vars.insert(DEPLOYMENT_VAR.into(), Value::String(deployment.to_owned()));
        let (origin, requested) = r.order();
        for (var, at) in [(ORIGIN_VAR, origin), (REQUESTED_VAR, requested)] {
            vars.insert(
                var.into(),
                Value::String(at.format(&Rfc3339).unwrap_or_default()),
            );
        }
        let launched = l.client.launch(template, &vars).await?;
        if !launched.ignored_fields.is_empty() {
            // The job runs without what we sent: stop it before it deploys something else.
            let canceled = l.client.cancel(launched.job_id).await.unwrap_or(false);
            return Err(AwxError::Rejected {
                status: 201,
                what: format!("launch of {:?}", executor.template),
                detail: format!(
                    "AWX ignored {} in job {} ({}); check the template's prompts",
                    Value::Object(launched.ignored_fields),
                    launched.job_id,
                    if canceled {
                        "canceled"
                    } else {
                        "could not cancel it"
                    }
                ),
            });
        }
        tracing::info!(job = launched.job_id, deployment, environment = %r.environment.name, "launched");
        Ok(l.launched(r, executor, launched.job_id))
    }
}

impl AwxLauncher {
    /// A rollback of a failed deployment whose job still runs — the playbook waiting on pods
    /// that will never be Ready, until its own timeout — cancels that job rather than queue
    /// behind it: the release it waits for has failed already.
    async fn stop_replaced_job(&self, r: &Request<'_>, active: &Job) {
        let op = &r.request.operation;
        let Some(replaced) = op.replaces.as_deref() else {
            return;
        };
        let runs_replaced = active
            .vars()
            .get(DEPLOYMENT_VAR)
            .and_then(Value::as_str)
            .is_some_and(|d| deployment_id(d, &r.environment.name) == replaced);
        if op.trigger != Trigger::Rollback || !runs_replaced {
            return;
        }
        match self.client.cancel(active.id).await {
            Ok(canceled) => {
                tracing::info!(
                    job = active.id,
                    replaced,
                    canceled,
                    "canceled the job of the failed deployment this rollback replaces"
                )
            }
            Err(e) => {
                tracing::warn!(job = active.id, replaced, error = %e, "could not cancel the job of the failed deployment; waiting for it")
            }
        }
    }
}

/// The order and deployment id of a job Conveyor launched (none for a job launched by hand, or
/// before the order was recorded).
fn launched_order(job: &Job) -> Option<(RequestOrder, String)> {
    let vars = job.vars();
    let time = |var: &str| {
        vars.get(var)
            .and_then(Value::as_str)
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
    };
    let deployment = vars.get(DEPLOYMENT_VAR)?.as_str()?.to_owned();
    Some(((time(ORIGIN_VAR)?, time(REQUESTED_VAR)?), deployment))
}

/// Adaptive polling. When the template's jobs typically run `typical`: wait (in steps of at most
/// 15 s) until a tenth of it (and 2 s) before that, then look every second until a quarter of it
/// (and 10 s) after — so the end is noticed within about a second for a few dozen requests
/// (about 75 for a 15-minute job, against 900 for a flat second). Otherwise, and once past the
/// window: half the job's age, between 1 s and 15 s — fast while a short job may end any
/// moment, settling at 15 s for long ones (a notification cuts the wait short either way).
pub fn poll_interval(age: time::Duration, typical: Option<Duration>) -> Duration {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(15));
    let age = age.unsigned_abs();
    if let Some(typical) = typical {
        let opens = typical.saturating_sub(typical / 10 + Duration::from_secs(2));
        let closes = typical + typical / 4 + Duration::from_secs(10);
        if age < opens {
            // A deferral waits the next delay tier at or above what it asks for (1, 2, 5, 15 s
            // in production): ask for the longest that does not overshoot the opening.
            let gap = opens - age;
            return [15, 5, 2, 1]
                .map(Duration::from_secs)
                .into_iter()
                .find(|step| *step <= gap)
                .unwrap_or(min);
        }
        if age < closes {
            return min;
        }
    }
    (age / 2).clamp(min, max)
}

/// Consume both queues until `shutdown`.
pub async fn run(
    bus: Bus,
    launcher: Arc<AwxLauncher>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let requests = bus.topology().queue(queues::AWX_LAUNCHER_REQUESTS);
    let jobs = bus.topology().queue(queues::AWX_LAUNCHER_JOBS);
    let l = launcher.clone();
    let requests = bus.consume(
        &requests,
        ConsumerOptions {
            // Requests are partitioned by environment: each environment's requests one at a
            // time, in order; this replica launches up to 16 at once over all the partitions
            // it holds (a launch mostly waits on AWX, so more than the cores).
            prefetch: 16,
            ..ConsumerOptions::default()
        },
        move |i| {
            let l = l.clone();
            async move { l.handle_request(i).await }
        },
        shutdown.clone(),
    );
    let l = launcher;
    let jobs = bus.consume(
        &jobs,
        ConsumerOptions::default(),
        move |i| {
            let l = l.clone();
            async move { l.handle_job(i).await }
        },
        shutdown,
    );
    let (a, b) = tokio::join!(requests, jobs);
    a.and(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_starts_fast_and_settles_at_fifteen_seconds() {
        let s = |secs: i64| poll_interval(time::Duration::seconds(secs), None);
        assert_eq!(s(0), Duration::from_secs(1));
        assert_eq!(s(4), Duration::from_secs(2));
        assert_eq!(s(10), Duration::from_secs(5));
        assert_eq!(s(600), Duration::from_secs(15));
    }

    #[test]
    fn polling_tightens_around_the_typical_end_with_a_bounded_budget() {
        let typical = Some(Duration::from_secs(900));
        let s = |secs: i64| poll_interval(time::Duration::seconds(secs), typical);
        assert_eq!(s(10), Duration::from_secs(15), "long before the end: slow");
        assert_eq!(
            s(800),
            Duration::from_secs(5),
            "up to the window's opening (808 s)"
        );
        assert_eq!(s(805), Duration::from_secs(2));
        assert_eq!(
            s(808),
            Duration::from_secs(1),
            "in the window: every second"
        );
        assert_eq!(s(1134), Duration::from_secs(1));
        assert_eq!(
            s(1135),
            Duration::from_secs(15),
            "past it: as without history"
        );
        // What a 15-minute job costs, polled from its start to its end.
        let (mut at, mut polls) = (Duration::ZERO, 0);
        while at < Duration::from_secs(900) {
            at += poll_interval(time::Duration::try_from(at).unwrap(), typical);
            polls += 1;
        }
        assert!(polls < 150, "{polls} requests for a 15-minute job");
        assert!(
            at - Duration::from_secs(900) <= Duration::from_secs(1),
            "noticed within 1 s"
        );
    }

    #[test]
    fn settings_need_a_url_and_credentials_and_hide_them() {
        use std::collections::HashMap;
        let env: HashMap<String, String> =
            [("AWX_URL".to_string(), "https://awx.example".to_string())].into();
        let e = Settings::from_env(&env).unwrap_err();
        assert!(e.to_string().contains("AWX_TOKEN"), "{e}");
        let env: HashMap<String, String> = [
            ("AWX_URL".to_string(), "https://awx.example".to_string()),
            ("AWX_USERNAME".to_string(), "admin".to_string()),
            ("AWX_PASSWORD".to_string(), "s3cret-pw".to_string()),
        ]
        .into();
        let s = Settings::from_env(&env).unwrap();
        assert!(!format!("{s:?}").contains("s3cret-pw"));
    }
}
