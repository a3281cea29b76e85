//! The Kubernetes executor: apply a deployment to the StatefulSet directly — the container
//! image by digest when known, or the `kubectl.kubernetes.io/restartedAt` annotation when the
//! image reference is unchanged — as a strategic-merge patch with field manager `conveyor`.

use conveyor::events::ImageRef;
use conveyor::retry::{Classify, Transience};
use conveyor::supersede::RequestOrder;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The annotation on the StatefulSet (not its template) naming the deployment last applied;
/// a redelivered request that finds its own id here does not patch again.
pub const DEPLOYMENT_ANNOTATION: &str = "conveyor.io/deployment-id";

/// The annotations (beside [`DEPLOYMENT_ANNOTATION`]) holding the applied request's place in
/// newest-wins order (`supersede::RequestOrder`): when its change came to be, and when it was
/// requested. An older request that arrives late (a redelivery after a restart, a copy
/// published again) must not roll the StatefulSet back over it.
pub const ORIGIN_TIME_ANNOTATION: &str = "conveyor.io/origin-time";
/// See [`ORIGIN_TIME_ANNOTATION`].
pub const REQUESTED_AT_ANNOTATION: &str = "conveyor.io/requested-at";

/// The annotation (beside [`DEPLOYMENT_ANNOTATION`]) saying when that deployment was applied:
/// its launch, published again when a redelivered request adopts it, keeps the time of the
/// real one (a follow resumed from the copy judges which pods the launch replaced by it).
pub const APPLIED_AT_ANNOTATION: &str = "conveyor.io/applied-at";

/// The annotation (beside [`DEPLOYMENT_ANNOTATION`]) listing the last [`APPLIED_KEPT`]
/// deployments applied, newest first, space-separated: a request for one of them is stale — a
/// copy published again after its deployment was overtaken (one without an origin time is
/// ordered by its copy's envelope time, so [`REQUESTED_AT_ANNOTATION`] alone would let it roll
/// back) — and is never applied twice.
pub const APPLIED_ANNOTATION: &str = "conveyor.io/applied";

/// The annotation naming the last deployment whose follow ended it as failed: a StatefulSet
/// left mid-rollout by a failed deployment is not busy with it, so a newer request — a
/// rollback — may be applied over it (and the stuck pods then unstuck).
pub const ENDED_ANNOTATION: &str = "conveyor.io/ended";

/// The annotation keeping how the follows ended the last [`APPLIED_KEPT`] failed deployments
/// (JSON, newest first). A follow resumed after a restart must not take a failed deployment
/// for a completed one because another was applied over it since: it republishes the failure
/// it finds here instead (the same event ids, so nothing is reported twice).
pub const FAILED_ANNOTATION: &str = "conveyor.io/failed";

/// How long a kept failure's reason may be (the event carries it whole).
const FAILURE_REASON_KEPT: usize = 512;

/// A deployment the follow ended as failed, as [`FAILED_ANNOTATION`] keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The failed deployment's correlation id.
    pub deployment: String,
    /// Where it failed.
    pub stage: conveyor::events::Stage,
    /// Why (at most [`FAILURE_REASON_KEPT`] bytes).
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What the failure rolls back to, decided when it failed (a failure at the rollout or
    /// verification). Absent until decided — and in records written before it was kept, for
    /// which it is decided again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

impl Failure {
    /// `f`'s deployment failed now at `stage`, for `reason`; its rollback is not decided yet.
    pub fn now(f: &crate::follow::Follow, stage: conveyor::events::Stage, reason: &str) -> Self {
        Self {
            deployment: f.launched.correlation_id.clone(),
            stage,
            reason: reason.to_owned(),
            at: OffsetDateTime::now_utc(),
            rollback: None,
        }
    }
}

/// What a failure rolls back to, once decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollback {
    /// Nothing: the environment does not roll back, the failed deployment was itself a
    /// rollback, or nothing had completed before it.
    Nothing,
    /// This completed deployment.
    To(crate::rollback::Target),
}

