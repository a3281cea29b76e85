//! `ingest` binary: read the wiring, connect the bus, serve webhooks and the admin endpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use conveyor::config::{ProcessEnv, Wiring};
use conveyor::telemetry::{BusMetrics, init_tracing};
use conveyor::{Bus, Topology};
use prometheus_client::registry::Registry;

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
    init_tracing("ingest");
    let env = ProcessEnv;
    let wiring = Wiring::from_env(&env, None)?;
    let settings = conveyor_ingest::Settings::from_env(&env, args.insecure_no_signature)?;
    let listen = conveyor_ingest::listen_address(&env)?;
    let shutdown = conveyor::shutdown::on_signal();

    let mut registry = Registry::default();
    let metrics = BusMetrics::register(&mut registry);
    let bus = Bus::connect(
        wiring.amqp_url.expose(),
        "ingest",
        Topology::conveyor(&wiring.exchange),
        metrics,
        Duration::from_secs(60),
    )
    .await
    .context("connecting to the broker")?;

    let ready_bus = bus.clone();
    let admin = conveyor::admin::router(
        Arc::new(registry),
        Arc::new(move || ready_bus.is_connected()),
    );
    let admin_listener = tokio::net::TcpListener::bind(wiring.admin_listen)
        .await
        .with_context(|| format!("binding the admin server to {}", wiring.admin_listen))?;
    let admin_stop = shutdown.clone();
    tokio::spawn(async move {
        conveyor::admin::serve(admin_listener, admin, async move {
            admin_stop.cancelled().await
        })
        .await
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the webhook server to {listen}"))?;
    tracing::info!(%listen, admin = %wiring.admin_listen, "ingest ready");
    let stop = shutdown.clone();
    conveyor_ingest::run(
        listener,
        conveyor_ingest::router(bus, settings),
        async move { stop.cancelled().await },
    )
    .await?;
    tracing::info!("ingest stopped");
    Ok(())
}
