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
use crate::config::Environment;
use crate::events::{Actor, EnvironmentPaused, EnvironmentResumed, HoldKind};
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
