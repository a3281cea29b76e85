//! `build-trigger` binary: read the pipeline and the GitHub settings, then consume until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::{Pipeline, ProcessEnv};
use conveyor::service::Runtime;
use conveyor_build_trigger::{BuildTrigger, register_metrics, settings_from_env};

/// Dispatch downstream builds and request deployments as `conveyor.toml` declares.
#[derive(Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    conveyor::telemetry::init_tracing("build-trigger");
    let env = ProcessEnv;
    let settings = settings_from_env(&env)?;
    let mut rt = Runtime::start("build-trigger", &env).await?;
    let pipeline = Arc::new(Pipeline::load(&rt.wiring.config_path)?);
    let metrics = register_metrics(rt.registry());
    rt.serve_admin().await?;

    let trigger = Arc::new(BuildTrigger::new(pipeline, &settings, metrics));
    tracing::info!(api = %settings.api_url, "build-trigger ready");
    conveyor_build_trigger::run(rt.bus.clone(), trigger, rt.shutdown.clone()).await?;
    tracing::info!("build-trigger stopped");
    Ok(())
}
