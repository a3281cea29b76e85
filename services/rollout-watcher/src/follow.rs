//! One followed rollout: watch the StatefulSet and its pods (kube's `watcher`, which resumes
//! from bookmarks and relists after `410 Expired`), feed every view to the tracker, publish what
//! it finds, and decide stalls and failures on our own clock.

use std::collections::BTreeMap;
use std::time::Duration;

use conveyor::config::RolloutSettings;
use conveyor::events::{
    DeployCompleted, DeployFailed, ImageRef, Operation, RolloutFailed, RolloutStalled, Stage,
};
use conveyor::retry::Policy;
use conveyor::{Bus, Envelope, Event};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::executor::{Failure, Rollback};
use crate::progress::{Observation, ROLLBACK_HINT, Tracker};
use crate::{SOURCE, unstick};

/// What the AWX job said, passed to a running follow.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// Nothing yet.
    Running,
    /// The job succeeded.
    Succeeded,
    /// The job failed (status and a short reason).
    Failed(String),
}

/// How a follow ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// `rollout.completed` and `deploy.completed` were published.
    Completed,
    /// `deploy.failed` was published with this reason.
    Failed(String),
    /// Shutdown: another replica resumes from the cluster's state.
    Cancelled,
}

/// What to follow.
pub struct Follow {
    /// The `deploy.launched` event (cause and correlation of everything published).
    pub launched: Envelope,
    /// Environment.
    pub environment: String,
    /// Namespace.
    pub namespace: String,
    /// StatefulSet.
    pub name: String,
    /// The image being deployed.
    pub image: ImageRef,
    /// Whether the StatefulSet may still be unchanged (an AWX job yet to run): then its current
    /// revision is the baseline a new one is compared with.
    pub before_change: bool,
    /// Whether this follow takes over from one that stopped (a killed process, another replica).
    pub resumed: bool,
    /// The request's operation (carried to the deployment's end), unless it was a push.
    pub operation: Option<Operation>,
    /// The commit deployed, when known (carried to the completion).
    pub sha: Option<String>,
    /// The environment's settings: verification, what to do on failure, unsticking.
    pub config: conveyor::config::Environment,
}

impl Follow {
    /// This environment is deployed by the Kubernetes executor (Conveyor patches it).
    pub(crate) fn patched_by_conveyor(&self) -> bool {
        matches!(
            self.config.executor,
            conveyor::config::Executor::Kubernetes(_)
        )
    }
}

/// The key `emit` derives a deployment's end from: `conveyor::events::deployment_end_key`.
const DEPLOY_ENDED: &str = "deploy-ended";

/// How the deployment a resumed follow is for ended while nobody watched, if it did.
enum EndedUnwatched {
    /// Its follow failed it (the failure kept on the StatefulSet).
    Failed(crate::executor::Failure),
    /// The Kubernetes executor applied another deployment over it, and it had not failed: a
    /// newer one is applied only once this one's rollout came to rest and, where the
    /// environment verifies, its verification passed (`control::verifying_latch`).
    Overtaken,
    /// The StatefulSet is at rest with every pod created since the launch: the rollout is
    /// over, and whatever comes after it (the verification) is still to do.
    RolledOut,
}

/// Whether (and how) the deployment a resumed follow is for ended while nobody watched.
fn ended_unwatched(
    sts: &StatefulSet,
    pods: &BTreeMap<String, Pod>,
    f: &Follow,
) -> Option<EndedUnwatched> {
    if let Some(failure) = crate::executor::failures(sts)
        .into_iter()
        .find(|x| x.deployment == f.launched.correlation_id)
    {
        return Some(EndedUnwatched::Failed(failure));
    }
    if crate::executor::applied_deployment(sts)
        .is_some_and(|applied| applied != f.launched.correlation_id)
    {
        return Some(EndedUnwatched::Overtaken);
    }
    // The API server keeps whole seconds.
    let launched = f.launched.time.unix_timestamp();
    let rolled_out = crate::executor::at_rest(sts)
        && !pods.is_empty()
        && pods.values().all(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0.as_second() >= launched)
        });
    rolled_out.then_some(EndedUnwatched::RolledOut)
}

