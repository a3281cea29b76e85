//! `conveyor`: the operator's command line — the one-command demo, the deployment history, dead
//! letters and a pipeline file check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use conveyor::config::Pipeline;
use conveyor_cli::{dead, demo, history};

/// Conveyor's command line.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in one process against simulated GitHub, AWX and Kubernetes.
    Demo {
        /// The story to play.
        #[arg(long, value_enum, default_value_t = demo::Scenario::Happy)]
        scenario: demo::Scenario,
        /// Seconds a simulated ~3-minute pod start takes (builds and jobs scale with it).
        #[arg(long, default_value_t = 1.0)]
        pod_seconds: f64,
        /// Use this RabbitMQ instead of the in-memory bus.
        #[arg(long)]
        amqp_url: Option<String>,
        /// The pipeline file.
        #[arg(long, default_value = "conveyor.toml")]
        config: PathBuf,
        /// Keep the ledger's dashboard up after the scenario, until Ctrl-C.
        #[arg(long)]
        keep_serving: bool,
    },
    /// Recent deployments, from the ledger (`--ledger` or CONVEYOR_LEDGER_URL).
    Deployments {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// One deployment and its timeline as a text Gantt chart.
    Deployment {
        /// Its id (`<correlation>.<environment>`, or a chain's correlation id).
        id: String,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Inspect, replay or purge the dead-letter queue (AMQP_URL, CONVEYOR_EXCHANGE).
    Dead {
        #[command(subcommand)]
        action: dead::Action,
    },
    /// Check a pipeline file and say what it means.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the file; every problem is listed with its key.
    Check {
        /// The pipeline file.
        #[arg(default_value = "conveyor.toml")]
        path: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Args::parse().command {
        Command::Demo {
            scenario,
            pod_seconds,
            amqp_url,
            config,
            keep_serving,
        } => {
            let ok = demo::run(demo::Options {
                scenario,
                pod_seconds,
                amqp_url,
                config,
                keep_serving,
            })
            .await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Deployments {
            environment,
            limit,
            ledger,
        } => {
            let url = history::ledger_url(ledger);
            print!(
                "{}",
                history::list(&url, environment.as_deref(), limit).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Deployment { id, ledger } => {
            print!(
                "{}",
                history::show(&history::ledger_url(ledger), &id).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead { action } => Ok(if dead::run(action).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Config {
            action: ConfigAction::Check { path },
        } => match Pipeline::load(&path) {
            Ok(p) => {
                println!("{} is valid", path.display());
                for r in &p.repositories {
                    for d in &r.downstream {
                        println!(
                            "- a successful build of {} dispatches {}'s build",
                            r.name, d
                        );
                    }
                }
                for e in &p.environments {
                    println!(
                        "- a successful build of {} matching {:?} deploys {} ({}/{})",
                        e.repository, e.on, e.name, e.statefulset.namespace, e.statefulset.name
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{} is not valid:\n{e}", path.display());
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
