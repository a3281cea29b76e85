//! A Kubernetes API simulator for `apps/v1` StatefulSets and `v1` Pods, speaking the wire
//! protocol of `docs/simulators.md` (Kubernetes) well enough for kube's client and `watcher`, with a
//! StatefulSet controller (OrderedReady, RollingUpdate from the highest ordinal, partition,
//! minReadySeconds, OnDelete, the status arithmetic of the timeline) and a scriptable kubelet.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast, mpsc, watch};

/// What the kubelet does with a pod whose container image contains a given text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Running and Ready after this long.
    ReadyAfter(Duration),
    /// Starts, crashes, restarts: `CrashLoopBackOff` with a rising restart count every `every`.
    CrashLoop {
        /// Time between restarts.
        every: Duration,
    },
    /// `ErrImagePull`, then `ImagePullBackOff`; stays Pending.
    ImagePullBackOff,
    /// Never scheduled: `PodScheduled=False`, reason `Unschedulable`.
    Unschedulable,
}

/// A PATCH as the simulator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRecord {
    /// Content type.
    pub content_type: String,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The patch body.
    pub body: Value,
    /// The StatefulSet's namespace.
    pub namespace: String,
    /// The StatefulSet's name.
    pub name: String,
    /// Whether the StatefulSet was at rest when the patch arrived (every replica updated and
    /// Ready): a patch that lands mid-rollout means two rollouts overlapped.
    pub at_rest: bool,
    /// When it was applied.
    pub at: time::OffsetDateTime,
}

/// kubectl's completion rule for a StatefulSet, with every pod Ready.
fn at_rest(sts: &Value) -> bool {
    let want = get_i64(sts, &["spec", "replicas"]).unwrap_or(1);
    let st = |k: &str| get_i64(sts, &["status", k]).unwrap_or(0);
    get_i64(sts, &["status", "observedGeneration"]) == get_i64(sts, &["metadata", "generation"])
        && st("readyReplicas") == want
        && st("updatedReplicas") == want
        && get(sts, &["status", "currentRevision"]) == get(sts, &["status", "updateRevision"])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StatefulSet,
    Pod,
}

#[derive(Debug, Clone)]
struct Stored {
    rv: u64,
    kind: Kind,
    kind_type: &'static str,
    object: Value,
}

/// The live feed of stored changes, one channel per namespace: the API server's watch cache
/// hands a watcher only what its namespace sees, so a change in one namespace wakes none of
/// the hundred watches of the others.
#[derive(Clone, Default)]
struct Watchers {
    by_namespace: Arc<Mutex<HashMap<String, broadcast::Sender<Stored>>>>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Stored>>> {
        conveyor::sync::lock(&self.by_namespace)
    }

    fn subscribe(&self, namespace: &str) -> broadcast::Receiver<Stored> {
        self.lock()
            .entry(namespace.to_owned())
            .or_insert_with(|| broadcast::channel(4096).0)
            .subscribe()
    }

    fn send(&self, change: Stored) {
        let namespace = get_str(&change.object, &["metadata", "namespace"]).unwrap_or_default();
        if let Some(tx) = self.lock().get(namespace) {
            let _ = tx.send(change);
        }
    }
}

struct Inner {
    rv: u64,
    sets: BTreeMap<(String, String), Value>,
    pods: BTreeMap<(String, String), Value>,
    history: VecDeque<Stored>,
    history_limit: usize,
    /// Watches resuming below this resourceVersion get 410 Expired.
    oldest_rv: u64,
    rules: Vec<(String, Behavior)>,
    /// The application's answer while a Ready pod runs a matching image (see `app_health`).
    app_rules: Vec<(String, u16)>,
    default: Behavior,
    grace: Duration,
    ready_log: Vec<(String, OffsetDateTime)>,
    patches: Vec<PatchRecord>,
    faults: VecDeque<(String, u16)>,
    next_uid: u64,
    /// StatefulSets changed (themselves or one of their pods) since the controller last looked:
    /// a wake-up syncs only these, as the real controller's work queue holds only changed keys.
    dirty: BTreeSet<(String, String)>,
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct KubeSim {
    inner: Arc<Mutex<Inner>>,
    events: Watchers,
    wake: Arc<Notify>,
    drop_watches: watch::Sender<u64>,
}

fn now_ts() -> String {
    // The API server writes metav1.Time with second precision.
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// 32-bit FNV-1a, as the controller hashes a pod template into a revision name.
fn fnv32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = cur.get_mut(*k).expect("just inserted");
    }
    cur[path[path.len() - 1]] = value;
}