fn selector(sts: &StatefulSet) -> String {
    sts.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn by_name(pods: impl IntoIterator<Item = Pod>) -> BTreeMap<String, Pod> {
    pods.into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect()
}

/// Publish `event` as caused by the launch, with an id derived from `key` (so a resumed follow
/// republishes the same ids), retrying until it is confirmed or the follow is cancelled.
async fn emit(bus: &Bus, f: &Follow, key: &str, event: Event, cancel: &CancellationToken) -> bool {
    let deployment = conveyor::events::deployment_id(&f.launched.correlation_id, &f.environment);
    let e = Envelope::caused_by(&f.launched, SOURCE, event)
        .with_derived_id(&format!("{deployment}:{key}"));
    // The follow cannot give up on a fact it saw: keep trying with the reconnect policy.
    Policy::RECONNECT
        .until_done("publishing a rollout event", cancel, || bus.publish(&e))
        .await
        .is_some()
}

/// Follow the rollout until it completes, fails, or `cancel` fires.
pub async fn follow(
    client: kube::Client,
    bus: Bus,
    settings: RolloutSettings,
    f: Follow,
    job: watch::Receiver<JobEnd>,
    cancel: CancellationToken,
) -> Ending {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &f.namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &f.namespace);
    let event_api: Api<KubeEvent> = Api::namespaced(client, &f.namespace);
    let (sts, pods) = match first_look(&bus, &f, &sts_api, &pod_api, &cancel).await {
        Ok(view) => view,
        Err(end) => return end,
    };
    if f.resumed
        && let Some(end) = ended_while_away(&bus, &f, &sts_api, &sts, &pods, &cancel).await
    {
        return end;
    }
    let settled = sts
        .status
        .as_ref()
        .is_some_and(|s| s.current_revision == s.update_revision);
    let baseline = (f.before_change && settled)
        .then(|| sts.status.as_ref().and_then(|s| s.update_revision.clone()))
        .flatten();
    let tracker = Tracker::new(&f.environment, &sts, f.launched.time, baseline, &pods);
    let watching = Watching {
        bus: &bus,
        f: &f,
        settings: &settings,
        sts_api: &sts_api,
        pod_api: &pod_api,
        event_api: &event_api,
        cancel: &cancel,
        sts,
        pods,
        tracker,
        relisting: None,
        deleted: unstick::Deleted::new(),
        last_progress: OffsetDateTime::now_utc(),
        stalled_since: None,
        no_progress_reported: false,
        job_succeeded: false,
    };
    match watching.run(job).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

/// The starting view, retried (reconnect policy) until the API answers; a StatefulSet that
/// does not exist fails the rollout.
async fn first_look(
    bus: &Bus,
    f: &Follow,
    sts_api: &Api<StatefulSet>,
    pod_api: &Api<Pod>,
    cancel: &CancellationToken,
) -> Result<(StatefulSet, BTreeMap<String, Pod>), Ending> {
    let mut delays = Policy::RECONNECT.delays();
    loop {
        let attempt = async {
            let sts = sts_api.get(&f.name).await?;
            let pods = pod_api
                .list(&ListParams::default().labels(&selector(&sts)))
                .await?;
            Ok::<_, kube::Error>((sts, by_name(pods.items)))
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let reason = format!("StatefulSet {}/{} not found", f.namespace, f.name);
                let failure = Failure::now(f, Stage::Rollout, &reason);
                fail(bus, f, sts_api, failure, cancel).await;
                return Err(Ending::Failed(reason));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the StatefulSet failed; retrying");
                let wait = delays.next().unwrap_or(Policy::RECONNECT.max_delay);
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Ending::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A resumed follow whose rollout ended while nobody watched: its end, published again with
/// the same ids, so whatever of it was lost is sent now.
async fn ended_while_away(
    bus: &Bus,
    f: &Follow,
    sts_api: &Api<StatefulSet>,
    sts: &StatefulSet,
    pods: &BTreeMap<String, Pod>,
    cancel: &CancellationToken,
) -> Option<Ending> {
    let revision = sts.status.as_ref().and_then(|s| s.current_revision.clone());
    Some(match ended_unwatched(sts, pods, f)? {
        EndedUnwatched::Failed(failure) => {
            let reason = failure.reason.clone();
            if failure.stage == Stage::Rollout {
                fail(bus, f, sts_api, failure, cancel).await;
            } else {
                fail_stage(bus, f, sts_api, failure, cancel).await;
            }
            Ending::Failed(reason)
        }
        EndedUnwatched::Overtaken => {
            let verified = f.config.verify.is_some();
            complete(bus, f, revision, verified, cancel).await
        }
        EndedUnwatched::RolledOut => {
            // When the last pod turned Ready is the cluster's to say; the window runs from there.
            let last_ready = pods.values().filter_map(crate::progress::ready_at).max();
            finish(bus, f, revision, last_ready, sts_api, cancel).await
        }
    })
}

/// A follow under way: the watched view and what it has reported. Each step returns
/// `Err(ending)` when the follow ends.
struct Watching<'a> {
    bus: &'a Bus,
    f: &'a Follow,
    settings: &'a RolloutSettings,
    sts_api: &'a Api<StatefulSet>,
    pod_api: &'a Api<Pod>,
    event_api: &'a Api<KubeEvent>,
    cancel: &'a CancellationToken,
    sts: StatefulSet,
    pods: BTreeMap<String, Pod>,
    tracker: Tracker,
    /// During a pod relist: the new view, kept apart until it is whole.
    relisting: Option<BTreeMap<String, Pod>>,
    deleted: unstick::Deleted,
    last_progress: OffsetDateTime,
    stalled_since: Option<OffsetDateTime>,
    no_progress_reported: bool,
    job_succeeded: bool,
}

/// What a follow's loop never returns: it ends only through `Err(Ending)`.
enum Never {}

type Step<T = ()> = Result<T, Ending>;

impl Watching<'_> {
    async fn run(mut self, mut job: watch::Receiver<JobEnd>) -> Step<Never> {
        let name = self.f.name.clone();
        let mut sts_events = watcher::watcher(
            self.sts_api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
        .boxed();
        let mut pod_events = watcher::watcher(
            self.pod_api.clone(),
            watcher::Config::default().labels(&selector(&self.sts)),
        )
        .default_backoff()
        .boxed();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let changed = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Ending::Cancelled),
                Some(ev) = sts_events.next() => self.on_statefulset(ev).await?,
                Some(ev) = pod_events.next() => self.on_pod(ev),
                res = job.changed() => {
                    let end = job.borrow().clone();
                    self.on_job(res.is_ok(), &end).await?
                }
                _ = tick.tick() => false,
            };
            let now = OffsetDateTime::now_utc();
            self.nothing_started(now).await?;
            if changed {
                self.report(now).await?;
                self.unstick(now).await?;
                // A stalled pod that recovered ends the stall.
                if self.tracker.started()
                    && self.tracker.stalled_pods(&self.pods).is_empty()
                    && unstick::stuck_old(&self.sts, &self.pods).is_empty()
                    && !self.no_progress_reported
                {
                    self.stalled_since = None;
                }
            }
            self.no_progress(now).await?;
            self.stall_verdict(now).await?;
        }
    }

    /// Whether the view changed.
    async fn on_statefulset(&mut self, ev: watcher::Result<WatchEvent<StatefulSet>>) -> Step<bool> {
        match ev {
            Ok(WatchEvent::Apply(s)) | Ok(WatchEvent::InitApply(s)) => {
                self.sts = s;
                Ok(true)
            }
            Ok(WatchEvent::Delete(_)) => {
                let reason = format!(
                    "StatefulSet {}/{} was deleted",
                    self.f.namespace, self.f.name
                );
                Err(self.fail(&reason).await)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                tracing::debug!(error = %e, "StatefulSet watch interrupted; resuming");
                Ok(false)
            }
        }
    }

    /// Whether the view changed. A relist keeps the last complete view until the new one is
    /// whole, so a pod that vanished during the gap is seen as deleted, and none is seen twice.
    fn on_pod(&mut self, ev: watcher::Result<WatchEvent<Pod>>) -> bool {
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        match ev {
            Ok(WatchEvent::Init) => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Ok(WatchEvent::InitApply(p)) => match self.relisting.as_mut() {
                Some(buf) => {
                    buf.insert(name(&p), p);
                    false
                }
                None => {
                    self.pods.insert(name(&p), p);
                    true
                }
            },
            Ok(WatchEvent::InitDone) => {
                if let Some(buf) = self.relisting.take() {
                    self.pods = buf;
                }
                true
            }
            Ok(WatchEvent::Apply(p)) => {
                self.pods.insert(name(&p), p);
                true
            }
            Ok(WatchEvent::Delete(p)) => {
                self.pods.remove(&name(&p));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "pod watch interrupted; resuming");
                false
            }
        }
    }

    /// The AWX job's end: a failure before the StatefulSet changed ends the follow, since
    /// nothing will roll out. Never a change of the view.
    async fn on_job(&mut self, open: bool, end: &JobEnd) -> Step<bool> {
        self.job_succeeded |= *end == JobEnd::Succeeded;
        if open
            && let JobEnd::Failed(reason) = end
            && !self.tracker.started()
        {
            let reason = format!("the AWX job failed before the StatefulSet changed: {reason}");
            return Err(self.fail_stage(Stage::Job, &reason).await);
        }
        Ok(false)
    }

    /// A job that succeeded while nothing started rolling out within the window fails.
    async fn nothing_started(&self, now: OffsetDateTime) -> Step {
        let within = time::Duration::seconds(self.settings.start_within_secs as i64);
        if self.job_succeeded && !self.tracker.started() && now - self.f.launched.time > within {
            let reason = nothing_rolled(self.f, self.settings.start_within_secs);
            return Err(self.fail_stage(Stage::Job, &reason).await);
        }
        Ok(())
    }

    /// Publish what the tracker saw change; a completion ends the follow.
    async fn report(&mut self, now: OffsetDateTime) -> Step {
        for o in self.tracker.observe(&self.sts, &self.pods, now) {
            let (key, event) = match o {
                Observation::Started(s) => {
                    self.last_progress = now;
                    (
                        format!("started:{}", s.to_revision),
                        Event::RolloutStarted(s),
                    )
                }
                Observation::Progress(p) => {
                    self.last_progress = now;
                    (
                        format!(
                            "progress:{}:{:?}:{}",
                            p.pod,
                            p.step,
                            p.revision.clone().unwrap_or_default()
                        ),
                        Event::RolloutProgress(p),
                    )
                }
                Observation::Stalled(s) => {
                    self.stalled_since.get_or_insert(now);
                    (
                        format!("stalled:{}:{}", s.pod, s.reason),
                        Event::RolloutStalled(s),
                    )
                }
                Observation::Completed(c) => {
                    let (revision, last_ready) = (c.revision.clone(), c.last_ready_at);
                    self.emit("completed", Event::RolloutCompleted(c)).await?;
                    let (bus, f, api, cancel) = (self.bus, self.f, self.sts_api, self.cancel);
                    return Err(finish(bus, f, Some(revision), last_ready, api, cancel).await);
                }
            };
            self.emit(&key, event).await?;
        }
        Ok(())
    }

    /// A pod stuck on a revision no longer wanted blocks the controller for good: delete it,
    /// or report it stuck.
    async fn unstick(&mut self, now: OffsetDateTime) -> Step {
        let found = unstick::look(
            self.f,
            &self.sts,
            &self.pods,
            self.pod_api,
            &mut self.deleted,
        )
        .await;
        match found {
            unstick::Found::Nothing => Ok(()),
            unstick::Found::Deleted(e) => {
                self.last_progress = now;
                let key = format!("unstuck:{}", e.pod);
                self.emit(&key, Event::RolloutUnstuck(e)).await
            }
            unstick::Found::Stuck(s) => {
                self.stalled_since.get_or_insert(now);
                let key = format!("stalled:{}:{}:old", s.pod, s.reason);
                self.emit(&key, Event::RolloutStalled(s)).await
            }
        }
    }

    /// No progress at all for too long is a stall of its own (StatefulSets have no progress
    /// deadline); reported once.
    async fn no_progress(&mut self, now: OffsetDateTime) -> Step {
        let stall_after = time::Duration::seconds(self.settings.stall_after_secs as i64);
        if self.no_progress_reported || now - self.last_progress <= stall_after {
            return Ok(());
        }
        self.no_progress_reported = true;
        self.stalled_since.get_or_insert(now);
        // A pod the controller cannot create leaves no pod to look at: its Event says why.
        let refused = refused_creation(self.event_api, &self.sts).await;
        let stalled = RolloutStalled {
            environment: self.f.environment.clone(),
            pod: self
                .tracker
                .stalled_pods(&self.pods)
                .first()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            container: None,
            reason: if refused.is_some() {
                "FailedCreate".into()
            } else {
                "NoProgress".into()
            },
            message: Some(refused.unwrap_or_else(|| {
                format!("no pod changed for {} s", self.settings.stall_after_secs)
            })),
            restarts: 0,
            hint: Some(ROLLBACK_HINT.into()),
        };
        self.emit("stalled:no-progress", Event::RolloutStalled(stalled))
            .await
    }

    /// A stall that outlasts the grace period fails the rollout, naming the stuck pods.
    async fn stall_verdict(&self, now: OffsetDateTime) -> Step {
        let grace = time::Duration::seconds(self.settings.fail_grace_secs as i64);
        if self.stalled_since.is_none_or(|since| now - since <= grace) {
            return Ok(());
        }
        let mut stuck = self.tracker.stalled_pods(&self.pods);
        stuck.extend(unstick::stuck_old(&self.sts, &self.pods));
        let reason = if stuck.is_empty() {
            let quiet = format!("no progress for {} s", self.settings.stall_after_secs);
            match refused_creation(self.event_api, &self.sts).await {
                Some(why) => format!("{quiet}: {why}"),
                None => quiet,
            }
        } else {
            stuck
                .iter()
                .map(|(pod, why)| format!("{pod}: {why}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(self.fail(&reason).await)
    }

    async fn emit(&self, key: &str, event: Event) -> Step {
        if emit(self.bus, self.f, key, event, self.cancel).await {
            Ok(())
        } else {
            Err(Ending::Cancelled)
        }
    }

    /// The rollout failed now, for `reason`.
    async fn fail(&self, reason: &str) -> Ending {
        let failure = Failure::now(self.f, Stage::Rollout, reason);
        fail(self.bus, self.f, self.sts_api, failure, self.cancel).await;
        Ending::Failed(reason.to_owned())
    }

    /// The deployment failed now at `stage`, for `reason`.
    async fn fail_stage(&self, stage: Stage, reason: &str) -> Ending {
        let failure = Failure::now(self.f, stage, reason);
        fail_stage(self.bus, self.f, self.sts_api, failure, self.cancel).await;
        Ending::Failed(reason.to_owned())
    }
}

/// Why the StatefulSet controller cannot create a pod, if it says so: the message of its latest
/// `FailedCreate` Warning about the set (a quota, an admission webhook, a missing claim refused
/// it). Nothing when the Events cannot be read (RBAC without `events: list` included).
async fn refused_creation(api: &Api<KubeEvent>, sts: &StatefulSet) -> Option<String> {
    let (name, uid) = (sts.metadata.name.as_deref()?, sts.metadata.uid.as_deref()?);
    let about = ListParams::default().fields(&format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={name},involvedObject.uid={uid},reason=FailedCreate"
    ));
    match api.list(&about).await {
        Ok(list) => list
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the StatefulSet's Events");
            None
        }
    }
}

