//! The StatefulSet controller: OrderedReady, RollingUpdate from the highest ordinal,
//! partition, minReadySeconds, OnDelete, the status arithmetic, the ControllerRevisions that
//! keep each template (what `kubectl rollout history` and `undo` read), and the Events it
//! records — a pod it cannot create included.

use std::time::Duration;

use serde_json::{Value, json};

use super::events::EventType;
use super::fields::{Operation, Writer};
use super::*;

/// The component the controller's events name.
const CONTROLLER: &str = "statefulset-controller";

/// `rand.SafeEncodeString`: the alphabet a revision hash is written in.
const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The ControllerRevision name of `template` in set `name`: `<name>-<hash>`, the hash written
/// as `controller.ComputeHash` writes it (the decimal FNV-32a, each digit in a safe alphabet).
pub(super) fn revision_name(name: &str, template: &Value) -> String {
    let hash = fnv32(template.to_string().as_bytes()).to_string();
    let safe: String = hash
        .bytes()
        .map(|b| SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()] as char)
        .collect();
    format!("{name}-{safe}")
}

/// kubectl's completion rule for a StatefulSet, with every pod Ready.
pub(super) fn at_rest(sts: &Value) -> bool {
    let want = get_i64(sts, &["spec", "replicas"]).unwrap_or(1);
    let st = |k: &str| get_i64(sts, &["status", k]).unwrap_or(0);
    get_i64(sts, &["status", "observedGeneration"]) == get_i64(sts, &["metadata", "generation"])
        && st("readyReplicas") == want
        && st("updatedReplicas") == want
        && get(sts, &["status", "currentRevision"]) == get(sts, &["status", "updateRevision"])
}

impl KubeSim {
    pub(super) async fn controller(&self) {
        // The changed sets as soon as something changes, and every 100 ms those not at rest
        // (time alone can move them: minReadySeconds, a refused create's backoff). A thousand
        // settled sets resynced ten times a second took most of the benchmark machine's CPU.
        let mut resync = tokio::time::interval(Duration::from_millis(100));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = self.wake.notified() => false,
                _ = resync.tick() => true,
            };
            let keys: Vec<(String, String)> = {
                let mut s = self.lock();
                let mut due = std::mem::take(&mut s.dirty);
                if all {
                    due.extend(s.unsettled.iter().cloned());
                }
                due.into_iter().collect()
            };
            for (ns, name) in keys {
                self.sync(&ns, &name);
            }
        }
    }

    /// One sync of one StatefulSet (`updateStatefulSet`, OrderedReady). It runs for every set
    /// not at rest on each 100 ms resync, so it reads by reference, looks only at the set's own
    /// pods and writes only a changed status: with a hundred sets, cloning each set and scanning
    /// every pod per pass took half of the benchmark machine's CPU away from the system under
    /// test.
    pub(super) fn sync(&self, ns: &str, name: &str) {
        let mut s = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        let Some(sts) = s.sets.get(&key) else {
            s.unsettled.remove(&key);
            return;
        };
        let spec = SetSpec::of(name, sts);
        s.keep_revision(ns, name, &spec.update_rev, &self.events);
        let mut step = s.next_step(ns, name, &spec);
        let mut new_pod = None;
        match &step {
            Step::Delete(victim) => {
                s.begin_delete(ns, victim, &self.events);
                let message = format!("delete Pod {victim} in StatefulSet {name} successful");
                s.set_event(
                    &key,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &message,
                    &self.events,
                );
            }
            Step::Create { pod, revision } => match s.refused_pods.get(&key).cloned() {
                Some(refusal) => {
                    // Nothing is created; the controller's work queue tries again later,
                    // backing off, and each try is an Event — the rollout's only trace.
                    if s.create_due(&key) {
                        let message = format!(
                            "create Pod {pod} in StatefulSet {name} failed error: {refusal}"
                        );
                        s.set_event(
                            &key,
                            EventType::Warning,
                            "FailedCreate",
                            &message,
                            &self.events,
                        );
                    }
                    step = Step::Wait;
                }
                None => {
                    let sts = s.sets.get(&key).cloned().unwrap_or(Value::Null);
                    new_pod = Some(s.create_pod(ns, &sts, pod, revision, &self.events));
                    let message = format!("create Pod {pod} in StatefulSet {name} successful");
                    s.set_event(
                        &key,
                        EventType::Normal,
                        "SuccessfulCreate",
                        &message,
                        &self.events,
                    );
                }
            },
            Step::Wait => {}
        }
        let status = s.status_of(ns, name, &spec);
        if let Some(sts) = s.sets.get(&key)
            && sts.get("status") != Some(&status)
        {
            let before = sts.clone();
            let mut sts = sts.clone();
            sts["status"] = status;
            let writer = Writer {
                manager: "kube-controller-manager",
                operation: Operation::Update,
                subresource: Some("status"),
                api_version: "apps/v1",
            };
            fields::updated(Some(&before), &mut sts, &writer, &now_ts());
            s.put_set(ns, name, sts, "MODIFIED", &self.events);
        }
        let settled = matches!(step, Step::Wait)
            && s.sets.get(&key).is_some_and(|sts| {
                at_rest(sts)
                    && get_i64(sts, &["status", "availableReplicas"]) == Some(spec.replicas)
            });
        if settled {
            s.unsettled.remove(&key);
        } else {
            s.unsettled.insert(key);
        }
        drop(s);
        match step {
            Step::Create { pod, .. } => {
                self.kubelet(ns.to_owned(), pod, new_pod.unwrap_or_default());
            }
            Step::Delete(victim) => self.finish_delete_later(ns.to_owned(), victim),
            Step::Wait => {}
        }
    }

    pub(super) fn finish_delete_later(&self, ns: String, pod: String) {
        let sim = self.clone();
        tokio::spawn(async move {
            let grace = sim.lock().grace;
            tokio::time::sleep(grace).await;
            {
                let mut s = sim.lock();
                if let Some(p) = s.pods.remove(&(ns.clone(), pod.clone())) {
                    s.record(Kind::Pod, "DELETED", p, &sim.events);
                }
            }
            sim.wake.notify_one();
        });
    }
}

