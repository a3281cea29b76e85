//! The automatic rollback: after a deployment's rollout or verification fails in an
//! environment with `on_failure = "rollback"`, request the image of the last completed
//! deployment there again — once (its id derives from the failed deployment), and never after a
//! rollback failed (a failed rollback never triggers another).
//!
//! What a failure rolls back to is decided once, when it fails, and kept with the failure on
//! the StatefulSet: a follow resumed after a restart requests the very same rollback again
//! rather than reading the completions journal a second time (which may have changed, or be
//! read in part while another reader walks it), so one rollback id never names two requests.

use conveyor::bus::queues;
use conveyor::config::OnFailure;
use conveyor::events::{Actor, DeployRequested, ImageRef, Operation, Trigger, deployment_id};
use conveyor::retry::Policy;
use conveyor::{Bus, Envelope, Event};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::SOURCE;
use crate::follow::Follow;

/// What a failed deployment rolls back to: a deployment completed in its environment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// The completed deployment's correlation id.
    pub deployment: String,
    /// The image it ran.
    pub image: ImageRef,
    /// The commit it deployed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

/// Whether `f`'s failure calls for a rollback at all: the environment asks for one, and `f`
/// was not itself a rollback.
pub fn wanted(f: &Follow) -> bool {
    if f.config.on_failure != OnFailure::Rollback {
        return false;
    }
    if f.operation
        .as_ref()
        .is_some_and(|o| o.trigger == Trigger::Rollback)
    {
        tracing::warn!(environment = %f.environment, "a rollback failed: not rolling back again");
        return false;
    }
    true
}

/// What `f`'s failure rolls back to, from the completions journal: the environment's newest
/// completion of another deployment before `f` was launched. (A follow resumed after a restart
/// fails perhaps long after; a deployment completed since then is no rollback target — and a
/// request for it would overtake newer ones.)
pub fn target_for(f: &Follow, completions: &[Envelope]) -> Option<Target> {
    completions.iter().rev().find_map(|e| match &e.event {
        Event::DeployCompleted(c)
            if c.environment == f.environment
                && e.correlation_id != f.launched.correlation_id
                && e.time <= f.launched.time =>
        {
            Some(Target {
                deployment: e.correlation_id.clone(),
                image: c.image.clone(),
                sha: c.sha.clone(),
            })
        }
        _ => None,
    })
}

/// The rollback request for `f`'s failure at `failed_at` (for `reason`), to `target`.
pub fn request_for(
    f: &Follow,
    reason: &str,
    failed_at: OffsetDateTime,
    target: &Target,
) -> Envelope {
    let failed = deployment_id(&f.launched.correlation_id, &f.environment);
    let sha = target.sha.clone().unwrap_or_default();
    let request = DeployRequested {
        environment: f.environment.clone(),
        repository: f.config.repository.clone(),
        sha: sha.clone(),
        git_ref: f.config.fallback_ref(&target.image),
        image: target.image.clone(),
        upstream: Vec::new(),
        // Ordered as of the failure: newer than the failed deployment, older than whatever was
        // requested after it — and the same however often it is requested again.
        origin_time: Some(failed_at),
        operation: Operation {
            trigger: Trigger::Rollback,
            actor: Some(Actor::conveyor()),
            reason: Some(format!("automatic, after the failure: {reason}")),
            forced: false,
            source_deployment: Some(deployment_id(&target.deployment, &f.environment)),
            untracked: sha.is_empty(),
            replaces: Some(failed.clone()),
        },
    };
    Envelope::new(SOURCE, Event::DeployRequested(request))
        .with_derived_id(&format!("{failed}:auto-rollback"))
}

/// Decide what `f`'s failure rolls back to: nothing when it calls for no rollback, else the
/// target the completions journal names (retrying the read until it answers). `None` only when
/// the follow was cancelled before it could decide.
pub async fn decide(
    bus: &Bus,
    f: &Follow,
    cancel: &CancellationToken,
) -> Option<crate::executor::Rollback> {
    use crate::executor::Rollback;
    if !wanted(f) {
        return Some(Rollback::Nothing);
    }
    let completions = Policy::RECONNECT
        .until_done("reading the completions journal", cancel, || {
            bus.journal(queues::DEPLOY_COMPLETIONS)
        })
        .await?;
    Some(match target_for(f, &completions) {
        Some(target) => Rollback::To(target),
        None => {
            tracing::warn!(environment = %f.environment, "no completed deployment to roll back to");
            Rollback::Nothing
        }
    })
}

/// Publish the rollback to `target` for `f`'s failure (retrying until it is confirmed or the
/// follow is cancelled).
pub async fn publish(
    bus: &Bus,
    f: &Follow,
    reason: &str,
    failed_at: OffsetDateTime,
    target: &Target,
    cancel: &CancellationToken,
) {
    let request = request_for(f, reason, failed_at, target);
    tracing::info!(environment = %f.environment, image = %target.image.reference(), "rolling back automatically");
    Policy::RECONNECT
        .until_done("publishing the rollback", cancel, || bus.publish(&request))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor::events::{DeployCompleted, DeployFailed, Stage};

    const PIPELINE: &str = r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"
branches = ["master"]

[[environment]]
name = "staging"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "ns", name = "stack" }
on_failure = "rollback"
"#;

    fn completed(tag: &str, at: OffsetDateTime) -> Envelope {
        let mut e = Envelope::new(
            SOURCE,
            Event::DeployCompleted(DeployCompleted {
                environment: "staging".into(),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some(tag.into()),
                    digest: None,
                },
                revision: None,
                operation: None,
                sha: Some("a".repeat(40)),
                verified: false,
            }),
        );
        e.time = at;
        e
    }

    fn failed_follow(launched_at: OffsetDateTime) -> Follow {
        let pipeline = conveyor::config::Pipeline::parse(PIPELINE).unwrap();
        let mut launched = Envelope::new(
            SOURCE,
            Event::DeployFailed(DeployFailed {
                environment: "staging".into(),
                stage: Stage::Rollout,
                reason: "stack-0: CrashLoopBackOff".into(),
                operation: None,
            }),
        );
        launched.time = launched_at;
        Follow {
            launched,
            environment: "staging".into(),
            namespace: "ns".into(),
            name: "stack".into(),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("bad".into()),
                digest: None,
            },
            before_change: false,
            resumed: true,
            operation: None,
            sha: None,
            config: pipeline.environments[0].clone(),
        }
    }

    #[test]
    fn the_rollback_returns_to_what_completed_before_the_launch_never_to_what_came_after() {
        let launch = OffsetDateTime::now_utc();
        let f = failed_follow(launch);
        let journal = [
            completed("1.0.1", launch - time::Duration::minutes(10)),
            completed("1.0.2", launch - time::Duration::minutes(1)),
            // Completed after the failed deployment: a follow resumed late must not pick it.
            completed("1.0.3", launch + time::Duration::minutes(5)),
        ];
        let target = target_for(&f, &journal).expect("a rollback");
        let request = request_for(&f, "stalled", launch, &target);
        match &request.event {
            Event::DeployRequested(r) => assert_eq!(r.image.tag.as_deref(), Some("1.0.2")),
            other => panic!("{other:?}"),
        }
        assert!(
            target_for(&f, &journal[2..]).is_none(),
            "nothing completed before the launch: nothing to roll back to"
        );
    }
}
