//! Helpers for tests that run against the real broker (enabled by the `testing` feature).

use std::time::Duration;

use crate::bus::{Bus, BusError, Topology};
use crate::config::{DEFAULT_AMQP_URL, Env, ProcessEnv};
use crate::telemetry::BusMetrics;

/// `AMQP_URL` or the local default.
pub fn amqp_url() -> String {
    ProcessEnv
        .var("AMQP_URL")
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// A namespace (exchange name and queue prefix) no other test uses.
pub fn unique_namespace(label: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("test-{label}-{}", &id[id.len() - 12..])
}

/// Connect a bus named `name` to the test broker and declare `topology`.
pub async fn connect(name: &str, topology: Topology) -> Result<Bus, BusError> {
    Bus::connect(
        &amqp_url(),
        name,
        topology,
        BusMetrics::default(),
        Duration::from_secs(20),
    )
    .await
}

/// Deletes a test's topology when dropped, however the test ends — a failed assertion too —
/// so no test leaves quorum queues behind (each holds file handles on the shared broker, and
/// enough leftovers stop it accepting connections). It connects afresh on a thread of its own,
/// as the test's runtime may not be driving anything any more.
pub struct Cleanup {
    topology: Option<Topology>,
}

impl Cleanup {
    /// Delete `topology`'s queues and exchanges when this is dropped.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology: Some(topology),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(topology) = self.topology.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(Ok(bus)) =
                    tokio::time::timeout(Duration::from_secs(10), connect("cleanup", topology))
                        .await
                {
                    let _ = bus.delete_topology().await;
                }
            });
        })
        .join();
    }
}

/// Force-close, from the broker's side, every connection whose client-provided name is `name`
/// (as an operator's `rabbitmqctl close_connection` or a network cut would). Returns how many
/// were closed.
pub fn close_connections_named(name: &str) -> std::io::Result<usize> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()?;
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pid, props)) = line.split_once('\t') else {
            continue;
        };
        if props.contains(&needle) {
            let status = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a test", "-q"])
                .status()?;
            if status.success() {
                closed += 1;
            }
        }
    }
    Ok(closed)
}

/// Declare a durable quorum queue `name` on `channel` without any Conveyor machinery: the
/// baseline that benchmarks compare the bus against.
pub async fn bare_quorum_queue(channel: &lapin::Channel, name: &str) -> Result<(), lapin::Error> {
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    // Replicated on three nodes of a cluster, as the bus's queues are.
    args.insert(
        "x-quorum-initial-group-size".into(),
        lapin::types::AMQPValue::LongLongInt(3),
    );
    let options = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), options, args)
        .await
        .map(|_| ())
}

/// Publish `body` to `queue` through the default exchange the plain way (persistent,
/// mandatory) and wait for the confirm: the baseline publish that benchmarks compare against.
pub async fn bare_publish(
    channel: &lapin::Channel,
    queue: &str,
    body: &[u8],
) -> Result<(), lapin::Error> {
    let options = lapin::options::BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    channel
        .basic_publish("".into(), queue.into(), options, body, props)
        .await?
        .await
        .map(|_| ())
}

/// The `p` quantile (0..=1) of ascending `sorted` samples.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let idx = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted[idx]
}

/// Everything published in a test namespace, read from a private queue of its own (exclusive,
/// bound to `#`; gone with its connection), so it competes with no service: `drain` collects
/// what is there, `until` waits for an event.
pub struct Observer {
    channel: lapin::Channel,
    _connection: lapin::Connection,
    queue: String,
    /// Every event seen so far, in publish order.
    pub seen: Vec<crate::events::Envelope>,
}

impl Observer {
    /// Observe `bus`'s namespace.
    pub async fn new(bus: &Bus) -> Result<Self, lapin::Error> {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        let connection = lapin::Connection::connect(&amqp_url(), Default::default()).await?;
        let channel = connection.create_channel().await?;
        let queue = bus
            .topology()
            .queue(&format!("observer.{}", uuid::Uuid::now_v7()));
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.clone().into(), options, Default::default())
            .await?;
        channel
            .queue_bind(
                queue.clone().into(),
                bus.topology().exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                Default::default(),
            )
            .await?;
        Ok(Self {
            channel,
            _connection: connection,
            queue,
            seen: Vec::new(),
        })
    }

    /// Move every waiting event into `seen`.
    pub async fn drain(&mut self) {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        while let Ok(Some(m)) = self
            .channel
            .basic_get(self.queue.clone().into(), BasicGetOptions::default())
            .await
        {
            if let Ok(e) = crate::events::Envelope::from_json(&m.delivery.data) {
                self.seen.push(e);
            }
            let _ = m.delivery.acker.ack(BasicAckOptions::default()).await;
        }
    }

    /// Wait up to `within` until `pred` holds over everything seen; panics naming `what` and
    /// listing what was seen otherwise.
    pub async fn until_all(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&[crate::events::Envelope]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.drain().await;
            if pred(&self.seen) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; published: {:?}",
                self.seen
                    .iter()
                    .map(|e| e.routing_key())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait up to `within` for an event matching `pred` and return it.
    pub async fn until(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&crate::events::Envelope) -> bool,
    ) -> crate::events::Envelope {
        self.until_all(what, within, |seen| seen.iter().any(&pred))
            .await;
        self.seen
            .iter()
            .find(|e| pred(e))
            .cloned()
            .expect("until_all found it")
    }
}