/// Why a deployment whose AWX job succeeded failed anyway: nothing changed in the cluster.
fn nothing_rolled(f: &Follow, within_secs: u64) -> String {
    let sent = match &f.config.executor {
        conveyor::config::Executor::Awx(awx) => format!(
            " (the job was sent {}={})",
            awx.image_var,
            f.image.tag.as_deref().unwrap_or("")
        ),
        conveyor::config::Executor::Kubernetes(_) => String::new(),
    };
    format!(
        "the AWX job succeeded, but {within_secs} s after the launch StatefulSet {}/{} shows no new revision and no replaced pod{sent}",
        f.namespace, f.name
    )
}

async fn fail(
    bus: &Bus,
    f: &Follow,
    sts_api: &Api<StatefulSet>,
    failure: Failure,
    cancel: &CancellationToken,
) {
    let failed = Event::RolloutFailed(RolloutFailed {
        environment: f.environment.clone(),
        reason: failure.reason.clone(),
    });
    emit(bus, f, "rollout-failed", failed, cancel).await;
    fail_stage(bus, f, sts_api, failure, cancel).await;
}

/// The deployment failed: its one end, and — when the environment asks for it and this was not
/// itself a rollback — the request for the last completed deployment's image. The failure's
/// time and its rollback are kept with it on the StatefulSet, so that the rollback a resumed
/// follow requests again is the same request (same image, same place in newest-wins order).
async fn fail_stage(
    bus: &Bus,
    f: &Follow,
    sts_api: &Api<StatefulSet>,
    mut failure: Failure,
    cancel: &CancellationToken,
) {
    if failure.rollback.is_none() && matches!(failure.stage, Stage::Rollout | Stage::Verify) {
        let Some(decided) = crate::rollback::decide(bus, f, cancel).await else {
            // Shut down before it was decided: whoever resumes the follow decides it.
            return;
        };
        failure.rollback = Some(decided);
    }
    // Recorded and freed first: the rollback this failure may request must find the set no
    // longer busy with it, and a follow resumed later must find the failure.
    mark_failed(sts_api, f, &failure).await;
    release(bus, f, cancel).await;
    let failed = Event::DeployFailed(DeployFailed {
        environment: f.environment.clone(),
        stage: failure.stage,
        reason: failure.reason.clone(),
        operation: f.operation.clone(),
    });
    emit(bus, f, DEPLOY_ENDED, failed, cancel).await;
    if let Some(Rollback::To(target)) = &failure.rollback {
        crate::rollback::publish(bus, f, &failure.reason, failure.at, target, cancel).await;
    }
}

