//! rollout-watcher: how Conveyor knows a deployment really happened. It follows the
//! environment's StatefulSet from the launch until every pod runs the new revision and is Ready —
//! pod by pod, by watching — and says exactly why when it does not. It is also the Kubernetes
//! executor for environments that deploy by patching the StatefulSet directly.
//!
//! Crash safety: a follow is an in-process watch, but the `deploy.launched` message that asked
//! for it is not held open — it is deferred through a delay tier every 30 s while the follow
//! runs, and acked when it has ended. If the worker dies, the message comes back to another
//! replica, which resumes from the cluster's state (event ids are derived, so what it
//! republishes has the same ids).

pub mod executor;
pub mod follow;
pub mod progress;
pub mod rollback;
pub mod unstick;
pub mod verify;

use conveyor::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor::bounded::BoundedMap;
use conveyor::bus::queues;
use conveyor::config::{ConfigError, Env, Environment, Executor, Pipeline};
use conveyor::events::{
    DeployJobFinished, DeployLaunched, DeployRequested, ExecutorRun, deployment_id,
};
use conveyor::executor::{Applied, BUSY_WAIT, Decider, Observation, Request};
use conveyor::{Bus, BusError, ConsumerOptions, Envelope, Event, Incoming, Outcome};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use follow::{Ending, Follow, JobEnd};

/// The event source of everything rollout-watcher publishes.
pub const SOURCE: &str = "conveyor/rollout-watcher";

/// How often a followed deployment's message comes back to prove the follow is alive.
pub const FOLLOW_LEASE: Duration = Duration::from_secs(30);

/// How long a resumed follow may take to find its rollout already ended before the delivery
/// goes back as a lease.
const RESUME_GRACE: Duration = Duration::from_secs(2);

/// What [`RolloutWatcher::start_follow`] found.
enum Started {
    /// This process follows it already.
    Already,
    /// This process followed it to its end.
    Ended,
    /// The environment is not in the pipeline file.
    Unknown,
    /// A follow started now (`resumed`: after a restart or on another replica).
    New {
        resumed: bool,
        ending: Arc<Mutex<Option<Ending>>>,
    },
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No usable Kubernetes client configuration.
    #[error("Kubernetes client configuration: {0}")]
    Kube(String),
}

/// Kubernetes clients: the default one, and one per kubeconfig context an environment names.
#[derive(Clone)]
pub struct Clients {
    default: kube::Client,
    by_context: HashMap<String, kube::Client>,
}

impl Clients {
    /// One client for everything (tests, the simulator).
    pub fn single(client: kube::Client) -> Self {
        Self {
            default: client,
            by_context: HashMap::new(),
        }
    }

    /// `CONVEYOR_KUBE_API_URL` (plain URL, no credentials: the simulator), else the kubeconfig
    /// or in-cluster configuration; plus a client per context named in the pipeline.
    pub async fn from_env(env: &dyn Env, pipeline: &Pipeline) -> Result<Self, StartError> {
        let kube_err = |e: &dyn std::fmt::Display| StartError::Kube(e.to_string());
        let default = match env.var("CONVEYOR_KUBE_API_URL") {
            Some(url) => {
                let uri = url
                    .parse()
                    .map_err(|_| ConfigError::one("CONVEYOR_KUBE_API_URL", "is not a URL"))?;
                kube::Client::try_from(kube::Config::new(uri)).map_err(|e| kube_err(&e))?
            }
            None => kube::Client::try_default()
                .await
                .map_err(|e| kube_err(&e))?,
        };
        let mut by_context = HashMap::new();
        for e in &pipeline.environments {
            if let Some(ctx) = &e.statefulset.context {
                let options = kube::config::KubeConfigOptions {
                    context: Some(ctx.clone()),
                    ..Default::default()
                };
                let config = kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|err| kube_err(&format!("context {ctx:?}: {err}")))?;
                by_context.insert(
                    ctx.clone(),
                    kube::Client::try_from(config).map_err(|e| kube_err(&e))?,
                );
            }
        }
        Ok(Self {
            default,
            by_context,
        })
    }

    fn for_env(&self, env: &Environment) -> kube::Client {
        env.statefulset
            .context
            .as_ref()
            .and_then(|c| self.by_context.get(c))
            .unwrap_or(&self.default)
            .clone()
    }
}

