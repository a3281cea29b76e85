//! A Kubernetes API simulator for `apps/v1` StatefulSets and ControllerRevisions and `v1`
//! Pods, Events and Namespaces, speaking the wire protocol of `docs/simulators.md`
//! (Kubernetes) well enough for kube's client and `watcher` and for kubectl (discovery,
//! Tables, every patch type, server-side apply, dry runs, `/status` and `/scale`), with a
//! StatefulSet controller (OrderedReady, RollingUpdate from the highest ordinal, partition,
//! minReadySeconds, OnDelete, the status arithmetic of the timeline, revisions) and a
//! scriptable kubelet.
//!
//! This file holds the public handle ([`KubeSim`]) and its scripting API; `store` the objects,
//! resourceVersions and watch history, `resources` discovery and paths, `controller` the
//! StatefulSet controller, `kubelet` the pods' lives, `events` what they record, `http` the
//! reads and watches, `write` the writes, `patch` and `fields` the patch types and field
//! ownership, `table` the Table form.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get as route_get;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

mod controller;
mod events;
mod fields;
mod http;
mod kubelet;
mod patch;
mod resources;
mod store;
mod table;
mod write;

use controller::at_rest;
pub use http::status_error;
use http::*;
use kubelet::first_image;
use store::*;

/// How long a change stays in the watch history by default: etcd's default compaction
/// interval, after which an API server answers a watch from before it with 410 Expired.
pub const HISTORY_AGE: Duration = Duration::from_secs(5 * 60);

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
    /// A dry run (`dryRun=All`): validated and answered, nothing stored.
    pub dry_run: bool,
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct KubeSim {
    inner: Arc<Mutex<Inner>>,
    events: Watchers,
    wake: Arc<Notify>,
    drop_watches: watch::Sender<u64>,
    latency: crate::plumbing::Latency,
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
                namespaces: BTreeMap::new(),
                events: BTreeMap::new(),
                event_keys: std::collections::HashMap::new(),
                revisions: BTreeMap::new(),
                history: BTreeMap::new(),
                history_limit: 2000,
                history_age: HISTORY_AGE,
                expired_watches: 0,
                oldest_rv: BTreeMap::new(),
                rules: Vec::new(),
                app_rules: Vec::new(),
                default: Behavior::ReadyAfter(Duration::from_millis(200)),
                grace: Duration::from_millis(100),
                ready_log: Vec::new(),
                patches: Vec::new(),
                faults: Default::default(),
                next_uid: 1,
                dirty: BTreeSet::new(),
                unsettled: BTreeSet::new(),
                refused_pods: BTreeMap::new(),
                kept_revisions: BTreeMap::new(),
                retry_create_at: BTreeMap::new(),
            })),
            events,
            wake: Arc::new(Notify::new()),
            drop_watches: watch::channel(0).0,
            latency: Default::default(),
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
        self.lock().faults.push(None, Some(path_contains), code);
    }

    /// End every open watch stream (an API server restart, a dropped connection).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|n| *n += 1);
    }

    /// Keep changes in the watch history for `age` (default [`HISTORY_AGE`]); a watch resuming
    /// from an older resourceVersion gets 410 Expired and must relist.
    pub fn set_history_age(&self, age: Duration) {
        self.lock().history_age = age;
    }

    /// How many watches were answered 410 Expired (each one a client's relist).
    pub fn expired_watches(&self) -> u64 {
        self.lock().expired_watches
    }

    /// Forget the event history: a watch resuming from any earlier resourceVersion gets the
    /// in-stream 410 Expired and must relist.
    pub fn expire_history(&self) {
        let mut s = self.lock();
        s.history.clear();
        let next = s.rv + 1;
        for kind in resources::RESOURCES.iter().map(|r| r.kind) {
            s.oldest_rv.insert(kind, next);
        }
    }

    /// Pods of StatefulSet `name` in `ns` cannot be created until [`KubeSim::allow_pods`]: the
    /// API server refuses each with `refusal` (a quota, an admission webhook, a missing
    /// PersistentVolumeClaim), and the controller records it as a `FailedCreate` Event.
    pub fn refuse_pods(&self, ns: &str, name: &str, refusal: &str) {
        self.lock()
            .refused_pods
            .insert((ns.to_owned(), name.to_owned()), refusal.to_owned());
    }

    /// Pods of StatefulSet `name` in `ns` can be created again.
    pub fn allow_pods(&self, ns: &str, name: &str) {
        {
            let mut s = self.lock();
            let key = (ns.to_owned(), name.to_owned());
            s.refused_pods.remove(&key);
            s.retry_create_at.remove(&key);
            s.dirty.insert(key);
        }
        self.wake.notify_one();
    }

    /// The Events of a namespace.
    pub fn events(&self, ns: &str) -> Vec<Value> {
        self.of_namespace(Kind::Event, ns)
    }

    /// The ControllerRevisions of a namespace.
    pub fn revisions(&self, ns: &str) -> Vec<Value> {
        self.of_namespace(Kind::ControllerRevision, ns)
    }

    fn of_namespace(&self, kind: Kind, ns: &str) -> Vec<Value> {
        self.lock()
            .objects(kind)
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// One stored object.
    fn object(&self, kind: Kind, ns: Option<&str>, name: &str) -> Option<Value> {
        self.lock()
            .objects(kind)
            .get(&(ns.unwrap_or_default().to_owned(), name.to_owned()))
            .cloned()
    }

    /// What follows a write of `kind` `ns/name`: the controller looks again, and a pod
    /// created by a client starts its life.
    fn after_write(&self, kind: Kind, ns: &str, name: &str, created: bool) {
        let s = self.lock();
        self.after_write_locked(&s, kind, ns, name, created);
    }

    fn after_write_locked(&self, s: &Inner, kind: Kind, ns: &str, name: &str, created: bool) {
        if kind == Kind::Pod
            && created
            && let Some(uid) = s
                .pods
                .get(&(ns.to_owned(), name.to_owned()))
                .and_then(|p| get_str(p, &["metadata", "uid"]))
        {
            self.kubelet(ns.to_owned(), name.to_owned(), uid.to_owned());
        }
        if matches!(kind, Kind::StatefulSet | Kind::Pod) {
            self.wake.notify_one();
        }
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
            s.ensure_namespace(ns, &self.events);
            let uid = s.uid();
            let mut sts = sts;
            set(&mut sts, &["metadata", "uid"], json!(uid));
            write::defaults(Kind::StatefulSet, &mut sts);
            let writer = fields::Writer {
                manager: "kubectl-create",
                operation: fields::Operation::Update,
                subresource: None,
                api_version: "apps/v1",
            };
            fields::updated(None, &mut sts, &writer, &now_ts());
            s.put_set(ns, name, sts, "ADDED", &self.events);
        }
        self.wake.notify_one();
    }

    /// Apply a strategic-merge patch to a StatefulSet as a client would (the AWX playbook's
    /// `k8s` apply); false if there is no such StatefulSet.
    pub fn apply_patch(&self, ns: &str, name: &str, patch: &Value) -> bool {
        let input = write::PatchInput {
            patch_type: patch::PatchType::Strategic,
            content_type: "application/strategic-merge-patch+json",
            body: patch.clone(),
            manager: "ansible".into(),
            field_manager: Some("ansible".into()),
            force: false,
            dry_run: false,
            subresource: None,
        };
        let mut s = self.lock();
        write::patch_stored(self, &mut s, Kind::StatefulSet, ns, name, input).is_ok()
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
        crate::plumbing::serve(self.router(), listener, shutdown).await
    }

    /// Answer every API request after a time between `min` and `max`, as an API server across
    /// a network does (benchmarks measure parallelism with it).
    pub fn set_latency(&self, min: Duration, max: Duration) {
        self.latency.set(min, max);
    }

    /// The router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/version", route_get(version))
            .fallback(serve_api)
            .layer(axum::middleware::from_fn_with_state(
                self.latency.clone(),
                crate::plumbing::with_latency,
            ))
            .with_state(self.clone())
    }
}
