//! The one executor contract: how a deployment request becomes a launch, whatever carries it
//! out. An executor — AWX (awx-launcher) or the StatefulSet patch (rollout-watcher) — is an
//! adapter that *observes* its environment and *applies* a request; the rules are decided here,
//! once, on what it observed, so a change to them is made in one place.
//!
//! The steps, in order:
//! 1. **adopt** — this deployment was applied already (a redelivery, a lost answer): publish its
//!    launch again, under the same id, and apply nothing;
//! 2. **overtaken** — it was applied and another has been applied since: it is a copy published
//!    again, superseded, never applied twice;
//! 3. **fenced** — a lost worker's apply may still land: wait it out before concluding that
//!    nothing was applied;
//! 4. **newest wins** — a newer request for the environment, seen by this process or applied by
//!    any, supersedes this one;
//! 5. **held** — the environment is paused or inside a freeze window (and the request is not
//!    forced): the request waits on the broker, reported `deploy.held` once;
//! 6. **settling** — a held request that finds its hold lifted waits until every held request
//!    of the environment has come back once, so that the newest of them is the one that runs;
//! 7. **busy** — another deployment is still running there: wait;
//! 8. **apply**.

use crate::sync::lock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::bus::{Bus, Incoming, Outcome};
use crate::config::{Environment, Pipeline};
use crate::control::{self, Hold, Verdict};
use crate::events::{
    DeployAwaitingApproval, DeployFailed, DeployHeld, DeployRequested, HoldKind, Stage,
};
use crate::retry::{Classify, Transience};
use crate::supersede::{NewestRequests, RequestOrder, request_order, superseded};
use crate::telemetry::Decisions;
use crate::{Envelope, Event};

/// How often a request for a busy environment looks again.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);

/// How often a held request looks again (so how soon after a resume the hold is noticed).
pub const HOLD_WAIT: Duration = Duration::from_secs(5);

/// How long after a hold lifts held requests wait for each other: every one of them comes back
/// within one [`HOLD_WAIT`], so after this the newest has been seen.
pub const SETTLE: Duration = Duration::from_secs(8);

/// A deployment request as an executor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The `deploy.requested` envelope.
    pub envelope: &'a Envelope,
    /// Its data.
    pub request: &'a DeployRequested,
    /// The environment's configuration.
    pub environment: &'a Environment,
}

impl Request<'_> {
    /// The request's place in newest-wins order.
    pub fn order(&self) -> RequestOrder {
        request_order(self.envelope)
    }
}

/// What an executor found of this deployment in its environment.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// It is what the environment runs or is rolling out: its `deploy.launched`, to publish
    /// again.
    Current(Box<Envelope>),
    /// It was applied, and the deployment `by` has been applied since.
    Overtaken {
        /// Correlation id of the deployment applied since.
        by: String,
    },
}

/// What an executor observed, for the decision.
#[derive(Debug)]
pub struct Observation<S> {
    /// This deployment, if it was applied already.
    pub applied: Option<Applied>,
    /// How long a lost worker's apply may still land, if it may.
    pub fence: Option<Duration>,
    /// The order and correlation id of the last deployment applied to the environment.
    pub last: Option<(RequestOrder, String)>,
    /// Why the environment is busy (another deployment still running), if it is.
    pub busy: Option<String>,
    /// What [`Executor::apply`] needs of what was observed (e.g. the StatefulSet seen at rest).
    pub state: S,
}

impl<S> Observation<S> {
    /// Nothing applied, nothing in the way.
    pub fn clear(state: S) -> Self {
        Self {
            applied: None,
            fence: None,
            last: None,
            busy: None,
            state,
        }
    }
}

/// An executor adapter.
pub trait Executor: Send + Sync {
    /// What went wrong talking to the executor's system (or reading the environment's hold).
    type Error: std::fmt::Display + Classify + From<HoldError> + Send;
    /// What apply needs of the observation.
    type State: Send;

    /// Look at the environment: was this deployment applied, what was applied last, is it busy.
    fn observe(
        &self,
        request: &Request<'_>,
    ) -> impl Future<Output = Result<Observation<Self::State>, Self::Error>> + Send;

