//! The event bus: publish with confirms; consume with the ack / retry / dead-letter decision
//! made here and nowhere else.
//!
//! A handler is a plain async function from an [`Incoming`] event to an [`Outcome`]: the events
//! it causes plus a [`Disposition`]. The bus publishes the caused events (each confirmed by the
//! broker) *before* it acks the delivery, so a crash at any point leaves either the delivery
//! unacked (it comes back) or everything durable. Two transports sit behind the same interface:
//! RabbitMQ (production, every integration test) and an in-memory one (the single-process demo
//! and fast handler tests).

mod amqp;
mod memory;
pub mod partition;
mod topology;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use topology::{DEFAULT_PARTITIONS, QueueDef, Topology, queues, topic_matches};

use crate::events::Envelope;
use crate::retry::{Classify, Policy, Transience};
use crate::telemetry::{BusMetrics, DeliveryLabels, EventLabels, QueueLabels};

/// Header: 1-based delivery attempt, incremented by each delayed redelivery.
pub const HEADER_ATTEMPT: &str = "x-conveyor-attempt";
/// Header on dead letters: why the message was parked.
pub const HEADER_REASON: &str = "x-conveyor-reason";
/// Header on dead letters: attempts made.
pub const HEADER_ATTEMPTS: &str = "x-conveyor-attempts";
/// Header on dead letters: the queue the message came from (replay goes back there).
pub const HEADER_ORIGIN_QUEUE: &str = "x-conveyor-origin-queue";
/// Header on dead letters: the original routing key.
pub const HEADER_ROUTING_KEY: &str = "x-conveyor-routing-key";
/// Header on retried messages: the delay tier (milliseconds) that routes them. No `x-` prefix:
/// a headers exchange ignores such headers when matching, which would send a retry to every tier.
pub const HEADER_DELAY: &str = "conveyor-delay";
/// Header on retried messages: why the last attempt asked for a retry.
pub const HEADER_RETRY_REASON: &str = "x-conveyor-retry-reason";
/// Header on a message held back (an executor's request while its environment is paused or
/// frozen, or its approval is awaited): it comes back with [`Incoming::held`] saying what held
/// it, so a hold noticed once is reported once, and a request that waited knows it waited.
pub const HEADER_HELD: &str = "x-conveyor-held";

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached within the allowed time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A `mandatory` publish matched no queue: nobody would ever see the event.
    #[error("event with routing key {0:?} is unroutable: no queue is bound to it")]
    Unroutable(String),
    /// The broker refused the message (negative confirm).
    #[error("broker refused the message (nack) for routing key {0:?}")]
    Nacked(String),
    /// Declaring the topology failed (usually a queue that exists with other arguments).
    #[error("cannot declare topology: {0}")]
    Topology(String),
    /// The named queue is not part of the topology.
    #[error("queue {0:?} is not in the topology")]
    UnknownQueue(String),
}

/// A delivery handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The decoded event.
    pub envelope: Envelope,
    /// 1 on first delivery; incremented by each delayed retry.
    pub attempt: u32,
    /// The broker redelivered it (a previous consumer did not ack); effects may have happened.
    pub redelivered: bool,
    /// What held it, when it comes back from a hold ([`Outcome::hold`]).
    pub held: Option<String>,
    /// The queue it came from.
    pub queue: String,
}

/// What to do with a delivery once its handler has run.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Done.
    Ack,
    /// Try again later (transient failure); the bus picks the retry tier nearest `after`.
    Retry {
        /// Wanted delay.
        after: Duration,
        /// Why, for logs and the dead letter if attempts run out.
        reason: String,
    },
    /// Not a failure: the work is waiting on something outside (an AWX job, a rollout). Come
    /// back after about `after` without using up an attempt. This is how long waits survive a
    /// crash without holding a delivery open past RabbitMQ's `consumer_timeout`.
    Defer {
        /// Wanted delay.
        after: Duration,
        /// What it waits for, for logs.
        reason: String,
        /// Marked as held by this: it comes back with [`Incoming::held`] saying so.
        held: Option<String>,
    },
    /// Will never succeed: park it in the dead-letter queue with `reason`.
    DeadLetter {
        /// Why, stored in the `x-conveyor-reason` header.
        reason: String,
    },
}