/// The failures kept on the StatefulSet, newest first (none when the annotation is unreadable).
pub fn failures(sts: &StatefulSet) -> Vec<Failure> {
    sts.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FAILED_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// The annotations that record `failure`: [`ENDED_ANNOTATION`] and the bounded
/// [`FAILED_ANNOTATION`] history with it first.
pub fn with_failure(sts: &StatefulSet, mut failure: Failure) -> serde_json::Value {
    if failure.reason.len() > FAILURE_REASON_KEPT {
        let mut end = FAILURE_REASON_KEPT;
        while !failure.reason.is_char_boundary(end) {
            end -= 1;
        }
        failure.reason.truncate(end);
    }
    let deployment = failure.deployment.clone();
    let mut kept = vec![failure];
    kept.extend(
        failures(sts)
            .into_iter()
            .filter(|f| f.deployment != deployment),
    );
    kept.truncate(APPLIED_KEPT);
    json!({
        ENDED_ANNOTATION: deployment,
        FAILED_ANNOTATION: serde_json::to_string(&kept).unwrap_or_default(),
    })
}

/// Whether the deployment applied last has ended (failed) even though the set is not at rest.
pub fn applied_ended(sts: &StatefulSet) -> bool {
    let annotations = sts.metadata.annotations.as_ref();
    let ended = annotations.and_then(|a| a.get(ENDED_ANNOTATION));
    ended.is_some() && ended.map(String::as_str) == applied_deployment(sts)
}

/// How many applied deployments [`APPLIED_ANNOTATION`] remembers.
pub const APPLIED_KEPT: usize = 16;

/// The field manager of Conveyor's patches.
pub const FIELD_MANAGER: &str = "conveyor";

/// What the executor decided to change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new image reference for the container.
    Image(String),
    /// The same image again: restart the pods (mutable tags such as `latest`).
    Restart,
}

/// Why the StatefulSet cannot be patched as asked.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The container is not in the pod template.
    #[error("StatefulSet {namespace}/{name} has no container {container:?}")]
    NoContainer {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The configured container.
        container: String,
    },
    /// The API refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The broker could not say whether the environment is held.
    #[error(transparent)]
    Hold(#[from] conveyor::executor::HoldError),
}

impl Classify for ExecutorError {
    /// A 4xx other than a conflict or a rate limit will fail again; the rest may pass.
    fn transience(&self) -> Transience {
        match self {
            ExecutorError::NoContainer { .. } => Transience::Permanent,
            ExecutorError::Kube(kube::Error::Api(e))
                if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 =>
            {
                Transience::Permanent
            }
            ExecutorError::Kube(_) | ExecutorError::Hold(_) => Transience::Transient(None),
        }
    }
}

/// The container's current image.
pub fn current_image(sts: &StatefulSet, container: &str) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
}

/// The deployment id last applied to the StatefulSet.
pub fn applied_deployment(sts: &StatefulSet) -> Option<&str> {
    sts.metadata
        .annotations
        .as_ref()?
        .get(DEPLOYMENT_ANNOTATION)
        .map(String::as_str)
}

/// The deployments applied to the StatefulSet, newest first (at most [`APPLIED_KEPT`]).
pub fn applied_history(sts: &StatefulSet) -> Vec<&str> {
    sts.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_ANNOTATION))
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// The history after applying `deployment`: it first, then the older ones, bounded.
fn with_applied(sts: &StatefulSet, deployment: &str) -> String {
    let mut history = vec![deployment];
    history.extend(
        applied_history(sts)
            .into_iter()
            .filter(|d| *d != deployment),
    );
    history.truncate(APPLIED_KEPT);
    history.join(" ")
}

/// The newest-wins order of the deployment applied to the StatefulSet, if Conveyor applied it
/// (one applied before the origin time was recorded is ordered by its request time alone).
pub fn applied_order(sts: &StatefulSet) -> Option<RequestOrder> {
    let annotations = sts.metadata.annotations.as_ref()?;
    let time = |key: &str| {
        annotations
            .get(key)
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
    };
    let requested = time(REQUESTED_AT_ANNOTATION)?;
    Some((time(ORIGIN_TIME_ANNOTATION).unwrap_or(requested), requested))
}

/// When the deployment applied to the StatefulSet was applied, if Conveyor recorded it.
pub fn applied_at(sts: &StatefulSet) -> Option<OffsetDateTime> {
    let at = sts
        .metadata
        .annotations
        .as_ref()?
        .get(APPLIED_AT_ANNOTATION)?;
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

/// Whether the StatefulSet is at rest: its spec observed, its revision promoted, every replica
/// Ready — a new deployment may start.
pub fn at_rest(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0)
        && status.current_revision == status.update_revision
        && status.ready_replicas.unwrap_or(0) >= replicas
}

/// The change a deployment of `image` makes to the container.
pub fn change_for(sts: &StatefulSet, container: &str, image: &ImageRef) -> Option<Change> {
    let current = current_image(sts, container)?;
    let wanted = image.reference();
    Some(if current == wanted {
        Change::Restart
    } else {
        Change::Image(wanted)
    })
}

