//! Writes: create (POST), replace (PUT), patch (every patch type, and server-side apply) and
//! delete, on objects and on the `status` and `scale` subresources — with dry runs,
//! resourceVersion and UID preconditions, defaulting, the StatefulSet's validation and
//! immutable fields, field ownership, and no write at all when nothing changes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fields::{self, Operation, Writer};
use super::http::{ApiError, not_found};
use super::patch::{self, PatchType};
use super::resources::{Kind, Target};
use super::*;

/// A request for one resource.
pub(super) struct Request {
    pub(super) target: Target,
    pub(super) query: HashMap<String, String>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Request {
    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }

    /// `dryRun=All`: validated and answered, nothing stored.
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.query.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(invalid(
                self.target.kind,
                "",
                "dryRun",
                &format!("Unsupported value: \"{other}\": supported values: \"All\""),
            )),
        }
    }

    /// Who writes: `fieldManager`, else the client's user agent up to its first `/`.
    fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.clone();
        }
        self.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    }

    fn body_json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                &format!("error decoding request body: {e}"),
            )
        })
    }
}

/// A 422 Invalid naming the field, as the API server's validation answers.
pub(super) fn invalid(kind: Kind, name: &str, field: &str, detail: &str) -> ApiError {
    let r = kind.resource();
    let group_kind = match r.group {
        "" => r.name.to_owned(),
        g => format!("{}.{g}", r.name),
    };
    ApiError::new(
        422,
        "Invalid",
        &format!("{group_kind} \"{name}\" is invalid: {field}: {detail}"),
    )
    .with_details(json!({"name": name, "group": r.group, "kind": r.name,
        "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]}))
}

fn conflict(kind: Kind, name: &str, why: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            kind.qualified()
        ),
    )
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// The `autoscaling/v1` Scale of a StatefulSet.
pub(super) fn scale_of(sts: &Value) -> Value {
    let selector = get(sts, &["spec", "selector", "matchLabels"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &sts["metadata"];
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                        "resourceVersion": meta["resourceVersion"],
                        "creationTimestamp": meta["creationTimestamp"]},
           "spec": {"replicas": get_i64(sts, &["spec", "replicas"]).unwrap_or(1)},
           "status": {"replicas": get_i64(sts, &["status", "replicas"]).unwrap_or(0),
                      "selector": selector}})
}

/// The API server's defaults for what clients leave out (`pkg/apis/*/v1/defaults.go`).
pub(super) fn defaults(kind: Kind, o: &mut Value) {
    let pod_spec = |spec: &mut Value| {
        for (k, v) in [
            ("restartPolicy", json!("Always")),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("securityContext", json!({})),
        ] {
            if spec.get(k).is_none() {
                spec[k] = v;
            }
        }
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in containers {
                let latest = c["image"].as_str().is_some_and(|i| {
                    !i.contains('@')
                        && (i.ends_with(":latest")
                            || !i.rsplit('/').next().unwrap_or(i).contains(':'))
                });
                for (k, v) in [
                    (
                        "imagePullPolicy",
                        json!(if latest { "Always" } else { "IfNotPresent" }),
                    ),
                    ("terminationMessagePath", json!("/dev/termination-log")),
                    ("terminationMessagePolicy", json!("File")),
                    ("resources", json!({})),
                ] {
                    if c.get(k).is_none() {
                        c[k] = v;
                    }
                }
            }
        }
    };
    match kind {
        Kind::StatefulSet => {
            let spec = &mut o["spec"];
            if !spec.is_object() {
                return;
            }
            if spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.get("podManagementPolicy").is_none() {
                spec["podManagementPolicy"] = json!("OrderedReady");
            }
            // A type given without `rollingUpdate` keeps it absent (kubectl's check differs).
            if spec["updateStrategy"]["type"].as_str().is_none() {
                spec["updateStrategy"] =
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            }
            if spec.get("revisionHistoryLimit").is_none() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            if spec.get("persistentVolumeClaimRetentionPolicy").is_none() {
                spec["persistentVolumeClaimRetentionPolicy"] =
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
            }
            if spec["template"]["spec"].is_object() {
                pod_spec(&mut spec["template"]["spec"]);
            }
        }
        Kind::Pod if o["spec"].is_object() => pod_spec(&mut o["spec"]),
        _ => {}
    }
}

