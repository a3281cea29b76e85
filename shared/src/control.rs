//! Holds on an environment's deployments: an operator's pause and the pipeline file's freeze
//! windows. Executors ask [`hold`] right before they apply; the control API calls [`pause`] and
//! [`resume`].
//!
//! A pause lives on the broker as a latch ([`Bus::set_latch`]): it survives the restart of every
//! process and of the broker, every replica sees the same, and a pause confirmed before an
//! executor looks is seen by that look. A freeze window needs no state: it is the pipeline file
//! and the clock.

use time::OffsetDateTime;

use crate::bus::{Bus, BusError};
use crate::config::{Environment, Pipeline};
use crate::events::{Actor, EnvironmentPaused, EnvironmentResumed, HoldKind, Stage, deployment_id};
use crate::{Envelope, Event};

/// The event source of what the control API publishes.
pub const SOURCE: &str = "conveyor/control";

/// What holds an environment's deployments now.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// A pause or a freeze window.
    pub kind: HoldKind,
    /// Said for people: "staging is paused", "frozen from Fri 16:00 to Mon 08:00 …".
    pub reason: String,
    /// When it lifts by itself (a freeze window's end).
    pub until: Option<OffsetDateTime>,
}

/// The latch of `environment`'s pause.
pub fn pause_latch(environment: &str) -> String {
    format!("paused.{environment}")
}

/// Whether an operator has paused `environment`.
pub async fn is_paused(bus: &Bus, environment: &str) -> Result<bool, BusError> {
    bus.latch_is_set(&pause_latch(environment)).await
}

/// What holds `environment`'s deployments at `at`, if anything: its pause first, then its
/// freeze windows.
pub async fn hold(
    bus: &Bus,
    environment: &Environment,
    at: OffsetDateTime,
) -> Result<Option<Hold>, BusError> {
    if is_paused(bus, &environment.name).await? {
        return Ok(Some(Hold {
            kind: HoldKind::Paused,
            reason: format!("{} is paused", environment.name),
            until: None,
        }));
    }
    Ok(environment.frozen_at(at).map(|f| Hold {
        kind: HoldKind::Frozen,
        reason: f.reason,
        until: Some(f.until),
    }))
}

/// What may happen to one request now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing holds it.
    Go,
    /// It waits.
    Hold(Hold),
    /// It will never go: it ends failed at this stage, for this reason.
    Refuse(Stage, String),
}

/// The latch of a person's approval of `deployment`.
pub fn approval_latch(deployment: &str) -> String {
    format!("approved.{deployment}")
}
/// The latch of an approval of `deployment` that also lifts its `requires` hold.
pub fn override_latch(deployment: &str) -> String {
    format!("overridden.{deployment}")
}
/// The latch rollout-watcher raises while it follows and verifies `deployment` (in an
/// environment with `verify`), and drops when the deployment has ended: while it stands, the
/// environment is busy with that deployment.
pub fn verifying_latch(deployment: &str) -> String {
    format!("verifying.{deployment}")
}
/// The latch of a rejection of `deployment`.
pub fn rejection_latch(deployment: &str) -> String {
    format!("rejected.{deployment}")
}

/// How long an approval latch stays on the broker unused (beyond any request's expiry).
pub const APPROVAL_LATCH_EXPIRES: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Everything that may hold `request` (a `deploy.requested` for `environment` of `pipeline`)
/// at `at`: a pause or a freeze window (unless forced), the environment it requires to have
/// passed first (unless an approval lifted that), and an approval not given yet — which no
/// `--force` lifts. A rejection refuses it before anything else is asked.
pub async fn judge(
    bus: &Bus,
    pipeline: &Pipeline,
    environment: &Environment,
    request: &Envelope,
    at: OffsetDateTime,
) -> Result<Verdict, BusError> {
    let Event::DeployRequested(r) = &request.event else {
        return Ok(Verdict::Go);
    };
    let deployment = deployment_id(&request.correlation_id, &environment.name);
    let approval = environment.approval.as_ref().filter(|a| a.required);
    // A rejection ends the request whatever else it waits for: a release held by a pause or
    // for staging can be turned down before it gets there.
    if approval.is_some() && bus.latch_is_set(&rejection_latch(&deployment)).await? {
        return Ok(Verdict::Refuse(
            Stage::Approval,
            "rejected by an approver".into(),
        ));
    }
    if !r.operation.forced
        && let Some(h) = hold(bus, environment, at).await?
    {
        return Ok(Verdict::Hold(h));
    }
    if let Some(requires) = &environment.requires
        && !bus.latch_is_set(&override_latch(&deployment)).await?
        && let Some(missing) = requirement(bus, pipeline, requires, r, at).await?
    {
        return Ok(Verdict::Hold(Hold {
            kind: HoldKind::Requires,
            reason: missing,
            until: None,
        }));
    }
    if let Some(approval) = approval {
        if bus.latch_is_set(&approval_latch(&deployment)).await? {
            return Ok(Verdict::Go);
        }
        let expires = request.time + time::Duration::seconds(approval.expires_secs as i64);
        if at >= expires {
            return Ok(Verdict::Refuse(
                Stage::Approval,
                format!("not approved within {} s", approval.expires_secs),
            ));
        }
        return Ok(Verdict::Hold(Hold {
            kind: HoldKind::Approval,
            reason: format!("awaiting approval by {}", approval.approvers.join(" or ")),
            until: Some(expires),
        }));
    }
    Ok(Verdict::Go)
}