/// What the controller reads of a StatefulSet's spec.
pub(super) struct SetSpec {
    /// The revision of the current template (`<name>-<hash>`).
    update_rev: String,
    generation: i64,
    /// The status's current revision, or the update revision of a new set.
    current_rev: String,
    replicas: i64,
    on_delete: bool,
    partition: i64,
    min_ready: i64,
}

impl SetSpec {
    fn of(name: &str, sts: &Value) -> Self {
        let template = get(sts, &["spec", "template"]).unwrap_or(&Value::Null);
        let update_rev = revision_name(name, template);
        Self {
            generation: get_i64(sts, &["metadata", "generation"]).unwrap_or(1),
            current_rev: get_str(sts, &["status", "currentRevision"])
                .map(str::to_owned)
                .unwrap_or_else(|| update_rev.clone()),
            update_rev,
            replicas: get_i64(sts, &["spec", "replicas"]).unwrap_or(1),
            on_delete: get_str(sts, &["spec", "updateStrategy", "type"]) == Some("OnDelete"),
            partition: get_i64(
                sts,
                &["spec", "updateStrategy", "rollingUpdate", "partition"],
            )
            .unwrap_or(0),
            min_ready: get_i64(sts, &["spec", "minReadySeconds"]).unwrap_or(0),
        }
    }
}

/// The one change a sync makes (OrderedReady: one pod at a time).
pub(super) enum Step {
    /// Create this pod at this revision.
    Create { pod: String, revision: String },
    /// Delete this pod (scale down, or replace it with the update revision).
    Delete(String),
    /// Nothing to do until a pod becomes available or a spec changes.
    Wait,
}

impl Inner {
    /// Record an event of the controller about StatefulSet `key`.
    fn set_event(
        &mut self,
        key: &(String, String),
        type_: EventType,
        reason: &str,
        message: &str,
        tx: &Watchers,
    ) {
        if let Some(sts) = self.sets.get(key).cloned() {
            self.event(&sts, type_, reason, message, CONTROLLER, tx);
        }
    }

    /// Whether the controller tries to create a refused pod now: its work queue backs off from
    /// 1 s, doubling, up to a minute.
    fn create_due(&mut self, key: &(String, String)) -> bool {
        let now = tokio::time::Instant::now();
        match self.retry_create_at.get(key).copied() {
            Some((at, _)) if now < at => false,
            Some((_, wait)) => {
                let wait = (wait * 2).min(Duration::from_secs(60));
                self.retry_create_at.insert(key.clone(), (now + wait, wait));
                true
            }
            None => {
                let wait = Duration::from_secs(1);
                self.retry_create_at.insert(key.clone(), (now + wait, wait));
                true
            }
        }
    }

