//! The progress computation: from successive views of a StatefulSet and its pods to rollout
//! facts — started, each pod deleted / created / Ready, stalled with a cause, completed by
//! kubectl's rule. Pure: no I/O, no clock of its own.

use std::collections::{BTreeMap, HashSet};

use conveyor::events::{
    PodStep, PodTiming, RolloutCompleted, RolloutProgress, RolloutStalled, RolloutStarted,
};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;

/// Container waiting reasons that mean the pod will not become Ready by itself.
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
];

/// Restarts from which a container counts as crash-looping even between back-offs.
const RESTART_LIMIT: i32 = 3;

/// What an operator should do about a pod that never becomes Ready.
pub const ROLLBACK_HINT: &str = "fix or revert the image, then delete the stuck pod: a StatefulSet does not replace a pod that never became Ready (forced rollback)";

/// One fact the tracker found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The StatefulSet began moving to a new revision.
    Started(RolloutStarted),
    /// A pod moved.
    Progress(RolloutProgress),
    /// A pod will not become Ready by itself.
    Stalled(RolloutStalled),
    /// kubectl's completion rule holds.
    Completed(RolloutCompleted),
}

/// kubectl's rule (`rollout_status.go`): the spec is observed, every replica is Ready, and
/// the pods above the partition are updated; without a partition Conveyor also waits for the
/// controller to promote the revision (`currentRevision == updateRevision`), which it does
/// exactly when every pod is updated and Ready.
pub fn is_complete(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let generation = sts.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || observed < generation {
        return false;
    }
    let spec = sts.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    if status.ready_replicas.unwrap_or(0) < replicas {
        return false;
    }
    let partition = partition(sts);
    if status.updated_replicas.unwrap_or(0) < replicas - partition {
        return false;
    }
    partition > 0 || status.current_revision == status.update_revision
}

fn partition(sts: &StatefulSet) -> i32 {
    sts.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

fn revision(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get("controller-revision-hash")
        .cloned()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn ordinal(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// When the pod's Ready condition turned True, if it is Ready.
pub fn ready_at(pod: &Pod) -> Option<OffsetDateTime> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(ts)
                .unwrap_or_else(OffsetDateTime::now_utc)
        })
}

fn created_at(pod: &Pod) -> Option<OffsetDateTime> {
    pod.metadata.creation_timestamp.as_ref().map(ts)
}

/// Why a pod will not become Ready by itself: (container, reason, message, restarts).
pub fn stuck(pod: &Pod) -> Option<(Option<String>, String, Option<String>, i32)> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status.conditions.as_ref().and_then(|cs| {
        cs.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
    }) {
        return Some((None, "Unschedulable".into(), c.message.clone(), 0));
    }
    for cs in status.container_statuses.iter().flatten() {
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
        let reason = waiting.and_then(|w| w.reason.clone());
        if let Some(r) = &reason
            && STUCK_REASONS.contains(&r.as_str())
        {
            return Some((
                Some(cs.name.clone()),
                r.clone(),
                waiting.and_then(|w| w.message.clone()),
                cs.restart_count,
            ));
        }
        if cs.restart_count >= RESTART_LIMIT && !cs.ready {
            return Some((
                Some(cs.name.clone()),
                "RepeatedRestarts".into(),
                reason,
                cs.restart_count,
            ));
        }
    }
    None
}

