//! Field ownership (`metadata.managedFields`) and server-side apply, as the API server's field
//! manager keeps them (`k8s.io/apimachinery/pkg/util/managedfields`, structured-merge-diff):
//! every write makes the fields it changed its manager's; an apply owns exactly the fields of
//! its configuration, takes back the ones it no longer applies, and fails with 409 Conflict on
//! a field another manager set to another value, unless forced.
//!
//! A field is a path in `fieldsV1` notation: `f:<name>` for a map key, `k:{"name":"app"}` for a
//! list item by its merge key (with `.` for the item itself), `v:<json>` for a member of a set.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::{merge_key, merges_as_set};

/// One field, as its `fieldsV1` path.
pub(super) type Path = Vec<String>;
/// The fields a manager owns.
pub(super) type FieldSet = BTreeSet<Path>;

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub(super) struct Writer<'a> {
    pub(super) manager: &'a str,
    pub(super) operation: Operation,
    /// `status`, `scale`, or the main resource (`None`).
    pub(super) subresource: Option<&'a str>,
    pub(super) api_version: &'a str,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    api_version: String,
    time: String,
    fields: FieldSet,
}

impl Entry {
    fn of(&self, w: &Writer<'_>) -> bool {
        self.manager == w.manager
            && self.operation == w.operation.as_str()
            && self.subresource.as_deref() == w.subresource
    }
}

/// Metadata the server keeps for itself: nobody owns it.
const SERVER_OWNED: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// The fields set in `object` (status only for the `status` subresource, everything else
/// otherwise).
pub(super) fn fields_of(object: &Value, subresource: Option<&str>) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(o) = object.as_object() else {
        return out;
    };
    for (k, v) in o {
        let is_status = k == "status";
        if k == "apiVersion" || k == "kind" || is_status != (subresource == Some("status")) {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m
                    .iter()
                    .filter(|(mk, _)| !SERVER_OWNED.contains(&mk.as_str()))
                {
                    let mut p = path.clone();
                    p.push(format!("f:{mk}"));
                    flatten(mv, mk, p, &mut out);
                }
            }
            continue;
        }
        flatten(v, k, path, &mut out);
    }
    out
}

fn flatten(v: &Value, field: &str, path: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                flatten(v, k, p, out);
            }
        }
        Value::Array(items) => match merge_key(field) {
            Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(item_key(key, item));
                    let mut itself = p.clone();
                    itself.push(".".into());
                    out.insert(itself);
                    flatten(item, "", p, out);
                }
            }
            _ if merges_as_set(field) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            _ => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

fn item_key(key: &str, item: &Value) -> String {
    format!("k:{}", json!({ key: item[key] }))
}

/// The value at `path` in `object`, if it is set.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = object;
    for step in path {
        if step == "." {
            return Some(cur);
        }
        if let Some(name) = step.strip_prefix("f:") {
            cur = cur.get(name)?;
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))?;
        } else if let Some(member) = step.strip_prefix("v:") {
            let member: Value = serde_json::from_str(member).ok()?;
            return cur.as_array()?.iter().find(|i| **i == member);
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Whether the field at `path` differs between `a` and `b`: its value, or for a list item
/// itself (`.`), whether it is there.
fn differs(a: &Value, b: &Value, path: &[String]) -> bool {
    if path.last().is_some_and(|l| l == ".") {
        value_at(a, path).is_some() != value_at(b, path).is_some()
    } else {
        value_at(a, path) != value_at(b, path)
    }
}

/// Remove the field at `path` from `object`.
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        // The list item itself: remove it from its list.
        if let Some((item, list_path)) = parents.split_last() {
            remove_at_item(object, list_path, item);
        }
        return;
    }
    let mut cur = &mut *object;
    for step in parents {
        let next = if let Some(name) = step.strip_prefix("f:") {
            cur.get_mut(name)
        } else if let Some(key) = step.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else {
                return;
            };
            cur.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if last.starts_with("v:") || last.starts_with("k:") {
        remove_at_item(object, parents, last);
    }
}

