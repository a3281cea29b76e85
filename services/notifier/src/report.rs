//! The channel-neutral view of a deployment event: which environment, which step, how much it
//! weighs for routing, and the one-line cause people read.

use conveyor::config::NotifyKind;
use conveyor::events::{
    DeployAwaitingApproval, DeployCompleted, DeployFailed, DeployHeld, DeployJobFinished,
    DeployLaunched, DeployRequested, DeploySuperseded, ExecutorRun, Operation, Stage,
};
use conveyor::{Envelope, Event};

/// A step of a deployment, borrowed from its event.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// A deployment was requested.
    Requested(&'a DeployRequested),
    /// It was handed to its executor.
    Launched(&'a DeployLaunched),
    /// The AWX job ended.
    JobFinished(&'a DeployJobFinished),
    /// Every pod runs the new revision.
    Completed(&'a DeployCompleted),
    /// It failed.
    Failed(&'a DeployFailed),
    /// A newer request replaced it before it ran.
    Superseded(&'a DeploySuperseded),
    /// It waits: its environment is paused or frozen.
    Held(&'a DeployHeld),
    /// It waits for a person's approval.
    AwaitingApproval(&'a DeployAwaitingApproval),
    /// A rollout event (`rollout.*`): progress for channels that want every step.
    Rollout,
}

/// One event as the notifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The event.
    pub envelope: &'a Envelope,
    /// The environment it concerns.
    pub environment: &'a str,
    /// What happened.
    pub step: Step<'a>,
}

impl<'a> Report<'a> {
    /// The report for `envelope`, if it is a deployment or rollout event.
    pub fn of(envelope: &'a Envelope) -> Option<Self> {
        let (environment, step) = match &envelope.event {
            Event::DeployRequested(r) => (r.environment.as_str(), Step::Requested(r)),
            Event::DeployLaunched(l) => (l.environment.as_str(), Step::Launched(l)),
            Event::DeployJobFinished(j) => (j.environment.as_str(), Step::JobFinished(j)),
            Event::DeployCompleted(c) => (c.environment.as_str(), Step::Completed(c)),
            Event::DeployFailed(f) => (f.environment.as_str(), Step::Failed(f)),
            Event::DeploySuperseded(s) => (s.environment.as_str(), Step::Superseded(s)),
            Event::DeployHeld(h) => (h.environment.as_str(), Step::Held(h)),
            Event::DeployAwaitingApproval(a) => (a.environment.as_str(), Step::AwaitingApproval(a)),
            Event::RolloutStarted(r) => (r.environment.as_str(), Step::Rollout),
            Event::RolloutProgress(r) => (r.environment.as_str(), Step::Rollout),
            Event::RolloutCompleted(r) => (r.environment.as_str(), Step::Rollout),
            Event::RolloutStalled(r) => (r.environment.as_str(), Step::Rollout),
            Event::RolloutFailed(r) => (r.environment.as_str(), Step::Rollout),
            _ => return None,
        };
        Some(Self {
            envelope,
            environment,
            step,
        })
    }

    /// The chain this event belongs to: one deployment per correlation id.
    pub fn correlation_id(&self) -> &'a str {
        &self.envelope.correlation_id
    }

    /// The deployment it concerns: this environment of this chain.
    pub fn deployment_id(&self) -> String {
        conveyor::events::deployment_id(self.correlation_id(), self.environment)
    }

    /// The operation behind the deployment (trigger, actor, reason), unless it was a push (or
    /// the event does not carry it).
    pub fn operation(&self) -> Option<&'a Operation> {
        match self.step {
            Step::Requested(r) => (!r.operation.is_plain_push()).then_some(&r.operation),
            Step::Launched(l) => l.operation.as_ref(),
            Step::Completed(c) => c.operation.as_ref(),
            Step::Failed(f) => f.operation.as_ref(),
            Step::Superseded(s) => s.operation.as_ref(),
            Step::AwaitingApproval(a) => a.operation.as_ref(),
            Step::JobFinished(_) | Step::Held(_) | Step::Rollout => None,
        }
    }

    /// How much it weighs for per-environment routing.
    pub fn kind(&self) -> NotifyKind {
        match self.step {
            Step::Failed(_) => NotifyKind::Failure,
            Step::Completed(_) | Step::Superseded(_) => NotifyKind::Finished,
            _ => NotifyKind::Progress,
        }
    }
}

/// Why a deployment failed, in the words an operator needs first (`stack-1: ImagePullBackOff`).
pub fn cause(failed: &DeployFailed) -> String {
    match failed.stage {
        Stage::Rollout => failed.reason.clone(),
        stage => format!("{stage}: {}", failed.reason),
    }
}

/// Whether a failure is the deployment's own (`failure`: the job failed, pods never got
/// ready, the release failed its verification) rather than Conveyor's or its tools' (`error`:
/// no launch, build missing, turned down).
pub fn is_deployment_failure(failed: &DeployFailed) -> bool {
    matches!(failed.stage, Stage::Rollout | Stage::Job | Stage::Verify)
}

/// Where a launched deployment can be watched: the AWX job page, if there is one.
pub fn executor_url(launched: &DeployLaunched) -> Option<&str> {
    match &launched.executor {
        ExecutorRun::Awx { url, .. } => Some(url),
        ExecutorRun::Kubernetes { .. } => None,
    }
}

/// What the executor is doing, in a few words.
pub fn executor_summary(launched: &DeployLaunched) -> String {
    match &launched.executor {
        ExecutorRun::Awx {
            job_id, template, ..
        } => format!("AWX job {job_id} ({template})"),
        ExecutorRun::Kubernetes { generation } => format!(
            "StatefulSet {}/{} patched (generation {generation})",
            launched.namespace, launched.statefulset
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_name_the_stage_unless_it_is_the_rollout() {
        let f = |stage: Stage| DeployFailed {
            environment: "staging".into(),
            stage,
            reason: "stack-1: ImagePullBackOff".into(),
            operation: None,
        };
        assert_eq!(cause(&f(Stage::Rollout)), "stack-1: ImagePullBackOff");
        assert_eq!(
            cause(&f(Stage::Launch)),
            "launch: stack-1: ImagePullBackOff"
        );
        assert!(is_deployment_failure(&f(Stage::Job)));
        assert!(is_deployment_failure(&f(Stage::Verify)));
        assert!(!is_deployment_failure(&f(Stage::Build)));
        assert!(!is_deployment_failure(&f(Stage::Approval)));
    }
}