    /// Carry the request out; returns its `deploy.launched`.
    fn apply(
        &self,
        request: &Request<'_>,
        state: Self::State,
    ) -> impl Future<Output = Result<Envelope, Self::Error>> + Send;
}

/// What was decided about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish this launch again.
    Adopt(Box<Envelope>),
    /// A newer deployment (`by`) wins.
    Supersede {
        /// Its correlation id.
        by: String,
    },
    /// Wait out a lost worker's apply.
    Fenced(Duration),
    /// Hold it.
    Held(Hold),
    /// The hold lifted: wait this long for the other held requests.
    Settling(Duration),
    /// Another deployment is running.
    Busy(String),
    /// It will never be carried out (rejected, or its approval expired).
    Refused(Stage, String),
    /// Carry it out.
    Apply,
}

impl Decision {
    /// What is counted for it.
    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::Adopt(_) => DecisionKind::Adopted,
            Decision::Supersede { .. } => DecisionKind::Superseded,
            Decision::Fenced(_) => DecisionKind::Fenced,
            Decision::Held(_) => DecisionKind::Held,
            Decision::Settling(_) => DecisionKind::Settling,
            Decision::Busy(_) => DecisionKind::Busy,
            Decision::Refused(..) => DecisionKind::Refused,
            Decision::Apply => DecisionKind::Applied,
        }
    }
}

/// What the executor contract counts per request: a part of an executor service's
/// `<service>_decisions_total`, which names [`DecisionKind::Applied`] after its executor
/// (`launched`, `patched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Carried out.
    Applied,
    /// Already applied: its launch published again.
    Adopted,
    /// A newer deployment won.
    Superseded,
    /// Waiting out a lost worker's apply.
    Fenced,
    /// Held.
    Held,
    /// A hold lifted; waiting for the other held requests.
    Settling,
    /// Another deployment is running.
    Busy,
    /// Refused by an approver, or its approval expired.
    Refused,
    /// Cannot be carried out.
    Rejected,
}

impl crate::telemetry::Decision for DecisionKind {
    const ALL: &'static [Self] = &[
        DecisionKind::Applied,
        DecisionKind::Adopted,
        DecisionKind::Superseded,
        DecisionKind::Fenced,
        DecisionKind::Held,
        DecisionKind::Settling,
        DecisionKind::Busy,
        DecisionKind::Refused,
        DecisionKind::Rejected,
    ];

    fn name(self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            DecisionKind::Applied => "applied",
            DecisionKind::Adopted => "adopted",
            DecisionKind::Superseded => "superseded",
            DecisionKind::Fenced => "fenced",
            DecisionKind::Held => "held",
            DecisionKind::Settling => "settling",
            DecisionKind::Busy => "busy",
            DecisionKind::Refused => "refused",
            DecisionKind::Rejected => "rejected",
        })
    }

    fn meaning(self) -> &'static str {
        match self {
            DecisionKind::Applied => "the request carried out",
            DecisionKind::Adopted => "found already applied; its launch published again",
            DecisionKind::Superseded => "a newer deployment of the environment won",
            DecisionKind::Fenced => "waiting out an apply a lost worker may still land",
            DecisionKind::Held => "paused, frozen, waiting for `requires` or an approval",
            DecisionKind::Settling => "a hold lifted; waiting for the other held requests",
            DecisionKind::Busy => "another deployment is running",
            DecisionKind::Refused => "rejected by an approver, or its approval expired",
            DecisionKind::Rejected => "a request that cannot be carried out",
        }
    }
}

/// Where a request stands in what is known besides the executor's observation.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// A newer request for the environment, seen by this process.
    pub newer_seen: Option<String>,
    /// What the holds say of the request now (a pause, a freeze window, a required
    /// environment, an approval).
    pub verdict: Option<Verdict>,
    /// When the first held request to find the hold lifted came back, if one did.
    pub settling_since: Option<std::time::Instant>,
    /// This request comes back from a hold of the whole environment (a pause or a freeze
    /// window), which other requests may be waiting out too. A hold of its own (requires, an
    /// approval) lifts for it alone: it need not wait for the others.
    pub environment_held: bool,
    /// The last deployment applied is still being followed and verified (its rollout may be
    /// over, but it has not completed): the environment is busy with it.
    pub verifying: Option<String>,
}