/// A handler's result: events to publish (before settling) and the disposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Events caused by this delivery, published with confirms before the ack.
    pub publish: Vec<Envelope>,
    /// How to settle the delivery.
    pub disposition: Disposition,
}

impl Outcome {
    /// Done, nothing to publish.
    pub fn ack() -> Self {
        Self::publish(Vec::new())
    }

    /// Done once these events are confirmed.
    pub fn publish(events: Vec<Envelope>) -> Self {
        Self {
            publish: events,
            disposition: Disposition::Ack,
        }
    }

    /// Transient failure: retry after about `after`.
    pub fn retry(after: Duration, reason: impl Into<String>) -> Self {
        Self {
            publish: Vec::new(),
            disposition: Disposition::Retry {
                after,
                reason: reason.into(),
            },
        }
    }

    /// Waiting on something outside: come back after about `after`, attempts unchanged.
    pub fn defer(after: Duration, reason: impl Into<String>) -> Self {
        Self {
            publish: Vec::new(),
            disposition: Disposition::Defer {
                after,
                reason: reason.into(),
                held: None,
            },
        }
    }

    /// Held back by `what` (a pause, a freeze window, an awaited approval): like
    /// [`Outcome::defer`], and the message comes back with [`Incoming::held`] = `what`.
    pub fn hold(after: Duration, reason: impl Into<String>, what: &str) -> Self {
        Self {
            publish: Vec::new(),
            disposition: Disposition::Defer {
                after,
                reason: reason.into(),
                held: Some(what.to_owned()),
            },
        }
    }

    /// Permanent failure: dead-letter with `reason`.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Self {
            publish: Vec::new(),
            disposition: Disposition::DeadLetter {
                reason: reason.into(),
            },
        }
    }

    /// Failed attempt `attempt` of a delivery, classified here for every service: a permanent
    /// error is dead-lettered; a transient one is retried after the server's requested wait,
    /// or else after [`Policy::REDELIVERY`]'s delay for this attempt.
    pub fn failure<E: Classify + std::fmt::Display + ?Sized>(e: &E, attempt: u32) -> Self {
        match e.transience() {
            Transience::Permanent => Self::dead_letter(e.to_string()),
            Transience::Transient(Some(wait)) => Self::retry(wait, e.to_string()),
            Transience::Transient(None) => Self::retry_later(attempt, e.to_string()),
        }
    }

    /// A failure that is always transient (the broker's journal, the database) at attempt
    /// `attempt`: retried after [`Policy::REDELIVERY`]'s delay.
    pub fn retry_later(attempt: u32, reason: impl Into<String>) -> Self {
        Self::retry(Policy::REDELIVERY.delay_after(attempt), reason)
    }

    /// Whether this parks the delivery in the dead-letter queue.
    pub fn is_dead_letter(&self) -> bool {
        matches!(self.disposition, Disposition::DeadLetter { .. })
    }

    /// Prefix the reason of a retry, deferral or dead letter with `context` (e.g. a channel).
    pub fn context(mut self, context: &str) -> Self {
        match &mut self.disposition {
            Disposition::Ack => {}
            Disposition::Retry { reason, .. }
            | Disposition::Defer { reason, .. }
            | Disposition::DeadLetter { reason } => *reason = format!("{context}: {reason}"),
        }
        self
    }

    /// Also publish `event` (e.g. a `deploy.failed` next to a dead letter).
    pub fn and_publish(mut self, event: Envelope) -> Self {
        self.publish.push(event);
        self
    }
}

/// How a consumer behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsumerOptions {
    /// Deliveries in flight at once (AMQP prefetch): the handlers a consumer runs at once,
    /// over all the partitions it holds of a partitioned queue.
    pub prefetch: u16,
    /// Attempts before a retried message is dead-lettered.
    pub max_attempts: u32,
    /// How long in-flight handlers may run after shutdown is requested.
    pub grace: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            prefetch: 16,
            max_attempts: 8,
            grace: Duration::from_secs(25),
        }
    }
}

/// The transport-independent settlement of one delivery, decided by [`settle`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settlement {
    Ack,
    Retry {
        tier: Duration,
        next_attempt: u32,
        reason: String,
        deferred: bool,
        held: Option<String>,
    },
    DeadLetter {
        reason: String,
        attempts: u32,
    },
}

