//! `awx-launcher` binary: read the pipeline and the AWX settings, then consume until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::{Pipeline, ProcessEnv};
use conveyor::service::Runtime;
use conveyor_awx_launcher::{AwxLauncher, Settings, register_metrics};

/// Launch one AWX job per deployment and follow it to its end.
#[derive(Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    conveyor::telemetry::init_tracing("awx-launcher");
    let env = ProcessEnv;
    let settings = Settings::from_env(&env)?;
    let mut rt = Runtime::start("awx-launcher", &env).await?;
    let pipeline = Arc::new(Pipeline::load(&rt.wiring.config_path)?);
    let metrics = register_metrics(rt.registry());
    rt.serve_admin().await?;

    let launcher = Arc::new(AwxLauncher::new(
        pipeline,
        &settings,
        rt.bus.clone(),
        metrics,
    ));
    tracing::info!(awx = %settings.url, "awx-launcher ready");
    conveyor_awx_launcher::run(rt.bus.clone(), launcher, rt.shutdown.clone()).await?;
    tracing::info!("awx-launcher stopped");
    Ok(())
}