/// The rules, on an observation: pure, the same inputs always give the same decision.
pub fn decide<S>(
    order: RequestOrder,
    observation: &Observation<S>,
    context: &Context,
    now: std::time::Instant,
) -> Decision {
    match &observation.applied {
        Some(Applied::Current(launched)) => return Decision::Adopt(launched.clone()),
        Some(Applied::Overtaken { by }) => return Decision::Supersede { by: by.clone() },
        None => {}
    }
    if let Some(wait) = observation.fence {
        return Decision::Fenced(wait);
    }
    if let Some(by) = &context.newer_seen {
        return Decision::Supersede { by: by.clone() };
    }
    if let Some((last, by)) = &observation.last
        && *last > order
    {
        return Decision::Supersede { by: by.clone() };
    }
    match &context.verdict {
        Some(Verdict::Hold(hold)) => return Decision::Held(hold.clone()),
        Some(Verdict::Refuse(stage, reason)) => {
            return Decision::Refused(*stage, reason.clone());
        }
        Some(Verdict::Go) | None => {}
    }
    if context.environment_held {
        let since = context.settling_since.unwrap_or(now);
        let waited = now.saturating_duration_since(since);
        if waited < SETTLE {
            return Decision::Settling(SETTLE - waited);
        }
    }
    if let Some(reason) = observation.busy.as_ref().or(context.verifying.as_ref()) {
        return Decision::Busy(reason.clone());
    }
    Decision::Apply
}

/// Carries out the contract for one executor: per-environment lanes, newest-wins memory, holds,
/// and the one mapping of decisions and failures to outcomes.
pub struct Decider {
    source: &'static str,
    bus: Bus,
    pipeline: Arc<Pipeline>,
    metrics: Decisions<DecisionKind>,
    newest: NewestRequests,
    /// One lane per environment: its decisions depend on the ones before, so they run one at a
    /// time; different environments decide in parallel.
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per environment: when the first held request found its hold lifted.
    settling: Mutex<HashMap<String, std::time::Instant>>,
}

impl Decider {
    /// A decider publishing as `source`, reading holds from `bus` (for `pipeline`'s
    /// environments), counting into `metrics`.
    pub fn new(
        source: &'static str,
        bus: Bus,
        pipeline: Arc<Pipeline>,
        metrics: Decisions<DecisionKind>,
    ) -> Self {
        Self {
            source,
            bus,
            pipeline,
            metrics,
            newest: NewestRequests::default(),
            lanes: Mutex::new(HashMap::new()),
            settling: Mutex::new(HashMap::new()),
        }
    }

