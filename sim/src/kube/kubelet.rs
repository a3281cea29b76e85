//! The scriptable kubelet: what happens to a new pod, by its image.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;

impl KubeSim {
    /// Run the kubelet script for a new pod.
    pub(super) fn kubelet(&self, ns: String, pod: String, uid: String) {
        let sim = self.clone();
        tokio::spawn(async move {
            let behavior = {
                let s = sim.lock();
                let image = s
                    .pods
                    .get(&(ns.clone(), pod.clone()))
                    .map(first_image)
                    .unwrap_or_default();
                s.rules
                    .iter()
                    .find(|(m, _)| image.contains(m.as_str()))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_else(|| s.default.clone())
            };
            let step = Duration::from_millis(50);
            match behavior {
                Behavior::ReadyAfter(d) => {
                    tokio::time::sleep(d).await;
                    sim.update_pod(&ns, &pod, &uid, |p, s| {
                        let now = now_ts();
                        let name = first_container(p);
                        p["status"] = json!({
                            "phase": "Running",
                            "startTime": now,
                            "hostIP": "10.0.0.1",
                            "podIP": "10.244.0.10",
                            "conditions": [
                                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
                            ],
                            "containerStatuses": [{"name": name, "ready": true, "restartCount": 0,
                                "image": first_image(p), "imageID": "",
                                "started": true, "state": {"running": {"startedAt": now}}}]
                        });
                        s.ready_log.push((pod.clone(), OffsetDateTime::now_utc()));
                    });
                }
                Behavior::CrashLoop { every } => {
                    for restarts in 0.. {
                        tokio::time::sleep(if restarts == 0 { step } else { every }).await;
                        let alive = sim.update_pod(&ns, &pod, &uid, |p, _| {
                            let now = now_ts();
                            let name = first_container(p);
                            p["status"] = json!({
                                "phase": "Running",
                                "startTime": now,
                                "conditions": [
                                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now,
                                     "message": format!("containers with unready status: [{name}]")},
                                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
                                ],
                                "containerStatuses": [{"name": name, "ready": false, "restartCount": restarts,
                                    "image": first_image(p), "imageID": "", "started": false,
                                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                                    "state": {"waiting": {"reason": "CrashLoopBackOff",
                                        "message": format!("back-off 10s restarting failed container={name} pod={}", pod)}}}]
                            });
                        });
                        if !alive {
                            break;
                        }
                    }
                }
                Behavior::ImagePullBackOff => {
                    for reason in ["ErrImagePull", "ImagePullBackOff"] {
                        tokio::time::sleep(step).await;
                        sim.update_pod(&ns, &pod, &uid, |p, _| {
                            let name = first_container(p);
                            let image = first_image(p);
                            p["status"] = json!({
                                "phase": "Pending",
                                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_ts()},
                                               {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now_ts()}],
                                "containerStatuses": [{"name": name, "ready": false, "restartCount": 0,
                                    "image": image, "imageID": "",
                                    "state": {"waiting": {"reason": reason,
                                        "message": format!("Back-off pulling image \"{image}\"")}}}]
                            });
                        });
                    }
                }
                Behavior::Unschedulable => {
                    tokio::time::sleep(step).await;
                    sim.update_pod(&ns, &pod, &uid, |p, _| {
                        p["status"] = json!({
                            "phase": "Pending",
                            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": "0/3 nodes are available: 3 Insufficient memory.",
                                "lastTransitionTime": now_ts()}]
                        });
                    });
                }
            }
        });
    }

    /// Change a pod if it is still the same (uid) and not terminating; false if it is gone.
    pub(super) fn update_pod(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        f: impl FnOnce(&mut Value, &mut Inner),
    ) -> bool {
        {
            let mut s = self.lock();
            let key = (ns.to_owned(), pod.to_owned());
            let Some(mut p) = s.pods.get(&key).cloned() else {
                return false;
            };
            if get_str(&p, &["metadata", "uid"]) != Some(uid) || is_terminating(&p) {
                return false;
            }
            f(&mut p, &mut s);
            s.pods.insert(key, p.clone());
            s.record(Kind::Pod, "MODIFIED", p, &self.events);
        }
        self.wake.notify_one();
        true
    }
}

pub(super) fn first_container(pod: &Value) -> String {
    get(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c["name"].as_str())
        .unwrap_or("main")
        .to_owned()
}

pub(super) fn first_image(pod: &Value) -> String {
    get(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_owned()
}
