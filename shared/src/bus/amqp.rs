//! The RabbitMQ transport on lapin: a supervised connection, confirmed mandatory publishes,
//! delayed retries through TTL queues, and dead letters with reason headers.
//!
//! Supervision is ours rather than lapin's auto-recovery: on any connection or channel error
//! the connection is dropped and rebuilt with backoff, the topology redeclared (idempotent)
//! and consumers restarted. A delivery received on a lost channel cannot be acked; the broker
//! redelivers it, which is why handlers are idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{
    Bus, BusError, ConsumerOptions, DeadLetter, DynHandler, HEADER_ATTEMPT, HEADER_ATTEMPTS,
    HEADER_DELAY, HEADER_HELD, HEADER_ORIGIN_QUEUE, HEADER_REASON, HEADER_RETRY_REASON,
    HEADER_ROUTING_KEY, RawDelivery, Settlement, Topology,
};
use crate::events::{CONTENT_TYPE, Envelope};
use crate::retry::Policy;
use crate::telemetry::BusMetrics;

/// How long a publish keeps trying through a broker outage before it reports failure.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);
/// Safety net around single broker round trips.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    publisher: Channel,
}

struct Inner {
    /// The cluster's nodes, in the order given (`AMQP_URL` may list several, comma-separated).
    urls: Vec<String>,
    /// The node tried first on the next connect: after a loss, the next one in turn.
    next_url: std::sync::atomic::AtomicUsize,
    /// PEM certificates to trust for `amqps://` instead of the system's roots.
    ca: Option<String>,
    name: String,
    topology: Arc<Topology>,
    metrics: BusMetrics,
    /// Held while the connection is checked or rebuilt (one rebuild at a time).
    live: Mutex<Option<Live>>,
    /// A copy of `live` for the fast path: every publish reads it without queueing on the
    /// async mutex (under 64 concurrent publishes that queue cost a task switch each).
    snapshot: std::sync::RwLock<Option<Live>>,
    connected: AtomicBool,
    /// Latch queues this bus touched (declared on first use, not in the topology), so that
    /// `delete_topology` removes them too.
    latches: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// This replica's name among the consumers of a partitioned stage.
    member: String,
    /// Deliveries another replica handed this one with a partition, never started
    /// (`<queue>\n<message id>` → not seen again yet): their redelivery is no sign of a lost
    /// worker.
    handed_over: std::sync::Mutex<crate::bounded::BoundedMap<String, bool>>,
}

/// How long a released partition waits for one more delivery in flight to it before it hands
/// over what it never started (on a saturated machine one was seen 50 ms behind the others).
const HANDOVER_WAIT: Duration = Duration::from_millis(200);

/// How many times a redelivery looks for a handover note (every `HANDOVER_LOOK`) before it is
/// taken for a lost worker's.
const HANDOVER_LOOKS: u32 = 6;

/// See [`HANDOVER_LOOKS`].
const HANDOVER_LOOK: Duration = Duration::from_millis(25);

/// Deliveries handed over and not yet seen again, remembered at most.
const HANDED_OVER: usize = 4096;

/// What a partition consumer shares with the others of its replica: the replica's handler
/// budget, and who is in the stage (to name the next owner of what it hands back).
struct Share {
    budget: Arc<tokio::sync::Semaphore>,
    group: String,
    partition: u16,
    count: u16,
    members: Arc<std::sync::Mutex<BTreeMap<String, tokio::time::Instant>>>,
}

#[derive(Clone)]
pub(crate) struct AmqpTransport {
    inner: Arc<Inner>,
}

enum PublishFailure {
    Unroutable,
    Nacked,
    Broker(String),
}

impl AmqpTransport {
    pub(crate) async fn connect(
        url: &str,
        ca: Option<String>,
        name: &str,
        topology: Arc<Topology>,
        metrics: BusMetrics,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        let this = Self {
            inner: Arc::new(Inner {
                urls: node_urls(url),
                next_url: std::sync::atomic::AtomicUsize::new(0),
                ca,
                name: name.to_owned(),
                topology,
                metrics,
                live: Mutex::new(None),
                snapshot: std::sync::RwLock::new(None),
                connected: AtomicBool::new(false),
                latches: Default::default(),
                member: format!("{name}/{}", uuid::Uuid::now_v7()),
                handed_over: std::sync::Mutex::new(crate::bounded::BoundedMap::new(HANDED_OVER)),
            }),
        };
        let first = tokio::time::timeout(timeout, async {
            let mut delays = Policy::RECONNECT.delays();
            loop {
                match this.live().await {
                    Ok(_) => return Ok(()),
                    Err(e @ BusError::Topology(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "broker not reachable yet");
                        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                    }
                }
            }
        })
        .await;
        match first {
            Ok(r) => r.map(|()| this),
            Err(_) => Err(BusError::Unavailable(format!(
                "no broker connection within {timeout:?}"
            ))),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::SeqCst)
    }