impl Settlement {
    fn label(&self) -> &'static str {
        match self {
            Settlement::Ack => "ack",
            Settlement::Retry { deferred: true, .. } => "defer",
            Settlement::Retry { .. } => "retry",
            Settlement::DeadLetter { .. } => "dead_letter",
        }
    }
}

/// The one place where a disposition becomes an ack, a delayed retry or a dead letter (its
/// reason, which may quote an outside answer, scrubbed of every configured secret: it is
/// logged and kept in a header).
pub(crate) fn settle(
    disposition: Disposition,
    attempt: u32,
    options: &ConsumerOptions,
    topology: &Topology,
) -> Settlement {
    let disposition = match disposition {
        Disposition::Ack => Disposition::Ack,
        Disposition::DeadLetter { reason } => Disposition::DeadLetter {
            reason: crate::redact::scrub(&reason).into_owned(),
        },
        Disposition::Retry { after, reason } => Disposition::Retry {
            after,
            reason: crate::redact::scrub(&reason).into_owned(),
        },
        Disposition::Defer {
            after,
            reason,
            held,
        } => Disposition::Defer {
            after,
            reason: crate::redact::scrub(&reason).into_owned(),
            held,
        },
    };
    match disposition {
        Disposition::Ack => Settlement::Ack,
        Disposition::DeadLetter { reason } => Settlement::DeadLetter {
            reason,
            attempts: attempt,
        },
        Disposition::Retry { reason, .. } if attempt >= options.max_attempts => {
            Settlement::DeadLetter {
                reason: format!("gave up after {attempt} attempts: {reason}"),
                attempts: attempt,
            }
        }
        Disposition::Retry { after, reason } => Settlement::Retry {
            tier: topology.tier_for(after),
            next_attempt: attempt + 1,
            reason,
            deferred: false,
            held: None,
        },
        Disposition::Defer {
            after,
            reason,
            held,
        } => Settlement::Retry {
            tier: topology.tier_for(after),
            next_attempt: attempt,
            reason,
            deferred: true,
            held,
        },
    }
}

/// A raw message as a transport received it.
pub(crate) struct RawDelivery<'a> {
    pub body: &'a [u8],
    pub attempt: u32,
    pub redelivered: bool,
    pub held: Option<String>,
}

/// The bus: a cheap-to-clone handle on one transport.
#[derive(Clone)]
pub struct Bus {
    transport: Transport,
    topology: Arc<Topology>,
    metrics: BusMetrics,
}

#[derive(Clone)]
enum Transport {
    Amqp(amqp::AmqpTransport),
    Memory(memory::MemoryTransport),
}

impl Bus {
    /// Connect to RabbitMQ at `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`, or
    /// `amqps://…` for TLS) and declare `topology`. `name` labels the connection on the broker.
    /// Fails if the broker does not answer within `timeout` or the topology cannot be declared.
    pub async fn connect(
        url: &str,
        name: &str,
        topology: Topology,
        metrics: BusMetrics,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        Self::connect_trusting(url, None, name, topology, metrics, timeout).await
    }

    /// [`Bus::connect`], trusting the PEM certificates `ca` (for an `amqps://` broker whose
    /// certificate a private CA signed) instead of the system's roots.
    pub async fn connect_trusting(
        url: &str,
        ca: Option<&str>,
        name: &str,
        topology: Topology,
        metrics: BusMetrics,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        let topology = Arc::new(topology);
        let transport = amqp::AmqpTransport::connect(
            url,
            ca.map(str::to_owned),
            name,
            topology.clone(),
            metrics.clone(),
            timeout,
        )
        .await?;
        Ok(Self {
            transport: Transport::Amqp(transport),
            topology,
            metrics,
        })
    }

    /// An in-process bus with the same routing, retry and dead-letter semantics.
    pub fn in_memory(topology: Topology, metrics: BusMetrics) -> Self {
        let topology = Arc::new(topology);
        metrics.connected.set(1);
        Self {
            transport: Transport::Memory(memory::MemoryTransport::new(topology.clone())),
            topology,
            metrics,
        }
    }

    /// The declared topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True while the transport is connected.
    pub fn is_connected(&self) -> bool {
        match &self.transport {
            Transport::Amqp(t) => t.is_connected(),
            Transport::Memory(_) => true,
        }
    }

