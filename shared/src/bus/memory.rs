//! The in-process transport: topic routing, competing consumers, delayed retries and a dead
//! queue with RabbitMQ's semantics, for the single-process demo and fast handler tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusError, ConsumerOptions, DeadLetter, DynHandler, RawDelivery, Settlement, Topology,
    topic_matches,
};
use crate::events::Envelope;

#[derive(Clone)]
struct Message {
    body: Arc<[u8]>,
    routing_key: String,
    attempt: u32,
    held: Option<String>,
}

/// A latch: the routing keys bound to it and how many messages it holds.
#[derive(Default)]
struct Latch {
    bindings: Vec<String>,
    count: u32,
}

struct Queue {
    tx: mpsc::UnboundedSender<Message>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
    bindings: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct MemoryTransport {
    queues: Arc<HashMap<String, Queue>>,
    journals: Arc<Mutex<HashMap<String, std::collections::VecDeque<Envelope>>>>,
    journal_defs: Arc<Vec<super::topology::JournalDef>>,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    latches: Arc<Mutex<HashMap<String, Latch>>>,
}

impl MemoryTransport {
    pub(crate) fn new(topology: Arc<Topology>) -> Self {
        let mut queues = HashMap::new();
        for q in &topology.queues {
            let (tx, rx) = mpsc::unbounded_channel();
            queues.insert(
                q.name.clone(),
                Queue {
                    tx,
                    rx: Arc::new(tokio::sync::Mutex::new(rx)),
                    bindings: q.bindings.clone(),
                },
            );
        }
        Self {
            queues: Arc::new(queues),
            journals: Arc::default(),
            journal_defs: Arc::new(topology.journals.clone()),
            dead: Arc::default(),
            latches: Arc::default(),
        }
    }

    pub(crate) fn publish_event(&self, event: &Envelope) -> Result<(), BusError> {
        let key = event.routing_key();
        let body: Arc<[u8]> = event.to_json().into();
        let mut routed = false;
        for q in self.queues.values() {
            if q.bindings.iter().any(|b| topic_matches(b, &key)) {
                routed = true;
                let _ = q.tx.send(Message {
                    body: body.clone(),
                    routing_key: key.clone(),
                    attempt: 1,
                    held: None,
                });
            }
        }
        for latch in crate::sync::lock(&self.latches).values_mut() {
            if latch.bindings.iter().any(|b| topic_matches(b, &key)) {
                routed = true;
                latch.count += 1;
            }
        }
        for j in self.journal_defs.iter() {
            if j.bindings.iter().any(|b| topic_matches(b, &key)) {
                routed = true;
                let mut journals = crate::sync::lock(&self.journals);
                let entries = journals.entry(j.name.clone()).or_default();
                entries.push_back(event.clone());
                while entries.len() > j.max_length as usize {
                    entries.pop_front();
                }
            }
        }
        if routed {
            Ok(())
        } else {
            Err(BusError::Unroutable(key))
        }
    }

    pub(crate) fn journal(&self, name: &str) -> Vec<Envelope> {
        let journals = crate::sync::lock(&self.journals);
        journals
            .get(name)
            .map(|j| j.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The message count of latch `name` (declared empty when new).
    pub(crate) fn latch_count(&self, name: &str) -> u32 {
        let mut latches = crate::sync::lock(&self.latches);
        latches.entry(name.to_owned()).or_default().count
    }

    /// Bind latch `name` to `routing_key`.
    pub(crate) fn bind_latch(&self, name: &str, routing_key: &str) {
        let mut latches = crate::sync::lock(&self.latches);
        let latch = latches.entry(name.to_owned()).or_default();
        if !latch.bindings.iter().any(|b| b == routing_key) {
            latch.bindings.push(routing_key.to_owned());
        }
    }

    /// Set latch `name` directly.
    pub(crate) fn raise_latch(&self, name: &str) {
        let mut latches = crate::sync::lock(&self.latches);
        latches.entry(name.to_owned()).or_default().count += 1;
    }

    /// Empty latch `name`.
    pub(crate) fn clear_latch(&self, name: &str) {
        let mut latches = crate::sync::lock(&self.latches);
        latches.entry(name.to_owned()).or_default().count = 0;
    }

    /// Forget latch `name`.
    pub(crate) fn drop_latch(&self, name: &str) {
        crate::sync::lock(&self.latches).remove(name);
    }

    pub(crate) fn take_dead(&self) -> Option<DeadLetter> {
        let mut dead = crate::sync::lock(&self.dead);
        (!dead.is_empty()).then(|| dead.remove(0))
    }

    pub(crate) async fn consume(
        &self,
        bus: Bus,
        queue: &str,
        options: ConsumerOptions,
        handler: Arc<dyn DynHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| BusError::UnknownQueue(queue.to_owned()))?;
        let permits = Arc::new(Semaphore::new(usize::from(options.prefetch.max(1))));
        let mut inflight = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = async { q.rx.lock().await.recv().await } => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let (this, bus, handler, queue, tx) = (
                self.clone(),
                bus.clone(),
                handler.clone(),
                queue.to_owned(),
                q.tx.clone(),
            );
            inflight.spawn(async move {
                let raw = RawDelivery {
                    body: &msg.body,
                    attempt: msg.attempt,
                    redelivered: false,
                    held: msg.held.clone(),
                };
                let settlement = bus.process(&queue, raw, &handler, &options).await;
                this.execute(settlement, msg, &queue, tx);
                drop(permit);
            });
            while inflight.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(options.grace, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }

    fn execute(
        &self,
        settlement: Settlement,
        msg: Message,
        queue: &str,
        tx: mpsc::UnboundedSender<Message>,
    ) {
        match settlement {
            Settlement::Ack => {}
            Settlement::Retry {
                tier,
                next_attempt,
                held,
                ..
            } => {
                tokio::spawn(async move {
                    tokio::time::sleep(tier).await;
                    let _ = tx.send(Message {
                        attempt: next_attempt,
                        held,
                        ..msg
                    });
                });
            }
            Settlement::DeadLetter { reason, attempts } => {
                crate::sync::lock(&self.dead).push(DeadLetter {
                    id: crate::events::Envelope::from_json(&msg.body)
                        .map(|e| e.id)
                        .unwrap_or_default(),
                    body: msg.body.to_vec(),
                    reason,
                    attempts,
                    origin_queue: queue.to_owned(),
                    routing_key: msg.routing_key,
                });
            }
        }
    }
}
