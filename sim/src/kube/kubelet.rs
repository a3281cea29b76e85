//! The scriptable kubelet: what happens to a new pod, by its image, and the Events the
//! scheduler and the kubelet record on the way.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::events::EventType::{Normal, Warning};
use super::fields::{Operation, Writer};
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
            let (container, image) = {
                let s = sim.lock();
                let p = s.pods.get(&(ns.clone(), pod.clone()));
                (
                    p.map(first_container).unwrap_or_default(),
                    p.map(first_image).unwrap_or_default(),
                )
            };
            let say = |type_, reason: &str, message: String| {
                sim.pod_event(&ns, &pod, &uid, type_, reason, &message);
            };
            if behavior != Behavior::Unschedulable {
                let assigned = format!("Successfully assigned {ns}/{pod} to sim-node-1");
                sim.pod_event_from(
                    &ns,
                    &pod,
                    &uid,
                    Normal,
                    "Scheduled",
                    &assigned,
                    "default-scheduler",
                );
            }
            match behavior {
                Behavior::ReadyAfter(d) => {
                    say(
                        Normal,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    );
                    say(Normal, "Created", format!("Created container: {container}"));
                    tokio::time::sleep(d).await;
                    say(Normal, "Started", format!("Started container {container}"));
                    sim.update_pod(&ns, &pod, &uid, |p, s| {
                        let now = now_ts();
                        let name = first_container(p);
                        p["status"] = json!({
                            "phase": "Running",
                            "startTime": now,
                            "hostIP": "10.0.0.1",
                            "podIP": pod_ip(&uid),
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
                        say(Normal, "Started", format!("Started container {container}"));
                        if restarts > 0 {
                            say(
                                Warning,
                                "BackOff",
                                format!(
                                    "Back-off restarting failed container {container} in pod {pod}_{ns}({uid})"
                                ),
                            );
                        }
                    }
                }
                Behavior::ImagePullBackOff => {
                    say(Normal, "Pulling", format!("Pulling image \"{image}\""));
                    say(
                        Warning,
                        "Failed",
                        format!(
                            "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                        ),
                    );
                    say(Warning, "Failed", "Error: ErrImagePull".to_owned());
                    say(
                        Normal,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                    );
                    say(Warning, "Failed", "Error: ImagePullBackOff".to_owned());
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
                    sim.pod_event_from(&ns, &pod, &uid, Warning, "FailedScheduling",
                        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
                        "default-scheduler");
                    tokio::time::sleep(step).await;
                    sim.update_pod(&ns, &pod, &uid, |p, _| {
                        // Never bound to a node.
                        if let Some(spec) = p["spec"].as_object_mut() {
                            spec.remove("nodeName");
                        }
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
            let before = p.clone();
            f(&mut p, &mut s);
            let writer = Writer {
                manager: "kubelet",
                operation: Operation::Update,
                subresource: Some("status"),
                api_version: "v1",
            };
            fields::updated(Some(&before), &mut p, &writer, &now_ts());
            s.pods.insert(key, p.clone());
            s.record(Kind::Pod, "MODIFIED", p, &self.events);
        }
        self.wake.notify_one();
        true
    }
}

impl KubeSim {
    /// Record a kubelet event about pod `ns/pod` if it is still the one with `uid`.
    fn pod_event(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        type_: super::events::EventType,
        reason: &str,
        message: &str,
    ) {
        self.pod_event_from(ns, pod, uid, type_, reason, message, "kubelet");
    }

    /// Record `component`'s event about pod `ns/pod` if it is still the one with `uid`.
    #[allow(clippy::too_many_arguments)]
    fn pod_event_from(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        type_: super::events::EventType,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let mut s = self.lock();
        let Some(p) = s.pods.get(&(ns.to_owned(), pod.to_owned())).cloned() else {
            return;
        };
        if get_str(&p, &["metadata", "uid"]) == Some(uid) {
            s.event(&p, type_, reason, message, component, &self.events);
        }
    }
}

/// A pod's address, distinct per pod (from its uid's counter).
fn pod_ip(uid: &str) -> String {
    let n = u64::from_str_radix(uid.rsplit('-').next().unwrap_or("0"), 16).unwrap_or(0);
    format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2)
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