    /// Decide on one delivered request and carry the decision out through `executor`.
    pub async fn handle<X: Executor>(
        &self,
        executor: &X,
        incoming: &Incoming,
        request: &DeployRequested,
        environment: &Environment,
    ) -> Outcome {
        let lane = lock(&self.lanes)
            .entry(environment.name.clone())
            .or_default()
            .clone();
        let _turn = lane.lock().await;
        let r = Request {
            envelope: &incoming.envelope,
            request,
            environment,
        };
        match self.run(executor, &r, incoming.held.as_deref()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let outcome = Outcome::failure(&e, incoming.attempt);
                if !outcome.is_dead_letter() {
                    return outcome;
                }
                self.metrics.count(DecisionKind::Rejected);
                self.failed(&r, Stage::Launch, e.to_string())
            }
        }
    }

    async fn run<X: Executor>(
        &self,
        executor: &X,
        r: &Request<'_>,
        held_by: Option<&str>,
    ) -> Result<Outcome, X::Error> {
        let was_held = held_by.is_some();
        let environment_held = held_by.is_some_and(holds_environment);
        let env = r.envelope;
        let name = &r.environment.name;
        let observation = executor.observe(r).await?;
        let mut context = Context {
            environment_held,
            ..Context::default()
        };
        // Seen by this process: noted before anything else, so that a request held or busy now
        // still counts when an older one comes back.
        if observation.applied.is_none() && observation.fence.is_none() {
            context.newer_seen = self.newest.newer_than(env, name).map(|(_, by)| by);
        }
        let pending = decide(r.order(), &observation, &context, std::time::Instant::now());
        if matches!(pending, Decision::Apply | Decision::Busy(_)) || was_held {
            // Read the holds as late as possible: a pause confirmed before this look holds it.
            let verdict = control::judge(
                &self.bus,
                &self.pipeline,
                r.environment,
                env,
                OffsetDateTime::now_utc(),
            )
            .await
            .map_err(|e| X::Error::from(HoldError(e)))?;
            {
                let mut settling = lock(&self.settling);
                if matches!(verdict, Verdict::Hold(_)) {
                    settling.remove(name);
                } else if environment_held {
                    context.settling_since = Some(
                        *settling
                            .entry(name.clone())
                            .or_insert_with(std::time::Instant::now),
                    );
                }
            }
            context.verdict = Some(verdict);
            context.verifying = self.verifying(r, &observation).await?;
        }
        let decision = if context.verdict.is_some() {
            decide(r.order(), &observation, &context, std::time::Instant::now())
        } else {
            pending
        };
        if !matches!(decision, Decision::Apply) {
            self.metrics.count(decision.kind());
        }
        Ok(match decision {
            Decision::Adopt(launched) => {
                tracing::info!(deployment = %env.correlation_id, environment = %name, "already applied; adopting it");
                Outcome::publish(vec![*launched])
            }
            Decision::Supersede { by } => {
                tracing::info!(deployment = %env.correlation_id, superseded_by = %by, environment = %name, "superseded");
                Outcome::publish(vec![superseded(env, name, self.source, &by)])
            }
            Decision::Fenced(wait) => Outcome::defer(
                wait,
                format!("{name}: an apply the lost worker sent may still land"),
            ),
            Decision::Held(hold) => {
                let kind = hold_name(hold.kind);
                let mut outcome = Outcome::hold(HOLD_WAIT, format!("held: {}", hold.reason), kind);
                // Reported when the hold begins, or becomes another (paused, then awaiting
                // approval); not each time the request comes back.
                if held_by != Some(kind) {
                    tracing::info!(deployment = %env.correlation_id, environment = %name, reason = %hold.reason, "held");
                    outcome = outcome.and_publish(self.held(r, &hold));
                }
                outcome
            }
            Decision::Settling(wait) => Outcome::hold(
                wait.max(Duration::from_millis(500)),
                format!("{name}: the hold lifted; waiting for every held request to come back"),
                SETTLING,
            ),
            Decision::Refused(stage, reason) => {
                tracing::info!(deployment = %env.correlation_id, environment = %name, %reason, "refused");
                let mut outcome = self.failed(r, stage, reason);
                // Not a fault: the request was decided, so nothing waits in the dead letters.
                outcome.disposition = crate::bus::Disposition::Ack;
                outcome
            }
            Decision::Busy(reason) => Outcome::defer(BUSY_WAIT, reason),
            Decision::Apply => {
                let launched = executor.apply(r, observation.state).await?;
                self.metrics.count(DecisionKind::Applied);
                tracing::info!(deployment = %env.correlation_id, environment = %name, trigger = r.request.operation.trigger.as_str(), "applied");
                Outcome::publish(vec![launched])
            }
        })
    }

    /// Where the environment verifies its deployments: the last one applied, while its
    /// follow has not ended it (`control::verifying_latch`, raised by rollout-watcher for the
    /// whole follow). Between its last pod Ready and its verdict the StatefulSet is at rest and
    /// the AWX job may be over, yet the environment is not free: a deployment applied then
    /// would be what the verification looks at.
    async fn verifying<S, E: From<HoldError>>(
        &self,
        r: &Request<'_>,
        observation: &Observation<S>,
    ) -> Result<Option<String>, E> {
        let Some((_, last)) = &observation.last else {
            return Ok(None);
        };
        if r.environment.verify.is_none() || *last == r.envelope.correlation_id {
            return Ok(None);
        }
        let deployment = crate::events::deployment_id(last, &r.environment.name);
        let set = self
            .bus
            .latch_is_set(&control::verifying_latch(&deployment))
            .await
            .map_err(|e| E::from(HoldError(e)))?;
        Ok(set.then(|| {
            format!(
                "{} is verifying deployment {deployment}",
                r.environment.name
            )
        }))
    }

    /// The report of a hold: `deploy.awaiting_approval` for an approval (GitHub and Slack
    /// say whom it waits for), `deploy.held` otherwise; one id per deployment and kind.
    fn held(&self, r: &Request<'_>, hold: &Hold) -> Envelope {
        let event = match (hold.kind, &r.environment.approval) {
            (HoldKind::Approval, Some(a)) => {
                Event::DeployAwaitingApproval(DeployAwaitingApproval {
                    environment: r.environment.name.clone(),
                    approvers: a.approvers.clone(),
                    expires_at: hold.until.unwrap_or(r.envelope.time),
                    operation: r.request.operation.carried(),
                })
            }
            _ => Event::DeployHeld(DeployHeld {
                environment: r.environment.name.clone(),
                kind: hold.kind,
                reason: hold.reason.clone(),
                until: hold.until,
            }),
        };
        Envelope::caused_by(r.envelope, self.source, event).with_derived_id(&format!(
            "{}:held:{}",
            crate::events::deployment_id(&r.envelope.correlation_id, &r.environment.name),
            hold_name(hold.kind)
        ))
    }

    /// The permanent end of a request that cannot be carried out: `deploy.failed` at `stage`,
    /// and the request dead-lettered with the same reason.
    pub fn failed(&self, r: &Request<'_>, stage: Stage, reason: String) -> Outcome {
        failed(self.source, r.envelope, &r.environment.name, stage, reason)
    }
}