fn remove_at_item(object: &mut Value, list_path: &[String], item: &str) {
    let mut cur = &mut *object;
    for step in list_path {
        let Some(name) = step.strip_prefix("f:") else {
            return;
        };
        match cur.get_mut(name) {
            Some(n) => cur = n,
            None => return,
        }
    }
    let Some(items) = cur.as_array_mut() else {
        return;
    };
    if let Some(key) = item.strip_prefix("k:") {
        if let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) {
            items.retain(|i| !key.iter().all(|(k, v)| i.get(k) == Some(v)));
        }
    } else if let Some(member) = item.strip_prefix("v:")
        && let Ok(member) = serde_json::from_str::<Value>(member)
    {
        items.retain(|i| *i != member);
    }
}

/// How a conflict names a field: `.spec.template.spec.containers[name="app"].image`.
fn describe(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(name) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = step.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(member) = step.strip_prefix("v:") {
            out.push_str(&format!("[{member}]"));
        }
    }
    out
}

fn to_fields_v1(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for step in path {
            cur = cur
                .entry(step.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        path.push(k.clone());
        from_fields_v1(child, path, out);
        path.pop();
    }
}

fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let mut fields = FieldSet::new();
                    from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
                    Entry {
                        manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                        operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                        subresource: e["subresource"].as_str().map(str::to_owned),
                        api_version: e["apiVersion"].as_str().unwrap_or("v1").to_owned(),
                        time: e["time"].as_str().unwrap_or_default().to_owned(),
                        fields,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(object: &mut Value, list: Vec<Entry>) {
    let rendered: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation,
                "apiVersion": e.api_version, "time": e.time, "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields)});
            if let Some(s) = e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(rendered));
        }
    }
}

/// The entry of `w` in `list`, made if missing.
fn entry_of<'a>(list: &'a mut Vec<Entry>, w: &Writer<'_>, now: &str) -> &'a mut Entry {
    let i = match list.iter().position(|e| e.of(w)) {
        Some(i) => i,
        None => {
            list.push(Entry {
                manager: w.manager.to_owned(),
                operation: w.operation.as_str().to_owned(),
                subresource: w.subresource.map(str::to_owned),
                api_version: w.api_version.to_owned(),
                time: now.to_owned(),
                fields: FieldSet::new(),
            });
            list.len() - 1
        }
    };
    &mut list[i]
}

