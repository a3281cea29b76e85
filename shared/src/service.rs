//! What every worker's `main` does before its own work: read the wiring, connect the bus, serve
//! the admin endpoints, and turn SIGTERM/SIGINT into a shutdown token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError, Topology};
use crate::config::{ConfigError, Env, Wiring};
use crate::telemetry::BusMetrics;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The environment or the pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker could not be reached in time.
    #[error("connecting to the broker: {0}")]
    Bus(#[from] BusError),
    /// SIGTERM or SIGINT came while the service was still waiting for a dependency: it stops
    /// at once (a Kubernetes grace period is shorter than the broker connect timeout).
    #[error("shutdown requested while waiting for {0}")]
    ShutDown(&'static str),
    /// A listener could not be bound.
    #[error("binding {what} to {address}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A connected service: its wiring, bus, metric registry and shutdown token.
pub struct Runtime {
    /// The service name (`conveyor/<name>` is its event source; also the connection name).
    pub name: &'static str,
    /// Wiring read from the environment.
    pub wiring: Wiring,
    /// The bus, connected and with the topology declared.
    pub bus: Bus,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    registry: Registry,
    /// The admin server's full router, once [`Runtime::serve_admin`] set it; until then it
    /// answers `/live` and says what the service is waiting for.
    admin: Arc<std::sync::OnceLock<axum::Router>>,
}

impl Runtime {
    /// Read the wiring from `env`, install the signal handler, start the admin server (`/live`
    /// answers from now on; `/ready` is 503 until the service is) and connect to the broker
    /// (waiting up to a minute for it: in a fresh compose or cluster it may start later).
    pub async fn start(name: &'static str, env: &dyn Env) -> Result<Self, StartError> {
        let wiring = Wiring::from_env(env, None)?;
        let shutdown = crate::shutdown::on_signal();
        let admin = Arc::new(std::sync::OnceLock::new());
        start_admin(wiring.admin_listen, admin.clone(), &shutdown).await?;
        let mut registry = Registry::default();
        let metrics = BusMetrics::register(&mut registry);
        let connect = Bus::connect_trusting(
            wiring.amqp_url.expose(),
            wiring.amqp_ca.as_deref(),
            name,
            Topology::conveyor(&wiring.exchange)
                .with_partitions(wiring.partitions)
                .with_repository_groups(repository_groups(&wiring.config_path)),
            metrics,
            Duration::from_secs(60),
        );
        let bus = wait_for("the broker", connect, &shutdown).await??;
        Ok(Self {
            name,
            wiring,
            bus,
            shutdown,
            registry,
            admin,
        })
    }

    /// Wait for a dependency of the service's own (a database) as [`Runtime::start`] waits for
    /// the broker: saying what it waits for, and giving up at once on shutdown.
    pub async fn wait_for<T>(
        &self,
        what: &'static str,
        ready: impl Future<Output = T>,
    ) -> Result<T, StartError> {
        wait_for(what, ready, &self.shutdown).await
    }

    /// The registry, for the service's own metrics (register them before [`Runtime::serve_admin`]).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// From now on the admin server serves `/live`, `/ready` (ready while the bus is
    /// connected) and `/metrics` with every metric registered so far.
    pub async fn serve_admin(&mut self) -> Result<(), StartError> {
        let registry = std::mem::take(&mut self.registry);
        let bus = self.bus.clone();
        let router = crate::admin::router(Arc::new(registry), Arc::new(move || bus.is_connected()));
        let _ = self.admin.set(router);
        Ok(())
    }
}

/// The groups of linked repositories in the pipeline file at `path`, for build-trigger's
/// partitions; none when it cannot be read (the service that needs the file says why).
fn repository_groups(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| crate::config::Pipeline::parse(&text).ok())
        .map(|p| p.repository_groups())
        .unwrap_or_default()
}

/// Bind the admin address and serve it until shutdown: the router in `full` once it is set,
/// before that `/live` (the process answers) and a 503 on everything else, saying the service
/// is starting — so a liveness probe does not kill a service that waits for its broker.
async fn start_admin(
    address: std::net::SocketAddr,
    full: Arc<std::sync::OnceLock<axum::Router>>,
    shutdown: &CancellationToken,
) -> Result<(), StartError> {
    use tower::ServiceExt;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            what: "the admin server",
            address,
            source,
        })?;
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let full = full.get().cloned();
        async move {
            match full {
                Some(router) => router.oneshot(request).await.into_response(),
                None if request.uri().path() == "/live" => "live\n".into_response(),
                None => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "starting: waiting for its dependencies\n",
                )
                    .into_response(),
            }
        }
    });
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) =
            crate::admin::serve(listener, router, async move { stop.cancelled().await }).await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(())
}

/// How often a service still waiting for a dependency says so.
const WAITING_REPORT: Duration = Duration::from_secs(5);

/// `ready`, unless `shutdown` comes first; every [`WAITING_REPORT`] it logs what it is waiting
/// for, so that a service that seems idle says why.
async fn wait_for<T>(
    what: &'static str,
    ready: impl Future<Output = T>,
    shutdown: &CancellationToken,
) -> Result<T, StartError> {
    let started = tokio::time::Instant::now();
    let mut ready = std::pin::pin!(ready);
    let mut report = tokio::time::interval_at(started + WAITING_REPORT, WAITING_REPORT);
    loop {
        tokio::select! {
            value = &mut ready => return Ok(value),
            _ = shutdown.cancelled() => return Err(StartError::ShutDown(what)),
            _ = report.tick() => tracing::info!(
                waiting_for = what,
                secs = started.elapsed().as_secs(),
                "still waiting"
            ),
        }
    }
}