conveyor::executor_decisions! {
    /// What rollout-watcher did (`rollout_watcher_decisions_total{decision}`).
    pub enum Decision (applied = "patched") {
        Started = "started": "began following a rollout",
        Resumed = "resumed": "took up a follow another worker had begun",
        Completed = "completed": "a rollout followed to its end",
        Failed = "failed": "a rollout failed",
        Cancelled = "cancelled": "a follow stopped: superseded, or shut down",
    }
}

/// rollout metrics: `rollout_watcher_decisions_total{decision}`.
pub type Metrics = conveyor::telemetry::Decisions<Decision>;

/// Register this service's decision counter.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    Metrics::register(
        registry,
        "rollout_watcher_decisions",
        "Follows and executor decisions",
    )
}

struct Session {
    job: watch::Sender<JobEnd>,
    ending: Arc<Mutex<Option<Ending>>>,
}

/// The service.
pub struct RolloutWatcher {
    pipeline: Arc<Pipeline>,
    clients: Clients,
    bus: Bus,
    metrics: Metrics,
    sessions: Mutex<HashMap<String, Session>>,
    /// Job failures that arrived before their follow started on this replica.
    early_failures: Mutex<BoundedMap<String, String>>,
    /// The Kubernetes executor's decisions (the one executor contract).
    decider: Decider,
    shutdown: CancellationToken,
}

