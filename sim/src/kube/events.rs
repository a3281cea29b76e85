//! Events (`v1` Event) as the controllers and the kubelet record them: one object per
//! involved object, reason and message, counted up when it happens again (the event
//! recorder's aggregation), so a rollout stuck on something only an Event names can be told.

use serde_json::{Value, json};

use super::*;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Normal,
    Warning,
}

impl Inner {
    /// Record that `reason` happened to `involved` (a stored object), said by `component`.
    pub(super) fn event(
        &mut self,
        involved: &Value,
        type_: EventType,
        reason: &str,
        message: &str,
        component: &str,
        tx: &Watchers,
    ) {
        let ns = get_str(involved, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_owned();
        let uid = get_str(involved, &["metadata", "uid"]).unwrap_or_default();
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let now = now_ts();
        let key = format!("{ns}\u{0}{uid}\u{0}{reason}\u{0}{message}\u{0}{component}");
        let same = self.event_keys.get(&key).and_then(|k| self.events.get(k));
        if let Some(existing) = same {
            let mut e = existing.clone();
            e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
            e["lastTimestamp"] = json!(now);
            self.record(Kind::Event, "MODIFIED", e, tx);
            return;
        }
        let involved_name = get_str(involved, &["metadata", "name"]).unwrap_or_default();
        self.next_uid += 1;
        let name = format!(
            "{involved_name}.{:016x}",
            0x1880_0000_0000_0000_u64 + self.next_uid
        );
        let event_uid = self.uid();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns, "uid": event_uid, "creationTimestamp": now},
            "involvedObject": {"kind": involved["kind"], "namespace": ns, "name": involved_name,
                               "uid": uid, "apiVersion": involved["apiVersion"],
                               "resourceVersion": involved["metadata"]["resourceVersion"]},
            "reason": reason, "message": message,
            "source": {"component": component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": type_,
            "eventTime": null, "reportingComponent": component, "reportingInstance": ""
        });
        self.event_keys.insert(key, (ns, name));
        self.record(Kind::Event, "ADDED", event, tx);
    }
}
