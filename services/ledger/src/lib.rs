//! ledger: the record of every deployment. It consumes every event (`conveyor.ledger.events`,
//! bound to `#`), keeps each once, assembles the deployments of the event's chain from what is
//! recorded, and serves them: a JSON API, a live dashboard and DORA metrics.
//!
//! The events are the source of truth; a deployment is recomputed from its chain's events each
//! time one arrives, so order and duplicates never change the result.

pub mod api;
pub mod auth;
pub mod control;
pub mod dashboard;
pub mod dora;
pub mod store;
pub mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conveyor::bus::queues;
use conveyor::config::{ConfigError, Env, Secret, secret};
use conveyor::{Bus, BusError, ConsumerOptions, Incoming, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use store::{Store, StoreError};
use timeline::{Deployment, millis};

/// Settings from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LEDGER_DATABASE_URL` (or `_FILE`): `sqlite://ledger.db?mode=rwc` (default) or
    /// `postgres://user:pass@host/db` for several replicas.
    pub database_url: Secret,
    /// `LEDGER_LISTEN`: API and dashboard (default `0.0.0.0:8090`).
    pub listen: SocketAddr,
    /// `LEDGER_RETENTION_DAYS`: finished deployments older than this are deleted, with their
    /// events (default 400; 0 keeps everything).
    pub retention_days: u32,
    /// `LEDGER_DORA_DAYS`: the window of the exported DORA metrics (default 30).
    pub dora_days: u32,
    /// `CONVEYOR_OPERATOR_TOKENS_FILE`: the operators who may act, by token hash and role.
    pub tokens_file: Option<std::path::PathBuf>,
    /// `CONVEYOR_AUTH_PROXY=true`: trust an auth proxy's `X-Auth-Request-User` /
    /// `X-Forwarded-User` (only behind a proxy that sets them and strips clients' own).
    pub trust_proxy: bool,
}

impl Settings {
    /// Read the settings.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let database_url = secret(env, "LEDGER_DATABASE_URL")?
            .unwrap_or_else(|| Secret::new("sqlite://ledger.db?mode=rwc"));
        let url = database_url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::one(
                "LEDGER_DATABASE_URL",
                "must be sqlite:… or postgres://…",
            ));
        }
        let listen = env
            .var("LEDGER_LISTEN")
            .unwrap_or_else(|| "0.0.0.0:8090".into());
        let listen = listen.parse().map_err(|_| {
            ConfigError::one(
                "LEDGER_LISTEN",
                format!("{listen:?} is not an address like 0.0.0.0:8090"),
            )
        })?;
        let number = |key: &str, default: u32| -> Result<u32, ConfigError> {
            env.var(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| ConfigError::one(key, format!("{v:?} is not a number of days")))
            })
        };
        let trust_proxy = match env.var("CONVEYOR_AUTH_PROXY").as_deref() {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ConfigError::one(
                    "CONVEYOR_AUTH_PROXY",
                    format!("{other:?} is neither true nor false"),
                ));
            }
        };
        Ok(Self {
            database_url,
            listen,
            retention_days: number("LEDGER_RETENTION_DAYS", 400)?,
            dora_days: number("LEDGER_DORA_DAYS", 30)?.max(1),
            tokens_file: env
                .var("CONVEYOR_OPERATOR_TOKENS_FILE")
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            trust_proxy,
        })
    }
}

/// Labels of the DORA gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabel {
    /// The environment.
    pub environment: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

conveyor::decisions! {
    /// What the ledger did with an event (`ledger_decisions_total{decision}`).
    pub enum Decision {
        Recorded = "recorded": "stored, and its deployment reassembled",
        Duplicate = "duplicate": "already stored: a redelivery, or a second publish",
    }
}

/// The ledger's metrics: decisions and the four DORA keys per environment.
#[derive(Clone, Default)]
pub struct Metrics {
    /// `ledger_decisions_total{decision}`.
    pub decisions: conveyor::telemetry::Decisions<Decision>,
    frequency: Family<EnvironmentLabel, FloatGauge>,
    lead_time: Family<EnvironmentLabel, FloatGauge>,
    failure_rate: Family<EnvironmentLabel, FloatGauge>,
    restore: Family<EnvironmentLabel, FloatGauge>,
}

/// Register every ledger metric.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    let m = Metrics {
        decisions: conveyor::telemetry::Decisions::register(
            registry,
            "ledger_decisions",
            "What the ledger did with each event",
        ),
        ..Metrics::default()
    };
    for (name, help, family) in [
        (
            "ledger_dora_deployments_per_day",
            "Completed deployments per day over the DORA window",
            &m.frequency,
        ),
        (
            "ledger_dora_lead_time_seconds",
            "Median commit-to-completed time over the DORA window",
            &m.lead_time,
        ),
        (
            "ledger_dora_change_failure_rate",
            "(Failed + stalled) / (completed + failed) over the DORA window",
            &m.failure_rate,
        ),
        (
            "ledger_dora_time_to_restore_seconds",
            "Median first-failure-to-next-completion time over the DORA window",
            &m.restore,
        ),
    ] {
        registry.register(name, help, family.clone());
    }
    m
}

impl Metrics {
    fn set(&self, d: &dora::Dora) {
        let l = EnvironmentLabel {
            environment: d.environment.clone(),
        };
        self.frequency
            .get_or_create(&l)
            .set(d.deployment_frequency_per_day);
        self.lead_time
            .get_or_create(&l)
            .set(d.lead_time_seconds.unwrap_or(0.0));
        self.failure_rate
            .get_or_create(&l)
            .set(d.change_failure_rate.unwrap_or(0.0));
        self.restore
            .get_or_create(&l)
            .set(d.time_to_restore_seconds.unwrap_or(0.0));
    }
}

