//! The tracker on views shaped like the contract's timeline (3 replicas, revision A → B).

use super::*;
use serde_json::json;

fn sts(
    generation: i64,
    observed: i64,
    current: &str,
    update: &str,
    counts: [i32; 4],
) -> StatefulSet {
    let [replicas, ready, cur, updated] = counts;
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "generation": generation},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "x"}]}}},
        "status": {"replicas": replicas, "readyReplicas": ready, "currentReplicas": cur, "updatedReplicas": updated,
                   "observedGeneration": observed, "currentRevision": current, "updateRevision": update}
    }))
    .unwrap()
}

/// A pod: `state` is `ready`, `pending` or `terminating`.
fn pod(ordinal: u32, rev: &str, uid: &str, state: &str, at: &str) -> (String, Pod) {
    let name = format!("web-{ordinal}");
    let mut p = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": at,
                     "labels": {"app": "web", "controller-revision-hash": rev}},
        "status": {"phase": "Pending"}
    });
    match state {
        "ready" => {
            p["status"] = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at}]});
        }
        "terminating" => {
            p["status"] = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at}]});
            p["metadata"]["deletionTimestamp"] = json!(at);
        }
        _ => {}
    }
    (name, serde_json::from_value(p).unwrap())
}

fn at(s: u32) -> String {
    format!("2026-11-27T12:00:{s:02}Z")
}

fn t(s: u32) -> OffsetDateTime {
    OffsetDateTime::parse(&at(s), &time::format_description::well_known::Rfc3339).unwrap()
}

fn steps(obs: &[Observation]) -> Vec<String> {
    obs.iter()
        .map(|o| match o {
            Observation::Started(s) => format!("started {}", s.to_revision),
            Observation::Progress(p) => format!("{} {:?}", p.pod, p.step),
            Observation::Stalled(s) => format!("stalled {} {}", s.pod, s.reason),
            Observation::Completed(c) => format!("completed {}", c.revision),
        })
        .collect()
}

