//! The simulated API server's store: objects by kind and key, resourceVersions, the watch
//! history of each kind and the live feeds (per namespace, and one for the whole cluster);
//! JSON path helpers shared by the simulator.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast;

pub(super) use super::resources::Kind;
use super::*;

/// Objects of one kind by (namespace, name); cluster-scoped ones under namespace `""`.
pub(super) type Objects = BTreeMap<(String, String), Value>;

/// The feed key of a watch over every namespace.
pub(super) const CLUSTER: &str = "*";

#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) rv: u64,
    pub(super) kind: Kind,
    pub(super) kind_type: &'static str,
    pub(super) object: Value,
    /// When it was written (for compaction by age).
    pub(super) at: tokio::time::Instant,
}

/// The live feed of stored changes, one channel per namespace: the API server's watch cache
/// hands a watcher only what its namespace sees, so a change in one namespace wakes none of
/// the hundred watches of the others. A watch of every namespace (or of a cluster-scoped
/// kind) listens on [`CLUSTER`], which exists only while someone listens.
#[derive(Clone, Default)]
pub(super) struct Watchers {
    pub(super) by_namespace: Arc<Mutex<HashMap<String, broadcast::Sender<Stored>>>>,
}

impl Watchers {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Stored>>> {
        conveyor::sync::lock(&self.by_namespace)
    }

    pub(super) fn subscribe(&self, namespace: &str) -> broadcast::Receiver<Stored> {
        self.lock()
            .entry(namespace.to_owned())
            .or_insert_with(|| broadcast::channel(4096).0)
            .subscribe()
    }

    pub(super) fn send(&self, change: Stored) {
        let namespace = get_str(&change.object, &["metadata", "namespace"]).unwrap_or_default();
        let feeds = self.lock();
        if let Some(tx) = feeds.get(CLUSTER)
            && tx.receiver_count() > 0
        {
            let _ = tx.send(change.clone());
        }
        if let Some(tx) = feeds.get(namespace) {
            let _ = tx.send(change);
        }
    }
}

pub(super) struct Inner {
    pub(super) rv: u64,
    pub(super) sets: Objects,
    pub(super) pods: Objects,
    pub(super) namespaces: Objects,
    pub(super) events: Objects,
    /// Where the event of (namespace, involved uid, reason, message, component) is.
    pub(super) event_keys: HashMap<String, (String, String)>,
    pub(super) revisions: Objects,
    /// Each kind's recent changes, as the API server's watch cache keeps one per resource.
    pub(super) history: BTreeMap<Kind, VecDeque<Stored>>,
    /// Changes a kind's history keeps at most.
    pub(super) history_limit: usize,
    /// How long a change stays in the history (etcd compacts what is older).
    pub(super) history_age: Duration,
    /// Watches answered 410 Expired.
    pub(super) expired_watches: u64,
    /// Per kind: watches resuming below this resourceVersion get 410 Expired.
    pub(super) oldest_rv: BTreeMap<Kind, u64>,
    pub(super) rules: Vec<(String, Behavior)>,
    /// The application's answer while a Ready pod runs a matching image (see `app_health`).
    pub(super) app_rules: Vec<(String, u16)>,
    pub(super) default: Behavior,
    pub(super) grace: Duration,
    pub(super) ready_log: Vec<(String, OffsetDateTime)>,
    pub(super) patches: Vec<PatchRecord>,
    pub(super) faults: crate::plumbing::FaultScript<u16>,
    pub(super) next_uid: u64,
    /// StatefulSets changed (themselves or one of their pods) since the controller last looked:
    /// a wake-up syncs only these, as the real controller's work queue holds only changed keys.
    pub(super) dirty: BTreeSet<(String, String)>,
    /// StatefulSets that were not at rest when the controller last synced them: only time can
    /// move them on (a pod's minReadySeconds, a refused create's backoff), so the periodic
    /// resync visits these and leaves the settled ones alone.
    pub(super) unsettled: BTreeSet<(String, String)>,
    /// StatefulSets whose pods cannot be created, with the API server's refusal.
    pub(super) refused_pods: BTreeMap<(String, String), String>,
    /// The update revision whose ControllerRevision the controller last made sure of, per set.
    pub(super) kept_revisions: BTreeMap<(String, String), String>,
    /// When the controller may next try to create a refused pod (its work queue backs off).
    pub(super) retry_create_at: BTreeMap<(String, String), (tokio::time::Instant, Duration)>,
}

pub(super) fn now_ts() -> String {
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
pub(super) fn fnv32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub(super) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

pub(super) fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

pub(super) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

pub(super) fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = cur.get_mut(*k).expect("just inserted");
    }
    cur[path[path.len() - 1]] = value;
}

