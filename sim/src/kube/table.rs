//! The Table form (`meta.k8s.io/v1`) `kubectl get` asks for: the server prints the columns,
//! as the API server's table convertors do (`pkg/printers/internalversion/printers.go`).

use axum::http::HeaderMap;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::resources::Kind;
use super::store::{get, get_i64, get_str, is_terminating};

/// Whether the client asked for a Table (`Accept: application/json;as=Table;…`).
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// A column: name, format, priority (1: only with `-o wide`), description.
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = ("Name", "name", 0, "Name must be unique within a namespace.");
const AGE: Column = (
    "Age",
    "",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// The columns of each kind, as the API server's printers define them.
#[rustfmt::skip]
fn columns(kind: Kind) -> Vec<Value> {
    let table: &[Column] = match kind {
        Kind::Namespace => &[NAME, ("Status", "", 0, "The status of the namespace"), AGE],
        Kind::Pod => &[
            NAME,
            ("Ready", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            ("IP", "", 1, "IP address allocated to the pod."),
            ("Node", "", 1, "Name of the Node this pod is assigned to."),
            ("Nominated Node", "", 1, "Name of the node this pod is nominated to run on."),
            ("Readiness Gates", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Kind::Event => &[
            ("Last Seen", "", 0, "Time when last this event was observed."),
            ("Type", "", 0, "Type of this event (Normal, Warning)."),
            ("Reason", "", 0, "This should be a short, machine understandable string that gives the reason for this event being generated."),
            ("Object", "", 0, "The object that this event is about."),
            ("Subobject", "", 1, "The subobject, if any, this event is about."),
            ("Source", "", 1, "The component reporting this event."),
            ("Message", "", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "", 1, "The time at which the event was first recorded."),
            ("Count", "", 1, "The number of times this event has occurred."),
            ("Name", "name", 1, "Name must be unique within a namespace."),
        ],
        Kind::StatefulSet => &[
            NAME,
            ("Ready", "", 0, "Number of the pod with ready state"),
            AGE,
            ("Containers", "", 1, "Names of each container in the template."),
            ("Images", "", 1, "Images referenced by each container in the template."),
        ],
        Kind::ControllerRevision => &[
            NAME,
            ("Controller", "", 0, "Controller of the object"),
            ("Revision", "", 0, "Revision indicates the revision of the state represented by Data."),
            AGE,
        ],
    };
    table
        .iter()
        .map(|(name, format, priority, description)| {
            json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// How long ago `timestamp` was, as kubectl prints it (`apimachinery/pkg/util/duration`).
pub(super) fn age(timestamp: Option<&str>, now: OffsetDateTime) -> String {
    let Some(t) = timestamp.and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "<unknown>".into();
    };
    human_duration((now - t).max(time::Duration::ZERO))
}

/// `duration.HumanDuration`.
pub(super) fn human_duration(d: time::Duration) -> String {
    let seconds = d.whole_seconds();
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    if seconds < 60 * 2 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let years = hours / 24 / 365;
        match (hours / 24) % 365 {
            0 => format!("{years}y"),
            days => format!("{years}y{days}d"),
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

fn created(o: &Value) -> Option<&str> {
    get_str(o, &["metadata", "creationTimestamp"])
}

/// The pod's STATUS column: a waiting or terminated container's reason, else the phase.
fn pod_status(p: &Value) -> String {
    if is_terminating(p) {
        return "Terminating".into();
    }
    let statuses = get(p, &["status", "containerStatuses"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &statuses {
        if let Some(reason) = c["state"]["waiting"]["reason"].as_str() {
            return reason.to_owned();
        }
        if let Some(reason) = c["state"]["terminated"]["reason"].as_str() {
            return reason.to_owned();
        }
    }
    get_str(p, &["status", "phase"])
        .unwrap_or("Pending")
        .to_owned()
}

fn cells(kind: Kind, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let name = get_str(o, &["metadata", "name"]).unwrap_or_default();
    match kind {
        Kind::Namespace => vec![
            json!(name),
            json!(get_str(o, &["status", "phase"]).unwrap_or("Active")),
            json!(age(created(o), now)),
        ],
        Kind::Pod => pod_cells(name, o, now),
        Kind::Event => event_cells(name, o, now),
        Kind::StatefulSet => statefulset_cells(name, o, now),
        Kind::ControllerRevision => revision_cells(name, o, now),
    }
}

fn pod_cells(name: &str, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let containers = get(o, &["spec", "containers"])
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = get(o, &["status", "containerStatuses"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    vec![
        json!(name),
        json!(format!("{ready}/{containers}")),
        json!(pod_status(o)),
        json!(restarts.to_string()),
        json!(age(created(o), now)),
        json!(get_str(o, &["status", "podIP"]).unwrap_or("<none>")),
        json!(get_str(o, &["spec", "nodeName"]).unwrap_or("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn event_cells(name: &str, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let involved = &o["involvedObject"];
    let object = format!(
        "{}/{}",
        involved["kind"].as_str().unwrap_or_default().to_lowercase(),
        involved["name"].as_str().unwrap_or_default()
    );
    let source = o["source"]["component"].as_str().unwrap_or_default();
    vec![
        json!(age(o["lastTimestamp"].as_str(), now)),
        json!(o["type"].as_str().unwrap_or_default()),
        json!(o["reason"].as_str().unwrap_or_default()),
        json!(object),
        json!(involved["fieldPath"].as_str().unwrap_or_default()),
        json!(source),
        json!(o["message"].as_str().unwrap_or_default()),
        json!(age(o["firstTimestamp"].as_str(), now)),
        json!(o["count"].as_i64().unwrap_or(1)),
        json!(name),
    ]
}

fn statefulset_cells(name: &str, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let containers = get(o, &["spec", "template", "spec", "containers"])
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let listed = |field: &str| -> String {
        let values: Vec<&str> = containers
            .iter()
            .filter_map(|c| c[field].as_str())
            .collect();
        values.join(",")
    };
    vec![
        json!(name),
        json!(format!(
            "{}/{}",
            get_i64(o, &["status", "readyReplicas"]).unwrap_or(0),
            get_i64(o, &["spec", "replicas"]).unwrap_or(1)
        )),
        json!(age(created(o), now)),
        json!(listed("name")),
        json!(listed("image")),
    ]
}

fn revision_cells(name: &str, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let owner = o["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        .map(|r| {
            format!(
                "{}.{}/{}",
                r["kind"].as_str().unwrap_or_default().to_lowercase(),
                r["apiVersion"]
                    .as_str()
                    .and_then(|v| v.split_once('/'))
                    .map_or("", |(g, _)| g),
                r["name"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        json!(name),
        json!(owner),
        json!(o["revision"].as_i64().unwrap_or(0)),
        json!(age(created(o), now)),
    ]
}

/// The row's `object`: as `includeObject` asks (`Metadata` by default).
fn row_object(o: &Value, include: Option<&str>) -> Option<Value> {
    match include {
        Some("None") => None,
        Some("Object") => Some(o.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        })),
    }
}

/// `objects` of `kind` as a Table at `resource_version`.
pub(super) fn table(
    kind: Kind,
    objects: &[&Value],
    resource_version: Option<String>,
    include: Option<&str>,
) -> Value {
    let now = OffsetDateTime::now_utc();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, o, now)});
            if let Some(object) = row_object(o, include) {
                row["object"] = object;
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": columns(kind), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let d = time::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(150)), "2m30s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3 * 3600 + 120)), "3h2m");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(3 * 86400 + 3600)), "3d1h");
        assert_eq!(human_duration(d(40 * 86400)), "40d");
    }

    #[test]
    fn a_crash_looping_pod_shows_its_reason_and_restarts() {
        let pod = json!({"metadata": {"name": "web-0", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table(Kind::Pod, &[&pod], Some("7".into()), None);
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "CrashLoopBackOff");
        assert_eq!(t["rows"][0]["cells"][3], "4");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
