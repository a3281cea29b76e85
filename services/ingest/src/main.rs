//! `ingest` binary: read the wiring, connect the bus, serve webhooks and the admin endpoints.

use anyhow::Context;
use clap::Parser;
use conveyor::config::ProcessEnv;
use conveyor::service::Runtime;

/// Receive GitHub, registry and AWX webhooks and publish them as Conveyor events.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Accept webhooks without signature or token verification (development only).
    #[arg(long)]
    insecure_no_signature: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    conveyor::telemetry::init_tracing("ingest");
    let env = ProcessEnv;
    let settings = conveyor_ingest::Settings::from_env(&env, args.insecure_no_signature)?;
    let listen = conveyor_ingest::listen_address(&env)?;
    let mut rt = Runtime::start("ingest", &env).await?;
    let metrics = conveyor_ingest::metrics::register_metrics(rt.registry());
    rt.serve_admin().await?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the webhook server to {listen}"))?;
    tracing::info!(%listen, admin = %rt.wiring.admin_listen, "ingest ready");
    let stop = rt.shutdown.clone();
    conveyor_ingest::run(
        listener,
        conveyor_ingest::metrics::instrument(
            conveyor_ingest::router(rt.bus.clone(), settings),
            metrics,
        ),
        async move { stop.cancelled().await },
    )
    .await?;
    tracing::info!("ingest stopped");
    Ok(())
}