pub(super) fn condition_true(pod: &Value, kind: &str) -> bool {
    get(pod, &["status", "conditions"])
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

pub(super) fn ready_since(pod: &Value) -> Option<OffsetDateTime> {
    get(pod, &["status", "conditions"])
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

pub(super) fn is_terminating(pod: &Value) -> bool {
    get(pod, &["metadata", "deletionTimestamp"]).is_some()
}

pub(super) fn running_and_ready(pod: &Value) -> bool {
    get_str(pod, &["status", "phase"]) == Some("Running") && condition_true(pod, "Ready")
}

pub(super) fn available(pod: &Value, min_ready: i64) -> bool {
    running_and_ready(pod)
        && (min_ready <= 0
            || ready_since(pod).is_some_and(|t| {
                OffsetDateTime::now_utc() - t >= time::Duration::seconds(min_ready)
            }))
}

pub(super) fn revision_of(pod: &Value) -> Option<&str> {
    get_str(pod, &["metadata", "labels", "controller-revision-hash"])
}

impl Inner {
    /// Forget history beyond the count limit or older than `history_age`, as the API server's
    /// watch cache and etcd's compaction do: a watch resuming from before it gets 410 Expired.
    pub(super) fn compact(&mut self) {
        let now = tokio::time::Instant::now();
        for (kind, history) in &mut self.history {
            while history.len() > self.history_limit
                || history
                    .front()
                    .is_some_and(|old| now.duration_since(old.at) > self.history_age)
            {
                if let Some(old) = history.pop_front() {
                    let oldest = self.oldest_rv.entry(*kind).or_default();
                    *oldest = (*oldest).max(old.rv + 1);
                }
            }
        }
    }

    /// The lowest resourceVersion a watch of `kind` may resume from.
    pub(super) fn oldest(&self, kind: Kind) -> u64 {
        self.oldest_rv.get(&kind).copied().unwrap_or(0)
    }

    /// The stored objects of `kind`.
    pub(super) fn objects(&self, kind: Kind) -> &Objects {
        match kind {
            Kind::StatefulSet => &self.sets,
            Kind::Pod => &self.pods,
            Kind::Namespace => &self.namespaces,
            Kind::Event => &self.events,
            Kind::ControllerRevision => &self.revisions,
        }
    }

    /// The stored objects of `kind` in namespace `ns` (every one when `None`): a range of the
    /// map, so that a namespace's list costs what the namespace holds, not the cluster.
    pub(super) fn objects_in<'a>(
        &'a self,
        kind: Kind,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        let objects = self.objects(kind);
        match ns {
            Some(ns) if kind.namespaced() => Box::new(
                objects
                    .range((ns.to_owned(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
            _ => Box::new(objects.values()),
        }
    }

    /// The stored objects of `kind`, to change.
    pub(super) fn objects_mut(&mut self, kind: Kind) -> &mut Objects {
        match kind {
            Kind::StatefulSet => &mut self.sets,
            Kind::Pod => &mut self.pods,
            Kind::Namespace => &mut self.namespaces,
            Kind::Event => &mut self.events,
            Kind::ControllerRevision => &mut self.revisions,
        }
    }

    /// Make namespace `ns` if it does not exist (the simulator's own objects live in
    /// namespaces an operator would have made).
    pub(super) fn ensure_namespace(&mut self, ns: &str, tx: &Watchers) {
        if ns.is_empty()
            || self
                .namespaces
                .contains_key(&(String::new(), ns.to_owned()))
        {
            return;
        }
        let uid = self.uid();
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": uid, "creationTimestamp": now_ts(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        self.record(Kind::Namespace, "ADDED", namespace, tx);
    }

    pub(super) fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }

    pub(super) fn record(
        &mut self,
        kind: Kind,
        kind_type: &'static str,
        mut object: Value,
        tx: &Watchers,
    ) {
        self.rv += 1;
        set(
            &mut object,
            &["metadata", "resourceVersion"],
            json!(self.rv.to_string()),
        );
        let key = (
            get_str(&object, &["metadata", "namespace"])
                .unwrap_or_default()
                .to_owned(),
            get_str(&object, &["metadata", "name"])
                .unwrap_or_default()
                .to_owned(),
        );
        if kind_type == "DELETED" {
            self.objects_mut(kind).remove(&key);
        } else {
            self.objects_mut(kind).insert(key, object.clone());
        }
        let owner = match kind {
            Kind::StatefulSet => get_str(&object, &["metadata", "name"]),
            Kind::Pod => object["metadata"]["ownerReferences"][0]["name"].as_str(),
            _ => None,
        };
        if let (Some(ns), Some(set)) = (get_str(&object, &["metadata", "namespace"]), owner) {
            self.dirty.insert((ns.to_owned(), set.to_owned()));
        }
        let stored = Stored {
            rv: self.rv,
            kind,
            kind_type,
            object,
            at: tokio::time::Instant::now(),
        };
        self.history
            .entry(kind)
            .or_default()
            .push_back(stored.clone());
        self.compact();
        tx.send(stored);
    }

    /// Pod `ordinal` of StatefulSet `set`.
    pub(super) fn pod_of(&self, ns: &str, set: &str, ordinal: i64) -> Option<&Value> {
        self.pods.get(&(ns.to_owned(), format!("{set}-{ordinal}")))
    }

    /// The pods of StatefulSet `set` (named `<set>-<ordinal>`) with their ordinals: a range of
    /// the sorted map, not a scan of every pod.
    pub(super) fn pods_of<'a>(
        &'a self,
        ns: &str,
        set: &str,
    ) -> impl Iterator<Item = (i64, &'a Value)> {
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

    pub(super) fn put_set(
        &mut self,
        _ns: &str,
        _name: &str,
        sts: Value,
        kind_type: &'static str,
        tx: &Watchers,
    ) {
        self.record(Kind::StatefulSet, kind_type, sts, tx);
    }

    pub(super) fn create_pod(
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
        // The scheduler's choice: one node for everything.
        spec["nodeName"] = json!("sim-node-1");
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
        let mut pod_value = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                               "status": {"phase": "Pending", "conditions": [
                                   {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_ts()}]}});
        let writer = super::fields::Writer {
            manager: "kube-controller-manager",
            operation: super::fields::Operation::Update,
            subresource: None,
            api_version: "v1",
        };
        super::fields::updated(None, &mut pod_value, &writer, &now_ts());
        self.record(Kind::Pod, "ADDED", pod_value, tx);
        uid
    }

    pub(super) fn begin_delete(&mut self, ns: &str, pod: &str, tx: &Watchers) {
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
