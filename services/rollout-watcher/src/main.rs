//! `rollout-watcher` binary: read the pipeline and the Kubernetes configuration, then consume
//! until SIGTERM.

use std::sync::Arc;

use clap::Parser;
use conveyor::config::{Pipeline, ProcessEnv};
use conveyor::service::Runtime;
use conveyor_rollout_watcher::{Clients, RolloutWatcher, register_metrics};

/// Follow StatefulSet rollouts pod by pod; patch StatefulSets for Kubernetes-executor environments.
#[derive(Parser)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    // kube and reqwest share rustls; install its provider before any client is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    conveyor::telemetry::init_tracing("rollout-watcher");
    let env = ProcessEnv;
    let mut rt = Runtime::start("rollout-watcher", &env).await?;
    let pipeline = Arc::new(Pipeline::load(&rt.wiring.config_path)?);
    let clients = Clients::from_env(&env, &pipeline).await?;
    let metrics = register_metrics(rt.registry());
    rt.serve_admin().await?;

    let watcher = Arc::new(RolloutWatcher::new(
        pipeline,
        clients,
        rt.bus.clone(),
        metrics,
        rt.shutdown.clone(),
    ));
    tracing::info!("rollout-watcher ready");
    conveyor_rollout_watcher::run(rt.bus.clone(), watcher, rt.shutdown.clone()).await?;
    tracing::info!("rollout-watcher stopped");
    Ok(())
}