impl RolloutWatcher {
    /// A watcher for `pipeline`; follows stop when `shutdown` is cancelled.
    pub fn new(
        pipeline: Arc<Pipeline>,
        clients: Clients,
        bus: Bus,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            decider: Decider::new(SOURCE, bus.clone(), pipeline.clone(), metrics.part()),
            pipeline,
            clients,
            bus,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            early_failures: Mutex::new(BoundedMap::new(1024)),
            shutdown,
        }
    }

    /// Handle one delivery.
    pub async fn handle(&self, incoming: Incoming) -> Outcome {
        let env = &incoming.envelope;
        match &env.event {
            Event::DeployRequested(r) => self.on_requested(&incoming, r).await,
            Event::DeployLaunched(l) => self.on_launched(&incoming, l).await,
            Event::DeployJobFinished(j) => self.on_job_finished(env, j),
            Event::UnstickRequested(u) => self.on_unstick(&incoming, u).await,
            _ => Outcome::ack(),
        }
    }

    async fn on_launched(&self, incoming: &Incoming, launched: &DeployLaunched) -> Outcome {
        let env = &incoming.envelope;
        let key = deployment_id(&env.correlation_id, &launched.environment);
        let lease = || {
            Outcome::defer(
                FOLLOW_LEASE,
                format!("following the rollout of {}", launched.environment),
            )
        };
        match self.start_follow(incoming, launched, &key) {
            Started::Already | Started::New { resumed: false, .. } => lease(),
            Started::Ended => Outcome::ack(),
            Started::Unknown => Outcome::dead_letter(format!(
                "environment {:?} is not in this rollout-watcher's pipeline file",
                launched.environment
            )),
            Started::New {
                resumed: true,
                ending,
            } => {
                // A resumed follow is mostly of a rollout that ended while nobody watched: it
                // reports the end at once, and waiting a moment for that spares a whole lease
                // (and another replica's resuming it again).
                let deadline = tokio::time::Instant::now() + RESUME_GRACE;
                while tokio::time::Instant::now() < deadline {
                    if lock(&ending)
                        .as_ref()
                        .is_some_and(|e| !matches!(e, Ending::Cancelled))
                    {
                        lock(&self.sessions).remove(&key);
                        return Outcome::ack();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                lease()
            }
        }
    }

    /// Follow the deployment unless this process already does.
    fn start_follow(&self, incoming: &Incoming, launched: &DeployLaunched, key: &str) -> Started {
        let env = &incoming.envelope;
        let mut sessions = lock(&self.sessions);
        if let Some(s) = sessions.get(key) {
            let ending = lock(&s.ending).clone();
            match ending {
                Some(Ending::Cancelled) | None => return Started::Already,
                Some(ending) => {
                    sessions.remove(key);
                    tracing::debug!(deployment = %key, ?ending, "follow ended");
                    return Started::Ended;
                }
            }
        }
        let Some(environment) = self.pipeline.environment(&launched.environment) else {
            return Started::Unknown;
        };
        let resumed = incoming.redelivered
            || incoming.attempt > 1
            || incoming.envelope.time < OffsetDateTime::now_utc() - time::Duration::seconds(25);
        self.metrics.count(if resumed {
            Decision::Resumed
        } else {
            Decision::Started
        });
        let (job_tx, job_rx) = watch::channel(JobEnd::Running);
        if let Some(reason) = lock(&self.early_failures).get(&key.to_owned()).cloned() {
            let _ = job_tx.send(JobEnd::Failed(reason));
        }
        let ending = Arc::new(Mutex::new(None));
        let follow = Follow {
            launched: env.clone(),
            environment: launched.environment.clone(),
            namespace: launched.namespace.clone(),
            name: launched.statefulset.clone(),
            image: launched.image.clone(),
            before_change: matches!(launched.executor, ExecutorRun::Awx { .. }) && !resumed,
            resumed,
            operation: launched.operation.clone(),
            sha: launched.sha.clone(),
            config: environment.clone(),
        };
        let (client, bus, settings, done, metrics, stop) = (
            self.clients.for_env(environment),
            self.bus.clone(),
            self.pipeline.rollout.clone(),
            ending.clone(),
            self.metrics.clone(),
            self.shutdown.child_token(),
        );
        tokio::spawn(async move {
            follow::occupy(&bus, &follow, &stop).await;
            let result = follow::follow(client, bus, settings, follow, job_rx, stop).await;
            metrics.count(match &result {
                Ending::Completed => Decision::Completed,
                Ending::Failed(_) => Decision::Failed,
                Ending::Cancelled => Decision::Cancelled,
            });
            *lock(&done) = Some(result);
        });
        sessions.insert(
            key.to_owned(),
            Session {
                job: job_tx,
                ending: ending.clone(),
            },
        );
        Started::New { resumed, ending }
    }

    fn on_job_finished(&self, env: &Envelope, job: &DeployJobFinished) -> Outcome {
        let end = if job.failed {
            // What failed first (the task, its host, the module's message), then AWX's own
            // explanation: the words an operator reads on GitHub and in Slack.
            let mut reason = format!("job {} {}", job.job_id, job.status);
            let said: Vec<&str> = [job.failed_task.as_deref(), job.explanation.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            if !said.is_empty() {
                reason.push_str(&format!(": {}", said.join("; ")));
            }
            JobEnd::Failed(reason)
        } else {
            JobEnd::Succeeded
        };
        let key = deployment_id(&env.correlation_id, &job.environment);
        match lock(&self.sessions).get(&key) {
            Some(s) => {
                let _ = s.job.send(end);
            }
            None => {
                if let JobEnd::Failed(reason) = end {
                    lock(&self.early_failures).insert(key, reason);
                }
            }
        }
        Outcome::ack()
    }

    /// An operator's `conveyor unstick ENV`: delete the next pod stuck on an unwanted revision
    /// (the environment must opt in), then come back for the next one until none is left.
    async fn on_unstick(
        &self,
        incoming: &Incoming,
        u: &conveyor::events::UnstickRequested,
    ) -> Outcome {
        let Some(environment) = self.pipeline.environment(&u.environment) else {
            return Outcome::dead_letter(format!(
                "environment {:?} is not in this rollout-watcher's pipeline file",
                u.environment
            ));
        };
        if !environment.unstick {
            return Outcome::dead_letter(format!(
                "unstick is not enabled for {} (unstick = true in the pipeline file, and pods: delete in its RBAC)",
                u.environment
            ));
        }
        let client = self.clients.for_env(environment);
        let ns = &environment.statefulset.namespace;
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, ns);
        let look = async {
            let sts = sts_api.get(&environment.statefulset.name).await?;
            let selector = sts
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let pods: std::collections::BTreeMap<String, k8s_openapi::api::core::v1::Pod> = pod_api
                .list(&kube::api::ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
                .collect();
            let deleted = unstick::delete_next(
                &u.environment,
                &sts,
                &pods,
                &pod_api,
                &mut unstick::Deleted::new(),
            )
            .await?;
            let left = unstick::stuck_old(&sts, &pods).len() - usize::from(deleted.is_some());
            Ok::<_, kube::Error>((deleted, left))
        };
        match look.await {
            Ok((deleted, left)) => {
                let mut outcome = if left > 0 {
                    Outcome::defer(
                        BUSY_WAIT,
                        format!("{left} more stuck pods in {}", u.environment),
                    )
                } else {
                    Outcome::ack()
                };
                if let Some(e) = deleted {
                    let unstuck = Envelope::new(SOURCE, Event::RolloutUnstuck(e.clone()))
                        .with_derived_id(&format!(
                            "unstuck:{}:{}:{}",
                            u.environment,
                            e.pod,
                            e.revision.clone().unwrap_or_default()
                        ));
                    outcome = outcome.and_publish(unstuck);
                }
                outcome
            }
            Err(e) => Outcome::failure(&executor::ExecutorError::from(e), incoming.attempt),
        }
    }

    async fn on_requested(&self, incoming: &Incoming, request: &DeployRequested) -> Outcome {
        let Some(environment) = self.pipeline.environment(&request.environment) else {
            return Outcome::ack();
        };
        let Executor::Kubernetes(k) = &environment.executor else {
            return Outcome::ack();
        };
        let patcher = Patcher {
            client: self.clients.for_env(environment),
            container: &k.container,
        };
        self.decider
            .handle(&patcher, incoming, request, environment)
            .await
    }
}

/// The Kubernetes executor as an adapter of the one executor contract: it observes the
/// StatefulSet (its annotations say what Conveyor applied, and in which order) and applies by
/// patching it.
struct Patcher<'a> {
    client: kube::Client,
    container: &'a str,
}

impl Patcher<'_> {
    fn api(&self, environment: &Environment) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &environment.statefulset.namespace)
    }
}

