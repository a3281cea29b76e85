//! The StatefulSet controller: OrderedReady, RollingUpdate from the highest ordinal,
//! partition, minReadySeconds, OnDelete, and the status arithmetic.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

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
        // Every set every 100 ms (time alone can make a pod available: minReadySeconds), and
        // the changed ones as soon as something changes.
        let mut resync = tokio::time::interval(Duration::from_millis(100));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = self.wake.notified() => false,
                _ = resync.tick() => true,
            };
            let keys: Vec<(String, String)> = {
                let mut s = self.lock();
                let dirty = std::mem::take(&mut s.dirty);
                if all {
                    s.sets.keys().cloned().collect()
                } else {
                    dirty.into_iter().collect()
                }
            };
            for (ns, name) in keys {
                self.sync(&ns, &name);
            }
        }
    }

    /// One sync of one StatefulSet (`updateStatefulSet`, OrderedReady). It runs for every set
    /// on each 100 ms resync, so it reads by reference, looks only at the set's own pods and
    /// writes only a changed status: with a hundred sets, cloning each set and scanning every
    /// pod per pass took half of the benchmark machine's CPU away from the system under test.
    pub(super) fn sync(&self, ns: &str, name: &str) {
        let mut s = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        let Some(sts) = s.sets.get(&key) else {
            return;
        };
        let update_rev = format!(
            "{name}-{:x}",
            fnv32(
                get(sts, &["spec", "template"])
                    .unwrap_or(&Value::Null)
                    .to_string()
                    .as_bytes()
            )
        );
        let generation = get_i64(sts, &["metadata", "generation"]).unwrap_or(1);
        let current_rev = get_str(sts, &["status", "currentRevision"])
            .map(str::to_owned)
            .unwrap_or_else(|| update_rev.clone());
        let replicas = get_i64(sts, &["spec", "replicas"]).unwrap_or(1);
        let on_delete = get_str(sts, &["spec", "updateStrategy", "type"]) == Some("OnDelete");
        let partition = get_i64(
            sts,
            &["spec", "updateStrategy", "rollingUpdate", "partition"],
        )
        .unwrap_or(0);
        let min_ready = get_i64(sts, &["spec", "minReadySeconds"]).unwrap_or(0);

        let mut created: Option<(String, String)> = None;
        let mut deleted: Option<String> = None;
        'sync: {
            for i in 0..replicas {
                match s.pod_of(ns, name, i) {
                    None => {
                        let rev = if i < partition {
                            &current_rev
                        } else {
                            &update_rev
                        };
                        created = Some((format!("{name}-{i}"), rev.clone()));
                        break 'sync;
                    }
                    Some(p) if is_terminating(p) || !available(p, min_ready) => break 'sync,
                    Some(_) => {}
                }
            }
            // Scale down, highest ordinal first.
            let victim = s
                .pods_of(ns, name)
                .filter(|(o, p)| *o >= replicas && !is_terminating(p))
                .map(|(o, _)| o)
                .max();
            if let Some(o) = victim {
                deleted = Some(format!("{name}-{o}"));
                break 'sync;
            }
            if on_delete {
                break 'sync;
            }
            for target in (partition.max(0)..replicas).rev() {
                let Some(p) = s.pod_of(ns, name, target) else {
                    break 'sync;
                };
                if revision_of(p) != Some(update_rev.as_str()) && !is_terminating(p) {
                    deleted = Some(format!("{name}-{target}"));
                    break 'sync;
                }
                if !available(p, min_ready) {
                    break 'sync;
                }
            }
        }
        if let Some(victim) = &deleted {
            s.begin_delete(ns, victim, &self.events);
        }
        let mut new_pod = None;
        if let Some((pod_name, rev)) = &created {
            let sts = s.sets.get(&key).cloned().unwrap_or(Value::Null);
            new_pod = Some(s.create_pod(ns, &sts, pod_name, rev, &self.events));
        }
        // Status, recomputed from the pods.
        let (mut total, mut ready, mut avail, mut current, mut updated) = (0, 0, 0, 0, 0);
        for (_, p) in s.pods_of(ns, name) {
            if get_str(p, &["status", "phase"]).is_none() {
                continue;
            }
            total += 1;
            if running_and_ready(p) {
                ready += 1;
                if available(p, min_ready) {
                    avail += 1;
                }
            }
            if !is_terminating(p) {
                if revision_of(p) == Some(current_rev.as_str()) {
                    current += 1;
                }
                if revision_of(p) == Some(update_rev.as_str()) {
                    updated += 1;
                }
            }
        }
        let mut status = json!({
            "replicas": total,
            "observedGeneration": generation,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
            "availableReplicas": avail,
        });
        // The API server omits zero counters.
        for (k, v) in [
            ("readyReplicas", ready),
            ("currentReplicas", current),
            ("updatedReplicas", updated),
        ] {
            if v > 0 {
                status[k] = json!(v);
            }
        }
        if !on_delete && updated == ready && ready == total && total == replicas {
            status["currentRevision"] = json!(update_rev);
            status["currentReplicas"] = json!(updated);
        }
        if let Some(sts) = s.sets.get(&key)
            && sts.get("status") != Some(&status)
        {
            let mut sts = sts.clone();
            sts["status"] = status;
            s.put_set(ns, name, sts, "MODIFIED", &self.events);
        }
        drop(s);
        if let Some(uid) = new_pod {
            self.kubelet(ns.to_owned(), created.map(|c| c.0).unwrap_or_default(), uid);
        }
        if let Some(victim) = deleted {
            self.finish_delete_later(ns.to_owned(), victim);
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
