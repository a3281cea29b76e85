//! The four PATCH bodies the API server accepts: JSON merge patch (RFC 7386), strategic merge
//! patch with its directives (`$patch`, `$setElementOrder/…`, `$retainKeys`,
//! `$deleteFromPrimitiveList/…`) and the Go types' merge keys, JSON patch (RFC 6902), and the
//! merge server-side apply makes of a configuration (`apimachinery/pkg/util/strategicpatch`).

use serde_json::{Map, Value};

/// How a PATCH body is read, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` (parameters ignored).
    pub(super) fn of(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// The `patchMergeKey` of a list field of the types served (PodSpec, Container, ObjectMeta,
/// PodStatus, StatefulSetSpec): its items merge by this key instead of the list being replaced.
pub(super) fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Lists of scalars merged as sets (`patchStrategy: merge` without a key).
pub(super) fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// RFC 7386: objects merge, `null` removes, anything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Apply a strategic merge patch to `target`.
pub(super) fn strategic(target: &mut Value, patch: &Value) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_map(t, p),
        (t, p) => {
            *t = strip(p);
            Ok(())
        }
    }
}

/// A value taken whole from a patch: its directives have nothing to act on.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(original: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    match patch.get("$patch").map(|d| d.as_str().unwrap_or_default()) {
        Some("replace") => {
            *original = strip(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Ok(());
        }
        Some("delete") => {
            original.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    if let Some(keys) = patch.get("$retainKeys") {
        let keys: Vec<&str> = keys
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            original.remove(k);
            continue;
        }
        match (original.get_mut(k), v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    original.remove(k);
                } else {
                    merge_map(o, p)?;
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => merge_list(k, o, p)?,
            (_, Value::Object(p)) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                original.remove(k);
            }
            (_, v) => {
                original.insert(k.clone(), strip(v));
            }
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|item| !gone.contains(item));
            }
        }
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(field, list, &order);
            }
        }
    }
    Ok(())
}

/// `$setElementOrder`: the listed items in the listed order, then the ones only the server had,
/// in their order.
fn reorder(field: &str, list: &mut Vec<Value>, order: &[Value]) {
    let same = |a: &Value, b: &Value| match merge_key(field) {
        Some(key) => a.get(key).is_some() && a.get(key) == b.get(key),
        None => a == b,
    };
    let mut ordered: Vec<Value> = order
        .iter()
        .filter_map(|o| list.iter().find(|i| same(i, o)).cloned())
        .collect();
    ordered.extend(
        list.iter()
            .filter(|i| !order.iter().any(|o| same(i, o)))
            .cloned(),
    );
    *list = ordered;
}

fn merge_list(field: &str, original: &mut Vec<Value>, patch: &[Value]) -> Result<(), String> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *original = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip)
            .collect();
        return Ok(());
    }
    if let Some(key) = merge_key(field)
        && patch.iter().all(Value::is_object)
    {
        for item in patch {
            let Some(id) = item.get(key) else {
                return Err(format!(
                    "map: {item} does not contain declared merge key: {key}"
                ));
            };
            let position = original.iter().position(|o| o.get(key) == Some(id));
            match (item.get("$patch").and_then(Value::as_str), position) {
                (Some("delete"), Some(i)) => {
                    original.remove(i);
                }
                (Some("delete"), None) => {}
                (_, Some(i)) => {
                    if let (Value::Object(o), Value::Object(p)) = (&mut original[i], item) {
                        merge_map(o, p)?;
                    }
                }
                (_, None) => original.push(strip(item)),
            }
        }
        return Ok(());
    }
    if merges_as_set(field) {
        for item in patch {
            if !original.contains(item) {
                original.push(item.clone());
            }
        }
        return Ok(());
    }
    *original = patch.iter().map(strip).collect();
    Ok(())
}

/// RFC 6902.
pub(super) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts() -> Value {
        json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "x:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "s:1"}]}}}})
    }

    #[test]
    fn kubectl_set_image_consumes_its_element_order() {
        let mut t = sts();
        strategic(
            &mut t,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "x:2"}]}}}}),
        )
        .unwrap();
        let containers = &t["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "sidecar");
        assert_eq!(containers[1]["image"], "x:2");
        assert_eq!(containers[1]["ports"][0]["containerPort"], 80);
        assert!(!t.to_string().contains('$'), "{t}");
    }

    #[test]
    fn directives_replace_delete_and_retain() {
        // A ControllerRevision's data, as `kubectl rollout undo` sends it.
        let mut t = sts();
        strategic(
            &mut t,
            &json!({"spec": {"template": {"$patch": "replace",
                "spec": {"containers": [{"name": "app", "image": "x:0"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            t["spec"]["template"],
            json!({"spec": {"containers": [{"name": "app", "image": "x:0"}]}})
        );

        let mut t = sts();
        strategic(
            &mut t,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let mut t =
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
        strategic(
            &mut t,
            &json!({"strategy": {"$retainKeys": ["type"], "type": "OnDelete"}}),
        )
        .unwrap();
        assert_eq!(t, json!({"strategy": {"type": "OnDelete"}}));

        let mut t = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(t["metadata"]["finalizers"], json!(["b", "c"]));

        let mut t = sts();
        assert!(
            strategic(
                &mut t,
                &json!({"spec": {"template": {"spec": {"containers": [{"image": "nameless"}]}}}})
            )
            .unwrap_err()
            .contains("merge key")
        );
    }

    #[test]
    fn a_merge_patch_replaces_lists_and_removes_nulls() {
        let mut t = sts();
        merge_patch(
            &mut t,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:2"}]}}}}),
        );
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "x:2"}])
        );
        merge_patch(&mut t, &json!({"spec": {"template": null}}));
        assert_eq!(t, json!({"spec": {}}));
    }

    #[test]
    fn json_patch_tests_and_replaces() {
        let mut t = sts();
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "x:1"},
                    {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:3"}]),
        )
        .unwrap();
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"][0]["image"],
            "x:3"
        );
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "x:1"}])
            )
            .is_err()
        );
    }
}