/// The mark of a request waiting for the other held requests after a hold lifted.
const SETTLING: &str = "settling";

/// Whether a held message's mark is of a hold on the whole environment.
fn holds_environment(mark: &str) -> bool {
    mark == hold_name(HoldKind::Paused) || mark == hold_name(HoldKind::Frozen) || mark == SETTLING
}

/// The name a hold marks a held message with.
fn hold_name(kind: HoldKind) -> &'static str {
    match kind {
        HoldKind::Paused => "paused",
        HoldKind::Frozen => "frozen",
        HoldKind::Requires => "requires",
        HoldKind::Approval => "approval",
        HoldKind::Unknown => "held",
    }
}

/// The permanent end of the request `envelope` for `environment`: `deploy.failed` at `stage`,
/// and the request dead-lettered with the same reason. Its id is the deployment's one terminal
/// id ([`crate::events::deployment_end_key`]): a refusal whose ack was lost comes back to a
/// decider that may now see a newer request, and the `deploy.superseded` it then publishes must
/// be the same end again, not a second one.
pub fn failed(
    source: &str,
    envelope: &Envelope,
    environment: &str,
    stage: Stage,
    reason: String,
) -> Outcome {
    let operation = match &envelope.event {
        Event::DeployRequested(r) => r.operation.carried(),
        _ => None,
    };
    let failed = Envelope::caused_by(
        envelope,
        source,
        Event::DeployFailed(DeployFailed {
            environment: environment.to_owned(),
            stage,
            reason: reason.clone(),
            operation,
        }),
    )
    .with_derived_id(&crate::events::deployment_end_key(
        &envelope.correlation_id,
        environment,
    ));
    Outcome::dead_letter(reason).and_publish(failed)
}

/// The broker could not say whether the environment is held: retry, never guess.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the environment's hold: {0}")]
pub struct HoldError(crate::BusError);

