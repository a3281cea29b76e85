//! The scriptable kubelet: what happens to a new pod, by its image, and the Events the
//! scheduler and the kubelet record on the way.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::events::EventType::{Normal, Warning};
use super::fields::{Operation, Writer};
use super::*;

/// A new pod the kubelet runs, and what its events name.
struct NewPod {
    ns: String,
    pod: String,
    uid: String,
    container: String,
    image: String,
}

/// How often the kubelet's failing scripts take their next step.
const STEP: Duration = Duration::from_millis(50);

impl KubeSim {
    /// Run the kubelet script for a new pod.
    pub(super) fn kubelet(&self, ns: String, pod: String, uid: String) {
        let sim = self.clone();
        tokio::spawn(async move {
            let (behavior, container, image) = {
                let s = sim.lock();
                let p = s.pods.get(&(ns.clone(), pod.clone()));
                let image = p.map(first_image).unwrap_or_default();
                let behavior = s
                    .rules
                    .iter()
                    .find(|(m, _)| image.contains(m.as_str()))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_else(|| s.default.clone());
                (behavior, p.map(first_container).unwrap_or_default(), image)
            };
            let p = NewPod {
                ns,
                pod,
                uid,
                container,
                image,
            };
            if behavior != Behavior::Unschedulable {
                let assigned = format!("Successfully assigned {}/{} to sim-node-1", p.ns, p.pod);
                sim.pod_event_from(
                    &p.ns,
                    &p.pod,
                    &p.uid,
                    Normal,
                    "Scheduled",
                    &assigned,
                    "default-scheduler",
                );
            }
            match behavior {
                Behavior::ReadyAfter(d) => sim.becomes_ready(&p, d).await,
                Behavior::CrashLoop { every } => sim.crash_loops(&p, every).await,
                Behavior::ImagePullBackOff => sim.cannot_pull(&p).await,
                Behavior::Unschedulable => sim.cannot_schedule(&p).await,
            }
        });
    }

    fn say(&self, p: &NewPod, type_: super::events::EventType, reason: &str, message: String) {
        self.pod_event(&p.ns, &p.pod, &p.uid, type_, reason, &message);
    }

    /// Pulled, created, started, and Ready after `d`.
    async fn becomes_ready(&self, p: &NewPod, d: Duration) {
        let image = &p.image;
        let pulled = format!("Container image \"{image}\" already present on machine");
        self.say(p, Normal, "Pulled", pulled);
        self.say(
            p,
            Normal,
            "Created",
            format!("Created container: {}", p.container),
        );
        tokio::time::sleep(d).await;
        self.say(
            p,
            Normal,
            "Started",
            format!("Started container {}", p.container),
        );
        self.update_pod(&p.ns, &p.pod, &p.uid, |pod, s| {
            let now = now_ts();
            let name = first_container(pod);
            pod["status"] = json!({
                "phase": "Running",
                "startTime": now,
                "hostIP": "10.0.0.1",
                "podIP": pod_ip(&p.uid),
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
                ],
                "containerStatuses": [{"name": name, "ready": true, "restartCount": 0,
                    "image": first_image(pod), "imageID": "",
                    "started": true, "state": {"running": {"startedAt": now}}}]
            });
            s.ready_log.push((p.pod.clone(), OffsetDateTime::now_utc()));
        });
    }

    /// Starts, exits 1, and is restarted every `every` (CrashLoopBackOff) until deleted.
    async fn crash_loops(&self, p: &NewPod, every: Duration) {
        for restarts in 0.. {
            tokio::time::sleep(if restarts == 0 { STEP } else { every }).await;
            let alive = self.update_pod(&p.ns, &p.pod, &p.uid, |pod, _| {
                let now = now_ts();
                let name = first_container(pod);
                pod["status"] = json!({
                    "phase": "Running",
                    "startTime": now,
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now,
                         "message": format!("containers with unready status: [{name}]")},
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
                    ],
                    "containerStatuses": [{"name": name, "ready": false, "restartCount": restarts,
                        "image": first_image(pod), "imageID": "", "started": false,
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off 10s restarting failed container={name} pod={}", p.pod)}}}]
                });
            });
            if !alive {
                break;
            }
            self.say(
                p,
                Normal,
                "Started",
                format!("Started container {}", p.container),
            );
            if restarts > 0 {
                let (container, pod, ns, uid) = (&p.container, &p.pod, &p.ns, &p.uid);
                let backoff = format!(
                    "Back-off restarting failed container {container} in pod {pod}_{ns}({uid})"
                );
                self.say(p, Warning, "BackOff", backoff);
            }
        }
    }

    /// The image is not there: ErrImagePull, then ImagePullBackOff.
    async fn cannot_pull(&self, p: &NewPod) {
        let image = &p.image;
        self.say(p, Normal, "Pulling", format!("Pulling image \"{image}\""));
        self.say(
            p,
            Warning,
            "Failed",
            format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
            ),
        );
        self.say(p, Warning, "Failed", "Error: ErrImagePull".to_owned());
        self.say(
            p,
            Normal,
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
        );
        self.say(p, Warning, "Failed", "Error: ImagePullBackOff".to_owned());
        for reason in ["ErrImagePull", "ImagePullBackOff"] {
            tokio::time::sleep(STEP).await;
            self.update_pod(&p.ns, &p.pod, &p.uid, |pod, _| {
                let name = first_container(pod);
                let image = first_image(pod);
                pod["status"] = json!({
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

    /// No node has room: FailedScheduling, and the pod stays Pending, unbound.
    async fn cannot_schedule(&self, p: &NewPod) {
        self.pod_event_from(&p.ns, &p.pod, &p.uid, Warning, "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
            "default-scheduler");
        tokio::time::sleep(STEP).await;
        self.update_pod(&p.ns, &p.pod, &p.uid, |pod, _| {
            // Never bound to a node.
            if let Some(spec) = pod["spec"].as_object_mut() {
                spec.remove("nodeName");
            }
            pod["status"] = json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                    "lastTransitionTime": now_ts()}]
            });
        });
    }
}

impl KubeSim {
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