/// Every pod is Ready: verify the service when the environment says so, then end the
/// deployment — completed, or failed at `verify` with what the checks saw.
async fn finish(
    bus: &Bus,
    f: &Follow,
    revision: Option<String>,
    last_ready: Option<OffsetDateTime>,
    sts_api: &Api<StatefulSet>,
    cancel: &CancellationToken,
) -> Ending {
    let verified = match &f.config.verify {
        None => false,
        Some(config) => {
            let verifying = Event::DeployVerifying(conveyor::events::DeployVerifying {
                environment: f.environment.clone(),
                checks: crate::verify::describe(config),
                soak_secs: config.soak_secs,
            });
            if !emit(bus, f, "verifying", verifying, cancel).await {
                return Ending::Cancelled;
            }
            match verify(config, last_ready, cancel).await {
                None => return Ending::Cancelled,
                Some(Err(why)) => {
                    let failure = Failure::now(f, Stage::Verify, &why);
                    fail_stage(bus, f, sts_api, failure, cancel).await;
                    return Ending::Failed(why);
                }
                Some(Ok(())) => true,
            }
        }
    };
    complete(bus, f, revision, verified, cancel).await
}

/// The deployment completed (`verified` when its checks passed): its one end.
async fn complete(
    bus: &Bus,
    f: &Follow,
    revision: Option<String>,
    verified: bool,
    cancel: &CancellationToken,
) -> Ending {
    release(bus, f, cancel).await;
    let done = Event::DeployCompleted(DeployCompleted {
        environment: f.environment.clone(),
        image: f.image.clone(),
        revision,
        operation: f.operation.clone(),
        sha: f.sha.clone(),
        verified,
    });
    if !emit(bus, f, DEPLOY_ENDED, done, cancel).await {
        return Ending::Cancelled;
    }
    Ending::Completed
}