/// Spec fields of a StatefulSet an update may change (`ValidateStatefulSetUpdate`).
const STS_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// The API server's validation of what is about to be stored (`before`: the stored object, on
/// an update).
fn validate(kind: Kind, before: Option<&Value>, o: &Value) -> Result<(), ApiError> {
    let name = get_str(o, &["metadata", "name"]).unwrap_or_default();
    let fail = |field: &str, detail: &str| Err(invalid(kind, name, field, detail));
    match kind {
        Kind::StatefulSet => {
            let replicas = get_i64(o, &["spec", "replicas"]).unwrap_or(1);
            if replicas < 0 {
                return fail(
                    "spec.replicas",
                    &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                );
            }
            let containers = get(o, &["spec", "template", "spec", "containers"])
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if containers.is_empty() {
                return fail("spec.template.spec.containers", "Required value");
            }
            for (i, c) in containers.iter().enumerate() {
                if c["image"].as_str().is_none_or(str::is_empty) {
                    return fail(
                        &format!("spec.template.spec.containers[{i}].image"),
                        "Required value",
                    );
                }
            }
            let selector = get(o, &["spec", "selector", "matchLabels"]).and_then(Value::as_object);
            let labels = get(o, &["spec", "template", "metadata", "labels"])
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            match selector {
                None => return fail("spec.selector", "Required value"),
                Some(sel) if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) => {
                    return fail(
                        "spec.template.metadata.labels",
                        &format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            Value::Object(labels.clone())
                        ),
                    );
                }
                Some(_) => {}
            }
            if let Some(before) = before {
                let changed = |k: &str| before["spec"].get(k) != o["spec"].get(k);
                let keys: std::collections::BTreeSet<&String> = before["spec"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .chain(o["spec"].as_object().into_iter().flat_map(|m| m.keys()))
                    .collect();
                if keys
                    .iter()
                    .any(|k| !STS_MUTABLE.contains(&k.as_str()) && changed(k))
                {
                    return fail(
                        "spec",
                        "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    );
                }
            }
        }
        Kind::Pod => {
            if let Some(before) = before {
                let images_cleared = |spec: &Value| {
                    let mut spec = spec.clone();
                    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                        for c in cs {
                            c["image"] = Value::Null;
                        }
                    }
                    spec
                };
                if images_cleared(&before["spec"]) != images_cleared(&o["spec"]) {
                    return fail(
                        "spec",
                        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    );
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `POST` to a collection.
pub(super) fn create(sim: &KubeSim, r: &Request) -> Response {
    match try_create(sim, r) {
        Ok(answer) => answer,
        Err(refused) => refused.into_response(),
    }
}

fn try_create(sim: &KubeSim, r: &Request) -> Result<Response, ApiError> {
    let kind = r.target.kind;
    let dry = r.dry_run()?;
    let mut object = r.body_json()?;
    check_type(kind, &object)?;
    let ns = if kind.namespaced() {
        let Some(ns) = r.target.namespace.clone() else {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        };
        if let Some(theirs) = get_str(&object, &["metadata", "namespace"])
            && theirs != ns
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        set(&mut object, &["metadata", "namespace"], json!(ns));
        ns
    } else {
        String::new()
    };
    let name = match (
        get_str(&object, &["metadata", "name"]),
        get_str(&object, &["metadata", "generateName"]),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(prefix)) => {
            // The API server appends five random characters of its safe alphabet.
            let v7 = uuid::Uuid::now_v7().simple().to_string();
            format!("{prefix}{}", &v7[v7.len() - 5..])
        }
        _ => {
            return Err(invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
    };
    set(&mut object, &["metadata", "name"], json!(name));
    let manager = r.manager();
    let created = {
        let mut s = sim.lock();
        if kind.namespaced() && !s.namespaces.contains_key(&(String::new(), ns.clone())) {
            return Err(ApiError::new(
                404,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
            ));
        }
        if s.objects(kind).contains_key(&(ns.clone(), name.clone())) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", kind.qualified()),
            ));
        }
        let uid = s.uid();
        born(kind, &mut object, &uid);
        defaults(kind, &mut object);
        validate(kind, None, &object)?;
        let writer = Writer {
            manager: &manager,
            operation: Operation::Update,
            subresource: None,
            api_version: kind.api_version(),
        };
        fields::updated(None, &mut object, &writer, &now_ts());
        if dry {
            return Ok((StatusCode::CREATED, axum::Json(object)).into_response());
        }
        s.record(kind, "ADDED", object, &sim.events);
        s.objects(kind).get(&(ns.clone(), name.clone())).cloned()
    };
    sim.after_write(kind, &ns, &name, true);
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// What the server sets on an object it creates: uid, creation time, generation, status.
fn born(kind: Kind, object: &mut Value, uid: &str) {
    set(object, &["metadata", "uid"], json!(uid));
    set(object, &["metadata", "creationTimestamp"], json!(now_ts()));
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    match kind {
        Kind::StatefulSet => {
            set(object, &["metadata", "generation"], json!(1));
            object["status"] = json!({"replicas": 0, "availableReplicas": 0});
        }
        Kind::Pod => object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"}),
        Kind::Namespace => object["status"] = json!({"phase": "Active"}),
        _ => {}
    }
}

/// A body's `apiVersion`/`kind`, when given, must be the resource's.
fn check_type(kind: Kind, object: &Value) -> Result<(), ApiError> {
    if let Some(v) = object.get("apiVersion").and_then(Value::as_str)
        && v != kind.api_version()
    {
        return Err(ApiError::new(
            400,
            "BadRequest",
            &format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                kind.api_version()
            ),
        ));
    }
    if let Some(k) = object.get("kind").and_then(Value::as_str)
        && k != kind.name()
    {
        return Err(ApiError::new(
            400,
            "BadRequest",
            &format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.name()
            ),
        ));
    }
    Ok(())
}

/// `PUT` of an object or of its `status` or `scale`.
pub(super) fn replace(sim: &KubeSim, r: &Request) -> Response {
    match try_replace(sim, r) {
        Ok(answer) => answer,
        Err(refused) => refused.into_response(),
    }
}

fn try_replace(sim: &KubeSim, r: &Request) -> Result<Response, ApiError> {
    let kind = r.target.kind;
    let dry = r.dry_run()?;
    let body = r.body_json()?;
    let name = r.name().to_owned();
    if let Some(theirs) = get_str(&body, &["metadata", "name"])
        && theirs != name
    {
        return Err(ApiError::new(
            400,
            "BadRequest",
            &format!(
                "the name of the object ({theirs}) does not match the name on the URL ({name})"
            ),
        ));
    }
    let manager = r.manager();
    let sub = r.target.subresource.as_deref();
    let mut s = sim.lock();
    let ns = r.target.namespace.clone().unwrap_or_default();
    let Some(current) = s.objects(kind).get(&(ns.clone(), name.clone())).cloned() else {
        return Err(not_found(kind, &name));
    };
    if let Some(rv) = get_str(&body, &["metadata", "resourceVersion"])
        && !rv.is_empty()
        && Some(rv) != get_str(&current, &["metadata", "resourceVersion"])
    {
        return Err(conflict(kind, &name, MODIFIED));
    }
    let after = match sub {
        None => {
            check_type(kind, &body)?;
            let mut after = body;
            keep_server_fields(&current, &mut after);
            after
        }
        Some("status") => {
            let mut after = current.clone();
            after["status"] = body.get("status").cloned().unwrap_or(json!({}));
            after
        }
        Some("scale") if kind == Kind::StatefulSet => {
            with_replicas(&current, get_i64(&body, &["spec", "replicas"]))?
        }
        Some(_) => return Err(not_found(kind, &name)),
    };
    let writer = Writer {
        manager: &manager,
        operation: Operation::Update,
        subresource: sub,
        api_version: kind.api_version(),
    };
    let answer = finish(sim, &mut s, kind, &current, after, &writer, dry)?;
    drop(s);
    Ok(axum::Json(if sub == Some("scale") {
        scale_of(&answer)
    } else {
        answer
    })
    .into_response())
}

/// What a client's full object may not change: identity, creation, generation, ownership,
/// status (written through `/status`).
fn keep_server_fields(current: &Value, after: &mut Value) {
    for k in [
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "resourceVersion",
    ] {
        match current["metadata"].get(k) {
            Some(v) => set(after, &["metadata", k], v.clone()),
            None => {
                if let Some(m) = after["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    match current.get("status") {
        Some(st) => after["status"] = st.clone(),
        None => {
            if let Some(o) = after.as_object_mut() {
                o.remove("status");
            }
        }
    }
}

/// The StatefulSet with `spec.replicas` set through its Scale.
fn with_replicas(current: &Value, replicas: Option<i64>) -> Result<Value, ApiError> {
    let name = get_str(current, &["metadata", "name"]).unwrap_or_default();
    let Some(replicas) = replicas.filter(|r| *r >= 0) else {
        return Err(invalid(
            Kind::StatefulSet,
            name,
            "spec.replicas",
            "Invalid value: must be greater than or equal to 0",
        ));
    };
    let mut after = current.clone();
    after["spec"]["replicas"] = json!(replicas);
    Ok(after)
}

/// `PATCH` of an object or of its `status` or `scale`; a server-side apply may create.
pub(super) fn patch(sim: &KubeSim, r: &Request) -> Response {
    match try_patch(sim, r) {
        Ok(answer) => answer,
        Err(refused) => refused.into_response(),
    }
}

/// How a PATCH is to be carried out, checked before the store is touched.
pub(super) struct PatchInput<'a> {
    pub(super) patch_type: PatchType,
    pub(super) content_type: &'a str,
    pub(super) body: Value,
    pub(super) manager: String,
    /// The `fieldManager` query parameter, as sent.
    pub(super) field_manager: Option<String>,
    pub(super) force: bool,
    pub(super) dry_run: bool,
    pub(super) subresource: Option<&'a str>,
}

fn try_patch(sim: &KubeSim, r: &Request) -> Result<Response, ApiError> {
    let kind = r.target.kind;
    let dry_run = r.dry_run()?;
    let content_type = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Some(patch_type) = PatchType::of(&content_type) else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"
            ),
        ));
    };
    let force = match r.query.get("force").map(String::as_str) {
        None => false,
        Some(_) if patch_type != PatchType::Apply => {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        Some(f) => f == "true",
    };
    let body = serde_json::from_slice::<Value>(&r.body)
        .map_err(|e| ApiError::new(400, "BadRequest", &format!("error decoding patch: {e}")))?;
    if patch_type == PatchType::Apply {
        if !r.query.contains_key("fieldManager") {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        if body.get("apiVersion").is_none() || body.get("kind").is_none() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                &format!(
                    "Incorrect version specified in apply patch. Specified patch version: {}, expected: {}",
                    body["apiVersion"].as_str().unwrap_or_default(),
                    kind.api_version()
                ),
            ));
        }
    }
    let input = PatchInput {
        patch_type,
        content_type: &content_type,
        body,
        manager: r.manager(),
        field_manager: r.query.get("fieldManager").cloned(),
        force,
        dry_run,
        subresource: r.target.subresource.as_deref(),
    };
    let ns = r.target.namespace.clone().unwrap_or_default();
    let (answer, status) = {
        let mut s = sim.lock();
        patch_stored(sim, &mut s, kind, &ns, r.name(), input)?
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// Patch the stored object `ns/name` of `kind`; returns what the client is answered.
pub(super) fn patch_stored(
    sim: &KubeSim,
    s: &mut Inner,
    kind: Kind,
    ns: &str,
    name: &str,
    input: PatchInput<'_>,
) -> Result<(Value, StatusCode), ApiError> {
    let current = s
        .objects(kind)
        .get(&(ns.to_owned(), name.to_owned()))
        .cloned();
    let writer = Writer {
        manager: &input.manager,
        operation: if input.patch_type == PatchType::Apply {
            Operation::Apply
        } else {
            Operation::Update
        },
        subresource: input.subresource,
        api_version: kind.api_version(),
    };
    let now = now_ts();
    let Some(current) = current else {
        // An apply creates what does not exist yet.
        if input.patch_type != PatchType::Apply || input.subresource.is_some() {
            return Err(not_found(kind, name));
        }
        let flags = (input.force, input.dry_run);
        return create_by_apply(sim, s, (kind, ns, name), input.body, &writer, flags, &now);
    };
    // A resourceVersion in the body is a precondition, not a change.
    let mut body = input.body;
    let sent = body.clone();
    if let Some(rv) = get_str(&body, &["metadata", "resourceVersion"]) {
        if Some(rv) != get_str(&current, &["metadata", "resourceVersion"]) {
            return Err(conflict(kind, name, MODIFIED));
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
    }
    // The simulator's log of the StatefulSet patches it accepted (tests read it).
    if kind == Kind::StatefulSet && input.subresource.is_none() {
        s.patches.push(PatchRecord {
            content_type: input.content_type.to_owned(),
            field_manager: input.field_manager.clone(),
            body: sent,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            at_rest: controller::at_rest(&current),
            at: time::OffsetDateTime::now_utc(),
            dry_run: input.dry_run,
        });
    }
    // What the patch is applied to: the object, or the Scale a client sees.
    let scale = input.subresource == Some("scale");
    if scale && kind != Kind::StatefulSet {
        return Err(not_found(kind, name));
    }
    let mut view = if scale {
        scale_of(&current)
    } else {
        current.clone()
    };
    match input.patch_type {
        PatchType::Merge => patch::merge_patch(&mut view, &body),
        PatchType::Strategic => {
            patch::strategic(&mut view, &body).map_err(|e| ApiError::new(400, "BadRequest", &e))?
        }
        PatchType::Json => patch::json_patch(&mut view, &body).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                &format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?,
        PatchType::Apply => {
            view = fields::apply(Some(&current), &body, &writer, input.force, &now)
                .map_err(|c| apply_conflict(kind, name, &c))?;
        }
    }
    let after = patched(&current, view, input.patch_type, input.subresource)?;
    let answer = finish(sim, s, kind, &current, after, &writer, input.dry_run)?;
    Ok((
        if scale { scale_of(&answer) } else { answer },
        StatusCode::OK,
    ))
}

/// Server-side apply of `input` to `kind` `ns/name`, which does not exist yet: created, owned
/// by the applier (kubectl apply --server-side on a fresh cluster).
fn create_by_apply(
    sim: &KubeSim,
    s: &mut Inner,
    (kind, ns, name): (Kind, &str, &str),
    mut config: Value,
    writer: &Writer<'_>,
    (force, dry_run): (bool, bool),
    now: &str,
) -> Result<(Value, StatusCode), ApiError> {
    if kind.namespaced() && !s.namespaces.contains_key(&(String::new(), ns.to_owned())) {
        return Err(ApiError::new(
            404,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
        ));
    }
    set(&mut config, &["metadata", "name"], json!(name));
    if kind.namespaced() {
        set(&mut config, &["metadata", "namespace"], json!(ns));
    }
    let mut object = fields::apply(None, &config, writer, force, now)
        .map_err(|c| apply_conflict(kind, name, &c))?;
    let uid = s.uid();
    let managed = object["metadata"]["managedFields"].clone();
    born(kind, &mut object, &uid);
    object["metadata"]["managedFields"] = managed;
    defaults(kind, &mut object);
    validate(kind, None, &object)?;
    if dry_run {
        return Ok((object, StatusCode::CREATED));
    }
    s.record(kind, "ADDED", object, &sim.events);
    let stored = s
        .objects(kind)
        .get(&(ns.to_owned(), name.to_owned()))
        .cloned();
    sim.after_write_locked(s, kind, ns, name, true);
    Ok((stored.unwrap_or_default(), StatusCode::CREATED))
}

/// The object after a patch of its `view` (the object, or its Scale): through `/scale` only the
/// replicas change, through `/status` only the status, through the object everything else.
fn patched(
    current: &Value,
    mut view: Value,
    patch_type: PatchType,
    subresource: Option<&str>,
) -> Result<Value, ApiError> {
    // An apply's ownership is computed with the merge; the other patches' by `finish`.
    let applied_fields =
        (patch_type == PatchType::Apply).then(|| view["metadata"]["managedFields"].clone());
    let mut after = match subresource {
        Some("scale") => with_replicas(current, get_i64(&view, &["spec", "replicas"]))?,
        Some("status") => {
            let mut after = current.clone();
            after["status"] = view.get("status").cloned().unwrap_or(json!({}));
            after
        }
        _ => {
            keep_server_fields(current, &mut view);
            view
        }
    };
    if let Some(managed) = applied_fields {
        after["metadata"]["managedFields"] = managed;
    }
    Ok(after)
}

fn apply_conflict(kind: Kind, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let r = kind.resource();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                        "field": c.field}))
        .collect();
    ApiError::new(409, "Conflict", &fields::conflict_message(conflicts))
        .with_details(json!({"name": name, "group": r.group, "kind": r.plural, "causes": causes}))
}

