//! Pods stuck on a revision the StatefulSet no longer wants. Under `OrderedReady` the controller
//! never replaces a pod that did not become Ready, even after a good template is applied over
//! the bad one (kubernetes/kubernetes#67250): such a pod stays until someone deletes it. Where
//! the environment opts in (`unstick = true`) and Conveyor patches the StatefulSet, the follow
//! deletes them, highest ordinal first, one at a time; elsewhere it reports them.

use std::collections::{BTreeMap, BTreeSet};

use conveyor::events::{RolloutStalled, RolloutUnstuck};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};

use crate::follow::Follow;
use crate::progress::{ready_at, stuck};

/// What a look at the pods found.
#[derive(Debug)]
pub enum Found {
    /// No pod stuck on an unwanted revision (or one is being replaced already).
    Nothing,
    /// One was deleted.
    Deleted(RolloutUnstuck),
    /// One is stuck, and it is not ours to delete.
    Stuck(RolloutStalled),
}

fn revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get("controller-revision-hash")
        .map(String::as_str)
}

fn ordinal(pod: &Pod) -> u32 {
    pod.metadata
        .name
        .as_deref()
        .and_then(|n| n.rsplit('-').next())
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

fn wanted(sts: &StatefulSet) -> Option<&str> {
    sts.status.as_ref()?.update_revision.as_deref()
}

/// The stuck pods of a revision the StatefulSet no longer wants: (pod, reason).
pub fn stuck_old(sts: &StatefulSet, pods: &BTreeMap<String, Pod>) -> Vec<(String, String)> {
    let Some(wanted) = wanted(sts) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String, String)> = pods
        .values()
        .filter(|p| revision(p).is_some_and(|r| r != wanted))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && ready_at(p).is_none())
        .filter_map(|p| {
            let (_, reason, _, _) = stuck(p)?;
            Some((
                ordinal(p),
                p.metadata.name.clone().unwrap_or_default(),
                reason,
            ))
        })
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.0));
    out.into_iter().map(|(_, pod, why)| (pod, why)).collect()
}

/// The UIDs of the pods deleted so far. A watch event sent before a delete can arrive after
/// it and show the pod as it was; by its UID the pod still counts as terminating.
pub type Deleted = BTreeSet<String>;

fn terminating(pod: &Pod, deleted: &Deleted) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || pod
            .metadata
            .uid
            .as_ref()
            .is_some_and(|u| deleted.contains(u))
}

/// The next pod to delete — the highest-ordinal stuck pod of an unwanted revision — only while
/// nothing is being replaced: no pod terminating, every pod of the wanted revision Ready.
pub fn next<'p>(
    sts: &StatefulSet,
    pods: &'p BTreeMap<String, Pod>,
    deleted: &Deleted,
) -> Option<(&'p Pod, String)> {
    let wanted = wanted(sts)?;
    let busy = pods
        .values()
        .any(|p| terminating(p, deleted) || (revision(p) == Some(wanted) && ready_at(p).is_none()));
    if busy {
        return None;
    }
    let (name, reason) = stuck_old(sts, pods).into_iter().next()?;
    Some((pods.get(&name)?, reason))
}

/// Delete the next stuck pod: the `rollout.unstuck` to report.
pub async fn delete_next(
    environment: &str,
    sts: &StatefulSet,
    pods: &BTreeMap<String, Pod>,
    api: &Api<Pod>,
    deleted: &mut Deleted,
) -> Result<Option<RolloutUnstuck>, kube::Error> {
    let Some((pod, reason)) = next(sts, pods, deleted) else {
        return Ok(None);
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    // Only the pod we looked at: one recreated under its name since then is on the wanted
    // revision, and the API server refuses the delete (409) rather than take it.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &params).await?;
    deleted.extend(pod.metadata.uid.clone());
    tracing::info!(environment, pod = %name, %reason, "deleted a pod stuck on an unwanted revision");
    Ok(Some(RolloutUnstuck {
        environment: environment.to_owned(),
        pod: name,
        revision: revision(pod).map(str::to_owned),
        reason,
    }))
}

/// During a follow: delete the next stuck pod where the environment lets Conveyor, else report
/// it once.
pub async fn look(
    f: &Follow,
    sts: &StatefulSet,
    pods: &BTreeMap<String, Pod>,
    api: &Api<Pod>,
    deleted: &mut Deleted,
) -> Found {
    if f.config.unstick && f.patched_by_conveyor() {
        return match delete_next(&f.environment, sts, pods, api, deleted).await {
            Ok(Some(e)) => Found::Deleted(e),
            Ok(None) => Found::Nothing,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete a stuck pod; trying again");
                Found::Nothing
            }
        };
    }
    let Some((pod, reason)) = next(sts, pods, deleted) else {
        return Found::Nothing;
    };
    let (container, _, message, restarts) = stuck(pod).unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    Found::Stuck(RolloutStalled {
        environment: f.environment.clone(),
        pod: name.clone(),
        container,
        reason,
        message: Some(format!(
            "{name} is on revision {}, which the StatefulSet no longer wants{}; it stays until deleted",
            revision(pod).unwrap_or("?"),
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        )),
        restarts,
        hint: Some(if f.config.unstick {
            format!("`conveyor unstick {}` deletes it", f.environment)
        } else {
            format!(
                "delete pod {name} (or set unstick = true for {} and run `conveyor unstick`)",
                f.environment
            )
        }),
    })
}