/// Probe until the verification decides (`None`: cancelled first).
async fn verify(
    config: &conveyor::config::Verify,
    last_ready: Option<OffsetDateTime>,
    cancel: &CancellationToken,
) -> Option<Result<(), String>> {
    // Checks only read: a service behind a redirect (to its login or its new path) is found.
    let client = conveyor::http::build(
        conveyor::http::builder(
            &conveyor::http::user_agent("rollout-watcher"),
            Duration::from_secs(10),
        )
        .redirect(reqwest::redirect::Policy::limited(3)),
    );
    let now = OffsetDateTime::now_utc();
    let mut v = crate::verify::Verification::new(config, last_ready.unwrap_or(now), now);
    loop {
        let round = crate::verify::round(&client, config).await;
        match v.observe(&round, OffsetDateTime::now_utc()) {
            crate::verify::Verdict::Passed => return Some(Ok(())),
            crate::verify::Verdict::Failed(why) => return Some(Err(why)),
            crate::verify::Verdict::Again(wait) => {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// The name of the latch that keeps a verified environment busy with this deployment.
fn verifying_latch(f: &Follow) -> Option<String> {
    f.config.verify.as_ref()?;
    let deployment = conveyor::events::deployment_id(&f.launched.correlation_id, &f.environment);
    Some(conveyor::control::verifying_latch(&deployment))
}

/// How long a verifying latch nobody dropped stays on the broker.
const VERIFYING_LATCH_EXPIRES: Duration = Duration::from_secs(86_400);

/// From the start of a follow in an environment that verifies: it is busy with this
/// deployment until [`release`] (retried like an event: the hold is what keeps another
/// deployment from being verified in its place).
pub(crate) async fn occupy(bus: &Bus, f: &Follow, cancel: &CancellationToken) {
    let Some(latch) = verifying_latch(f) else {
        return;
    };
    Policy::RECONNECT
        .until_done("raising the verifying latch", cancel, || {
            bus.raise_latch(&latch, Some(VERIFYING_LATCH_EXPIRES))
        })
        .await;
}

/// The deployment has ended: the environment is free of it.
pub(crate) async fn release(bus: &Bus, f: &Follow, cancel: &CancellationToken) {
    let Some(latch) = verifying_latch(f) else {
        return;
    };
    Policy::RECONNECT
        .until_done("dropping the verifying latch", cancel, || {
            bus.drop_latch(&latch)
        })
        .await;
}

/// Say on the StatefulSet that this deployment failed, and how (for the Kubernetes executor: a
/// set left stuck by a failed deployment is not busy with it, so a rollback may be applied over
/// it; for every executor: a follow resumed after a restart republishes this failure rather
/// than judging the set again). Best effort: a set that cannot be read or patched is reported.
async fn mark_failed(api: &Api<StatefulSet>, f: &Follow, failure: &Failure) {
    let params = kube::api::PatchParams {
        field_manager: Some("conveyor-follow".into()),
        ..Default::default()
    };
    let marked = async {
        let sts = api.get(&f.name).await?;
        let annotations = crate::executor::with_failure(&sts, failure.clone());
        let body = serde_json::json!({"metadata": {"annotations": annotations}});
        api.patch(&f.name, &params, &kube::api::Patch::Merge(body))
            .await
    };
    if let Err(e) = marked.await {
        tracing::warn!(error = %e, "could not record the failure on the StatefulSet");
    }
}
