//! `ledger` binary: open the database, serve the API and dashboard, record events until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::ProcessEnv;
use conveyor::service::Runtime;
use conveyor_ledger::store::Store;
use conveyor_ledger::{Ledger, Metrics, Settings};

/// Record every Conveyor event; serve history, timelines, a live dashboard and DORA metrics.
#[derive(Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    conveyor::telemetry::init_tracing("ledger");
    let env = ProcessEnv;
    let settings = Settings::from_env(&env)?;
    let store = Store::open(settings.database_url.expose()).await?;
    let mut rt = Runtime::start("ledger", &env).await?;
    let metrics = Metrics::register(rt.registry());
    rt.serve_admin().await?;

    let ledger = Arc::new(Ledger::new(store, metrics, settings.dora_days));
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let stop = rt.shutdown.clone();
    let server = tokio::spawn(conveyor_ledger::serve(
        listener,
        ledger.clone(),
        async move { stop.cancelled().await },
    ));
    tracing::info!(listen = %settings.listen, "ledger ready");
    conveyor_ledger::run(
        rt.bus.clone(),
        ledger,
        settings.retention_days,
        rt.shutdown.clone(),
    )
    .await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    tracing::info!("ledger stopped");
    Ok(())
}
