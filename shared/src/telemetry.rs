//! Structured logs (`tracing`, JSON unless on a terminal) and the Prometheus metrics every
//! service exports.

use std::borrow::Cow;
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
    /// Partitions of each partitioned stage this replica consumes.
    pub partitions_owned: Family<QueueLabels, Gauge>,
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
        r.register(
            "partitions_owned",
            "Partitions of each partitioned stage this replica consumes",
            m.partitions_owned.clone(),
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
            partitions_owned: Family::default(),
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

/// A closed set of decisions one service takes: the values of its
/// `<service>_decisions_total{decision}` label. The metric's help and the table in
/// `docs/metrics.md` are generated from [`Decision::ALL`], so they cannot drift from the code.
pub trait Decision: Copy + Send + Sync + 'static {
    /// Every decision, in the order the help and the docs list them.
    const ALL: &'static [Self];
    /// The label value.
    fn name(self) -> Cow<'static, str>;
    /// When it is taken, in a few words.
    fn meaning(self) -> &'static str;
}

/// The metric's help: `what`, then every decision's name.
pub fn decision_help<D: Decision>(what: &str) -> String {
    let names: Vec<_> = D::ALL.iter().map(|d| d.name()).collect();
    format!("{what}: {}", names.join(", "))
}

/// Every decision as Markdown: `` `name` (meaning) ``, comma-separated (docs/metrics.md).
pub fn decision_markdown<D: Decision>() -> String {
    let items: Vec<_> = D::ALL
        .iter()
        .map(|d| format!("`{}` ({})", d.name(), d.meaning()))
        .collect();
    items.join(", ")
}

/// A service's decisions as an enum of unit variants, each with its label and meaning:
/// `decisions! { pub enum LedgerDecision { Recorded = "recorded": "stored for the first time" } }`.
#[macro_export]
macro_rules! decisions {
    ($(#[$m:meta])* $vis:vis enum $name:ident {
        $($variant:ident = $label:literal : $meaning:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $(#[doc = $meaning] $variant),+
        }

        impl $crate::telemetry::Decision for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn name(self) -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(match self {
                    $($name::$variant => $label),+
                })
            }

            fn meaning(self) -> &'static str {
                match self {
                    $($name::$variant => $meaning),+
                }
            }
        }
    };
}

/// An executor service's decisions: the executor contract's verdicts
/// ([`crate::executor::DecisionKind`], with `Applied` named `applied`), then its own unit variants.
#[macro_export]
macro_rules! executor_decisions {
    ($(#[$m:meta])* $vis:vis enum $name:ident (applied = $applied:literal) {
        $($variant:ident = $label:literal : $meaning:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            /// A verdict of the executor contract.
            Executor($crate::executor::DecisionKind),
            $(#[doc = $meaning] $variant),+
        }

        impl From<$crate::executor::DecisionKind> for $name {
            fn from(v: $crate::executor::DecisionKind) -> Self {
                $name::Executor(v)
            }
        }

        impl $crate::telemetry::Decision for $name {
            // The contract's verdicts as `DecisionKind::ALL` lists them, then this service's own.
            const ALL: &'static [Self] = &{
                const KINDS: &[$crate::executor::DecisionKind] =
                    <$crate::executor::DecisionKind as $crate::telemetry::Decision>::ALL;
                const OWN: &[$name] = &[$($name::$variant),+];
                let mut all =
                    [$name::Executor($crate::executor::DecisionKind::Applied); KINDS.len() + OWN.len()];
                let mut i = 0;
                while i < all.len() {
                    all[i] = if i < KINDS.len() {
                        $name::Executor(KINDS[i])
                    } else {
                        OWN[i - KINDS.len()]
                    };
                    i += 1;
                }
                all
            };

            fn name(self) -> ::std::borrow::Cow<'static, str> {
                match self {
                    $name::Executor($crate::executor::DecisionKind::Applied) => {
                        ::std::borrow::Cow::Borrowed($applied)
                    }
                    $name::Executor(v) => $crate::telemetry::Decision::name(v),
                    $($name::$variant => ::std::borrow::Cow::Borrowed($label)),+
                }
            }

            fn meaning(self) -> &'static str {
                match self {
                    $name::Executor(v) => $crate::telemetry::Decision::meaning(v),
                    $($name::$variant => $meaning),+
                }
            }
        }
    };
}

/// A counter per decision a service takes (`<service>_decisions_total{decision}`): the one
/// service-specific metric every worker exports next to the bus metrics.
pub struct Decisions<D> {
    family: Family<DecisionLabels, Counter>,
    name: fn(D) -> Cow<'static, str>,
}

impl<D> Clone for Decisions<D> {
    fn clone(&self) -> Self {
        Self {
            family: self.family.clone(),
            name: self.name,
        }
    }
}

impl<D: Decision> Default for Decisions<D> {
    fn default() -> Self {
        Self {
            family: Family::default(),
            name: D::name,
        }
    }
}

impl<D: Decision> Decisions<D> {
    /// Register as `name` (without the `_total` suffix), its help `what` followed by every
    /// decision's name.
    pub fn register(registry: &mut Registry, name: &str, what: &str) -> Self {
        let d = Self::default();
        registry.register(name, decision_help::<D>(what), d.family.clone());
        d
    }

    /// The same counter, counting a part `P` of this service's decisions (the shared
    /// executor's verdicts), each named as this service names it.
    pub fn part<P: Decision>(&self) -> Decisions<P>
    where
        D: From<P>,
    {
        Decisions {
            family: self.family.clone(),
            name: |p| D::from(p).name(),
        }
    }

    /// Count one `decision`.
    pub fn count(&self, decision: D) {
        self.family
            .get_or_create(&DecisionLabels {
                decision: (self.name)(decision).into_owned(),
            })
            .inc();
    }

    /// How often `decision` was taken.
    pub fn get(&self, decision: D) -> u64 {
        self.family
            .get_or_create(&DecisionLabels {
                decision: (self.name)(decision).into_owned(),
            })
            .get()
    }
}