/// After an update by `w` turned `before` (none: a create) into `after`: the fields it changed
/// become its own and no one else's; the fields it removed are no one's. `after` gets the
/// resulting `managedFields`.
pub(super) fn updated(before: Option<&Value>, after: &mut Value, w: &Writer<'_>, now: &str) {
    let mut list = before.map(entries).unwrap_or_default();
    let old = before
        .map(|b| fields_of(b, w.subresource))
        .unwrap_or_default();
    let new = fields_of(after, w.subresource);
    let changed: FieldSet = new
        .iter()
        .filter(|p| before.is_none_or(|b| differs(b, after, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old.difference(&new).cloned().collect();
    for e in &mut list {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let mine = entry_of(&mut list, w, now);
        mine.fields.extend(changed);
        mine.time = now.to_owned();
        mine.api_version = w.api_version.to_owned();
    }
    store_entries(after, list);
}

/// A field another manager set to another value than an apply asks for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Conflict {
    pub(super) manager: String,
    pub(super) api_version: String,
    pub(super) field: String,
}

/// Server-side apply of `config` by `w` over `live` (none: the apply creates it). Returns the
/// object to store, or the conflicts that refuse it when not `force`d.
pub(super) fn apply(
    live: Option<&Value>,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut list = live.map(entries).unwrap_or_default();
    let applied = fields_of(config, w.subresource);
    let mut conflicts = Vec::new();
    if let Some(live) = live {
        for e in list.iter_mut().filter(|e| !e.of(w)) {
            let clashing: Vec<Path> = e
                .fields
                .iter()
                .filter(|p| applied.contains(*p) && differs(live, config, p))
                .cloned()
                .collect();
            if force {
                e.fields.retain(|p| !clashing.contains(p));
            } else {
                conflicts.extend(clashing.iter().map(|p| Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: describe(p),
                }));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut object = match live {
        Some(live) => {
            let mut merged = live.clone();
            let mut body = config.clone();
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.retain(|k, _| !SERVER_OWNED.contains(&k.as_str()));
            }
            if w.subresource != Some("status")
                && let Some(o) = body.as_object_mut()
            {
                o.remove("status");
            }
            // Without directives, a strategic merge is the merge an apply makes.
            let _ = super::patch::strategic(&mut merged, &body);
            merged
        }
        None => config.clone(),
    };
    // What this manager applied before and applies no more, and nobody else owns, goes.
    let before = list
        .iter()
        .find(|e| e.of(w))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in before.difference(&applied) {
        // A list item stays while another manager owns anything in it.
        let scope = match p.split_last() {
            Some((last, item)) if last == "." => item,
            _ => p.as_slice(),
        };
        if !list
            .iter()
            .any(|e| !e.of(w) && e.fields.iter().any(|f| f.starts_with(scope)))
        {
            remove_at(&mut object, p);
        }
    }
    let mine = entry_of(&mut list, w, now);
    mine.fields = applied;
    mine.time = now.to_owned();
    store_entries(&mut object, list);
    Ok(object)
}

/// The 409 an apply with conflicts gets.
pub(super) fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: Vec<String> = Vec::new();
    for c in conflicts {
        by_manager.push(format!(
            "conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.field
        ));
    }
    format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        by_manager.join("\n")
    )
}

/// `managedFields` compared without their times: a write that changes no field and no owner is
/// no write.
pub(super) fn same_but_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v["metadata"]["managedFields"].as_array_mut() {
            for e in list {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(manager: &'a str, operation: Operation) -> Writer<'a> {
        Writer {
            manager,
            operation,
            subresource: None,
            api_version: "apps/v1",
        }
    }

    fn config(image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn an_apply_owns_its_fields_and_conflicts_with_another_managers_value() {
        let created = apply(
            None,
            &config("x:1"),
            &w("ansible", Operation::Apply),
            false,
            "t",
        )
        .unwrap();
        let fields = &created["metadata"]["managedFields"][0];
        assert_eq!(fields["manager"], "ansible");
        assert_eq!(fields["operation"], "Apply");
        assert!(
            fields["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"]
                .is_object(),
            "{fields}"
        );
        // Another manager applying the same value shares the field; another value conflicts.
        apply(
            Some(&created),
            &config("x:1"),
            &w("kubectl", Operation::Apply),
            false,
            "t",
        )
        .unwrap();
        let refused = apply(
            Some(&created),
            &config("x:2"),
            &w("kubectl", Operation::Apply),
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].manager, "ansible");
        assert_eq!(
            refused[0].field,
            ".spec.template.spec.containers[name=\"app\"].image"
        );
        assert!(
            conflict_message(&refused).starts_with(
                "Apply failed with 1 conflict: conflict with \"ansible\" using apps/v1"
            )
        );
        // Forced, it takes the field over.
        let forced = apply(
            Some(&created),
            &config("x:2"),
            &w("kubectl", Operation::Apply),
            true,
            "t",
        )
        .unwrap();
        assert_eq!(
            forced["spec"]["template"]["spec"]["containers"][0]["image"],
            "x:2"
        );
        let owners: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["ansible", "kubectl"]);
        assert!(
            !forced["metadata"]["managedFields"][0]["fieldsV1"]
                .to_string()
                .contains("f:image")
        );
    }

    #[test]
    fn an_update_takes_what_it_changed_and_an_apply_drops_what_it_no_longer_applies() {
        let mut live = apply(
            None,
            &config("x:1"),
            &w("ansible", Operation::Apply),
            false,
            "t",
        )
        .unwrap();
        let before = live.clone();
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x:9");
        updated(
            Some(&before),
            &mut live,
            &w("conveyor", Operation::Update),
            "t",
        );
        let entries = live["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[1]["manager"], "conveyor");
        assert!(entries[1]["fieldsV1"].to_string().contains("f:image"));
        assert!(!entries[0]["fieldsV1"].to_string().contains("f:image"));
        // The applier's configuration grows a label, then drops it: the label goes too.
        let mut labelled = config("x:9");
        labelled["metadata"]["labels"] = json!({"team": "xchem"});
        let with = apply(
            Some(&live),
            &labelled,
            &w("ansible", Operation::Apply),
            false,
            "t",
        )
        .unwrap();
        assert_eq!(with["metadata"]["labels"]["team"], "xchem");
        let without = apply(
            Some(&with),
            &config("x:9"),
            &w("ansible", Operation::Apply),
            false,
            "t",
        )
        .unwrap();
        assert!(
            without["metadata"]
                .get("labels")
                .is_none_or(|l| l.get("team").is_none()),
            "{without}"
        );
    }
}