/// The ledger: the store, the live feed and the metrics.
pub struct Ledger {
    store: Store,
    updates: broadcast::Sender<Deployment>,
    metrics: Metrics,
    dora_days: u32,
}

impl Ledger {
    /// A ledger over `store`.
    pub fn new(store: Store, metrics: Metrics, dora_days: u32) -> Self {
        Self {
            store,
            updates: broadcast::channel(256).0,
            metrics,
            dora_days,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Deployment updates as they happen (the dashboard's live feed).
    pub fn subscribe(&self) -> broadcast::Receiver<Deployment> {
        self.updates.subscribe()
    }

    /// Record one event and reassemble its chain. Acked only once both are durable; a
    /// database that is down is a retry, never a lost event.
    pub async fn handle(&self, incoming: Incoming) -> Outcome {
        match self.record(&incoming).await {
            Ok(()) => Outcome::ack(),
            Err(e) => {
                tracing::warn!(error = %e, event = %incoming.envelope.id, "recording failed; will retry");
                Outcome::retry_later(incoming.attempt, e.to_string())
            }
        }
    }

    async fn record(&self, incoming: &Incoming) -> Result<(), StoreError> {
        let e = &incoming.envelope;
        let new = self.store.insert_event(e).await?;
        if let Some(action) = store::Action::of(e) {
            self.store.insert_action(&action).await?;
        }
        self.metrics.decisions.count(if new {
            Decision::Recorded
        } else {
            Decision::Duplicate
        });
        // A redelivery after a crash may have recorded the event but not its deployment:
        // reassembling is idempotent, so it is done either way. An event of one environment
        // changes only that environment's deployment.
        let environment = timeline::environment_of(&e.event);
        let related = self.store.related(&e.correlation_id, environment).await?;
        for d in timeline::assemble(&e.correlation_id, &related) {
            if environment.is_some_and(|env| env != d.environment) {
                continue;
            }
            self.store.put(&d).await?;
            // Only an ended deployment moves the DORA keys.
            if !d.status.in_flight() {
                self.refresh_dora(&d.environment).await?;
            }
            let _ = self.updates.send(d);
        }
        Ok(())
    }

    /// DORA of `environment` over `days` ending now.
    pub async fn dora(&self, environment: &str, days: u32) -> Result<dora::Dora, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let since = now - i64::from(days) * 86_400_000 * 2;
        let deployments = self.store.since(environment, since).await?;
        let is_rollback = |d: &timeline::Deployment| {
            d.operation
                .as_ref()
                .is_some_and(|o| o.trigger == conveyor::events::Trigger::Rollback)
        };
        let replaced: std::collections::HashSet<&str> = deployments
            .iter()
            // Requested is enough: someone judged the change bad, whatever became of the rollback.
            .filter(|d| is_rollback(d))
            .filter_map(|d| d.operation.as_ref()?.replaces.as_deref())
            .collect();
        let outcomes: Vec<dora::Outcome> = deployments
            .iter()
            .map(|d| dora::Outcome {
                status: d.status,
                finished_at: d.finished_at,
                commit_at: d.commit_at(),
                stalled: d.stalled,
                rollback: is_rollback(d),
                rolled_back: replaced.contains(d.id.as_str()),
            })
            .collect();
        Ok(dora::compute(environment, &outcomes, now, days))
    }

    async fn refresh_dora(&self, environment: &str) -> Result<(), StoreError> {
        let d = self.dora(environment, self.dora_days).await?;
        self.metrics.set(&d);
        Ok(())
    }
}

/// Consume every event until `shutdown`; purge past the retention once an hour.
pub async fn run(
    bus: Bus,
    ledger: Arc<Ledger>,
    retention_days: u32,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    if retention_days > 0 {
        let (store, stop) = (ledger.store.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let cutoff =
                    millis(OffsetDateTime::now_utc()) - i64::from(retention_days) * 86_400_000;
                match store.purge(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(deployments = n, retention_days, "purged past the retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
            }
        });
    }
    // The gauges start from the record, not from zero, after a restart.
    if let Ok(environments) = ledger.store.environments().await {
        for env in environments {
            if let Err(e) = ledger.refresh_dora(&env).await {
                tracing::warn!(error = %e, environment = env, "DORA not computed");
            }
        }
    }
    let queue = bus.topology().queue(queues::LEDGER);
    let options = ConsumerOptions {
        // Each chain is reassembled from the database; one at a time keeps two events of one
        // chain from racing to write its deployment.
        prefetch: 1,
        max_attempts: 50,
        ..ConsumerOptions::default()
    };
    bus.consume(
        &queue,
        options,
        move |incoming| {
            let ledger = ledger.clone();
            async move { ledger.handle(incoming).await }
        },
        shutdown,
    )
    .await
}

/// Serve the API and the dashboard on `listener` until `shutdown` resolves — with the control
/// API when `control` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ledger: Arc<Ledger>,
    control: Option<Arc<control::Control>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app =
        api::router(ledger.clone()).merge(dashboard::router(ledger.clone(), control.clone()));
    if let Some(control) = control {
        app = app.merge(control::router(ledger, control));
    }
    // The control API trusts a proxy by the connection's address: `ConnectInfo<SocketAddr>`.
    conveyor::server::serve(listener, app, conveyor::server::Limits::DEFAULT, shutdown).await
}
