//! `ledger` binary: open the database, serve the API and dashboard, record events until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::{Pipeline, ProcessEnv};
use conveyor::service::Runtime;
use conveyor_ledger::auth::Operators;
use conveyor_ledger::control::Control;
use conveyor_ledger::store::Store;
use conveyor_ledger::{Ledger, Settings, register_metrics};

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
    let operators = Operators::new(settings.tokens_file.clone(), settings.trust_proxy)
        .map_err(|e| anyhow::anyhow!("CONVEYOR_OPERATOR_TOKENS_FILE: {e}"))?;
    let mut rt = Runtime::start("ledger", &env).await?;
    let store = rt
        .wait_for("the database", Store::open(settings.database_url.expose()))
        .await??;
    let pipeline = Arc::new(Pipeline::load(&rt.wiring.config_path)?);
    let metrics = register_metrics(rt.registry());
    rt.serve_admin().await?;

    let ledger = Arc::new(Ledger::new(store, metrics, settings.dora_days));
    if operators.is_disabled() {
        tracing::warn!(
            "no operators configured (CONVEYOR_OPERATOR_TOKENS_FILE): every control action will be refused"
        );
    }
    let control = Arc::new(Control {
        bus: rt.bus.clone(),
        pipeline,
        operators,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let stop = rt.shutdown.clone();
    let server = tokio::spawn(conveyor_ledger::serve(
        listener,
        ledger.clone(),
        Some(control),
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
