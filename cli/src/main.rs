//! `conveyor`: the operator's command line — the one-command demo, the deployment history, the
//! operator's hand on the wheel (status, deploy, redeploy, rollback, pause, resume), dead
//! letters and a pipeline file check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use conveyor::config::Pipeline;
use conveyor_cli::operate::{self, Act};
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
    /// Per environment: what runs, what is in flight, whether it is paused or frozen.
    Status {
        /// Only this environment.
        environment: Option<String>,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Deploy an image of your choice (CONVEYOR_TOKEN).
    Deploy {
        /// The environment.
        environment: String,
        /// `REPOSITORY:TAG` or `REPOSITORY@sha256:…`.
        #[arg(long)]
        image: String,
        #[command(flatten)]
        why: Why,
    },
    /// Deploy the image running now again, restarting its pods (CONVEYOR_TOKEN).
    Redeploy {
        /// The environment.
        environment: String,
        #[command(flatten)]
        why: Why,
    },
    /// Return to the last completed deployment before the current one, or to `--to`
    /// (CONVEYOR_TOKEN).
    Rollback {
        /// The environment.
        environment: String,
        /// The deployment to return to.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Hold every deployment of an environment until `resume` (CONVEYOR_TOKEN).
    Pause {
        /// The environment.
        environment: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Let an environment's deployments go again: the newest held one runs (CONVEYOR_TOKEN).
    Resume {
        /// The environment.
        environment: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Approve a deployment awaiting approval (CONVEYOR_TOKEN of an approver).
    Approve {
        /// The deployment (`<correlation>.<environment>`; `conveyor status` lists them).
        id: String,
        /// Also let it past `requires` (it did not pass the required environment first).
        #[arg(long)]
        override_requires: bool,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Reject a deployment awaiting approval: it fails at stage approval.
    Reject {
        /// The deployment.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Delete the environment's pods stuck on a broken revision (`unstick = true`).
    Unstick {
        /// The environment.
        environment: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// The ledger's address.
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Make entries of the operator tokens file (CONVEYOR_OPERATOR_TOKENS_FILE).
    Token {
        #[command(subcommand)]
        action: TokenAction,
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

/// Why, and whether to override a pause or a freeze window.
#[derive(clap::Args)]
struct Why {
    /// Why (recorded with the action).
    #[arg(long)]
    reason: Option<String>,
    /// Override a pause or a freeze window (recorded as forced).
    #[arg(long)]
    force: bool,
    /// The ledger's address.
    #[arg(long)]
    ledger: Option<String>,
}

#[derive(Subcommand)]
enum TokenAction {
    /// A new random token for NAME, and its entry for the tokens file.
    New {
        /// The operator's name, as the record will show it.
        name: String,
        /// Roles (default: operator).
        #[arg(long = "role", default_value = "operator")]
        roles: Vec<String>,
    },
    /// The tokens-file entry of a token read from standard input.
    Hash {
        /// The operator's name.
        name: String,
        /// Roles (default: operator).
        #[arg(long = "role", default_value = "operator")]
        roles: Vec<String>,
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

/// One operator action through the control API; a refusal prints its reason and exits 1.
async fn act(environment: &str, what: Act, why: Why) -> anyhow::Result<ExitCode> {
    let ledger = history::ledger_url(why.ledger);
    let token = operate::token()?;
    match operate::act(&ledger, &token, environment, &what, why.reason, why.force).await {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

impl Why {
    /// A reason without `--force` (the commands that have no override).
    fn unforced(reason: Option<String>, ledger: Option<String>) -> Self {
        Self {
            reason,
            force: false,
            ledger,
        }
    }
}

fn printed(text: String) -> anyhow::Result<ExitCode> {
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    match action {
        TokenAction::New { name, roles } => {
            let (token, entry) = operate::new_token(&name, &roles);
            eprintln!("token for {name} (give it to them; it is shown once):");
            println!("{token}");
            eprintln!("add to the operator tokens file:\n{entry}");
        }
        TokenAction::Hash { name, roles } => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            print!("{}", operate::entry(&name, &roles, token.trim()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Check a pipeline file and say what it makes Conveyor do.
fn check_config(path: &std::path::Path) -> ExitCode {
    let p = match Pipeline::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{} is not valid:\n{e}", path.display());
            return ExitCode::FAILURE;
        }
    };
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
        for f in &e.freeze {
            println!(
                "  - {} is frozen from {} to {} {}{}",
                e.name,
                f.from,
                f.to,
                f.timezone,
                f.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        if let Some(f) = e.frozen_at(time::OffsetDateTime::now_utc()) {
            println!("  - it is frozen now: {}", f.reason);
        }
    }
    ExitCode::SUCCESS
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
            Ok(exit(ok))
        }
        Command::Deployments {
            environment,
            limit,
            ledger,
        } => {
            let url = history::ledger_url(ledger);
            printed(history::list(&url, environment.as_deref(), limit).await?)
        }
        Command::Deployment { id, ledger } => {
            printed(history::show(&history::ledger_url(ledger), &id).await?)
        }
        Command::Status {
            environment,
            ledger,
        } => {
            let url = history::ledger_url(ledger);
            printed(operate::status(&url, environment.as_deref()).await?)
        }
        Command::Deploy {
            environment,
            image,
            why,
        } => act(&environment, Act::Deploy { image }, why).await,
        Command::Redeploy { environment, why } => act(&environment, Act::Redeploy, why).await,
        Command::Rollback {
            environment,
            to,
            why,
        } => act(&environment, Act::Rollback { to }, why).await,
        Command::Pause {
            environment,
            reason,
            ledger,
        } => {
            act(
                &environment,
                Act::Pause,
                Why::unforced(Some(reason), ledger),
            )
            .await
        }
        Command::Resume {
            environment,
            reason,
            ledger,
        } => act(&environment, Act::Resume, Why::unforced(reason, ledger)).await,
        Command::Approve {
            id,
            override_requires,
            reason,
            ledger,
        } => {
            act(
                &id,
                Act::Approve { override_requires },
                Why::unforced(reason, ledger),
            )
            .await
        }
        Command::Reject { id, reason, ledger } => {
            act(&id, Act::Reject, Why::unforced(Some(reason), ledger)).await
        }
        Command::Unstick {
            environment,
            reason,
            ledger,
        } => act(&environment, Act::Unstick, Why::unforced(reason, ledger)).await,
        Command::Token { action } => token(action),
        Command::Dead { action } => Ok(exit(dead::run(action).await?)),
        Command::Config {
            action: ConfigAction::Check { path },
        } => Ok(check_config(&path)),
    }
}