fn condition_true(pod: &Value, kind: &str) -> bool {
    get(pod, &["status", "conditions"])
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn ready_since(pod: &Value) -> Option<OffsetDateTime> {
    get(pod, &["status", "conditions"])
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

fn is_terminating(pod: &Value) -> bool {
    get(pod, &["metadata", "deletionTimestamp"]).is_some()
}

fn running_and_ready(pod: &Value) -> bool {
    get_str(pod, &["status", "phase"]) == Some("Running") && condition_true(pod, "Ready")
}

fn available(pod: &Value, min_ready: i64) -> bool {
    running_and_ready(pod)
        && (min_ready <= 0
            || ready_since(pod).is_some_and(|t| {
                OffsetDateTime::now_utc() - t >= time::Duration::seconds(min_ready)
            }))
}

fn revision_of(pod: &Value) -> Option<&str> {
    get_str(pod, &["metadata", "labels", "controller-revision-hash"])
}

/// An API error as the API server sends it.
pub fn status_error(code: u16, reason: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
        .to_string(),
    )
        .into_response()
}

impl Default for KubeSim {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeSim {
    /// An empty cluster whose pods become Ready 200 ms after creation unless a rule says
    /// otherwise. The controller runs as soon as the simulator is created.
    pub fn new() -> Self {
        let events = Watchers::default();
        let sim = Self {
            inner: Arc::new(Mutex::new(Inner {
                rv: 1000,
                sets: BTreeMap::new(),
                pods: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: 2000,
                oldest_rv: 0,
                rules: Vec::new(),
                app_rules: Vec::new(),
                default: Behavior::ReadyAfter(Duration::from_millis(200)),
                grace: Duration::from_millis(100),
                ready_log: Vec::new(),
                patches: Vec::new(),
                faults: VecDeque::new(),
                next_uid: 1,
                dirty: BTreeSet::new(),
            })),
            events,
            wake: Arc::new(Notify::new()),
            drop_watches: watch::channel(0).0,
        };
        let controller = sim.clone();
        tokio::spawn(async move { controller.controller().await });
        sim
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        conveyor::sync::lock(&self.inner)
    }

    /// Pods whose image contains `image_contains` behave like this (first matching rule wins).
    pub fn kubelet_rule(&self, image_contains: &str, behavior: Behavior) {
        self.lock()
            .rules
            .push((image_contains.to_owned(), behavior));
    }

    /// The application a StatefulSet runs answers `status` to its health check while any of
    /// its Ready pods runs an image containing `image_contains`: a release whose pods start
    /// fine but which serves errors.
    pub fn app_rule(&self, image_contains: &str, status: u16) {
        self.lock()
            .app_rules
            .push((image_contains.to_owned(), status));
    }

    /// What the health check of the application `name` in `ns` answers, as a load balancer in
    /// front of its Ready pods would: 503 with no pod Ready, a rule's status while a Ready pod
    /// runs a matching image, else 200.
    pub fn app_health(&self, ns: &str, name: &str) -> (u16, String) {
        let s = self.lock();
        let ready: Vec<&Value> = s
            .pods
            .iter()
            .filter(|((n, _), p)| {
                n == ns
                    && p["metadata"]["ownerReferences"][0]["name"].as_str() == Some(name)
                    && running_and_ready(p)
                    && !is_terminating(p)
            })
            .map(|(_, p)| p)
            .collect();
        if ready.is_empty() {
            return (503, format!("no pod of {name} is Ready"));
        }
        for pod in &ready {
            let image = first_image(pod);
            if let Some((_, status)) = s.app_rules.iter().find(|(m, _)| image.contains(m.as_str()))
            {
                let pod = get_str(pod, &["metadata", "name"]).unwrap_or_default();
                return (*status, format!("{pod} ({image}) answers {status}"));
            }
        }
        (200, format!("ok: {} pod(s) Ready", ready.len()))
    }

    /// The applications' health checks: `GET /apps/{namespace}/{name}/health` answers as
    /// [`KubeSim::app_health`] says.
    pub fn app_router(&self) -> Router {
        Router::new()
            .route(
                "/apps/{ns}/{name}/health",
                route_get(
                    |State(sim): State<KubeSim>, Path((ns, name)): Path<(String, String)>| async move {
                        let (status, body) = sim.app_health(&ns, &name);
                        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body)
                    },
                ),
            )
            .with_state(self.clone())
    }

    /// What pods matching no rule do.
    pub fn set_default_behavior(&self, behavior: Behavior) {
        self.lock().default = behavior;
    }

    /// How long a deleted pod stays Terminating.
    pub fn set_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// Every PATCH received.
    pub fn patches(&self) -> Vec<PatchRecord> {
        self.lock().patches.clone()
    }

    /// When each pod turned Ready, on the simulator's clock (full precision).
    pub fn ready_log(&self) -> Vec<(String, OffsetDateTime)> {
        self.lock().ready_log.clone()
    }

    /// Answer the next request whose path contains `path_contains` with `code`, once.
    pub fn fail_next(&self, path_contains: &str, code: u16) {
        self.lock()
            .faults
            .push_back((path_contains.to_owned(), code));
    }

    /// End every open watch stream (an API server restart, a dropped connection).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|n| *n += 1);
    }

    /// Forget the event history: a watch resuming from any earlier resourceVersion gets the
    /// in-stream 410 Expired and must relist.
    pub fn expire_history(&self) {
        let mut s = self.lock();
        s.history.clear();
        s.oldest_rv = s.rv + 1;
    }

    /// A StatefulSet (and, through the controller, its pods).
    pub fn get_statefulset(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().sets.get(&(ns.into(), name.into())).cloned()
    }

    /// The pods of a namespace.
    pub fn pods(&self, ns: &str) -> Vec<Value> {
        self.lock()
            .pods
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Create a StatefulSet `name` in `ns` with one container `container` running `image`,
    /// `replicas` pods, and the API server's defaults.
    pub fn create_statefulset(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        image: &str,
        replicas: i64,
    ) {
        let sts = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "labels": {"app": name},
                         "creationTimestamp": now_ts()},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "podManagementPolicy": "OrderedReady",
                "revisionHistoryLimit": 10,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": container, "image": image}]}
                }
            },
            "status": {"replicas": 0, "availableReplicas": 0}
        });
        {
            let mut s = self.lock();
            let uid = s.uid();
            let mut sts = sts;
            set(&mut sts, &["metadata", "uid"], json!(uid));
            s.put_set(ns, name, sts, "ADDED", &self.events);
        }
        self.wake.notify_one();
    }

    /// Apply a strategic-merge patch to a StatefulSet as a client would (the AWX playbook's
    /// `k8s` apply); false if there is no such StatefulSet.
    pub fn apply_patch(&self, ns: &str, name: &str, patch: &Value) -> bool {
        {
            let mut s = self.lock();
            let Some(mut sts) = s.sets.get(&(ns.to_owned(), name.to_owned())).cloned() else {
                return false;
            };
            s.patches.push(PatchRecord {
                content_type: "application/strategic-merge-patch+json".into(),
                field_manager: Some("ansible".into()),
                body: patch.clone(),
                namespace: ns.to_owned(),
                name: name.to_owned(),
                at_rest: at_rest(&sts),
                at: time::OffsetDateTime::now_utc(),
            });
            let spec_before = sts.get("spec").cloned();
            merge(&mut sts, patch, true);
            if sts.get("spec") != spec_before.as_ref() {
                let g = get_i64(&sts, &["metadata", "generation"]).unwrap_or(1) + 1;
                set(&mut sts, &["metadata", "generation"], json!(g));
            }
            s.record(Kind::StatefulSet, "MODIFIED", sts, &self.events);
        }
        self.wake.notify_one();
        true
    }

    /// Wait until the StatefulSet satisfies kubectl's completion rule with every pod Ready.
    pub async fn wait_settled(&self, ns: &str, name: &str) {
        loop {
            if self
                .get_statefulset(ns, name)
                .is_some_and(|sts| at_rest(&sts))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serve the API on `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/version", route_get(version))
            .route(
                "/apis/apps/v1/namespaces/{ns}/statefulsets",
                route_get(list_sets),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
                route_get(get_set).patch(patch_set),
            )
            .route("/api/v1/namespaces/{ns}/pods", route_get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                route_get(get_pod).delete(delete_pod),
            )
            .fallback(|| async {
                status_error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
            .with_state(self.clone())
    }

    // ---- the controller and the kubelet ----

    async fn controller(&self) {
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
    fn sync(&self, ns: &str, name: &str) {
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

    fn finish_delete_later(&self, ns: String, pod: String) {
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

    /// Run the kubelet script for a new pod.
    fn kubelet(&self, ns: String, pod: String, uid: String) {
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
    fn update_pod(
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

fn first_container(pod: &Value) -> String {
    get(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c["name"].as_str())
        .unwrap_or("main")
        .to_owned()
}

fn first_image(pod: &Value) -> String {
    get(pod, &["spec", "containers"])
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c["image"].as_str())
        .unwrap_or_default()
        .to_owned()
}

impl Inner {
    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }

    fn record(&mut self, kind: Kind, kind_type: &'static str, mut object: Value, tx: &Watchers) {
        self.rv += 1;
        set(
            &mut object,
            &["metadata", "resourceVersion"],
            json!(self.rv.to_string()),
        );
        if kind_type != "DELETED" {
            let key = (
                get_str(&object, &["metadata", "namespace"])
                    .unwrap_or_default()
                    .to_owned(),
                get_str(&object, &["metadata", "name"])
                    .unwrap_or_default()
                    .to_owned(),
            );
            match kind {
                Kind::StatefulSet => self.sets.insert(key, object.clone()),
                Kind::Pod => self.pods.insert(key, object.clone()),
            };
        }
        let owner = match kind {
            Kind::StatefulSet => get_str(&object, &["metadata", "name"]),
            Kind::Pod => object["metadata"]["ownerReferences"][0]["name"].as_str(),
        };
        if let (Some(ns), Some(set)) = (get_str(&object, &["metadata", "namespace"]), owner) {
            self.dirty.insert((ns.to_owned(), set.to_owned()));
        }
        let stored = Stored {
            rv: self.rv,
            kind,
            kind_type,
            object,
        };
        self.history.push_back(stored.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_rv = self.oldest_rv.max(old.rv + 1);
            }
        }
        tx.send(stored);
    }

    /// Pod `ordinal` of StatefulSet `set`.
    fn pod_of(&self, ns: &str, set: &str, ordinal: i64) -> Option<&Value> {
        self.pods.get(&(ns.to_owned(), format!("{set}-{ordinal}")))
    }

    /// The pods of StatefulSet `set` (named `<set>-<ordinal>`) with their ordinals: a range of
    /// the sorted map, not a scan of every pod.
    fn pods_of<'a>(&'a self, ns: &str, set: &str) -> impl Iterator<Item = (i64, &'a Value)> {
        let prefix = format!("{set}-");
        let ns = ns.to_owned();
        self.pods
            .range((ns.clone(), prefix.clone())..)
            .take_while(move |((n, pn), _)| *n == ns && pn.starts_with(&prefix))
            .filter_map(move |((_, pn), p)| {
                let ordinal = pn[set.len() + 1..].parse::<i64>().ok()?;
                Some((ordinal, p))
            })
    }

    fn put_set(
        &mut self,
        _ns: &str,
        _name: &str,
        sts: Value,
        kind_type: &'static str,
        tx: &Watchers,
    ) {
        self.record(Kind::StatefulSet, kind_type, sts, tx);
    }

    fn create_pod(
        &mut self,
        ns: &str,
        sts: &Value,
        pod: &str,
        revision: &str,
        tx: &Watchers,
    ) -> String {
        let uid = self.uid();
        let ordinal = pod.rsplit('-').next().unwrap_or("0").to_owned();
        let set_name = get_str(sts, &["metadata", "name"]).unwrap_or_default();
        let mut labels = get(sts, &["spec", "template", "metadata", "labels"])
            .cloned()
            .unwrap_or(json!({}));
        labels["controller-revision-hash"] = json!(revision);
        labels["statefulset.kubernetes.io/pod-name"] = json!(pod);
        labels["apps.kubernetes.io/pod-index"] = json!(ordinal);
        let annotations = get(sts, &["spec", "template", "metadata", "annotations"]).cloned();
        let mut spec = get(sts, &["spec", "template", "spec"])
            .cloned()
            .unwrap_or(json!({}));
        spec["hostname"] = json!(pod);
        spec["subdomain"] = json!(get_str(sts, &["spec", "serviceName"]).unwrap_or(set_name));
        let mut metadata = json!({
            "name": pod, "namespace": ns, "uid": uid, "labels": labels,
            "creationTimestamp": now_ts(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set_name,
                                 "uid": get_str(sts, &["metadata", "uid"]).unwrap_or_default(),
                                 "controller": true, "blockOwnerDeletion": true}]
        });
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        let pod_value = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                               "status": {"phase": "Pending", "conditions": [
                                   {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_ts()}]}});
        self.record(Kind::Pod, "ADDED", pod_value, tx);
        uid
    }

    fn begin_delete(&mut self, ns: &str, pod: &str, tx: &Watchers) {
        let Some(mut p) = self.pods.get(&(ns.to_owned(), pod.to_owned())).cloned() else {
            return;
        };
        if is_terminating(&p) {
            return;
        }
        set(&mut p, &["metadata", "deletionTimestamp"], json!(now_ts()));
        set(
            &mut p,
            &["metadata", "deletionGracePeriodSeconds"],
            json!(30),
        );
        self.record(Kind::Pod, "MODIFIED", p, tx);
    }
}

// ---- HTTP ----

async fn version() -> Response {
    axum::Json(
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-conveyor-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64"}),
    )
    .into_response()
}

fn fault(sim: &KubeSim, path: &str) -> Option<Response> {
    let mut s = sim.lock();
    let pos = s
        .faults
        .iter()
        .position(|(p, _)| path.contains(p.as_str()))?;
    let (_, code) = s.faults.remove(pos)?;
    Some(status_error(code, "InternalError", "simulated failure"))
}

/// `key=value`, `key==value`, `key!=value`, `key`, `!key`, `key in (a,b)`, `key notin (a,b)`.
fn label_matches(selector: &str, labels: &Map<String, Value>) -> bool {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .all(|req| {
            let val = |k: &str| labels.get(k).and_then(Value::as_str);
            if let Some((k, v)) = req.split_once("!=") {
                val(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                val(k.trim()) == Some(v.trim())
            } else if let Some((k, set)) = req.split_once(" notin ") {
                let set: Vec<&str> = set
                    .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                    .split(',')
                    .map(str::trim)
                    .collect();
                val(k.trim()).is_none_or(|v| !set.contains(&v))
            } else if let Some((k, set)) = req.split_once(" in ") {
                let set: Vec<&str> = set
                    .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                    .split(',')
                    .map(str::trim)
                    .collect();
                val(k.trim()).is_some_and(|v| set.contains(&v))
            } else if let Some(k) = req.strip_prefix('!') {
                val(k.trim()).is_none()
            } else {
                val(req).is_some()
            }
        })
}

fn field_matches(selector: &str, obj: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|req| {
        let (k, v, eq) = match req.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match req.split_once("==").or_else(|| req.split_once('=')) {
                Some((k, v)) => (k, v, true),
                None => return false,
            },
        };
        let path: Vec<&str> = k.trim().split('.').collect();
        (get_str(obj, &path) == Some(v.trim())) == eq
    })
}

struct Filter {
    kind: Kind,
    ns: String,
    labels: Option<String>,
    fields: Option<String>,
}

impl Filter {
    fn matches(&self, kind: Kind, obj: &Value) -> bool {
        kind == self.kind
            && get_str(obj, &["metadata", "namespace"]) == Some(self.ns.as_str())
            && self.labels.as_deref().is_none_or(|l| {
                label_matches(
                    l,
                    get(obj, &["metadata", "labels"])
                        .and_then(Value::as_object)
                        .unwrap_or(&Map::new()),
                )
            })
            && self.fields.as_deref().is_none_or(|f| field_matches(f, obj))
    }
}

async fn list_or_watch(sim: KubeSim, filter: Filter, q: HashMap<String, String>) -> Response {
    let list_kind = match filter.kind {
        Kind::StatefulSet => ("StatefulSetList", "apps/v1"),
        Kind::Pod => ("PodList", "v1"),
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_stream(sim, filter, q);
    }
    let s = sim.lock();
    let objects = match filter.kind {
        Kind::StatefulSet => &s.sets,
        Kind::Pod => &s.pods,
    };
    let items: Vec<Value> = objects
        .values()
        .filter(|o| filter.matches(filter.kind, o))
        .cloned()
        .collect();
    axum::Json(json!({"kind": list_kind.0, "apiVersion": list_kind.1,
                      "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}))
    .into_response()
}

fn watch_stream(sim: KubeSim, filter: Filter, q: HashMap<String, String>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let from: Option<u64> = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r != 0);
    let mut live = sim.events.subscribe(&filter.ns);
    let mut dropped = sim.drop_watches.subscribe();
    tokio::spawn(async move {
        let line = |v: Value| Ok::<_, Infallible>(Bytes::from(format!("{v}\n")));
        let (initial, mut last) = {
            let s = sim.lock();
            match from {
                None => {
                    let objects = match filter.kind {
                        Kind::StatefulSet => &s.sets,
                        Kind::Pod => &s.pods,
                    };
                    let adds: Vec<Value> = objects
                        .values()
                        .filter(|o| filter.matches(filter.kind, o))
                        .map(|o| json!({"type": "ADDED", "object": o}))
                        .collect();
                    (Ok(adds), s.rv)
                }
                Some(rv) if rv + 1 < s.oldest_rv => (Err(rv), s.rv),
                Some(rv) => {
                    let replay: Vec<Value> = s
                        .history
                        .iter()
                        .filter(|e| e.rv > rv && filter.matches(e.kind, &e.object))
                        .map(|e| json!({"type": e.kind_type, "object": e.object}))
                        .collect();
                    (Ok(replay), s.rv)
                }
            }
        };
        match initial {
            Err(rv) => {
                let current = sim.lock().rv;
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": format!("too old resource version: {rv} ({current})"),
                        "reason": "Expired", "code": 410}})))
                    .await;
                return;
            }
            Ok(events) => {
                for e in events {
                    if tx.send(line(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_millis(500));
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = dropped.changed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    let rv = sim.lock().rv;
                    let (kind, api) = match filter.kind { Kind::StatefulSet => ("StatefulSet", "apps/v1"), Kind::Pod => ("Pod", "v1") };
                    if tx.send(line(json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api,
                        "metadata": {"resourceVersion": rv.to_string()}}}))).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(e) if e.rv > last && filter.matches(e.kind, &e.object) => {
                        last = e.rv;
                        if tx.send(line(json!({"type": e.kind_type, "object": e.object}))).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // A watcher that falls behind is cut off; it resumes or relists.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures_stream(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn futures_stream(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_core_stream::Stream<Item = Result<Bytes, Infallible>> {
    futures_core_stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The one stream adapter the watch needs, without another dependency.
mod futures_core_stream {
    pub use futures::Stream;
    pub use futures::stream::poll_fn;
}

async fn list_sets(
    State(sim): State<KubeSim>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = fault(&sim, "/statefulsets") {
        return r;
    }
    let filter = Filter {
        kind: Kind::StatefulSet,
        ns,
        labels: q.get("labelSelector").cloned(),
        fields: q.get("fieldSelector").cloned(),
    };
    list_or_watch(sim, filter, q).await
}

async fn list_pods(
    State(sim): State<KubeSim>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = fault(&sim, "/pods") {
        return r;
    }
    let filter = Filter {
        kind: Kind::Pod,
        ns,
        labels: q.get("labelSelector").cloned(),
        fields: q.get("fieldSelector").cloned(),
    };
    list_or_watch(sim, filter, q).await
}

async fn get_set(State(sim): State<KubeSim>, Path((ns, name)): Path<(String, String)>) -> Response {
    if let Some(r) = fault(&sim, &format!("/statefulsets/{name}")) {
        return r;
    }
    match sim.get_statefulset(&ns, &name) {
        Some(s) => axum::Json(s).into_response(),
        None => status_error(
            404,
            "NotFound",
            &format!("statefulsets.apps \"{name}\" not found"),
        ),
    }
}

async fn get_pod(State(sim): State<KubeSim>, Path((ns, name)): Path<(String, String)>) -> Response {
    match sim.lock().pods.get(&(ns, name.clone())) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => status_error(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod(
    State(sim): State<KubeSim>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    // DeleteOptions may carry `preconditions.uid`: a pod recreated under the same name since
    // the client looked is not the one it meant, and the API server refuses with 409.
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let expected_uid = options["preconditions"]["uid"].as_str().map(str::to_owned);
    let found = {
        let mut s = sim.lock();
        let key = (ns.clone(), name.clone());
        match s
            .pods
            .get(&key)
            .map(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        {
            None => Err(status_error(
                404,
                "NotFound",
                &format!("pods \"{name}\" not found"),
            )),
            Some(uid) if expected_uid.is_some() && uid != expected_uid => Err(status_error(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on Pod \"{name}\": Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    expected_uid.unwrap_or_default(),
                    uid.unwrap_or_default()
                ),
            )),
            Some(_) => {
                s.begin_delete(&ns, &name, &sim.events);
                Ok(s.pods.get(&key).cloned())
            }
        }
    };
    match found {
        Ok(Some(p)) => {
            sim.finish_delete_later(ns, name);
            axum::Json(p).into_response()
        }
        Ok(None) => status_error(404, "NotFound", &format!("pods \"{name}\" not found")),
        Err(r) => r,
    }
}

/// RFC 7386 merge; with `strategic`, lists of objects with a `name` merge by name (as
/// `containers` do under a strategic merge patch) instead of being replaced.
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if strategic
                && p.iter().all(|e| e.get("name").is_some())
                && t.iter().all(|e| e.get("name").is_some()) =>
        {
            for item in p {
                match t.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(existing) => merge(existing, item, strategic),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn patch_set(
    State(sim): State<KubeSim>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&sim, &format!("/statefulsets/{name}")) {
        return r;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status_error(400, "BadRequest", "error decoding patch: invalid JSON");
    };
    let field_manager = q.get("fieldManager").cloned();
    let force = q.get("force").is_some_and(|f| f == "true");
    let strategic = match content_type.as_str() {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        "application/apply-patch+yaml" => {
            if field_manager.is_none() {
                return status_error(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
            }
            if patch.get("apiVersion").is_none() || patch.get("kind").is_none() {
                return status_error(
                    400,
                    "BadRequest",
                    "Incorrect version specified in apply patch. Specified patch version: , expected: apps/v1",
                );
            }
            true
        }
        other => {
            return status_error(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
            );
        }
    };
    if force && content_type != "application/apply-patch+yaml" {
        return status_error(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
        );
    }
    let answer = {
        let mut s = sim.lock();
        let key = (ns.clone(), name.clone());
        let Some(mut sts) = s.sets.get(&key).cloned() else {
            return status_error(
                404,
                "NotFound",
                &format!("statefulsets.apps \"{name}\" not found"),
            );
        };
        if let Some(rv) = get_str(&patch, &["metadata", "resourceVersion"])
            && Some(rv) != get_str(&sts, &["metadata", "resourceVersion"])
        {
            return status_error(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on statefulsets.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            );
        }
        s.patches.push(PatchRecord {
            content_type: content_type.clone(),
            field_manager,
            body: patch.clone(),
            namespace: ns.clone(),
            name: name.clone(),
            at_rest: at_rest(&sts),
            at: time::OffsetDateTime::now_utc(),
        });
        let spec_before = sts.get("spec").cloned();
        let mut p = patch.clone();
        if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        if let Some(o) = p.as_object_mut() {
            o.remove("status");
        }
        merge(&mut sts, &p, strategic);
        if sts.get("spec") != spec_before.as_ref() {
            let g = get_i64(&sts, &["metadata", "generation"]).unwrap_or(1) + 1;
            set(&mut sts, &["metadata", "generation"], json!(g));
        }
        s.record(Kind::StatefulSet, "MODIFIED", sts, &sim.events);
        s.sets.get(&key).cloned()
    };
    sim.wake.notify_one();
    axum::Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels: Map<String, Value> =
            serde_json::from_value(json!({"app": "web", "tier": "fe"})).unwrap();
        assert!(label_matches("app=web", &labels));
        assert!(label_matches("app==web,tier", &labels));
        assert!(!label_matches("app!=web", &labels));
        assert!(label_matches("app in (web, api),!missing", &labels));
        assert!(!label_matches("tier notin (fe)", &labels));
        let obj = json!({"metadata": {"name": "web", "namespace": "ns"}});
        assert!(field_matches("metadata.name=web", &obj));
        assert!(!field_matches("metadata.name=other", &obj));
    }

    #[test]
    fn strategic_merge_keeps_other_container_fields() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "ports": [1]}, {"name": "b", "image": "y"}]}});
        merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}}),
            true,
        );
        assert_eq!(
            t["spec"]["containers"][0],
            json!({"name": "a", "image": "x:2", "ports": [1]})
        );
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 2);
        let mut t2 = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "ports": [1]}]}});
        merge(
            &mut t2,
            &json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}}),
            false,
        );
        assert_eq!(
            t2["spec"]["containers"][0],
            json!({"name": "a", "image": "x:2"}),
            "a merge patch replaces lists"
        );
    }
}

#[cfg(test)]
mod delete_tests {
    use super::*;

    /// The API server deletes a pod only if it is still the one the client meant.
    #[tokio::test]
    async fn a_delete_with_a_stale_uid_precondition_is_refused_with_409() {
        let sim = KubeSim::new();
        sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(10)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
        sim.create_statefulset("ns", "web", "app", "img:1", 1);
        tokio::time::timeout(Duration::from_secs(10), sim.wait_settled("ns", "web"))
            .await
            .unwrap();
        let uid = sim.pods("ns")[0]["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("{base}/api/v1/namespaces/ns/pods/web-0");
        let http = reqwest::Client::new();
        let delete = |uid: String| {
            http.delete(&url)
                .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}))
                .send()
        };
        let stale = delete("not-the-pod".into()).await.unwrap();
        assert_eq!(stale.status(), 409);
        let body: Value = stale.json().await.unwrap();
        assert_eq!(body["reason"], "Conflict");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Precondition failed"),
            "{body}"
        );
        assert!(sim.pods("ns")[0]["metadata"]["deletionTimestamp"].is_null());
        assert_eq!(delete(uid).await.unwrap().status(), 200);
    }
}