/// The strategic-merge patch body for `change`, marking the StatefulSet with `deployment`.
pub fn patch_body(
    container: &str,
    change: &Change,
    deployment: &str,
    now: OffsetDateTime,
) -> serde_json::Value {
    let template = match change {
        Change::Image(image) => {
            json!({"spec": {"containers": [{"name": container, "image": image}]}})
        }
        Change::Restart => json!({"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now.replace_nanosecond(0).unwrap_or(now).format(&Rfc3339).unwrap_or_default()
        }}}),
    };
    json!({
        "metadata": {"annotations": {DEPLOYMENT_ANNOTATION: deployment}},
        "spec": {"template": template}
    })
}

/// Apply the deployment; returns the StatefulSet after the patch.
pub async fn apply(
    api: &Api<StatefulSet>,
    sts: &StatefulSet,
    container: &str,
    image: &ImageRef,
    deployment: &str,
    order: RequestOrder,
) -> Result<StatefulSet, ExecutorError> {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let change = change_for(sts, container, image).ok_or_else(|| ExecutorError::NoContainer {
        namespace: sts.metadata.namespace.clone().unwrap_or_default(),
        name: name.clone(),
        container: container.to_owned(),
    })?;
    let now = OffsetDateTime::now_utc();
    let mut body = patch_body(container, &change, deployment, now);
    // Only the version that was seen at rest: if anything patched it since (another replica
    // that took over the queue while this one still ran), the API answers 409 and the request
    // is looked at again instead of starting a second rollout over the first.
    if let Some(version) = &sts.metadata.resource_version {
        body["metadata"]["resourceVersion"] = json!(version);
    }
    let (origin, requested) = order;
    body["metadata"]["annotations"][ORIGIN_TIME_ANNOTATION] =
        json!(origin.format(&Rfc3339).unwrap_or_default());
    body["metadata"]["annotations"][REQUESTED_AT_ANNOTATION] =
        json!(requested.format(&Rfc3339).unwrap_or_default());
    body["metadata"]["annotations"][APPLIED_ANNOTATION] = json!(with_applied(sts, deployment));
    body["metadata"]["annotations"][APPLIED_AT_ANNOTATION] =
        json!(now.format(&Rfc3339).unwrap_or_default());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    Ok(api.patch(&name, &params, &Patch::Strategic(body)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "stack", "namespace": "ns", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [{"name": "stack", "image": image}]}}},
            "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3, "currentRevision": "a", "updateRevision": "a"}
        }))
        .unwrap()
    }

    fn image(tag: &str, digest: Option<&str>) -> ImageRef {
        ImageRef {
            repository: "xchem/fragalysis-stack".into(),
            tag: Some(tag.into()),
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn the_applied_history_is_newest_first_without_repeats_and_bounded() {
        let mut s = sts("xchem/fragalysis-stack:latest");
        assert!(applied_history(&s).is_empty());
        for i in 0..APPLIED_KEPT + 3 {
            let next = with_applied(&s, &format!("d{i}"));
            s.metadata
                .annotations
                .get_or_insert_default()
                .insert(APPLIED_ANNOTATION.into(), next);
        }
        let history = applied_history(&s);
        assert_eq!(history.len(), APPLIED_KEPT);
        assert_eq!(history[0], format!("d{}", APPLIED_KEPT + 2));
        assert_eq!(with_applied(&s, "d5").split(' ').next(), Some("d5"));
        assert_eq!(
            with_applied(&s, history[3]).matches(history[3]).count(),
            1,
            "applied again, listed once"
        );
    }

    #[test]
    fn digest_wins_and_an_unchanged_reference_restarts() {
        let s = sts("xchem/fragalysis-stack:latest");
        assert_eq!(
            change_for(&s, "stack", &image("latest", Some("sha256:abc"))),
            Some(Change::Image("xchem/fragalysis-stack@sha256:abc".into()))
        );
        assert_eq!(
            change_for(&s, "stack", &image("latest", None)),
            Some(Change::Restart)
        );
        assert_eq!(change_for(&s, "other", &image("latest", None)), None);
        assert!(at_rest(&s));
    }

    #[test]
    fn patch_bodies_are_strategic_and_marked() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let b = patch_body("stack", &Change::Restart, "dep-1", now);
        assert_eq!(b["metadata"]["annotations"][DEPLOYMENT_ANNOTATION], "dep-1");
        assert_eq!(
            b["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2027-01-15T08:00:00Z"
        );
        let b = patch_body("stack", &Change::Image("r@sha256:1".into()), "dep-2", now);
        assert_eq!(
            b["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "stack", "image": "r@sha256:1"})
        );
    }
}