/// A pod's step, keyed by its uid and the step's kind (reported once each).
type PodChange = (String, &'static str, RolloutProgress);

/// What one look at the StatefulSet says.
struct View {
    status: StatefulSetStatus,
    /// The controller has seen the latest spec.
    observed: bool,
    update: Option<String>,
    replicas: i32,
}

impl View {
    fn of(sts: &StatefulSet) -> Self {
        let status = sts.status.clone().unwrap_or_default();
        let generation = sts.metadata.generation.unwrap_or(0);
        Self {
            observed: status.observed_generation.unwrap_or(0) >= generation,
            update: status.update_revision.clone(),
            replicas: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            status,
        }
    }
}

/// Follows one rollout.
#[derive(Debug, Clone)]
pub struct Tracker {
    environment: String,
    namespace: String,
    name: String,
    launched_at: OffsetDateTime,
    baseline_revision: Option<String>,
    baseline_uids: HashSet<String>,
    started: bool,
    started_at: Option<OffsetDateTime>,
    to_revision: Option<String>,
    previous: BTreeMap<String, Pod>,
    reported: HashSet<(String, &'static str)>,
    stalls: HashSet<(String, String)>,
    timings: BTreeMap<String, PodTiming>,
    completed: bool,
}

impl Tracker {
    /// Start following from this view. `baseline_revision` is the StatefulSet's update
    /// revision before the change, when known (`None` when the change may already be applied,
    /// as after Conveyor's own patch or when resuming).
    pub fn new(
        environment: &str,
        sts: &StatefulSet,
        launched_at: OffsetDateTime,
        baseline_revision: Option<String>,
        pods: &BTreeMap<String, Pod>,
    ) -> Self {
        Self {
            environment: environment.to_owned(),
            namespace: sts.metadata.namespace.clone().unwrap_or_default(),
            name: sts.metadata.name.clone().unwrap_or_default(),
            launched_at,
            baseline_revision,
            baseline_uids: pods.values().map(uid).collect(),
            started: false,
            started_at: None,
            to_revision: None,
            previous: BTreeMap::new(),
            reported: HashSet::new(),
            stalls: HashSet::new(),
            timings: BTreeMap::new(),
            completed: false,
        }
    }

    /// The revision being rolled out, once started.
    pub fn to_revision(&self) -> Option<&str> {
        self.to_revision.as_deref()
    }

    /// Whether a rollout has been seen to start.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether completion was reported.
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// Look at a new view of the StatefulSet and its pods (all of them, by name).
    pub fn observe(
        &mut self,
        sts: &StatefulSet,
        pods: &BTreeMap<String, Pod>,
        now: OffsetDateTime,
    ) -> Vec<Observation> {
        let view = View::of(sts);
        let mut out = Vec::new();
        if !self.started {
            out.extend(self.start(&view, pods, now));
        } else if view.observed
            && view.update.is_some()
            && view.update.as_deref() != self.to_revision.as_deref()
        {
            // A newer template arrived mid-rollout: follow the newest target.
            self.to_revision = view.update.clone();
        }
        if self.started {
            let mut steps = self.deletions(&view, pods, now);
            steps.extend(self.arrivals(&view, pods, now, &mut out));
            // One view may hold several changes (after a relist): report them in the order
            // they happened — by time, then a pod's creation before its Ready before the next
            // deletion, then the highest ordinal first, as the controller goes.
            steps.sort_by_key(|(_, kind, p)| {
                let rank = match *kind {
                    "created" => 0,
                    "ready" => 1,
                    _ => 2,
                };
                (p.at, rank, std::cmp::Reverse(p.ordinal))
            });
            for (key, kind, progress) in steps {
                if self.reported.insert((key, kind)) {
                    out.push(Observation::Progress(progress));
                }
            }
            out.extend(self.completion(sts, &view, pods, now));
        }
        self.previous = pods.clone();
        out
    }

    /// Whether this view starts the rollout.
    fn start(
        &mut self,
        view: &View,
        pods: &BTreeMap<String, Pod>,
        now: OffsetDateTime,
    ) -> Option<Observation> {
        let (status, update, replicas) = (&view.status, &view.update, view.replicas);
        let moving = view.observed && status.current_revision != status.update_revision;
        let changed =
            view.observed && self.baseline_revision.is_some() && *update != self.baseline_revision;
        let replaced = pods.values().any(|p| {
            !self.baseline_uids.contains(&uid(p))
                && created_at(p).is_some_and(|c| c >= self.launched_at - time::Duration::seconds(1))
        }) || self.previous.values().any(|p| {
            self.baseline_uids.contains(&uid(p))
                && !pods.contains_key(p.metadata.name.as_deref().unwrap_or(""))
        }) || pods.values().any(|p| {
            self.baseline_uids.contains(&uid(p)) && p.metadata.deletion_timestamp.is_some()
        });
        // Pods and the StatefulSet arrive on separate watches, so a replaced pod may show
        // before the status that explains it. With a known baseline, a replacement starts
        // the rollout only once the status shows the disruption too (a restart with an
        // unchanged template); otherwise the new revision will say so.
        let disrupted = status.ready_replicas.unwrap_or(0) < replicas
            || status.updated_replicas.unwrap_or(0) < replicas
            || status.current_replicas.unwrap_or(0) < replicas;
        let replaced = replaced && (self.baseline_revision.is_none() || disrupted);
        if !(moving || changed || (view.observed && replaced)) {
            return None;
        }
        self.started = true;
        self.started_at = Some(now);
        self.to_revision = update.clone();
        Some(Observation::Started(RolloutStarted {
            environment: self.environment.clone(),
            namespace: self.namespace.clone(),
            statefulset: self.name.clone(),
            from_revision: self
                .baseline_revision
                .clone()
                .or_else(|| status.current_revision.clone())
                .filter(|r| Some(r) != update.as_ref()),
            to_revision: update.clone().unwrap_or_default(),
            replicas,
        }))
    }

    fn progress(
        &self,
        view: &View,
        step: PodStep,
        pod: &Pod,
        at: OffsetDateTime,
    ) -> RolloutProgress {
        let name = pod.metadata.name.clone().unwrap_or_default();
        RolloutProgress {
            environment: self.environment.clone(),
            ordinal: ordinal(&name),
            pod: name,
            step,
            revision: revision(pod),
            at,
            updated: view.status.updated_replicas.unwrap_or(0),
            ready: view.status.ready_replicas.unwrap_or(0),
            replicas: view.replicas,
        }
    }

    /// Pods of an old revision that vanished, or began terminating.
    fn deletions(
        &self,
        view: &View,
        pods: &BTreeMap<String, Pod>,
        now: OffsetDateTime,
    ) -> Vec<PodChange> {
        let target = self.to_revision.as_deref();
        let mut steps = Vec::new();
        for (name, prev) in &self.previous {
            let gone = match pods.get(name) {
                None => true,
                Some(p) => uid(p) != uid(prev) || p.metadata.deletion_timestamp.is_some(),
            };
            if gone && revision(prev).as_deref() != target {
                steps.push((
                    uid(prev),
                    "deleted",
                    self.progress(view, PodStep::Deleted, prev, now),
                ));
            }
        }
        for p in pods.values() {
            if p.metadata.deletion_timestamp.is_some() && revision(p).as_deref() != target {
                steps.push((
                    uid(p),
                    "deleted",
                    self.progress(view, PodStep::Deleted, p, now),
                ));
            }
        }
        steps
    }

    /// Pods of the target revision: created, Ready, or stuck (pushed to `out` once per cause).
    fn arrivals(
        &mut self,
        view: &View,
        pods: &BTreeMap<String, Pod>,
        now: OffsetDateTime,
        out: &mut Vec<Observation>,
    ) -> Vec<PodChange> {
        let mut steps = Vec::new();
        for p in pods.values() {
            if revision(p).as_deref() != self.to_revision.as_deref()
                || p.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            let timing = |started| PodTiming {
                pod: name.clone(),
                started,
                ready: None,
            };
            if !self.baseline_uids.contains(&uid(p)) {
                let created = created_at(p).unwrap_or(now);
                steps.push((
                    uid(p),
                    "created",
                    self.progress(view, PodStep::Created, p, created),
                ));
                self.timings
                    .entry(name.clone())
                    .or_insert_with(|| timing(Some(created)));
            }
            if let Some(at) = ready_at(p) {
                steps.push((uid(p), "ready", self.progress(view, PodStep::Ready, p, at)));
                let t = self
                    .timings
                    .entry(name.clone())
                    .or_insert_with(|| timing(None));
                t.ready.get_or_insert(at);
            } else if let Some((container, reason, message, restarts)) = stuck(p)
                && self.stalls.insert((uid(p), reason.clone()))
            {
                out.push(Observation::Stalled(RolloutStalled {
                    environment: self.environment.clone(),
                    pod: name,
                    container,
                    reason,
                    message,
                    restarts,
                    hint: Some(ROLLBACK_HINT.into()),
                }));
            }
        }
        steps
    }

    /// Completion, once the status says so and the pod view agrees: the StatefulSet and its
    /// pods arrive on two watches, so every pod's Ready is reported before completion.
    fn completion(
        &mut self,
        sts: &StatefulSet,
        view: &View,
        pods: &BTreeMap<String, Pod>,
        now: OffsetDateTime,
    ) -> Option<Observation> {
        let target = self.to_revision.as_deref();
        let replicas = view.replicas;
        let updated_ready = pods
            .values()
            .filter(|p| revision(p).as_deref() == target && ready_at(p).is_some())
            .count() as i32;
        let all_ready = pods.values().filter(|p| ready_at(p).is_some()).count() as i32;
        let pods_agree = all_ready >= replicas && updated_ready >= replicas - partition(sts);
        if self.completed || !is_complete(sts) || !pods_agree || view.update.as_deref() != target {
            return None;
        }
        self.completed = true;
        let last_ready = pods
            .values()
            .filter(|p| revision(p).as_deref() == target)
            .filter_map(ready_at)
            .max();
        let start = self.started_at.unwrap_or(now);
        Some(Observation::Completed(RolloutCompleted {
            environment: self.environment.clone(),
            revision: self.to_revision.clone().unwrap_or_default(),
            replicas,
            pods: self.timings.values().cloned().collect(),
            duration_ms: u64::try_from((now - start).whole_milliseconds()).unwrap_or(0),
            last_ready_at: last_ready,
        }))
    }

    /// Pods of the target revision that are stalled right now (for the failure decision).
    pub fn stalled_pods(&self, pods: &BTreeMap<String, Pod>) -> Vec<(String, String)> {
        pods.values()
            .filter(|p| revision(p).as_deref() == self.to_revision.as_deref())
            .filter_map(|p| {
                stuck(p)
                    .map(|(_, reason, _, _)| (p.metadata.name.clone().unwrap_or_default(), reason))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