    /// Keep the ControllerRevision of the set's template: made when the template is new,
    /// renumbered newest when it returns to an older one (a rollback), the oldest unused ones
    /// beyond `revisionHistoryLimit` deleted.
    fn keep_revision(&mut self, ns: &str, set: &str, update_rev: &str, tx: &Watchers) {
        let key = (ns.to_owned(), set.to_owned());
        if self.kept_revisions.get(&key).map(String::as_str) == Some(update_rev) {
            return;
        }
        let Some(sts) = self.sets.get(&key).cloned() else {
            return;
        };
        let uid = get_str(&sts, &["metadata", "uid"])
            .unwrap_or_default()
            .to_owned();
        let owned: Vec<Value> = self
            .revisions
            .range((ns.to_owned(), format!("{set}-"))..)
            .take_while(|((n, r), _)| n == ns && r.starts_with(&format!("{set}-")))
            .map(|(_, r)| r.clone())
            .filter(|r| r["metadata"]["ownerReferences"][0]["uid"].as_str() == Some(uid.as_str()))
            .collect();
        let newest = owned
            .iter()
            .filter_map(|r| r["revision"].as_i64())
            .max()
            .unwrap_or(0);
        match owned.iter().find(|r| r["metadata"]["name"] == update_rev) {
            Some(r) if r["revision"].as_i64() == Some(newest) => {}
            Some(r) => {
                let mut r = r.clone();
                r["revision"] = json!(newest + 1);
                self.record(Kind::ControllerRevision, "MODIFIED", r, tx);
            }
            None => {
                let mut template = sts["spec"]["template"].clone();
                template["$patch"] = json!("replace");
                let mut labels = get(&sts, &["spec", "template", "metadata", "labels"])
                    .cloned()
                    .unwrap_or(json!({}));
                labels["controller.kubernetes.io/hash"] =
                    json!(update_rev.rsplit('-').next().unwrap_or_default());
                let rev_uid = self.uid();
                let revision = json!({
                    "apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": update_rev, "namespace": ns, "uid": rev_uid,
                        "creationTimestamp": now_ts(), "labels": labels,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                            "name": set, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                    "data": {"spec": {"template": template}},
                    "revision": newest + 1
                });
                self.record(Kind::ControllerRevision, "ADDED", revision, tx);
            }
        }
        // History beyond the limit: the oldest revisions no pod and no status names.
        let limit = get_i64(&sts, &["spec", "revisionHistoryLimit"])
            .unwrap_or(10)
            .max(0) as usize;
        let live: Vec<String> = self
            .pods_of(ns, set)
            .filter_map(|(_, p)| revision_of(p).map(str::to_owned))
            .chain(get_str(&sts, &["status", "currentRevision"]).map(str::to_owned))
            .chain([update_rev.to_owned()])
            .collect();
        let mut unused: Vec<Value> = owned
            .into_iter()
            .filter(|r| !live.iter().any(|l| r["metadata"]["name"] == l.as_str()))
            .collect();
        unused.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
        let excess = unused.len().saturating_sub(limit);
        for r in unused.into_iter().take(excess) {
            self.record(Kind::ControllerRevision, "DELETED", r, tx);
        }
        self.kept_revisions.insert(key, update_rev.to_owned());
    }

    /// Create the first missing pod (after every lower one is available), else scale down
    /// from the highest ordinal, else replace the highest pod not at the update revision.
    fn next_step(&self, ns: &str, name: &str, spec: &SetSpec) -> Step {
        for i in 0..spec.replicas {
            match self.pod_of(ns, name, i) {
                None => {
                    let revision = if i < spec.partition {
                        &spec.current_rev
                    } else {
                        &spec.update_rev
                    };
                    return Step::Create {
                        pod: format!("{name}-{i}"),
                        revision: revision.clone(),
                    };
                }
                Some(p) if is_terminating(p) || !available(p, spec.min_ready) => return Step::Wait,
                Some(_) => {}
            }
        }
        let victim = self
            .pods_of(ns, name)
            .filter(|(o, p)| *o >= spec.replicas && !is_terminating(p))
            .map(|(o, _)| o)
            .max();
        if let Some(o) = victim {
            return Step::Delete(format!("{name}-{o}"));
        }
        if spec.on_delete {
            return Step::Wait;
        }
        for target in (spec.partition.max(0)..spec.replicas).rev() {
            let Some(p) = self.pod_of(ns, name, target) else {
                return Step::Wait;
            };
            if revision_of(p) != Some(spec.update_rev.as_str()) && !is_terminating(p) {
                return Step::Delete(format!("{name}-{target}"));
            }
            if !available(p, spec.min_ready) {
                return Step::Wait;
            }
        }
        Step::Wait
    }

    /// The set's status, recomputed from its pods; the API server omits zero counters.
    fn status_of(&self, ns: &str, name: &str, spec: &SetSpec) -> Value {
        let (mut total, mut ready, mut avail, mut current, mut updated) = (0, 0, 0, 0, 0);
        for (_, p) in self.pods_of(ns, name) {
            if get_str(p, &["status", "phase"]).is_none() {
                continue;
            }
            total += 1;
            if running_and_ready(p) {
                ready += 1;
                if available(p, spec.min_ready) {
                    avail += 1;
                }
            }
            if !is_terminating(p) {
                if revision_of(p) == Some(spec.current_rev.as_str()) {
                    current += 1;
                }
                if revision_of(p) == Some(spec.update_rev.as_str()) {
                    updated += 1;
                }
            }
        }
        let mut status = json!({
            "replicas": total,
            "observedGeneration": spec.generation,
            "currentRevision": spec.current_rev,
            "updateRevision": spec.update_rev,
            "collisionCount": 0,
            "availableReplicas": avail,
        });
        for (k, v) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if v > 0 {
                status[k] = json!(v);
            }
        }
        if !spec.on_delete && updated == ready && ready == total && total == spec.replicas {
            status["currentRevision"] = json!(spec.update_rev);
            status["currentReplicas"] = json!(updated);
        }
        status
    }
}