impl Classify for HoldError {
    fn transience(&self) -> Transience {
        Transience::Transient(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::HoldKind;
    use std::time::Instant;
    use time::macros::datetime;

    fn order(minute: u8) -> RequestOrder {
        let t = datetime!(2026-12-02 12:00 UTC) + time::Duration::minutes(i64::from(minute));
        (t, t)
    }

    fn observed() -> Observation<()> {
        Observation::clear(())
    }

    fn hold() -> Hold {
        Hold {
            kind: HoldKind::Paused,
            reason: "staging is paused".into(),
            until: None,
        }
    }

    #[test]
    fn the_steps_apply_in_their_order() {
        let now = Instant::now();
        let ctx = Context::default();
        assert_eq!(decide(order(1), &observed(), &ctx, now), Decision::Apply);

        // Adopting wins over everything: a request applied already is never held or superseded.
        let launched = Envelope::new(
            "t",
            Event::DeployFailed(DeployFailed {
                environment: "staging".into(),
                stage: Stage::Launch,
                reason: "stand-in".into(),
                operation: None,
            }),
        );
        let mut o = observed();
        o.applied = Some(Applied::Current(Box::new(launched.clone())));
        o.busy = Some("busy".into());
        let held = Context {
            verdict: Some(Verdict::Hold(hold())),
            newer_seen: Some("newer".into()),
            ..Context::default()
        };
        assert_eq!(
            decide(order(1), &o, &held, now),
            Decision::Adopt(Box::new(launched))
        );
        o.applied = Some(Applied::Overtaken { by: "b".into() });
        assert_eq!(
            decide(order(1), &o, &held, now),
            Decision::Supersede { by: "b".into() }
        );

        // A fence waits before anything concludes that nothing was applied.
        let mut o = observed();
        o.fence = Some(Duration::from_secs(3));
        assert_eq!(
            decide(order(1), &o, &held, now),
            Decision::Fenced(Duration::from_secs(3))
        );

        // Newest wins — seen here, or applied anywhere — before a hold or a busy environment.
        let o = observed();
        assert_eq!(
            decide(order(1), &o, &held, now),
            Decision::Supersede { by: "newer".into() }
        );
        let mut o = observed();
        o.last = Some((order(2), "applied-later".into()));
        o.busy = Some("rolling".into());
        assert_eq!(
            decide(order(1), &o, &Context::default(), now),
            Decision::Supersede {
                by: "applied-later".into()
            }
        );
        // An older applied one does not supersede; the environment is busy with it.
        o.last = Some((order(0), "earlier".into()));
        assert_eq!(
            decide(order(1), &o, &Context::default(), now),
            Decision::Busy("rolling".into())
        );
        // Held beats busy: the operator's hold is what the request waits for.
        let paused = Context {
            verdict: Some(Verdict::Hold(hold())),
            ..Context::default()
        };
        assert_eq!(decide(order(1), &o, &paused, now), Decision::Held(hold()));
    }

    #[test]
    fn a_held_request_waits_after_the_hold_lifts_until_every_held_one_came_back() {
        let start = Instant::now();
        let lifted = Context {
            environment_held: true,
            settling_since: Some(start),
            ..Context::default()
        };
        assert_eq!(
            decide(
                order(1),
                &observed(),
                &lifted,
                start + Duration::from_secs(3)
            ),
            Decision::Settling(SETTLE - Duration::from_secs(3))
        );
        assert_eq!(
            decide(order(1), &observed(), &lifted, start + SETTLE),
            Decision::Apply
        );
        // A request that was never held does not wait for anyone.
        let fresh = Context {
            settling_since: Some(start),
            ..Context::default()
        };
        assert_eq!(
            decide(order(1), &observed(), &fresh, start),
            Decision::Apply
        );
        // The settle window is longer than one hold cycle: every held request is seen in it.
        assert!(SETTLE > HOLD_WAIT);
    }

    #[test]
    fn a_refusal_and_a_later_supersession_of_one_deployment_are_one_end() {
        // A refusal whose ack was lost comes back; by then a newer request was seen and the
        // decider supersedes it instead. Both ends must carry one id, or the deployment ends
        // twice (found by the fault campaign: failed at approval, then superseded).
        let request = Envelope::new(
            "t",
            Event::DeployRequested(DeployRequested {
                environment: "production".into(),
                repository: "o/r".into(),
                sha: "a".repeat(40),
                git_ref: crate::events::GitRef::branch("main"),
                image: crate::events::ImageRef {
                    repository: "o/r".into(),
                    tag: Some("1".into()),
                    digest: None,
                },
                upstream: Vec::new(),
                origin_time: None,
                operation: Default::default(),
            }),
        );
        let refused = failed(
            "t",
            &request,
            "production",
            Stage::Approval,
            "rejected by an approver".into(),
        );
        let superseded = superseded(&request, "production", "t", "newer");
        assert_eq!(refused.publish.len(), 1);
        assert_eq!(refused.publish[0].id, superseded.id);
        assert!(matches!(refused.publish[0].event, Event::DeployFailed(_)));
        // Another environment of the same chain is another deployment, with its own end.
        let elsewhere = superseded_for("staging", &request);
        assert_ne!(elsewhere, superseded.id);
    }

    fn superseded_for(environment: &str, request: &Envelope) -> String {
        superseded(request, environment, "t", "newer").id
    }
}