impl conveyor::executor::Executor for Patcher<'_> {
    type Error = executor::ExecutorError;
    type State = StatefulSet;

    async fn observe(&self, r: &Request<'_>) -> Result<Observation<StatefulSet>, Self::Error> {
        let sts = self
            .api(r.environment)
            .get(&r.environment.statefulset.name)
            .await?;
        let deployment = r.envelope.correlation_id.as_str();
        let current = executor::applied_deployment(&sts);
        let applied = if current == Some(deployment) {
            Some(Applied::Current(Box::new(launched(r, &sts))))
        } else if executor::applied_history(&sts).contains(&deployment) {
            // Applied before and overtaken since: a copy published again (a redelivered build,
            // a re-ingested webhook).
            Some(Applied::Overtaken {
                by: current.unwrap_or_default().to_owned(),
            })
        } else {
            None
        };
        let last = current
            .zip(executor::applied_order(&sts))
            .map(|(by, order)| (order, by.to_owned()));
        let busy = (!executor::at_rest(&sts) && !executor::applied_ended(&sts))
            .then(|| format!("{} is still rolling out", r.environment.name));
        Ok(Observation {
            applied,
            fence: None,
            last,
            busy,
            state: sts,
        })
    }

    async fn apply(&self, r: &Request<'_>, sts: StatefulSet) -> Result<Envelope, Self::Error> {
        let patched = executor::apply(
            &self.api(r.environment),
            &sts,
            self.container,
            &r.request.image,
            &r.envelope.correlation_id,
            r.order(),
        )
        .await?;
        tracing::info!(
            correlation = %r.envelope.correlation_id,
            environment = %r.environment.name,
            resource_version = ?sts.metadata.resource_version,
            generation = ?patched.metadata.generation,
            "patched the StatefulSet"
        );
        Ok(launched(r, &patched))
    }
}

/// The `deploy.launched` of a request applied to `sts` (one id per deployment, and the time it
/// was applied, however often it is published again).
fn launched(r: &Request<'_>, sts: &StatefulSet) -> Envelope {
    let mut launched = Envelope::caused_by(
        r.envelope,
        SOURCE,
        Event::DeployLaunched(DeployLaunched {
            environment: r.environment.name.clone(),
            executor: ExecutorRun::Kubernetes {
                generation: sts.metadata.generation.unwrap_or(0),
            },
            image: r.request.image.clone(),
            namespace: r.environment.statefulset.namespace.clone(),
            statefulset: r.environment.statefulset.name.clone(),
            operation: r.request.operation.carried(),
            sha: Some(r.request.sha.clone()).filter(|s| !s.is_empty()),
        }),
    )
    .with_derived_id(&format!(
        "kube-launched:{}",
        deployment_id(&r.envelope.correlation_id, &r.environment.name)
    ));
    if executor::applied_deployment(sts) == Some(r.envelope.correlation_id.as_str())
        && let Some(at) = executor::applied_at(sts)
    {
        launched.time = at;
    }
    launched
}

/// Consume the queue until `shutdown`.
pub async fn run(
    bus: Bus,
    watcher: Arc<RolloutWatcher>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let queue = bus.topology().queue(queues::ROLLOUT_WATCHER);
    bus.consume(
        &queue,
        ConsumerOptions::default(),
        move |i| {
            let w = watcher.clone();
            async move { w.handle(i).await }
        },
        shutdown,
    )
    .await
}
