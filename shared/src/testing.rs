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