#[test]
fn the_contract_timeline_reports_each_pod_in_reverse_order_and_completes_once() {
    let old = |o| pod(o, "web-a", &format!("old-{o}"), "ready", &at(0));
    let mut pods: BTreeMap<String, Pod> = [old(0), old(1), old(2)].into();
    let steady = sts(1, 1, "web-a", "web-a", [3, 3, 3, 3]);
    let mut tr = Tracker::new("staging", &steady, t(1), Some("web-a".into()), &pods);
    assert!(tr.observe(&steady, &pods, t(1)).is_empty());

    // Row 1: patched, not yet synced — looks done, is not.
    let row1 = sts(2, 1, "web-a", "web-a", [3, 3, 3, 3]);
    assert!(
        tr.observe(&row1, &pods, t(1)).is_empty(),
        "stale status must not complete"
    );

    // Row 2: revision B, web-2 terminating.
    let (n, p) = pod(2, "web-a", "old-2", "terminating", &at(2));
    pods.insert(n, p);
    let obs = tr.observe(&sts(2, 2, "web-a", "web-b", [3, 3, 2, 0]), &pods, t(2));
    assert_eq!(steps(&obs), ["started web-b", "web-2 Deleted"]);

    let mut script = Vec::new();
    for (ordinal, ready_row) in [(2u32, 4u32), (1, 6), (0, 8)] {
        // Recreated, Pending.
        let (n, p) = pod(
            ordinal,
            "web-b",
            &format!("new-{ordinal}"),
            "pending",
            &at(ready_row - 1),
        );
        pods.insert(n, p);
        let updated = 3 - ordinal as i32;
        let cur = ordinal as i32;
        script.extend(steps(&tr.observe(
            &sts(2, 2, "web-a", "web-b", [3, 2, cur, updated]),
            &pods,
            t(ready_row - 1),
        )));
        // Ready; the next pod is deleted in the same sync.
        let (n, p) = pod(
            ordinal,
            "web-b",
            &format!("new-{ordinal}"),
            "ready",
            &at(ready_row),
        );
        pods.insert(n, p);
        let done = ordinal == 0;
        if !done {
            let (n, p) = pod(
                ordinal - 1,
                "web-a",
                &format!("old-{}", ordinal - 1),
                "terminating",
                &at(ready_row),
            );
            pods.insert(n, p);
        }
        let view = if done {
            sts(2, 2, "web-b", "web-b", [3, 3, 3, 3])
        } else {
            sts(2, 2, "web-a", "web-b", [3, 3, cur - 1, updated])
        };
        let obs = tr.observe(&view, &pods, t(ready_row));
        if let Some(Observation::Completed(c)) = obs.last() {
            assert_eq!(c.last_ready_at, Some(t(8)));
            assert_eq!(c.pods.len(), 3);
            assert!(c.pods.iter().all(|p| p.ready.is_some()));
        }
        script.extend(steps(&obs));
    }
    assert_eq!(
        script,
        [
            "web-2 Created",
            "web-2 Ready",
            "web-1 Deleted",
            "web-1 Created",
            "web-1 Ready",
            "web-0 Deleted",
            "web-0 Created",
            "web-0 Ready",
            "completed web-b",
        ]
    );
    // Nothing is reported twice.
    let again = tr.observe(&sts(2, 2, "web-b", "web-b", [3, 3, 3, 3]), &pods, t(9));
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn kubectl_rule_with_and_without_partition() {
    let mut s = sts(2, 2, "web-a", "web-b", [3, 3, 1, 2]);
    assert!(!is_complete(&s), "unpartitioned needs every pod updated");
    s.spec
        .as_mut()
        .unwrap()
        .update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(1);
    assert!(
        is_complete(&s),
        "partition 1: 2 of 3 updated is complete, revisions differ"
    );
    let behind = sts(3, 2, "web-b", "web-b", [3, 3, 3, 3]);
    assert!(
        !is_complete(&behind),
        "observedGeneration behind generation"
    );
    let unready = sts(2, 2, "web-b", "web-b", [3, 2, 3, 3]);
    assert!(!is_complete(&unready));
}

#[test]
fn a_crash_looping_or_unpullable_pod_is_a_stall_reported_once() {
    let pods: BTreeMap<String, Pod> = [pod(0, "web-a", "old-0", "ready", &at(0))].into();
    let mut tr = Tracker::new(
        "staging",
        &sts(1, 1, "web-a", "web-a", [1, 1, 1, 1]),
        t(0),
        Some("web-a".into()),
        &pods,
    );
    let mut crashing: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "uid": "new-0", "creationTimestamp": at(2), "labels": {"controller-revision-hash": "web-b"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
    }))
    .unwrap();
    let view = sts(2, 2, "web-a", "web-b", [1, 0, 0, 1]);
    let pods: BTreeMap<String, Pod> = [("web-0".to_string(), crashing.clone())].into();
    let obs = tr.observe(&view, &pods, t(3));
    let stalls: Vec<_> = obs
        .iter()
        .filter_map(|o| match o {
            Observation::Stalled(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stalls.len(), 1);
    assert_eq!(stalls[0].reason, "CrashLoopBackOff");
    assert_eq!(stalls[0].container.as_deref(), Some("web"));
    assert_eq!(stalls[0].restarts, 4);
    assert!(
        stalls[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("delete the stuck pod")
    );
    crashing
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 5;
    let pods: BTreeMap<String, Pod> = [("web-0".to_string(), crashing)].into();
    let obs = tr.observe(&view, &pods, t(4));
    assert!(
        !obs.iter().any(|o| matches!(o, Observation::Stalled(_))),
        "once per pod and reason"
    );
    assert_eq!(
        tr.stalled_pods(&pods),
        [("web-0".to_string(), "CrashLoopBackOff".to_string())]
    );
}