/// The end of every update: defaults, validation, the generation, ownership, then — unless
/// nothing changed or it is a dry run — the write. Returns the object as the client sees it.
fn finish(
    sim: &KubeSim,
    s: &mut Inner,
    kind: Kind,
    current: &Value,
    mut after: Value,
    writer: &Writer<'_>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    defaults(kind, &mut after);
    validate(kind, Some(current), &after)?;
    if kind == Kind::StatefulSet && after.get("spec") != current.get("spec") {
        let g = get_i64(current, &["metadata", "generation"]).unwrap_or(1) + 1;
        set(&mut after, &["metadata", "generation"], json!(g));
    }
    if writer.operation == Operation::Update {
        fields::updated(Some(current), &mut after, writer, &now_ts());
    }
    // A write that changes nothing is not a write: same resourceVersion, no event.
    if fields::same_but_times(current, &after) {
        return Ok(current.clone());
    }
    if dry_run {
        return Ok(after);
    }
    let ns = get_str(&after, &["metadata", "namespace"])
        .unwrap_or_default()
        .to_owned();
    let name = get_str(&after, &["metadata", "name"])
        .unwrap_or_default()
        .to_owned();
    s.record(kind, "MODIFIED", after, &sim.events);
    let stored = s
        .objects(kind)
        .get(&(ns.clone(), name.clone()))
        .cloned()
        .unwrap_or_default();
    sim.after_write_locked(s, kind, &ns, &name, false);
    Ok(stored)
}

