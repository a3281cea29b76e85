//! `notifier` binary: read the pipeline and the channel settings, then report until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::{Pipeline, ProcessEnv};
use conveyor::service::Runtime;
use conveyor_notifier::{Notifier, Settings, register_metrics};

/// Report deployments to GitHub, Slack and webhooks as `conveyor.toml` routes them.
#[derive(Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    conveyor::telemetry::init_tracing("notifier");
    let env = ProcessEnv;
    let settings = Settings::from_env(&env)?;
    let mut rt = Runtime::start("notifier", &env).await?;
    let pipeline = Arc::new(Pipeline::load(&rt.wiring.config_path)?);
    let metrics = register_metrics(rt.registry());
    rt.serve_admin().await?;

    let notifier = Arc::new(Notifier::new(pipeline, &settings, metrics));
    let on: Vec<_> = notifier
        .channels()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    if on.is_empty() {
        tracing::warn!(
            "no channel configured (GITHUB_TOKEN, SLACK_WEBHOOK_URL, NOTIFIER_WEBHOOK_URL): acknowledging without reporting"
        );
    }
    tracing::info!(channels = ?on, "notifier ready");
    conveyor_notifier::run(rt.bus.clone(), notifier, rt.shutdown.clone()).await?;
    tracing::info!("notifier stopped");
    Ok(())
}
