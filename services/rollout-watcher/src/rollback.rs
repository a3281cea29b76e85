//! The automatic rollback: after a deployment's rollout or verification fails in an
//! environment with `on_failure = "rollback"`, request the image of the last completed
//! deployment there again — once (its id derives from the failed deployment), and never after a
//! rollback failed (a failed rollback never triggers another).

use conveyor::bus::queues;
use conveyor::config::OnFailure;
use conveyor::events::{Actor, DeployRequested, Operation, Trigger, deployment_id};
use conveyor::{Bus, Envelope, Event};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::SOURCE;
use crate::follow::Follow;

/// The rollback request for `f`'s failure, if one is due: from the completions journal, the
/// environment's newest completion of another deployment.
pub fn request_for(f: &Follow, reason: &str, completions: &[Envelope]) -> Option<Envelope> {
    if f.config.on_failure != OnFailure::Rollback {
        return None;
    }
    if f.operation
        .as_ref()
        .is_some_and(|o| o.trigger == Trigger::Rollback)
    {
        tracing::warn!(environment = %f.environment, "a rollback failed: not rolling back again");
        return None;
    }
    let failed = deployment_id(&f.launched.correlation_id, &f.environment);
    let (target, completed) = completions.iter().rev().find_map(|e| match &e.event {
        Event::DeployCompleted(c)
            if c.environment == f.environment && e.correlation_id != f.launched.correlation_id =>
        {
            Some((e, c))
        }
        _ => None,
    })?;
    let sha = completed.sha.clone().unwrap_or_default();
    let request = DeployRequested {
        environment: f.environment.clone(),
        repository: f.config.repository.clone(),
        sha: sha.clone(),
        git_ref: f.config.fallback_ref(&completed.image),
        image: completed.image.clone(),
        upstream: Vec::new(),
        origin_time: Some(OffsetDateTime::now_utc()),
        operation: Operation {
            trigger: Trigger::Rollback,
            actor: Some(Actor::conveyor()),
            reason: Some(format!("automatic, after the failure: {reason}")),
            forced: false,
            source_deployment: Some(deployment_id(&target.correlation_id, &f.environment)),
            untracked: sha.is_empty(),
            replaces: Some(failed.clone()),
        },
    };
    Some(
        Envelope::new(SOURCE, Event::DeployRequested(request))
            .with_derived_id(&format!("{failed}:auto-rollback")),
    )
}

/// Publish the rollback `f`'s failure calls for, if any (retrying until it is confirmed or
/// the follow is cancelled).
pub async fn after_failure(bus: &Bus, f: &Follow, reason: &str, cancel: &CancellationToken) {
    if f.config.on_failure != OnFailure::Rollback {
        return;
    }
    let completions = loop {
        match bus.journal(queues::DEPLOY_COMPLETIONS).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the completions journal failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let Some(request) = request_for(f, reason, &completions) else {
        tracing::warn!(environment = %f.environment, "no completed deployment to roll back to");
        return;
    };
    tracing::info!(environment = %f.environment, image = ?match &request.event { Event::DeployRequested(r) => r.image.reference(), _ => String::new() }, "rolling back automatically");
    loop {
        match bus.publish(&request).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "publishing the rollback failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