/// `DELETE` of an object: a pod gracefully (Terminating, then gone), a StatefulSet with its
/// pods and revisions (the garbage collector's background deletion), the rest at once.
pub(super) fn delete(sim: &KubeSim, r: &Request) -> Response {
    match try_delete(sim, r) {
        Ok(answer) => answer,
        Err(refused) => refused.into_response(),
    }
}

fn try_delete(sim: &KubeSim, r: &Request) -> Result<Response, ApiError> {
    let kind = r.target.kind;
    let dry = r.dry_run()?;
    let name = r.name().to_owned();
    let ns = r.target.namespace.clone().unwrap_or_default();
    if kind == Kind::Namespace {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the simulator does not delete namespaces",
        ));
    }
    // DeleteOptions may carry preconditions: a pod recreated under the same name since the
    // client looked is not the one it meant, and the API server refuses with 409.
    let options: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut s = sim.lock();
    let key = (ns.clone(), name.clone());
    let Some(current) = s.objects(kind).get(&key).cloned() else {
        return Err(not_found(kind, &name));
    };
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(expected) = options["preconditions"][field].as_str()
            && Some(expected) != get_str(&current, &["metadata", field])
        {
            return Err(conflict(
                kind,
                &name,
                &format!(
                    "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {}",
                    get_str(&current, &["metadata", field]).unwrap_or_default()
                ),
            ));
        }
    }
    if dry {
        return Ok(axum::Json(current).into_response());
    }
    match kind {
        Kind::Pod => {
            s.begin_delete(&ns, &name, &sim.events);
            let terminating = s.pods.get(&key).cloned().unwrap_or(current);
            drop(s);
            sim.finish_delete_later(ns, name);
            return Ok(axum::Json(terminating).into_response());
        }
        Kind::StatefulSet => {
            s.record(kind, "DELETED", current.clone(), &sim.events);
            let uid = get_str(&current, &["metadata", "uid"]).unwrap_or_default();
            let owned =
                |o: &Value| o["metadata"]["ownerReferences"][0]["uid"].as_str() == Some(uid);
            let revisions: Vec<Value> =
                s.revisions.values().filter(|o| owned(o)).cloned().collect();
            for rev in revisions {
                s.record(Kind::ControllerRevision, "DELETED", rev, &sim.events);
            }
            let pods: Vec<String> = s
                .pods
                .iter()
                .filter(|((n, _), p)| *n == ns && owned(p))
                .map(|((_, p), _)| p.clone())
                .collect();
            for pod in &pods {
                s.begin_delete(&ns, pod, &sim.events);
            }
            s.refused_pods.remove(&key);
            drop(s);
            for pod in pods {
                sim.finish_delete_later(ns.clone(), pod);
            }
        }
        _ => {
            s.record(kind, "DELETED", current.clone(), &sim.events);
            drop(s);
        }
    }
    let r = kind.resource();
    Ok(axum::Json(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": r.group, "kind": r.plural,
                    "uid": current["metadata"]["uid"]}}),
    )
    .into_response())
}
