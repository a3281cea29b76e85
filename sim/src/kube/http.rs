//! The HTTP surface: discovery and OpenAPI, lists (as objects or as kubectl's Tables),
//! watches, gets; writes are in `write`. Status codes and Status bodies as the API server's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::*;

/// An API error as the API server sends it.
pub fn status_error(code: u16, reason: &str, message: &str) -> Response {
    ApiError::new(code, reason, message).into_response()
}

/// A refusal as the API server sends it: a `Status` object with its code, reason, message and
/// (for a named object) details.
#[derive(Debug)]
pub(super) struct ApiError {
    code: u16,
    reason: String,
    message: String,
    details: Option<Box<Value>>,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &str, message: &str) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.to_owned(),
            details: None,
        }
    }

    /// With `details` (name, group, kind, causes).
    pub(super) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code});
        if let Some(details) = self.details {
            body["details"] = *details;
        }
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
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

/// Which objects a list or watch is for.
pub(super) struct Filter {
    pub(super) kind: Kind,
    /// `None`: every namespace (or a cluster-scoped kind).
    pub(super) ns: Option<String>,
    pub(super) labels: Option<String>,
    pub(super) fields: Option<String>,
}

impl Filter {
    pub(super) fn matches(&self, kind: Kind, obj: &Value) -> bool {
        kind == self.kind
            && self
                .ns
                .as_deref()
                .is_none_or(|ns| get_str(obj, &["metadata", "namespace"]) == Some(ns))
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

/// Every request under `/api`, `/apis` and `/openapi`: discovery, then the resource a path
/// names, by method.
pub(super) async fn serve_api(
    State(sim): State<KubeSim>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let q: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default();
    if method == Method::GET
        && let Some(answer) = discovery(path, &headers)
    {
        return answer;
    }
    if let Some(r) = fault(&sim, &method, path) {
        return r;
    }
    let Some(target) = super::resources::parse_path(path) else {
        return status_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let request = super::write::Request {
        target,
        query: q,
        headers,
        body,
    };
    match (&method, &request.target) {
        (&Method::GET, t) if t.name.is_none() => {
            let filter = Filter {
                kind: t.kind,
                ns: t.namespace.clone(),
                labels: request.query.get("labelSelector").cloned(),
                fields: request.query.get("fieldSelector").cloned(),
            };
            list_or_watch(sim, filter, request.query, &request.headers).await
        }
        (&Method::GET, _) => get_one(&sim, &request),
        (&Method::POST, t) if t.name.is_none() => super::write::create(&sim, &request),
        (&Method::PUT, t) if t.name.is_some() => super::write::replace(&sim, &request),
        (&Method::PATCH, t) if t.name.is_some() => super::write::patch(&sim, &request),
        (&Method::DELETE, t) if t.name.is_some() => super::write::delete(&sim, &request),
        _ => status_error(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

/// A query string's pairs, percent-decoded (kube sends a leading `&`).
fn url_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `/api`, `/apis`, the group versions' resource lists, `/openapi/v3`.
fn discovery(path: &str, headers: &HeaderMap) -> Option<Response> {
    use super::resources::*;
    let json = |v: Value| Some(axum::Json(v).into_response());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    match path.trim_end_matches('/') {
        "/api" => json(api_versions(host)),
        "/apis" => json(api_groups()),
        "/api/v1" => json(resource_list("")?),
        "/apis/apps/v1" => json(resource_list("apps")?),
        "/openapi/v3" => json(openapi_index()),
        p if p.starts_with("/openapi/v3/") => {
            Some(match openapi_document(&p["/openapi/v3/".len()..]) {
                Some(doc) => axum::Json(doc).into_response(),
                None => status_error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            })
        }
        "/openapi/v2" => Some(status_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        _ => None,
    }
}

/// What a list answers: the objects (or a Table of them) and the resourceVersion.
pub(super) async fn list_or_watch(
    sim: KubeSim,
    filter: Filter,
    q: HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let as_table = super::table::wanted(headers);
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_stream(sim, filter, q, as_table);
    }
    let s = sim.lock();
    let mut items: Vec<&Value> = s
        .objects_in(filter.kind, filter.ns.as_deref())
        .filter(|o| filter.matches(filter.kind, o))
        .collect();
    // Pages of `limit`, the rest behind an opaque `continue` (the offset, here).
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    items = items.into_iter().skip(offset).take(limit).collect();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if offset.saturating_add(limit) < total {
        metadata["continue"] = json!((offset + limit).to_string());
        metadata["remainingItemCount"] = json!(total - offset - limit);
    }
    if as_table {
        let mut t = super::table::table(
            filter.kind,
            &items,
            Some(s.rv.to_string()),
            q.get("includeObject").map(String::as_str),
        );
        t["metadata"] = metadata;
        return axum::Json(t).into_response();
    }
    axum::Json(json!({"kind": format!("{}List", filter.kind.name()),
                      "apiVersion": filter.kind.api_version(),
                      "metadata": metadata, "items": items}))
    .into_response()
}

/// A GET of one object or of its `status`, `scale` or `log`.
fn get_one(sim: &KubeSim, r: &super::write::Request) -> Response {
    let t = &r.target;
    let name = t.name.as_deref().unwrap_or_default();
    let Some(object) = sim.object(t.kind, t.namespace.as_deref(), name) else {
        return not_found(t.kind, name).into_response();
    };
    match t.subresource.as_deref() {
        None | Some("status") => {}
        Some("scale") if t.kind == Kind::StatefulSet => {
            return axum::Json(super::write::scale_of(&object)).into_response();
        }
        Some("log") if t.kind == Kind::Pod => {
            let image = super::kubelet::first_image(&object);
            return (
                [(header::CONTENT_TYPE, "text/plain")],
                format!("{name}: simulated container running {image}\n"),
            )
                .into_response();
        }
        Some(_) => {
            return status_error(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    }
    if super::table::wanted(&r.headers) {
        let rv = get_str(&object, &["metadata", "resourceVersion"]).map(str::to_owned);
        return axum::Json(super::table::table(
            t.kind,
            &[&object],
            rv,
            r.query.get("includeObject").map(String::as_str),
        ))
        .into_response();
    }
    axum::Json(object).into_response()
}

/// The API server's 404 for a missing object.
pub(super) fn not_found(kind: Kind, name: &str) -> ApiError {
    let r = kind.resource();
    ApiError::new(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.qualified()),
    )
    .with_details(json!({"name": name, "group": r.group, "kind": r.plural}))
}

pub(super) fn watch_stream(
    sim: KubeSim,
    filter: Filter,
    q: HashMap<String, String>,
    as_table: bool,
) -> Response {
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
    let feed = match (&filter.ns, filter.kind.namespaced()) {
        (Some(ns), true) => ns.clone(),
        _ => store::CLUSTER.to_owned(),
    };
    let mut live = sim.events.subscribe(&feed);
    let mut dropped = sim.drop_watches.subscribe();
    let include = q.get("includeObject").cloned();
    let kind = filter.kind;
    let event = move |type_: &str, object: &Value| {
        let object = if as_table {
            let rv = get_str(object, &["metadata", "resourceVersion"]).map(str::to_owned);
            super::table::table(kind, &[object], rv, include.as_deref())
        } else {
            object.clone()
        };
        json!({"type": type_, "object": object})
    };
    tokio::spawn(async move {
        let line = |v: Value| Ok::<_, Infallible>(Bytes::from(format!("{v}\n")));
        let (initial, mut last) = watch_start(&sim, &filter, from, &event);
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
                    if tx.send(line(json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}}}))).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(e) if e.rv > last && filter.matches(e.kind, &e.object) => {
                        last = e.rv;
                        if tx.send(line(event(e.kind_type, &e.object))).await.is_err() { return; }
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

/// What a watch begins with, and the resourceVersion it has reached: every matching object
/// as ADDED (no `resourceVersion`), the history since `from`, or — when `from` is older than
/// the history kept — `Err(from)`, answered 410 Expired.
fn watch_start(
    sim: &KubeSim,
    filter: &Filter,
    from: Option<u64>,
    event: &dyn Fn(&str, &Value) -> Value,
) -> (Result<Vec<Value>, u64>, u64) {
    let kind = filter.kind;
    let mut s = sim.lock();
    s.compact();
    match from {
        None => {
            let adds: Vec<Value> = s
                .objects_in(kind, filter.ns.as_deref())
                .filter(|o| filter.matches(kind, o))
                .map(|o| event("ADDED", o))
                .collect();
            (Ok(adds), s.rv)
        }
        Some(rv) if rv + 1 < s.oldest(kind) => {
            s.expired_watches += 1;
            (Err(rv), s.rv)
        }
        Some(rv) => {
            let replay: Vec<Value> = s
                .history
                .get(&kind)
                .into_iter()
                .flatten()
                .filter(|e| e.rv > rv && filter.matches(e.kind, &e.object))
                .map(|e| event(e.kind_type, &e.object))
                .collect();
            (Ok(replay), s.rv)
        }
    }
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