    /// Publish `event` to the exchange under its routing key, persistent and mandatory, and
    /// wait for the broker's confirm. During a broker outage it waits (reconnecting) up to the
    /// transport's publish timeout, then fails with [`BusError::Unavailable`]; an unroutable
    /// event fails with [`BusError::Unroutable`]. Never returns `Ok` for an unconfirmed event.
    pub async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        match &self.transport {
            Transport::Amqp(t) => t.publish_event(event).await?,
            Transport::Memory(t) => t.publish_event(event)?,
        }
        self.metrics
            .published
            .get_or_create(&EventLabels {
                event: event.event.name().to_owned(),
            })
            .inc();
        Ok(())
    }

    /// Consume the topology queue `queue` (full name) with `handler` until `shutdown` is
    /// cancelled; then stop taking deliveries, let in-flight handlers finish within
    /// `options.grace`, and leave the rest queued. Reconnects on its own after broker loss.
    pub async fn consume<H, F>(
        &self,
        queue: &str,
        options: ConsumerOptions,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), BusError>
    where
        H: Fn(Incoming) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        if self.topology.find(queue).is_none() && queue != self.topology.dead_queue() {
            return Err(BusError::UnknownQueue(queue.to_owned()));
        }
        let handler: Arc<dyn DynHandler> = Arc::new(move |i: Incoming| {
            Box::pin(handler(i)) as futures::future::BoxFuture<'static, Outcome>
        });
        match &self.transport {
            Transport::Amqp(t) => {
                t.consume(self.clone(), queue, options, handler, shutdown)
                    .await
            }
            Transport::Memory(t) => {
                t.consume(self.clone(), queue, options, handler, shutdown)
                    .await
            }
        }
    }

    /// Decode, run the handler (a panic counts as a transient failure), publish what it caused,
    /// and decide the settlement.
    pub(crate) async fn process(
        &self,
        queue: &str,
        raw: RawDelivery<'_>,
        handler: &Arc<dyn DynHandler>,
        options: &ConsumerOptions,
    ) -> Settlement {
        let started = Instant::now();
        let (event_name, disposition) = match Envelope::from_json(raw.body) {
            Err(e) => {
                tracing::warn!(queue, error = %e, "undecodable message");
                (
                    "undecodable",
                    Disposition::DeadLetter {
                        reason: format!("undecodable: {e}"),
                    },
                )
            }
            Ok(envelope) => {
                let name = envelope.event.name();
                let span = tracing::debug_span!("handle", queue, event = name, id = %envelope.id, correlation = %envelope.correlation_id, attempt = raw.attempt);
                let incoming = Incoming {
                    envelope,
                    attempt: raw.attempt,
                    redelivered: raw.redelivered,
                    held: raw.held.clone(),
                    queue: queue.to_owned(),
                };
                let fut = handler.call(incoming);
                // Its own task catches a panic; aborted with this one (a lost consumer's
                // handlers are stopped, see the AMQP transport).
                let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    tracing::Instrument::instrument(fut, span),
                ));
                let disposition = match task.await {
                    Err(join) => {
                        tracing::error!(queue, event = name, "handler panicked: {join}");
                        Disposition::Retry {
                            after: Duration::from_secs(1),
                            reason: "handler panicked".into(),
                        }
                    }
                    Ok(outcome) => self.publish_effects(outcome).await,
                };
                (name, disposition)
            }
        };
        let settlement = settle(disposition, raw.attempt, options, &self.topology);
        match &settlement {
            Settlement::Ack => {}
            Settlement::Retry { reason, tier, .. } => {
                tracing::info!(
                    queue,
                    event = event_name,
                    attempt = raw.attempt,
                    ?tier,
                    reason,
                    "retrying later"
                )
            }
            Settlement::DeadLetter { reason, .. } => {
                tracing::warn!(
                    queue,
                    event = event_name,
                    attempt = raw.attempt,
                    reason,
                    "dead-lettering"
                )
            }
        }
        self.metrics
            .handler_seconds
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .consumed
            .get_or_create(&DeliveryLabels {
                queue: queue.to_owned(),
                event: event_name.to_owned(),
                outcome: settlement.label().to_owned(),
            })
            .inc();
        settlement
    }

    async fn publish_effects(&self, outcome: Outcome) -> Disposition {
        for event in &outcome.publish {
            if let Err(e) = self.publish(event).await {
                // An unroutable effect is a topology bug that retrying cannot fix, but the
                // delivery itself is fine: retry so nothing is lost while the operator fixes it,
                // and let max_attempts park it visibly if it persists.
                return Disposition::Retry {
                    after: Duration::from_secs(5),
                    reason: format!("could not publish {}: {e}", event.routing_key()),
                };
            }
        }
        outcome.disposition
    }

    /// Delete every queue and exchange of this bus's namespace (test clean-up; never called by
    /// services).
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        match &self.transport {
            Transport::Amqp(t) => t.delete_topology().await,
            Transport::Memory(_) => Ok(()),
        }
    }

    /// The events in journal `<namespace>.<suffix>` (see [`Topology::with_journal`]), oldest
    /// first, leaving them there.
    pub async fn journal(&self, suffix: &str) -> Result<Vec<Envelope>, BusError> {
        let name = self.topology.queue(suffix);
        match &self.transport {
            Transport::Memory(t) => Ok(t.journal(&name)),
            Transport::Amqp(t) => t.journal(&name).await,
        }
    }

    /// The full queue name of latch `name`: `<namespace>.latch.<name>`.
    pub fn latch_queue(&self, name: &str) -> String {
        self.topology.queue(&format!("latch.{name}"))
    }

    /// Whether latch `name` is set. A latch is a durable queue nobody consumes: a set latch
    /// holds a message, and its message count — read without taking anything, so any number of
    /// replicas can look at once — is the state. It survives every restart (the broker's too)
    /// and every replica sees the same; a latch set (its event confirmed) before a look is seen
    /// by that look.
    pub async fn latch_is_set(&self, name: &str) -> Result<bool, BusError> {
        let queue = self.latch_queue(name);
        Ok(match &self.transport {
            Transport::Amqp(t) => t.latch_count(&queue).await?,
            Transport::Memory(t) => t.latch_count(&queue),
        } > 0)
    }

    /// Set latch `name` by publishing `event` (confirmed, and kept in the latch, which is bound
    /// to the event's routing key first; every other consumer of the event gets it as usual).
    pub async fn set_latch(&self, name: &str, event: &Envelope) -> Result<(), BusError> {
        let queue = self.latch_queue(name);
        let key = event.routing_key();
        match &self.transport {
            Transport::Amqp(t) => t.bind_latch(&queue, &key).await?,
            Transport::Memory(t) => t.bind_latch(&queue, &key),
        }
        self.publish(event).await
    }

    /// Set latch `name` by itself, without an event (a latch of one thing, such as one
    /// deployment's approval); with `expires`, the broker forgets it once unused that long.
    pub async fn raise_latch(&self, name: &str, expires: Option<Duration>) -> Result<(), BusError> {
        let queue = self.latch_queue(name);
        match &self.transport {
            Transport::Amqp(t) => t.raise_latch(&queue, expires).await,
            Transport::Memory(t) => {
                t.raise_latch(&queue);
                Ok(())
            }
        }
    }

    /// Clear latch `name` (nothing happens to a latch that is not set).
    pub async fn clear_latch(&self, name: &str) -> Result<(), BusError> {
        let queue = self.latch_queue(name);
        match &self.transport {
            Transport::Amqp(t) => t.clear_latch(&queue).await,
            Transport::Memory(t) => {
                t.clear_latch(&queue);
                Ok(())
            }
        }
    }

    /// Delete latch `name` altogether: for a latch of one deployment, once it is done with, so
    /// that latches do not pile up on the broker (deleting one that does not exist is fine).
    pub async fn drop_latch(&self, name: &str) -> Result<(), BusError> {
        let queue = self.latch_queue(name);
        match &self.transport {
            Transport::Amqp(t) => t.drop_latch(&queue).await,
            Transport::Memory(t) => {
                t.drop_latch(&queue);
                Ok(())
            }
        }
    }

    /// Every message parked in the dead-letter queue, with `action` applied to the selected ones;
    /// returns the messages looked at (all of them for a peek, the selected ones otherwise).
    /// Messages not acted on stay parked, in order. RabbitMQ only.
    pub async fn dead_letters(
        &self,
        action: DeadLetterAction<'_>,
    ) -> Result<Vec<DeadLetter>, BusError> {
        match &self.transport {
            Transport::Memory(_) => Err(BusError::Topology(
                "dead-letter tools need RabbitMQ (the in-memory bus keeps nothing)".into(),
            )),
            Transport::Amqp(t) => t.dead_letters(action).await,
        }
    }

    /// Remove and return the oldest message parked in the dead-letter queue, if any.
    pub async fn take_dead_letter(&self) -> Result<Option<DeadLetter>, BusError> {
        match &self.transport {
            Transport::Memory(t) => Ok(t.take_dead()),
            Transport::Amqp(t) => t.take_dead_letter().await,
        }
    }
}

