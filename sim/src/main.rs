//! `conveyor-sim`: run one of the simulators as a server, for the demo and for poking at by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conveyor::config::{Pipeline, ProcessEnv, secret};

#[derive(Parser)]
#[command(version, about = "Simulators of GitHub, AWX and the Kubernetes API")]
struct Args {
    #[command(subcommand)]
    system: System,
}

#[derive(Subcommand)]
enum System {
    /// GitHub: workflows, dispatches, runs, and signed workflow_run webhooks. The accepted token
    /// is GITHUB_TOKEN, the webhook secret GITHUB_WEBHOOK_SECRET (or their *_FILE forms).
    Github {
        /// Address to serve the REST API on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Pipeline file whose repositories and workflows to create.
        #[arg(long, default_value = "conveyor.toml")]
        config: PathBuf,
        /// Where to deliver webhooks (ingest's /webhooks/github).
        #[arg(long)]
        webhook_url: Option<String>,
        /// Seconds a run stays queued.
        #[arg(long, default_value_t = 2)]
        queued_secs: u64,
        /// Seconds a run takes.
        #[arg(long, default_value_t = 5)]
        running_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::telemetry::init_tracing("conveyor-sim");
    let shutdown = conveyor::shutdown::on_signal();
    match Args::parse().system {
        System::Github {
            listen,
            config,
            webhook_url,
            queued_secs,
            running_secs,
        } => {
            let pipeline = Pipeline::load(&config)?;
            let env = ProcessEnv;
            let token = secret(&env, "GITHUB_TOKEN")?.context("GITHUB_TOKEN is not set")?;
            let sim = conveyor_sim::github_for(&pipeline, token.expose());
            if let Some(url) = webhook_url {
                let hook = secret(&env, "GITHUB_WEBHOOK_SECRET")?
                    .context("GITHUB_WEBHOOK_SECRET is not set")?;
                sim.deliver_webhooks_to(url, hook.expose());
            }
            sim.set_pace(conveyor_sim::github::Pace::Auto {
                queued: Duration::from_secs(queued_secs),
                running: Duration::from_secs(running_secs),
            });
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(%listen, "GitHub simulator ready");
            sim.serve(listener, async move { shutdown.cancelled().await })
                .await?;
        }
    }
    Ok(())
}