/// What is missing for `request` to pass `requires`, if anything: the same commit (or image
/// digest) completed — verified, where that environment verifies — in the required
/// environment at least `soak_secs` ago, as the completions journal says.
async fn requirement(
    bus: &Bus,
    pipeline: &Pipeline,
    requires: &crate::config::Requires,
    request: &crate::events::DeployRequested,
    at: OffsetDateTime,
) -> Result<Option<String>, BusError> {
    let verifies = pipeline
        .environment(&requires.environment)
        .is_some_and(|e| e.verify.is_some());
    let same = |c: &crate::events::DeployCompleted| match (&request.image.digest, &c.image.digest) {
        (Some(a), Some(b)) => a == b,
        _ => !request.sha.is_empty() && c.sha.as_deref() == Some(request.sha.as_str()),
    };
    let completions = bus.journal(crate::bus::queues::DEPLOY_COMPLETIONS).await?;
    let passed = completions
        .iter()
        .filter_map(|e| match &e.event {
            Event::DeployCompleted(c)
                if c.environment == requires.environment
                    && same(c)
                    && (c.verified || !verifies) =>
            {
                Some(e.time)
            }
            _ => None,
        })
        .min();
    let what = if request.sha.is_empty() {
        request.image.reference()
    } else {
        format!(
            "{}@{}",
            request.repository,
            &request.sha[..request.sha.len().min(7)]
        )
    };
    let soak = time::Duration::seconds(requires.soak_secs as i64);
    Ok(match passed {
        None => Some(format!(
            "{what} has not completed{} in {} yet",
            if verifies {
                " and passed verification"
            } else {
                ""
            },
            requires.environment
        )),
        Some(t) if at - t < soak => Some(format!(
            "{what} completed in {} {} s ago; it must soak {} s there first",
            requires.environment,
            (at - t).whole_seconds(),
            requires.soak_secs
        )),
        Some(_) => None,
    })
}

/// Pause `environment`: from the moment this returns, no executor applies a request for it
/// (unless forced). Returns the `control.paused` event, which is also the record.
pub async fn pause(
    bus: &Bus,
    environment: &str,
    actor: Actor,
    reason: &str,
) -> Result<Envelope, BusError> {
    let event = Envelope::new(
        SOURCE,
        Event::EnvironmentPaused(EnvironmentPaused {
            environment: environment.to_owned(),
            actor,
            reason: reason.to_owned(),
        }),
    );
    bus.set_latch(&pause_latch(environment), &event).await?;
    Ok(event)
}

/// Resume `environment`: the record first, then the latch, so a failure in between leaves it
/// paused (the operator resumes again) rather than resumed without a record.
pub async fn resume(
    bus: &Bus,
    environment: &str,
    actor: Actor,
    reason: Option<&str>,
) -> Result<Envelope, BusError> {
    let event = Envelope::new(
        SOURCE,
        Event::EnvironmentResumed(EnvironmentResumed {
            environment: environment.to_owned(),
            actor,
            reason: reason.map(str::to_owned),
        }),
    );
    bus.publish(&event).await?;
    bus.clear_latch(&pause_latch(environment)).await?;
    Ok(event)
}