/// What an operator does with parked messages.
pub enum DeadLetterAction<'a> {
    /// Look, change nothing.
    Peek,
    /// Send the selected ones back to their origin queue (each leaves the dead queue only after
    /// its republish is confirmed), with a fresh attempt count.
    Replay(&'a (dyn Fn(&DeadLetter) -> bool + Sync)),
    /// Delete the selected ones.
    Purge(&'a (dyn Fn(&DeadLetter) -> bool + Sync)),
}

/// A message parked in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event id (AMQP `message_id`), or empty when the message is not one of ours.
    pub id: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// `x-conveyor-reason`.
    pub reason: String,
    /// `x-conveyor-attempts`.
    pub attempts: u32,
    /// `x-conveyor-origin-queue`.
    pub origin_queue: String,
    /// `x-conveyor-routing-key`.
    pub routing_key: String,
}

/// Object-safe handler used inside the transports.
pub(crate) trait DynHandler: Send + Sync {
    fn call(&self, incoming: Incoming) -> futures::future::BoxFuture<'static, Outcome>;
}

impl<F> DynHandler for F
where
    F: Fn(Incoming) -> futures::future::BoxFuture<'static, Outcome> + Send + Sync,
{
    fn call(&self, incoming: Incoming) -> futures::future::BoxFuture<'static, Outcome> {
        self(incoming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failing(Transience);

    impl std::fmt::Display for Failing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failing {:?}", self.0)
        }
    }

    impl Classify for Failing {
        fn transience(&self) -> Transience {
            self.0
        }
    }

    #[test]
    fn a_failure_is_classified_once_with_one_backoff() {
        let permanent = Outcome::failure(&Failing(Transience::Permanent), 1);
        assert!(permanent.is_dead_letter());
        let named = Outcome::failure(
            &Failing(Transience::Transient(Some(Duration::from_secs(42)))),
            5,
        );
        assert!(
            matches!(named.disposition, Disposition::Retry { after, .. } if after == Duration::from_secs(42))
        );
        let third = Outcome::failure(&Failing(Transience::Transient(None)), 3).context("slack");
        match third.disposition {
            Disposition::Retry { after, reason } => {
                assert_eq!(after, Duration::from_secs(4));
                assert_eq!(reason, "slack: failing Transient(None)");
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn settle_is_the_single_decision() {
        let t =
            Topology::new("t").with_retry_tiers(&[Duration::from_secs(1), Duration::from_secs(30)]);
        let o = ConsumerOptions {
            max_attempts: 3,
            ..Default::default()
        };
        assert_eq!(settle(Disposition::Ack, 1, &o, &t), Settlement::Ack);
        assert_eq!(
            settle(
                Disposition::Retry {
                    after: Duration::from_secs(10),
                    reason: "503".into()
                },
                2,
                &o,
                &t
            ),
            Settlement::Retry {
                tier: Duration::from_secs(30),
                next_attempt: 3,
                reason: "503".into(),
                deferred: false,
                held: None,
            }
        );
        // Waiting is not failing: at the last attempt a deferral still comes back, same attempt.
        assert_eq!(
            settle(
                Disposition::Defer {
                    after: Duration::from_millis(500),
                    reason: "job running".into(),
                    held: None,
                },
                3,
                &o,
                &t
            ),
            Settlement::Retry {
                tier: Duration::from_secs(1),
                next_attempt: 3,
                reason: "job running".into(),
                deferred: true,
                held: None,
            }
        );
        assert_eq!(
            settle(
                Disposition::Retry {
                    after: Duration::ZERO,
                    reason: "503".into()
                },
                3,
                &o,
                &t
            ),
            Settlement::DeadLetter {
                reason: "gave up after 3 attempts: 503".into(),
                attempts: 3
            }
        );
        assert_eq!(
            settle(
                Disposition::DeadLetter {
                    reason: "bad".into()
                },
                1,
                &o,
                &t
            ),
            Settlement::DeadLetter {
                reason: "bad".into(),
                attempts: 1
            }
        );
    }
}