    /// The current connection and publisher channel, (re)building them when broken.
    async fn live(&self) -> Result<Live, BusError> {
        if let Some(live) = self.healthy_snapshot() {
            return Ok(live);
        }
        let mut guard = self.inner.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() && live.publisher.status().connected() {
                return Ok(live.clone());
            }
            if live.connection.status().connected() {
                // Only the channel died (a channel-level error): open a new one.
                let publisher = publisher_channel(&live.connection).await?;
                let live = Live {
                    connection: live.connection.clone(),
                    publisher,
                };
                *guard = Some(live.clone());
                self.set_snapshot(Some(live.clone()));
                return Ok(live);
            }
            self.mark_disconnected();
            self.inner.metrics.reconnects.inc();
        }
        *guard = None;
        self.set_snapshot(None);
        let connection = self.connect_any_node().await?;
        let setup = connection.create_channel().await.map_err(unavailable)?;
        declare(&setup, &self.inner.topology).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        let publisher = publisher_channel(&connection).await?;
        let live = Live {
            connection: Arc::new(connection),
            publisher,
        };
        *guard = Some(live.clone());
        self.set_snapshot(Some(live.clone()));
        self.inner.connected.store(true, Ordering::SeqCst);
        self.inner.metrics.connected.set(1);
        tracing::info!(name = %self.inner.name, "connected to the broker");
        Ok(live)
    }

    /// A connection to the first node of the cluster that answers, starting with the one after
    /// the node the last connection was to: a node that went away is tried last.
    async fn connect_any_node(&self) -> Result<Connection, BusError> {
        let urls = &self.inner.urls;
        let first = self.inner.next_url.load(Ordering::SeqCst);
        let mut failures = Vec::new();
        for i in 0..urls.len() {
            let index = (first + i) % urls.len();
            let url = &urls[index];
            let props = ConnectionProperties::default()
                .with_connection_name(self.inner.name.clone().into());
            let connect = async {
                match &self.inner.ca {
                    None => Connection::connect(url, props).await,
                    Some(ca) => {
                        let tls = lapin::tcp::OwnedTLSConfig {
                            identity: None,
                            cert_chain: Some(ca.clone()),
                        };
                        let runtime = lapin::runtime::default_runtime()?;
                        Connection::connect_with_config(url, props, tls, runtime).await
                    }
                }
            };
            match tokio::time::timeout(BROKER_CALL_TIMEOUT, connect).await {
                Ok(Ok(connection)) => {
                    // The next reconnect starts with the next node: this one may be the one
                    // that just went away.
                    self.inner
                        .next_url
                        .store((index + 1) % urls.len(), Ordering::SeqCst);
                    if urls.len() > 1 {
                        tracing::info!(node = %node_of(url), "connected to a cluster node");
                    }
                    return Ok(connection);
                }
                Ok(Err(e)) => {
                    failures.push(format!("{}: {}", node_of(url), redact(&e.to_string(), url)))
                }
                Err(_) => failures.push(format!("{}: connect timed out", node_of(url))),
            }
        }
        Err(BusError::Unavailable(failures.join("; ")))
    }

    fn mark_disconnected(&self) {
        if self.inner.connected.swap(false, Ordering::SeqCst) {
            tracing::warn!(name = %self.inner.name, "lost the broker connection");
        }
        self.inner.metrics.connected.set(0);
    }

    async fn invalidate(&self, seen: &Live) {
        let mut guard = self.inner.live.lock().await;
        if let Some(live) = guard.as_ref()
            && Arc::ptr_eq(&live.connection, &seen.connection)
            && !live.connection.status().connected()
        {
            *guard = None;
            self.set_snapshot(None);
            self.mark_disconnected();
            self.inner.metrics.reconnects.inc();
        }
    }

    /// The current connection if it and its publisher channel are open.
    fn healthy_snapshot(&self) -> Option<Live> {
        let snapshot = self
            .inner
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner());
        snapshot
            .as_ref()
            .filter(|l| l.connection.status().connected() && l.publisher.status().connected())
            .cloned()
    }

    fn set_snapshot(&self, live: Option<Live>) {
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner()) = live;
    }

    pub(crate) async fn publish_event(&self, event: &Envelope) -> Result<(), BusError> {
        let key = event.routing_key();
        let props = event_properties(event, self.inner.topology.partition_headers(event));
        let body = event.to_json();
        let exchange = self.inner.topology.exchange().to_owned();
        self.publish_with_patience(&exchange, &key, &body, props)
            .await
    }

    /// Publish and wait for the confirm, reconnecting through an outage for up to
    /// [`PUBLISH_PATIENCE`]. A message whose confirm was lost may be stored twice; consumers
    /// dedupe on the event id.
    async fn publish_with_patience(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        let mut delays = Policy::RECONNECT.delays();
        loop {
            let failure = match self.live().await {
                Err(BusError::Topology(e)) => return Err(BusError::Topology(e)),
                Err(e) => PublishFailure::Broker(e.to_string()),
                Ok(live) => {
                    match publish_once(&live.publisher, exchange, routing_key, body, props.clone())
                        .await
                    {
                        Ok(()) => return Ok(()),
                        Err(f) => {
                            if matches!(f, PublishFailure::Broker(_)) {
                                self.invalidate(&live).await;
                            }
                            f
                        }
                    }
                }
            };
            let reason = match failure {
                PublishFailure::Unroutable => {
                    return Err(BusError::Unroutable(routing_key.to_owned()));
                }
                PublishFailure::Nacked => format!("nack for {routing_key}"),
                PublishFailure::Broker(e) => e,
            };
            let wait = delays.next().unwrap_or(Duration::from_secs(5));
            if tokio::time::Instant::now() + wait > deadline {
                return Err(BusError::Unavailable(reason));
            }
            tracing::debug!(reason, ?wait, "publish failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    pub(crate) async fn consume(
        &self,
        bus: Bus,
        queue: &str,
        options: ConsumerOptions,
        handler: Arc<dyn DynHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        if let Some(def) = self
            .inner
            .topology
            .find(queue)
            .filter(|q| q.partitioned().is_some())
        {
            let def = def.clone();
            return self
                .consume_partitions(bus, def, options, handler, shutdown)
                .await;
        }
        self.consume_queue(bus, queue, options, handler, None, shutdown)
            .await
    }

    /// Consume the partitions of `def` this replica is assigned (see [`super::partition`]):
    /// announce this replica, hear the others, and start or release partition consumers as
    /// the assignment changes. A released partition finishes what it started before its
    /// channel closes, so the replica taking it over (waiting as the next single active
    /// consumer) starts only after.
    async fn consume_partitions(
        &self,
        bus: Bus,
        def: super::QueueDef,
        options: ConsumerOptions,
        handler: Arc<dyn DynHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let count = def.partitioned().map_or(1, |p| p.count);
        let members = Arc::new(std::sync::Mutex::new(BTreeMap::<
            String,
            tokio::time::Instant,
        >::new()));
        // Every task this spawns dies with it: a consumer whose task is aborted (a killed
        // worker) must not leave partition consumers running, reconnecting on their own.
        let membership = AbortOnDropHandle::new(tokio::spawn(self.clone().membership(
            def.name.clone(),
            members.clone(),
            shutdown.clone(),
        )));
        let owned = self
            .inner
            .metrics
            .partitions_owned
            .get_or_create(&crate::telemetry::QueueLabels {
                queue: def.name.clone(),
            })
            .clone();
        type Running = (CancellationToken, AbortOnDropHandle<Result<(), BusError>>);
        let mut running: BTreeMap<u16, Running> = BTreeMap::new();
        let mut released: JoinSet<()> = JoinSet::new();
        // What a replica of the stage runs at once, over all the partitions it holds: a
        // process's capacity, so that another replica adds to the stage's.
        let budget = Arc::new(tokio::sync::Semaphore::new(usize::from(
            options.prefetch.max(1),
        )));
        let mut tick = tokio::time::interval(super::partition::HEARTBEAT);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                Some(_) = released.join_next(), if !released.is_empty() => continue,
            }
            let live: Vec<String> = {
                let now = tokio::time::Instant::now();
                let mut m = crate::sync::lock(&members);
                m.retain(|_, heard| now.duration_since(*heard) < super::partition::EXPIRY);
                m.keys().cloned().collect()
            };
            let mine = super::partition::assign(&def.name, count, &live, &self.inner.member);
            for p in &mine {
                if let Some((_, task)) = running.get(p)
                    && !task.is_finished()
                {
                    continue;
                }
                let stop = shutdown.child_token();
                let (this, bus, handler, queue, token) = (
                    self.clone(),
                    bus.clone(),
                    handler.clone(),
                    def.partition_queue(*p),
                    stop.clone(),
                );
                let share = Share {
                    budget: budget.clone(),
                    group: def.name.clone(),
                    partition: *p,
                    count,
                    members: members.clone(),
                };
                let task = AbortOnDropHandle::new(tokio::spawn(async move {
                    this.consume_queue(bus, &queue, options, handler, Some(share), token)
                        .await
                }));
                running.insert(*p, (stop, task));
            }
            let gone: Vec<u16> = running
                .keys()
                .filter(|p| !mine.contains(p))
                .copied()
                .collect();
            for p in gone {
                if let Some((stop, task)) = running.remove(&p) {
                    tracing::info!(queue = %def.partition_queue(p), "releasing the partition");
                    stop.cancel();
                    released.spawn(async move {
                        let _ = task.await;
                    });
                }
            }
            owned.set(i64::try_from(running.len()).unwrap_or(i64::MAX));
        }
        for (_, (stop, task)) in running {
            stop.cancel();
            if let Ok(Err(e @ BusError::Topology(_))) = task.await {
                return Err(e);
            }
        }
        while released.join_next().await.is_some() {}
        drop(membership);
        Ok(())
    }

    /// Announce this replica to the other consumers of stage `group` every
    /// [`super::partition::HEARTBEAT`], and note when each of them was last heard, until
    /// `shutdown`. Nothing here is durable: an announcement is only worth its moment.
    async fn membership(
        self,
        group: String,
        members: Arc<std::sync::Mutex<BTreeMap<String, tokio::time::Instant>>>,
        shutdown: CancellationToken,
    ) {
        let announcement = format!("{group}\n{}", self.inner.member);
        let mut delays = Policy::RECONNECT.delays();
        while !shutdown.is_cancelled() {
            let (channel, mut consumer) = match self.listen_to_members().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(group, error = %e, "cannot hear the other replicas yet");
                    wait_or_shutdown(delays.next().unwrap_or(Duration::from_secs(5)), &shutdown)
                        .await;
                    continue;
                }
            };
            delays = Policy::RECONNECT.delays();
            let mut tick = tokio::time::interval(super::partition::HEARTBEAT);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Leaving on purpose: the others take its partitions now, not after
                        // they stop hearing it.
                        self.tell_members(&format!("{announcement}\nbye")).await;
                        break;
                    }
                    _ = tick.tick() => {
                        if !self.tell_members(&announcement).await {
                            break;
                        }
                    }
                    next = consumer.next() => match next {
                        Some(Ok(d)) => self.heard(&group, &members, &d.data),
                        _ => break,
                    },
                }
            }
            let _ = channel.close(200, "membership".into()).await;
        }
    }

    /// A private queue bound to the members exchange, and a consumer of it.
    async fn listen_to_members(&self) -> Result<(Channel, lapin::Consumer), BusError> {
        let live = self.live().await?;
        let ch = live
            .connection
            .create_channel()
            .await
            .map_err(unavailable)?;
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = ch
            .queue_declare("".into(), private, FieldTable::default())
            .await
            .map_err(unavailable)?;
        ch.queue_bind(
            queue.name().clone(),
            self.inner.topology.members_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let consumer = ch
            .basic_consume(
                queue.name().clone(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        Ok((ch, consumer))
    }

    /// Publish `text` on the members exchange (transient); whether the broker confirmed it.
    async fn tell_members(&self, text: &str) -> bool {
        let Some(live) = self.healthy_snapshot() else {
            return false;
        };
        let sent = live.publisher.basic_publish(
            self.inner.topology.members_exchange().into(),
            "".into(),
            BasicPublishOptions::default(),
            text.as_bytes(),
            BasicProperties::default().with_delivery_mode(1),
        );
        tokio::time::timeout(BROKER_CALL_TIMEOUT, async { sent.await?.await })
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// What a member of `group` said: here (a heartbeat), leaving, or handing a partition over.
    fn heard(
        &self,
        group: &str,
        members: &std::sync::Mutex<BTreeMap<String, tokio::time::Instant>>,
        data: &[u8],
    ) {
        let text = String::from_utf8_lossy(data);
        let mut parts = text.split('\n');
        let (Some(g), Some(member)) = (parts.next(), parts.next()) else {
            return;
        };
        if g != group {
            return;
        }
        match parts.next() {
            Some("bye") => {
                crate::sync::lock(members).remove(member);
            }
            Some("handover") => self.took_over(parts),
            _ => {
                crate::sync::lock(members).insert(member.to_owned(), tokio::time::Instant::now());
            }
        }
    }

    /// Consume one queue; with a `budget`, each handler first takes a permit from it (the
    /// replica's capacity shared by the partitions it holds).
    async fn consume_queue(
        &self,
        bus: Bus,
        queue: &str,
        options: ConsumerOptions,
        handler: Arc<dyn DynHandler>,
        share: Option<Share>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let budget = share.as_ref().map(|s| s.budget.clone());
        let mut delays = Policy::RECONNECT.delays();
        let mut inflight: JoinSet<()> = JoinSet::new();
        while !shutdown.is_cancelled() {
            let live = match self.live().await {
                Ok(l) => l,
                Err(e @ BusError::Topology(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "cannot consume yet");
                    wait_or_shutdown(delays.next().unwrap_or(Duration::from_secs(5)), &shutdown)
                        .await;
                    continue;
                }
            };
            let session = match open_consumer(&live, queue, options.prefetch, &self.inner.name)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(queue, error = %e, "cannot start consumer");
                    self.invalidate(&live).await;
                    wait_or_shutdown(delays.next().unwrap_or(Duration::from_secs(5)), &shutdown)
                        .await;
                    continue;
                }
            };
            let (channel, mut consumer) = session;
            delays = Policy::RECONNECT.delays();
            tracing::info!(queue, "consuming");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            let (this, bus, handler, queue, budget) = (self.clone(), bus.clone(), handler.clone(), queue.to_owned(), budget.clone());
                            inflight.spawn(async move {
                                let _permit = match budget {
                                    Some(b) => b.acquire_owned().await.ok(),
                                    None => None,
                                };
                                this.handle(bus, &queue, delivery, &handler, &options).await
                            });
                        }
                        Some(Err(e)) => {
                            tracing::warn!(queue, error = %e, "consumer stream failed");
                            abandon(&mut inflight, queue);
                            break;
                        }
                        None => {
                            tracing::warn!(queue, "consumer cancelled by the broker");
                            abandon(&mut inflight, queue);
                            break;
                        }
                    },
                }
            }
            if shutdown.is_cancelled() {
                // Take no more deliveries, finish what started, then close: whatever was
                // prefetched but not started goes back to the queue. The consumer is not
                // cancelled first: with a single active consumer, cancelling would hand the
                // queue to the next replica while these handlers still run.
                let drained = tokio::time::timeout(options.grace, async {
                    while inflight.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    tracing::warn!(
                        queue,
                        "grace period over; unfinished deliveries will be redelivered"
                    );
                    inflight.abort_all();
                } else if let Some(share) = &share {
                    self.hand_over(queue, share, &mut consumer).await;
                }
                let _ = tokio::time::timeout(
                    BROKER_CALL_TIMEOUT,
                    channel.close(200, "shutdown".into()),
                )
                .await;
                return Ok(());
            }
            self.invalidate(&live).await;
            wait_or_shutdown(delays.next().unwrap_or(Duration::from_secs(1)), &shutdown).await;
        }
        Ok(())
    }

    /// Tell the partition's next owner which of the deliveries the broker sent here were never
    /// started, before the channel closes and they go back to it marked redelivered: without
    /// this, an executor takes each for a lost worker's and waits out a fence (15 s for AWX),
    /// at every rebalance. Only deliveries that came here fresh are named (one already
    /// redelivered may still have a lost worker's write on the wire), only to the one replica
    /// the partition goes to, and the note is sent, confirmed, before the channel closes.
    /// Whatever the note misses is fenced as before.
    async fn hand_over(&self, queue: &str, share: &Share, consumer: &mut lapin::Consumer) {
        // What the broker sent for the acks of the last handlers may still be on the wire: no
        // more can come than the prefetch window, so wait for each a moment.
        let mut fresh = Vec::new();
        let mut returned = 0;
        while let Ok(Some(Ok(d))) = tokio::time::timeout(HANDOVER_WAIT, consumer.next()).await {
            returned += 1;
            if !d.redelivered
                && let Some(id) = d.properties.message_id()
            {
                fresh.push(id.to_string());
            }
        }
        tracing::debug!(queue, returned, fresh = fresh.len(), ids = ?fresh, "unstarted at release");
        if fresh.is_empty() {
            return;
        }
        let others: Vec<String> = {
            let now = tokio::time::Instant::now();
            crate::sync::lock(&share.members)
                .iter()
                .filter(|(m, heard)| {
                    **m != self.inner.member
                        && now.duration_since(**heard) < super::partition::EXPIRY
                })
                .map(|(m, _)| m.clone())
                .collect()
        };
        let Some(next) =
            super::partition::owner(&share.group, share.count, &others, share.partition)
        else {
            return;
        };
        let note = format!(
            "{}\n{}\nhandover\n{queue}\n{next}\n{}",
            share.group,
            self.inner.member,
            fresh.join("\n")
        );
        if self.tell_members(&note).await {
            tracing::info!(queue, to = %next, unstarted = fresh.len(), "handed over");
        }
    }

    /// Note a handover (`<queue>`, `<recipient>`, message ids) if this replica is its recipient.
    fn took_over<'a>(&self, mut parts: impl Iterator<Item = &'a str>) {
        let (Some(queue), Some(recipient)) = (parts.next(), parts.next()) else {
            return;
        };
        if recipient != self.inner.member {
            return;
        }
        let mut handed = crate::sync::lock(&self.inner.handed_over);
        for id in parts {
            handed.insert(format!("{queue}\n{id}"), true);
        }
    }

    /// Whether `id` came back on `queue` as a delivery another replica handed this one
    /// unstarted. The note is sent before the redelivery can start, but it travels on another
    /// queue, and on a saturated machine it was seen to arrive 20 ms after: a redelivery looks
    /// again for a moment before it is taken for a lost worker's (a cost only redeliveries pay,
    /// against a fence of seconds).
    async fn handed_over(&self, queue: &str, id: &str) -> bool {
        for _ in 0..HANDOVER_LOOKS {
            if self.was_handed_over(queue, id) {
                return true;
            }
            tokio::time::sleep(HANDOVER_LOOK).await;
        }
        self.was_handed_over(queue, id)
    }

    /// Whether `id` is noted as handed over on `queue`, and not seen since (once: a second
    /// redelivery is a lost worker's again).
    fn was_handed_over(&self, queue: &str, id: &str) -> bool {
        let key = format!("{queue}\n{id}");
        let mut handed = crate::sync::lock(&self.inner.handed_over);
        match handed.get_mut(&key) {
            Some(unused) => std::mem::replace(unused, false),
            None => false,
        }
    }

    async fn handle(
        &self,
        bus: Bus,
        queue: &str,
        delivery: lapin::message::Delivery,
        handler: &Arc<dyn DynHandler>,
        options: &ConsumerOptions,
    ) {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        if self
            .forward_to_its_partition(queue, &delivery, &headers)
            .await
        {
            return;
        }
        let attempt = header_u32(&headers, HEADER_ATTEMPT).unwrap_or(1).max(1);
        let redelivered = self.lost_by_a_worker(queue, &delivery).await;
        let raw = RawDelivery {
            body: &delivery.data,
            attempt,
            redelivered,
            held: header_string(&headers, HEADER_HELD),
        };
        let settlement = bus.process(queue, raw, handler, options).await;
        let forwarded = self.forward(queue, &delivery, headers, settlement).await;
        let acked = match forwarded {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                tracing::warn!(queue, error = %e, "could not forward the delivery; returning it to the queue");
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
        };
        match acked {
            Ok(true) => {}
            Ok(false) | Err(_) => tracing::info!(
                queue,
                "channel lost before settling; the broker will redeliver"
            ),
        }
    }

    /// Whether `delivery` may be a lost worker's: redelivered, and not handed over unstarted.
    async fn lost_by_a_worker(&self, queue: &str, delivery: &lapin::message::Delivery) -> bool {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|i| i.as_str());
        let lost = match id {
            Some(id) if delivery.redelivered => !self.handed_over(queue, id).await,
            _ => delivery.redelivered,
        };
        if lost {
            tracing::debug!(queue, ?id, "redelivered, not handed over: a lost worker's");
        }
        lost
    }

    /// Carry out a settlement that sends the delivery on: to its delay tier (retry, defer,
    /// hold) or to the dead letters. Nothing to send for an ack.
    async fn forward(
        &self,
        queue: &str,
        delivery: &lapin::message::Delivery,
        headers: FieldTable,
        settlement: Settlement,
    ) -> Result<(), BusError> {
        let topology = &self.inner.topology;
        // A retried message comes back under the queue's name; the header keeps the original.
        let routing_key = header_string(&headers, HEADER_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        match settlement {
            Settlement::Ack => Ok(()),
            Settlement::Retry {
                tier,
                next_attempt,
                reason,
                held,
                ..
            } => {
                let mut h = headers;
                if let Some(what) = &held {
                    h.insert(HEADER_HELD.into(), long_string(what));
                } else if h.contains_key(HEADER_HELD) {
                    let mut rest = h.inner().clone();
                    rest.remove(HEADER_HELD);
                    h = FieldTable::from(rest);
                }
                h.insert(
                    HEADER_ATTEMPT.into(),
                    AMQPValue::LongLongInt(i64::from(next_attempt)),
                );
                h.insert(
                    HEADER_DELAY.into(),
                    long_string(&tier.as_millis().to_string()),
                );
                h.insert(
                    HEADER_RETRY_REASON.into(),
                    long_string(&crate::text::truncate_bytes(&reason, 512)),
                );
                h.insert(HEADER_ROUTING_KEY.into(), long_string(&routing_key));
                let props = delivery.properties.clone().with_headers(h);
                self.publish_with_patience(&topology.delay_exchange(), queue, &delivery.data, props)
                    .await
            }
            Settlement::DeadLetter { reason, attempts } => {
                let mut h = headers;
                h.insert(
                    HEADER_REASON.into(),
                    long_string(&crate::text::truncate_bytes(&reason, 2048)),
                );
                h.insert(
                    HEADER_ATTEMPTS.into(),
                    AMQPValue::LongLongInt(i64::from(attempts)),
                );
                h.insert(HEADER_ORIGIN_QUEUE.into(), long_string(queue));
                h.insert(HEADER_ROUTING_KEY.into(), long_string(&routing_key));
                let props = delivery.properties.clone().with_headers(h);
                self.publish_with_patience("", &topology.dead_queue(), &delivery.data, props)
                    .await
            }
        }
    }

    /// A delivery in a partition its key does not fall in (its publisher named none, or
    /// grouped repositories differently) goes on to the right partition; true when it did (and
    /// was acked). An undecodable message stays, to be dead-lettered with its reason.
    async fn forward_to_its_partition(
        &self,
        queue: &str,
        delivery: &lapin::message::Delivery,
        headers: &FieldTable,
    ) -> bool {
        let topology = &self.inner.topology;
        let Some((def, here)) = topology.partition_of_queue(queue) else {
            return false;
        };
        let Ok(envelope) = Envelope::from_json(&delivery.data) else {
            return false;
        };
        let header = def.partition_header();
        let Some((_, wanted)) = topology
            .partition_headers(&envelope)
            .into_iter()
            .find(|(h, _)| *h == header)
        else {
            return false;
        };
        if wanted == here.to_string() {
            return false;
        }
        let mut h = headers.clone();
        h.insert(header.as_str().into(), long_string(&wanted));
        let props = delivery.properties.clone().with_headers(h);
        let key = delivery.routing_key.as_str().to_owned();
        let forwarded = self
            .publish_with_patience(&def.partition_exchange(), &key, &delivery.data, props)
            .await;
        let settled = match forwarded {
            Ok(()) => {
                tracing::debug!(queue, partition = %wanted, "forwarded to the partition of its key");
                delivery.acker.ack(BasicAckOptions::default()).await
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "could not forward to its partition; returning it");
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
        };
        let _ = settled;
        true
    }

    /// A channel of its own on the live connection, for an operator's walk of a queue (closing
    /// it returns whatever was taken and not acked).
    async fn side_channel(&self) -> Result<Channel, BusError> {
        let live = self.live().await?;
        live.connection.create_channel().await.map_err(unavailable)
    }

    pub(crate) async fn take_dead_letter(&self) -> Result<Option<DeadLetter>, BusError> {
        let ch = self.side_channel().await?;
        let got = ch
            .basic_get(
                self.inner.topology.dead_queue().into(),
                BasicGetOptions::default(),
            )
            .await
            .map_err(unavailable)?;
        let Some(msg) = got else {
            let _ = ch.close(200, "done".into()).await;
            return Ok(None);
        };
        let dead = parse_dead(&msg.delivery);
        msg.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "done".into()).await;
        Ok(Some(dead))
    }

    pub(crate) async fn journal(&self, name: &str) -> Result<Vec<Envelope>, BusError> {
        let ch = self.side_channel().await?;
        let mut out = Vec::new();
        // As for dead letters: one walk of unacked gets, returned in order when the channel closes.
        while let Some(msg) = ch
            .basic_get(name.into(), BasicGetOptions::default())
            .await
            .map_err(unavailable)?
        {
            if let Ok(e) = Envelope::from_json(&msg.delivery.data) {
                out.push(e);
            }
        }
        let _ = ch.close(200, "journal read".into()).await;
        Ok(out)
    }

    pub(crate) async fn dead_letters(
        &self,
        action: super::DeadLetterAction<'_>,
    ) -> Result<Vec<DeadLetter>, BusError> {
        use super::DeadLetterAction;
        let ch = self.side_channel().await?;
        let dead_queue = self.inner.topology.dead_queue();
        let mut out = Vec::new();
        // Unacked gets are not redelivered on the same channel, so this walks the queue once;
        // closing the channel returns whatever was not acked, in order.
        while let Some(msg) = ch
            .basic_get(dead_queue.clone().into(), BasicGetOptions::default())
            .await
            .map_err(unavailable)?
        {
            let dead = parse_dead(&msg.delivery);
            let selected = match &action {
                DeadLetterAction::Peek => {
                    out.push(dead);
                    continue;
                }
                DeadLetterAction::Replay(select) | DeadLetterAction::Purge(select) => select(&dead),
            };
            if !selected {
                continue;
            }
            if let DeadLetterAction::Replay(_) = action {
                let mut headers = msg
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let mut fresh = BTreeMap::new();
                for (k, v) in headers.inner() {
                    let k = k.as_str();
                    if k != HEADER_REASON
                        && k != HEADER_ATTEMPTS
                        && k != HEADER_ORIGIN_QUEUE
                        && !k.starts_with("x-death")
                        && k != "x-first-death-exchange"
                        && k != "x-first-death-queue"
                        && k != "x-first-death-reason"
                        && k != "x-last-death-exchange"
                        && k != "x-last-death-queue"
                        && k != "x-last-death-reason"
                    {
                        fresh.insert(ShortString::from(k), v.clone());
                    }
                }
                fresh.insert(ShortString::from(HEADER_ATTEMPT), AMQPValue::LongLongInt(1));
                headers = FieldTable::from(fresh);
                let props = msg.delivery.properties.clone().with_headers(headers);
                // Straight back to the queue it came from, through the default exchange.
                self.publish_with_patience("", &dead.origin_queue, &msg.delivery.data, props)
                    .await?;
            }
            msg.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(unavailable)?;
            out.push(dead);
        }
        let _ = ch.close(200, "done".into()).await;
        Ok(out)
    }

    /// Declare latch queue `name` (idempotently) on a channel of its own; the declare-ok says
    /// how many messages it holds, without taking any — so any number of readers can look at
    /// once and none ever hides the latch from another.
    async fn declare_latch(&self, name: &str) -> Result<(Channel, u32), BusError> {
        let ch = self.side_channel().await?;
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let q = tokio::time::timeout(
            BROKER_CALL_TIMEOUT,
            ch.queue_declare(name.into(), qopts, quorum_args(&[])),
        )
        .await
        .map_err(|_| BusError::Unavailable(format!("declaring latch {name} timed out")))?
        .map_err(|e| BusError::Topology(e.to_string()))?;
        crate::sync::lock(&self.inner.latches).insert(name.to_owned());
        Ok((ch, q.message_count()))
    }

    /// How many messages latch `name` holds: a passive declare, so looking at a latch nobody
    /// ever set creates nothing (a queue per environment and test would pile up on the broker,
    /// each holding file handles) — a latch that does not exist is not set.
    pub(crate) async fn latch_count(&self, name: &str) -> Result<u32, BusError> {
        let ch = self.side_channel().await?;
        let qopts = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let looked = tokio::time::timeout(
            BROKER_CALL_TIMEOUT,
            ch.queue_declare(name.into(), qopts, FieldTable::default()),
        )
        .await
        .map_err(|_| BusError::Unavailable(format!("reading latch {name} timed out")))?;
        match looked {
            Ok(q) => {
                let _ = ch.close(200, "latch read".into()).await;
                Ok(q.message_count())
            }
            // The broker closed the channel with 404: no such queue, so never set.
            Err(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404) => {
                Ok(0)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(crate) async fn bind_latch(&self, name: &str, routing_key: &str) -> Result<(), BusError> {
        let (ch, _) = self.declare_latch(name).await?;
        ch.queue_bind(
            name.into(),
            self.inner.topology.exchange().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| BusError::Topology(e.to_string()))?;
        let _ = ch.close(200, "latch bound".into()).await;
        Ok(())
    }

    /// Set latch `name` directly (a message published straight into it): for a latch of one
    /// thing (an approval of one deployment) rather than of an event's routing key. With
    /// `expires`, the broker deletes the latch once it has been unused that long.
    pub(crate) async fn raise_latch(
        &self,
        name: &str,
        expires: Option<Duration>,
    ) -> Result<(), BusError> {
        let ch = self.side_channel().await?;
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut extra = Vec::new();
        if let Some(e) = expires {
            extra.push((
                "x-expires",
                AMQPValue::LongLongInt(i64::try_from(e.as_millis()).unwrap_or(i64::MAX)),
            ));
        }
        ch.queue_declare(name.into(), qopts, quorum_args(&extra))
            .await
            .map_err(|e| BusError::Topology(e.to_string()))?;
        let _ = ch.close(200, "latch declared".into()).await;
        crate::sync::lock(&self.inner.latches).insert(name.to_owned());
        let props = BasicProperties::default().with_delivery_mode(2);
        self.publish_with_patience("", name, b"set", props).await
    }

    pub(crate) async fn clear_latch(&self, name: &str) -> Result<(), BusError> {
        let (ch, _) = self.declare_latch(name).await?;
        ch.queue_purge(name.into(), QueuePurgeOptions::default())
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "latch cleared".into()).await;
        Ok(())
    }

    /// Delete latch queue `name` (a latch of one deployment, done with).
    pub(crate) async fn drop_latch(&self, name: &str) -> Result<(), BusError> {
        let ch = self.side_channel().await?;
        tokio::time::timeout(
            BROKER_CALL_TIMEOUT,
            ch.queue_delete(name.into(), QueueDeleteOptions::default()),
        )
        .await
        .map_err(|_| BusError::Unavailable(format!("deleting latch {name} timed out")))?
        .map_err(unavailable)?;
        let _ = ch.close(200, "latch dropped".into()).await;
        crate::sync::lock(&self.inner.latches).remove(name);
        Ok(())
    }

    pub(crate) async fn delete_topology(&self) -> Result<(), BusError> {
        let ch = self.side_channel().await?;
        let t = &self.inner.topology;
        let mut names: Vec<String> = t.queues.iter().flat_map(|q| q.physical_queues()).collect();
        names.push(t.partitions_marker());
        names.extend(crate::sync::lock(&self.inner.latches).iter().cloned());
        names.push(t.dead_queue());
        names.extend(t.journals.iter().map(|j| j.name.clone()));
        names.extend(t.retry_tiers.iter().map(|tier| t.delay_queue(*tier)));
        for q in names {
            ch.queue_delete(q.into(), QueueDeleteOptions::default())
                .await
                .map_err(unavailable)?;
        }
        let partition_exchanges = t
            .queues
            .iter()
            .filter(|q| q.partitioned().is_some())
            .flat_map(|q| [q.partition_exchange(), q.unrouted_exchange()]);
        let exchanges = [
            t.exchange().to_owned(),
            t.delay_exchange(),
            t.members_exchange(),
        ]
        .into_iter()
        .chain(partition_exchanges);
        for x in exchanges {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(unavailable)?;
        }
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }
}

async fn publisher_channel(connection: &Connection) -> Result<Channel, BusError> {
    let ch = connection.create_channel().await.map_err(unavailable)?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(unavailable)?;
    Ok(ch)
}

async fn publish_once(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), PublishFailure> {
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let confirm = tokio::time::timeout(BROKER_CALL_TIMEOUT, async {
        channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, props)
            .await?
            .await
    })
    .await
    .map_err(|_| PublishFailure::Broker("publish confirm timed out".into()))?
    .map_err(|e| PublishFailure::Broker(e.to_string()))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishFailure::Unroutable),
        Confirmation::Nack(_) => Err(PublishFailure::Nacked),
        Confirmation::NotRequested => Err(PublishFailure::Broker("confirms not enabled".into())),
    }
}

