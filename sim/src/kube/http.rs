//! The HTTP surface: lists, watches, gets, deletes and patches, with the API server's
//! status codes and Status bodies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::*;

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

pub(super) async fn version() -> Response {
    axum::Json(
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-conveyor-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64"}),
    )
    .into_response()
}

pub(super) fn fault(sim: &KubeSim, method: &Method, path: &str) -> Option<Response> {
    let code = sim.lock().faults.take(method, path)?;
    Some(status_error(code, "InternalError", "simulated failure"))
}

/// `key=value`, `key==value`, `key!=value`, `key`, `!key`, `key in (a,b)`, `key notin (a,b)`.
pub(super) fn label_matches(selector: &str, labels: &Map<String, Value>) -> bool {
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

pub(super) fn field_matches(selector: &str, obj: &Value) -> bool {
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

pub(super) struct Filter {
    kind: Kind,
    ns: String,
    labels: Option<String>,
    fields: Option<String>,
}

impl Filter {
    pub(super) fn matches(&self, kind: Kind, obj: &Value) -> bool {
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

pub(super) async fn list_or_watch(
    sim: KubeSim,
    filter: Filter,
    q: HashMap<String, String>,
) -> Response {
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

pub(super) fn watch_stream(sim: KubeSim, filter: Filter, q: HashMap<String, String>) -> Response {
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
            let mut s = sim.lock();
            s.compact();
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
                Some(rv) if rv + 1 < s.oldest_rv => {
                    s.expired_watches += 1;
                    (Err(rv), s.rv)
                }
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

pub(super) fn futures_stream(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_core_stream::Stream<Item = Result<Bytes, Infallible>> {
    futures_core_stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The one stream adapter the watch needs, without another dependency.
mod futures_core_stream {
    pub use futures::Stream;
    pub use futures::stream::poll_fn;
}

pub(super) async fn list_sets(
    State(sim): State<KubeSim>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = fault(&sim, &Method::GET, "/statefulsets") {
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

pub(super) async fn list_pods(
    State(sim): State<KubeSim>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = fault(&sim, &Method::GET, "/pods") {
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

pub(super) async fn get_set(
    State(sim): State<KubeSim>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(r) = fault(&sim, &Method::GET, &format!("/statefulsets/{name}")) {
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

pub(super) async fn get_pod(
    State(sim): State<KubeSim>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match sim.lock().pods.get(&(ns, name.clone())) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => status_error(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

pub(super) async fn delete_pod(
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
pub(super) fn merge(target: &mut Value, patch: &Value, strategic: bool) {
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

/// Whether a patch of `content_type` merges strategically, or the API server's refusal.
fn merge_kind(
    content_type: &str,
    patch: &Value,
    has_field_manager: bool,
    force: bool,
) -> Result<bool, Box<Response>> {
    let strategic = match content_type {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        "application/apply-patch+yaml" => {
            if !has_field_manager {
                return Err(Box::new(status_error(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                )));
            }
            if patch.get("apiVersion").is_none() || patch.get("kind").is_none() {
                return Err(Box::new(status_error(
                    400,
                    "BadRequest",
                    "Incorrect version specified in apply patch. Specified patch version: , expected: apps/v1",
                )));
            }
            true
        }
        other => {
            return Err(Box::new(status_error(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
            )));
        }
    };
    if force && content_type != "application/apply-patch+yaml" {
        return Err(Box::new(status_error(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
        )));
    }
    Ok(strategic)
}

/// Record a patch as it was sent (content type, field manager, body) and merge `effective` into
/// the stored set `sts`: the generation moves when the spec changed, and watchers see MODIFIED —
/// unless nothing changed, which a real API server does not write at all.
pub(super) fn apply(
    s: &mut Inner,
    events: &Watchers,
    mut sts: Value,
    (content_type, field_manager, sent): (&str, Option<String>, &Value),
    effective: &Value,
    strategic: bool,
) {
    s.patches.push(PatchRecord {
        content_type: content_type.to_owned(),
        field_manager,
        body: sent.clone(),
        namespace: get_str(&sts, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_owned(),
        name: get_str(&sts, &["metadata", "name"])
            .unwrap_or_default()
            .to_owned(),
        at_rest: at_rest(&sts),
        at: time::OffsetDateTime::now_utc(),
    });
    let before = sts.clone();
    merge(&mut sts, effective, strategic);
    // A write that changes nothing is not a write: same resourceVersion, no event.
    if sts == before {
        return;
    }
    if sts.get("spec") != before.get("spec") {
        let g = get_i64(&sts, &["metadata", "generation"]).unwrap_or(1) + 1;
        set(&mut sts, &["metadata", "generation"], json!(g));
    }
    s.record(Kind::StatefulSet, "MODIFIED", sts, events);
}

pub(super) async fn patch_set(
    State(sim): State<KubeSim>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = fault(&sim, &Method::PATCH, &format!("/statefulsets/{name}")) {
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
    let strategic = match merge_kind(&content_type, &patch, field_manager.is_some(), force) {
        Ok(strategic) => strategic,
        Err(refused) => return *refused,
    };
    let answer = {
        let mut s = sim.lock();
        let key = (ns.clone(), name.clone());
        let Some(sts) = s.sets.get(&key).cloned() else {
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
        let mut effective = patch.clone();
        if let Some(m) = effective.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        if let Some(o) = effective.as_object_mut() {
            o.remove("status");
        }
        apply(
            &mut s,
            &sim.events,
            sts,
            (&content_type, field_manager, &patch),
            &effective,
            strategic,
        );
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
mod api_tests {
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

    async fn served(sim: &KubeSim) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
        sim.create_statefulset("ns", "web", "app", "img:1", 1);
        tokio::time::timeout(Duration::from_secs(10), sim.wait_settled("ns", "web"))
            .await
            .unwrap();
        base
    }

    async fn resource_version(http: &reqwest::Client, base: &str) -> u64 {
        let sts: Value = http
            .get(format!(
                "{base}/apis/apps/v1/namespaces/ns/statefulsets/web"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sts["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn merge_patch(http: &reqwest::Client, base: &str, patch: Value) -> Value {
        http.patch(format!(
            "{base}/apis/apps/v1/namespaces/ns/statefulsets/web"
        ))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    /// What a one-second watch of the StatefulSets from `rv` receives, one JSON line each.
    async fn watch_from(http: &reqwest::Client, base: &str, rv: u64) -> Vec<Value> {
        let url = format!(
            "{base}/apis/apps/v1/namespaces/ns/statefulsets?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        );
        let text = http.get(url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A real API server skips a write that changes nothing: same resourceVersion, no event.
    #[tokio::test]
    async fn a_patch_that_changes_nothing_is_not_written() {
        let sim = KubeSim::new();
        sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(10)));
        let base = served(&sim).await;
        let http = reqwest::Client::new();
        let rv = resource_version(&http, &base).await;
        let same = merge_patch(&http, &base, json!({"spec": {"replicas": 1}})).await;
        assert_eq!(same["metadata"]["resourceVersion"], json!(rv.to_string()));
        assert!(watch_from(&http, &base, rv).await.is_empty());
        let changed = merge_patch(
            &http,
            &base,
            json!({"metadata": {"annotations": {"team": "xchem"}}}),
        )
        .await;
        assert_ne!(
            changed["metadata"]["resourceVersion"],
            json!(rv.to_string())
        );
        let seen = watch_from(&http, &base, rv).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["type"], "MODIFIED");
    }

    /// History expires by age, as etcd compacts it: a watch resuming from a change older than
    /// that gets the in-stream 410 Expired; one from a recent change replays it.
    #[tokio::test]
    async fn a_watch_from_a_compacted_resource_version_gets_410() {
        let sim = KubeSim::new();
        sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(10)));
        let base = served(&sim).await;
        let http = reqwest::Client::new();
        sim.set_history_age(Duration::from_millis(300));
        let rv = resource_version(&http, &base).await;
        merge_patch(
            &http,
            &base,
            json!({"metadata": {"annotations": {"n": "1"}}}),
        )
        .await;
        let recent = watch_from(&http, &base, rv).await;
        assert_eq!(recent[0]["type"], "MODIFIED", "{recent:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let expired = watch_from(&http, &base, rv).await;
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(expired[0]["type"], "ERROR");
        assert_eq!(expired[0]["object"]["code"], 410);
        assert_eq!(expired[0]["object"]["reason"], "Expired");
        assert_eq!(sim.expired_watches(), 1);
    }
}
