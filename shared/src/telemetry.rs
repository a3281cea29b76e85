//! Structured logs (`tracing`, JSON unless on a terminal) and the Prometheus metrics every
//! service exports.

use std::io::IsTerminal;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Install the global `tracing` subscriber: level from `RUST_LOG` (default `info`), JSON lines
/// unless stderr is a terminal, every line scrubbed of the configured secrets
/// ([`crate::redact`]). Safe to call more than once (later calls do nothing).
pub fn init_tracing(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::Scrubbing(std::io::stderr));
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}

/// Labels of a published event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Event name, e.g. `deploy.requested`.
    pub event: String,
}

/// Labels of a consumed delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Queue name.
    pub queue: String,
    /// Event name, or `undecodable`.
    pub event: String,
    /// `ack`, `retry`, `dead_letter`.
    pub outcome: String,
}

/// Labels of a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Queue name.
    pub queue: String,
}

/// The bus's metrics.
#[derive(Clone)]
pub struct BusMetrics {
    /// Events published and confirmed.
    pub published: Family<EventLabels, Counter>,
    /// Deliveries settled, by outcome.
    pub consumed: Family<DeliveryLabels, Counter>,
    /// Handler run time.
    pub handler_seconds: Family<QueueLabels, Histogram>,
    /// 1 while connected to the broker.
    pub connected: Gauge,
    /// Reconnections after a loss.
    pub reconnects: Counter,
}

impl BusMetrics {
    /// Create the metrics and register them in `registry` under `conveyor_bus_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("conveyor_bus");
        r.register(
            "events_published",
            "Events published and confirmed",
            m.published.clone(),
        );
        r.register(
            "deliveries",
            "Deliveries settled, by outcome",
            m.consumed.clone(),
        );
        r.register(
            "handler_seconds",
            "Handler run time",
            m.handler_seconds.clone(),
        );
        r.register(
            "connected",
            "1 while connected to the broker",
            m.connected.clone(),
        );
        r.register(
            "reconnects",
            "Reconnections after a lost broker connection",
            m.reconnects.clone(),
        );
        m
    }
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self {
            published: Family::default(),
            consumed: Family::default(),
            handler_seconds: Family::new_with_constructor(handler_histogram),
            connected: Gauge::default(),
            reconnects: Counter::default(),
        }
    }
}

/// 0.5 ms to about 16 s: handlers range from a map lookup to an HTTP call with retries (and a
/// webhook's answer from a refusal to a publish waiting for confirms).
pub fn handler_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Labels of a service decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// What the service did, e.g. `dispatched`, `superseded`.
    pub decision: String,
}

/// A counter per decision a service takes (`<service>_decisions_total{decision}`): the one
/// service-specific metric every worker exports next to the bus metrics.
#[derive(Clone, Default)]
pub struct Decisions {
    family: Family<DecisionLabels, Counter>,
}

impl Decisions {
    /// Register as `name` (without the `_total` suffix) with `help`.
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> Self {
        let d = Self::default();
        registry.register(name, help, d.family.clone());
        d
    }

    /// Count one `decision`.
    pub fn count(&self, decision: &str) {
        self.family
            .get_or_create(&DecisionLabels {
                decision: decision.to_owned(),
            })
            .inc();
    }

    /// How often `decision` was taken.
    pub fn get(&self, decision: &str) -> u64 {
        self.family
            .get_or_create(&DecisionLabels {
                decision: decision.to_owned(),
            })
            .get()
    }
}