async fn open_consumer(
    live: &Live,
    queue: &str,
    prefetch: u16,
    name: &str,
) -> Result<(Channel, lapin::Consumer), lapin::Error> {
    let channel = live.connection.create_channel().await?;
    channel
        .basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await?;
    let tag = format!("{name}/{}", uuid::Uuid::now_v7());
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Declare exchanges, quorum queues, bindings, delay tiers and the dead queue. Idempotent.
async fn declare(ch: &Channel, t: &Topology) -> Result<(), BusError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let topo = |e: lapin::Error| BusError::Topology(e.to_string());
    ch.exchange_declare(
        t.exchange().into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(topo)?;
    ch.exchange_declare(
        t.delay_exchange().into(),
        ExchangeKind::Headers,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(topo)?;
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(t.dead_queue().into(), qopts, quorum_args(&[]))
        .await
        .map_err(topo)?;
    declare_partitions_marker(ch, t).await?;
    ch.exchange_declare(
        t.members_exchange().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(topo)?;
    for q in &t.queues {
        let mut extra = vec![
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(i64::from(t.delivery_limit)),
            ),
            ("x-dead-letter-exchange", long_string("")),
            ("x-dead-letter-routing-key", long_string(&t.dead_queue())),
        ];
        if q.single_active {
            extra.push(("x-single-active-consumer", AMQPValue::Boolean(true)));
        }
        match q.partitioned() {
            None => declare_bound(ch, t, &q.name, quorum_args(&extra), &q.bindings).await?,
            Some(p) => declare_partitions(ch, t, q, p.count, quorum_args(&extra)).await?,
        }
    }
    for j in &t.journals {
        // No consumer ever takes from a journal: no delivery limit, no dead-lettering.
        let args = quorum_args(&[
            (
                "x-max-length",
                AMQPValue::LongLongInt(i64::from(j.max_length)),
            ),
            ("x-overflow", long_string("drop-head")),
        ]);
        declare_bound(ch, t, &j.name, args, &j.bindings).await?;
    }
    for tier in &t.retry_tiers {
        let name = t.delay_queue(*tier);
        let millis = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        // Expired messages dead-letter to the default exchange under their own routing key,
        // which the retry publish set to the origin queue's name: straight back home.
        let args = quorum_args(&[
            ("x-message-ttl", AMQPValue::LongLongInt(millis)),
            ("x-dead-letter-exchange", long_string("")),
        ]);
        ch.queue_declare(name.clone().into(), qopts, args)
            .await
            .map_err(topo)?;
        bind_by_header(
            ch,
            &name,
            &t.delay_exchange(),
            HEADER_DELAY,
            &tier.as_millis().to_string(),
        )
        .await
        .map_err(topo)?;
    }
    Ok(())
}

/// Bind `queue` to the headers exchange `exchange` for messages whose header `header` is
/// `value`.
async fn bind_by_header(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    header: &str,
    value: &str,
) -> Result<(), lapin::Error> {
    let mut bind = BTreeMap::new();
    bind.insert(ShortString::from("x-match"), long_string("all"));
    bind.insert(ShortString::from(header), long_string(value));
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::from(bind),
    )
    .await
}

/// Record the partition count as the `x-max-length` of a queue nobody uses: the broker refuses
/// to declare it again with another (406 PRECONDITION_FAILED — it checks known arguments only),
/// so a process configured with another `CONVEYOR_PARTITIONS` fails at start instead of
/// publishing to partitions nobody consumes. A quorum queue, so it outlives any one node.
/// A topology without partitioned stages (a tool's, a test's) has no count to agree on and
/// records none.
async fn declare_partitions_marker(ch: &Channel, t: &Topology) -> Result<(), BusError> {
    let Some(count) = t
        .queues
        .iter()
        .filter_map(|q| q.partitioning.as_ref())
        .map(|p| p.count)
        .max()
    else {
        return Ok(());
    };
    let args = quorum_args(&[("x-max-length", AMQPValue::LongLongInt(i64::from(count)))]);
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(t.partitions_marker().into(), qopts, args)
        .await
        .map_err(|e| {
            BusError::Topology(format!(
                "{e} (every process of an installation must use the same partition count, CONVEYOR_PARTITIONS; this one uses {count})"
            ))
        })?;
    Ok(())
}

/// A partitioned stage: a headers exchange bound to the topic exchange by the stage's patterns,
/// and `count` partition queues, each bound to it by its partition header.
async fn declare_partitions(
    ch: &Channel,
    t: &Topology,
    q: &super::QueueDef,
    count: u16,
    queue_args: FieldTable,
) -> Result<(), BusError> {
    let topo = |e: lapin::Error| BusError::Topology(e.to_string());
    let exchange = q.partition_exchange();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // A message that names no partition (a publisher that is not Conveyor, or predates
    // partitions) is not dropped: the alternate exchange takes it to partition 0, whose
    // consumer forwards it to the partition of its key.
    let unrouted = q.unrouted_exchange();
    ch.exchange_declare(
        unrouted.clone().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .map_err(topo)?;
    let mut args = BTreeMap::new();
    args.insert(
        ShortString::from("alternate-exchange"),
        long_string(&unrouted),
    );
    ch.exchange_declare(
        exchange.clone().into(),
        ExchangeKind::Headers,
        durable,
        FieldTable::from(args),
    )
    .await
    .map_err(topo)?;
    for b in &q.bindings {
        ch.exchange_bind(
            exchange.clone().into(),
            t.exchange().into(),
            b.clone().into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(topo)?;
    }
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for i in 0..count {
        let name = q.partition_queue(i);
        ch.queue_declare(name.clone().into(), qopts, queue_args.clone())
            .await
            .map_err(topo)?;
        if i == 0 {
            ch.queue_bind(
                name.clone().into(),
                unrouted.clone().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(topo)?;
        }
        bind_by_header(ch, &name, &exchange, &q.partition_header(), &i.to_string())
            .await
            .map_err(topo)?;
    }
    Ok(())
}

/// Declare durable queue `name` with `args`, bound to the exchange by each of `bindings`.
async fn declare_bound(
    ch: &Channel,
    t: &Topology,
    name: &str,
    args: FieldTable,
    bindings: &[String],
) -> Result<(), BusError> {
    let topo = |e: lapin::Error| BusError::Topology(e.to_string());
    let qopts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), qopts, args)
        .await
        .map_err(topo)?;
    for b in bindings {
        ch.queue_bind(
            name.into(),
            t.exchange().into(),
            b.clone().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(topo)?;
    }
    Ok(())
}

/// Stop the handlers of a consumer whose channel is gone. Their deliveries cannot be acked any
/// more and go to another consumer (with a single active consumer, to another replica at once);
/// a handler left running would carry out its side effects beside that one — two AWX launches
/// or two dispatches for one event (found by the 2000-deployment soak across broker restarts).
/// Stopping it is what a killed process does, which every handler already survives.
fn abandon(inflight: &mut JoinSet<()>, queue: &str) {
    if !inflight.is_empty() {
        tracing::warn!(
            queue,
            handlers = inflight.len(),
            "abandoning the handlers of a lost consumer; their deliveries will be redelivered"
        );
        inflight.abort_all();
    }
}

/// Replicas of every quorum queue: three nodes of a cluster (all of a smaller one), so a queue
/// outlives the loss of any one node.
const QUORUM_GROUP_SIZE: i64 = 3;

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = BTreeMap::new();
    args.insert(ShortString::from("x-queue-type"), long_string("quorum"));
    args.insert(
        ShortString::from("x-quorum-initial-group-size"),
        AMQPValue::LongLongInt(QUORUM_GROUP_SIZE),
    );
    if extra.iter().any(|(k, _)| *k == "x-dead-letter-exchange") {
        // Quorum queues dead-letter at most once by default: a message that expires from a
        // delay tier while its origin queue is not up yet (a broker restarting) is dropped.
        // At least once keeps it until the target confirms; RabbitMQ requires reject-publish
        // overflow with it.
        args.insert(
            ShortString::from("x-dead-letter-strategy"),
            long_string("at-least-once"),
        );
        args.insert(
            ShortString::from("x-overflow"),
            long_string("reject-publish"),
        );
    }
    for (k, v) in extra {
        args.insert(ShortString::from(*k), v.clone());
    }
    FieldTable::from(args)
}

/// A parked message as the operator sees it.
fn parse_dead(delivery: &lapin::message::Delivery) -> DeadLetter {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    DeadLetter {
        id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
        body: delivery.data.clone(),
        reason: header_string(&headers, HEADER_REASON).unwrap_or_else(|| {
            // Parked by the broker itself (delivery limit), not by us.
            "delivery limit reached (the handler never settled it)".into()
        }),
        attempts: header_u32(&headers, HEADER_ATTEMPTS).unwrap_or(0),
        origin_queue: header_string(&headers, HEADER_ORIGIN_QUEUE).unwrap_or_default(),
        routing_key: header_string(&headers, HEADER_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned()),
    }
}

/// AMQP properties mirroring the envelope.
/// An event's message properties; `partitions` are its partition headers (one per partitioned
/// stage, see [`Topology::partition_headers`]).
fn event_properties(event: &Envelope, partitions: Vec<(String, String)>) -> BasicProperties {
    let mut headers = BTreeMap::new();
    headers.insert(ShortString::from(HEADER_ATTEMPT), AMQPValue::LongLongInt(1));
    for (header, partition) in partitions {
        headers.insert(ShortString::from(header), long_string(&partition));
    }
    if let Some(c) = &event.causation_id {
        headers.insert(ShortString::from("causationid"), long_string(c));
    }
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(event.id.clone().into())
        .with_correlation_id(event.correlation_id.clone().into())
        .with_type(event.type_name().into())
        .with_app_id(event.source.clone().into())
        .with_timestamp(u64::try_from(event.time.unix_timestamp()).unwrap_or(0))
        .with_headers(FieldTable::from(headers))
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Read a header as text.
fn header_string(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unavailable(e: lapin::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// The node URLs of `url`: one, or several separated by commas (a cluster's nodes).
fn node_urls(url: &str) -> Vec<String> {
    let urls: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        vec![url.to_owned()]
    } else {
        urls
    }
}

/// `host:port` of a node URL, for logs (never its credentials).
fn node_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split('/').next().unwrap_or(host).to_owned()
}

/// Errors from the AMQP client may echo the URL; never let its password through.
fn redact(message: &str, url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
    {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((_, password)) if !password.is_empty() => message.replace(password, "***"),
            _ => message.to_owned(),
        },
        None => message.to_owned(),
    }
}

async fn wait_or_shutdown(wait: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {},
        _ = shutdown.cancelled() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact(
                "cannot connect to amqp://bob:s3cret@host",
                "amqp://bob:s3cret@host/%2f"
            ),
            "cannot connect to amqp://bob:***@host"
        );
        assert_eq!(redact("x", "amqp://host"), "x");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(crate::text::truncate_bytes("ééé", 3), "é…");
        assert_eq!(crate::text::truncate_bytes("abc", 3), "abc");
    }
}
