//! The progress computation: from successive views of a StatefulSet and its pods to rollout
//! facts — started, each pod deleted / created / Ready, stalled with a cause, completed by
//! kubectl's rule. Pure: no I/O, no clock of its own.

use std::collections::{BTreeMap, HashSet};

use conveyor::events::{
    PodStep, PodTiming, RolloutCompleted, RolloutProgress, RolloutStalled, RolloutStarted,
};
use k8s_openapi::api::apps::v1::StatefulSet;
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
        let mut out = Vec::new();
        let status = sts.status.clone().unwrap_or_default();
        let generation = sts.metadata.generation.unwrap_or(0);
        let observed = status.observed_generation.unwrap_or(0) >= generation;
        let update = status.update_revision.clone();
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);

        if !self.started {
            let moving = observed && status.current_revision != status.update_revision;
            let changed =
                observed && self.baseline_revision.is_some() && update != self.baseline_revision;
            let replaced = pods.values().any(|p| {
                !self.baseline_uids.contains(&uid(p))
                    && created_at(p)
                        .is_some_and(|c| c >= self.launched_at - time::Duration::seconds(1))
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
            if moving || changed || (observed && replaced) {
                self.started = true;
                self.started_at = Some(now);
                self.to_revision = update.clone();
                out.push(Observation::Started(RolloutStarted {
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
                }));
            }
        } else if observed && update.is_some() && update.as_deref() != self.to_revision.as_deref() {
            // A newer template arrived mid-rollout: follow the newest target.
            self.to_revision = update.clone();
        }

        if self.started {
            let counts = |step, pod: &Pod, at: OffsetDateTime| {
                let name = pod.metadata.name.clone().unwrap_or_default();
                RolloutProgress {
                    environment: self.environment.clone(),
                    ordinal: ordinal(&name),
                    pod: name,
                    step,
                    revision: revision(pod),
                    at,
                    updated: status.updated_replicas.unwrap_or(0),
                    ready: status.ready_replicas.unwrap_or(0),
                    replicas,
                }
            };
            // Deletions: a pod that vanished, or began terminating.
            let mut steps: Vec<(String, &'static str, RolloutProgress)> = Vec::new();
            for (name, prev) in &self.previous {
                let gone = match pods.get(name) {
                    None => true,
                    Some(p) => uid(p) != uid(prev) || p.metadata.deletion_timestamp.is_some(),
                };
                if gone && revision(prev).as_deref() != self.to_revision.as_deref() {
                    steps.push((uid(prev), "deleted", counts(PodStep::Deleted, prev, now)));
                }
            }
            for p in pods.values() {
                if p.metadata.deletion_timestamp.is_some()
                    && revision(p).as_deref() != self.to_revision.as_deref()
                {
                    steps.push((uid(p), "deleted", counts(PodStep::Deleted, p, now)));
                }
            }
            for p in pods.values() {
                if revision(p).as_deref() != self.to_revision.as_deref()
                    || p.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let name = p.metadata.name.clone().unwrap_or_default();
                let created = created_at(p).unwrap_or(now);
                let is_new = !self.baseline_uids.contains(&uid(p));
                if is_new {
                    steps.push((uid(p), "created", counts(PodStep::Created, p, created)));
                    self.timings.entry(name.clone()).or_insert(PodTiming {
                        pod: name.clone(),
                        started: Some(created),
                        ready: None,
                    });
                }
                if let Some(at) = ready_at(p) {
                    steps.push((uid(p), "ready", counts(PodStep::Ready, p, at)));
                    let t = self.timings.entry(name.clone()).or_insert(PodTiming {
                        pod: name.clone(),
                        started: None,
                        ready: None,
                    });
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
            // The StatefulSet and its pods arrive on two watches: wait until the pod view
            // agrees with the status, so every pod's Ready is reported before completion.
            let target = self.to_revision.as_deref();
            let updated_ready = pods
                .values()
                .filter(|p| revision(p).as_deref() == target && ready_at(p).is_some())
                .count() as i32;
            let all_ready = pods.values().filter(|p| ready_at(p).is_some()).count() as i32;
            let pods_agree = all_ready >= replicas && updated_ready >= replicas - partition(sts);
            if !self.completed && is_complete(sts) && pods_agree && update.as_deref() == target {
                self.completed = true;
                let pods_timing: Vec<PodTiming> = self.timings.values().cloned().collect();
                let last_ready = pods
                    .values()
                    .filter(|p| revision(p).as_deref() == self.to_revision.as_deref())
                    .filter_map(ready_at)
                    .max();
                let start = self.started_at.unwrap_or(now);
                out.push(Observation::Completed(RolloutCompleted {
                    environment: self.environment.clone(),
                    revision: self.to_revision.clone().unwrap_or_default(),
                    replicas,
                    pods: pods_timing,
                    duration_ms: u64::try_from((now - start).whole_milliseconds()).unwrap_or(0),
                    last_ready_at: last_ready,
                }));
            }
        }
        self.previous = pods.clone();
        out
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
