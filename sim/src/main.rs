//! `conveyor-sim`: run one of the simulators as a server, for the demo and for poking at by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conveyor::config::{Env, Pipeline, ProcessEnv, secret};
use tokio_util::sync::CancellationToken;

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
    Github(GithubArgs),
    /// AWX: a prompting job template per AWX environment of the pipeline. Credentials:
    /// AWX_TOKEN, or AWX_USERNAME/AWX_PASSWORD (or their *_FILE forms).
    Awx(AwxArgs),
    /// All three as the Fragalysis world (what the demo uses): GitHub delivering webhooks to
    /// ingest, AWX whose jobs re-apply the simulated StatefulSet, Kubernetes. Credentials:
    /// GITHUB_TOKEN, GITHUB_WEBHOOK_SECRET, AWX_TOKEN, REGISTRY_WEBHOOK_TOKEN.
    All(AllArgs),
    /// Kubernetes API: a settled StatefulSet per environment of the pipeline.
    Kube(KubeArgs),
}

/// `conveyor-sim github`.
#[derive(clap::Args)]
struct GithubArgs {
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
}

/// `conveyor-sim awx`.
#[derive(clap::Args)]
struct AwxArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: std::net::SocketAddr,
    /// Pipeline file whose AWX templates to create.
    #[arg(long, default_value = "conveyor.toml")]
    config: PathBuf,
    /// Where to send job notifications (ingest's /webhooks/awx), with REGISTRY_WEBHOOK_TOKEN.
    #[arg(long)]
    notify_url: Option<String>,
    /// Seconds a job runs.
    #[arg(long, default_value_t = 5)]
    running_secs: u64,
}

/// `conveyor-sim all`.
#[derive(clap::Args)]
struct AllArgs {
    /// Pipeline file.
    #[arg(long, default_value = "conveyor.toml")]
    config: PathBuf,
    /// ingest's base URL (webhooks go to its /webhooks/github and /webhooks/awx).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest_url: String,
    /// GitHub API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    github_listen: std::net::SocketAddr,
    /// AWX API address.
    #[arg(long, default_value = "127.0.0.1:8082")]
    awx_listen: std::net::SocketAddr,
    /// Kubernetes API address.
    #[arg(long, default_value = "127.0.0.1:8083")]
    kube_listen: std::net::SocketAddr,
    /// Seconds a "3-minute" pod start takes.
    #[arg(long, default_value_t = 1.0)]
    pod_seconds: f64,
    /// Pods whose image contains this crash-loop.
    #[arg(long)]
    crash_image: Option<String>,
    /// Play the demo scenario by itself after this many seconds (for docker compose): a
    /// commit on an upstream repository's first branch, later a tag 1.0.3 on the
    /// repository a tag-triggered environment deploys.
    #[arg(long)]
    play_after_secs: Option<u64>,
}

/// `conveyor-sim kube`.
#[derive(clap::Args)]
struct KubeArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8083")]
    listen: std::net::SocketAddr,
    /// Pipeline file whose StatefulSets to create.
    #[arg(long, default_value = "conveyor.toml")]
    config: PathBuf,
    /// Replicas of each StatefulSet.
    #[arg(long, default_value_t = 2)]
    replicas: i64,
    /// Seconds a new pod takes to become Ready.
    #[arg(long, default_value_t = 3)]
    pod_start_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conveyor::telemetry::init_tracing("conveyor-sim");
    let shutdown = conveyor::shutdown::on_signal();
    match Args::parse().system {
        System::Github(a) => github(a, shutdown).await,
        System::Awx(a) => awx(a, shutdown).await,
        System::All(a) => all(a, shutdown).await,
        System::Kube(a) => kube(a, shutdown).await,
    }
}

async fn github(args: GithubArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let GithubArgs {
        listen,
        config,
        webhook_url,
        queued_secs,
        running_secs,
    } = args;
    let pipeline = Pipeline::load(&config)?;
    let env = ProcessEnv;
    let token = secret(&env, "GITHUB_TOKEN")?.context("GITHUB_TOKEN is not set")?;
    let sim = conveyor_sim::github_for(&pipeline, token.expose());
    if let Some(url) = webhook_url {
        let hook =
            secret(&env, "GITHUB_WEBHOOK_SECRET")?.context("GITHUB_WEBHOOK_SECRET is not set")?;
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
    Ok(())
}

async fn awx(args: AwxArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let AwxArgs {
        listen,
        config,
        notify_url,
        running_secs,
    } = args;
    let pipeline = Pipeline::load(&config)?;
    let env = ProcessEnv;
    let token = secret(&env, "AWX_TOKEN")?.map(|t| t.expose().to_owned());
    let username = env.var("AWX_USERNAME").unwrap_or_else(|| "admin".into());
    let password = secret(&env, "AWX_PASSWORD")?.map(|p| p.expose().to_owned());
    anyhow::ensure!(
        token.is_some() || password.is_some(),
        "set AWX_TOKEN or AWX_PASSWORD"
    );
    let sim = conveyor_sim::awx::AwxSim::new(
        &pipeline.awx.api_prefix,
        &username,
        password.as_deref().unwrap_or_default(),
        token.as_deref().unwrap_or_default(),
    );
    for e in &pipeline.environments {
        if let conveyor::config::Executor::Awx(a) = &e.executor {
            sim.add_template(conveyor_sim::awx::TemplateSpec::prompting(&a.template));
        }
    }
    if let Some(url) = notify_url {
        let hook =
            secret(&env, "REGISTRY_WEBHOOK_TOKEN")?.context("REGISTRY_WEBHOOK_TOKEN is not set")?;
        sim.notify_to(url, hook.expose());
    }
    sim.set_pace(conveyor_sim::awx::Pace::Auto {
        run_for: Duration::from_secs(running_secs),
        playbook: None,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "AWX simulator ready");
    sim.serve(listener, async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn all(args: AllArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let AllArgs {
        config,
        ingest_url,
        github_listen,
        awx_listen,
        kube_listen,
        pod_seconds,
        crash_image,
        play_after_secs,
    } = args;
    let pipeline = Pipeline::load(&config)?;
    let env = ProcessEnv;
    let need = |name: &str| -> anyhow::Result<String> {
        Ok(secret(&env, name)?
            .with_context(|| format!("{name} is not set"))?
            .expose()
            .to_owned())
    };
    let world = conveyor_sim::world::World::build(
        &pipeline,
        &conveyor_sim::world::Credentials {
            github_token: need("GITHUB_TOKEN")?,
            webhook_secret: need("GITHUB_WEBHOOK_SECRET")?,
            awx_token: need("AWX_TOKEN")?,
            hook_token: need("REGISTRY_WEBHOOK_TOKEN")?,
        },
        &conveyor_sim::world::Options {
            pod_seconds,
            crash_image,
            ingest_url,
            replicas: 3,
        },
    )
    .await;
    let (g, a, k) = (
        tokio::net::TcpListener::bind(github_listen).await?,
        tokio::net::TcpListener::bind(awx_listen).await?,
        tokio::net::TcpListener::bind(kube_listen).await?,
    );
    tracing::info!(%github_listen, %awx_listen, %kube_listen, "simulators ready");
    if let Some(after) = play_after_secs {
        let github = world.github.clone();
        let upstream = pipeline
            .repositories
            .iter()
            .find(|r| !r.downstream.is_empty())
            .map(|r| {
                (
                    r.name.clone(),
                    r.build_workflow.clone(),
                    r.branches.first().cloned().unwrap_or_else(|| "main".into()),
                )
            });
        let tagged = pipeline.environments.iter().find_map(|e| match e.on {
            conveyor::config::Trigger::Tag(_) => pipeline
                .repository(&e.repository)
                .map(|r| (r.name.clone(), r.build_workflow.clone())),
            conveyor::config::Trigger::Branch(_) => None,
        });
        let gap = Duration::from_secs_f64(30.0 * pod_seconds + 10.0);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(after)).await;
            if let Some((repo, workflow, branch)) = upstream {
                tracing::info!(%repo, %branch, "playing: a commit");
                let sha = conveyor_sim::github::fake_sha(&repo, "play");
                github
                    .push_build(&repo, &workflow, &branch, false, &sha)
                    .await;
            }
            tokio::time::sleep(gap).await;
            if let Some((repo, workflow)) = tagged {
                tracing::info!(%repo, "playing: tag 1.0.3");
                let sha = conveyor_sim::github::fake_sha(&repo, "1.0.3");
                github
                    .push_build(&repo, &workflow, "1.0.3", true, &sha)
                    .await;
            }
        });
    }
    let (s1, s2, s3) = (shutdown.clone(), shutdown.clone(), shutdown);
    let (r1, r2, r3) = tokio::join!(
        world.github.serve(g, async move { s1.cancelled().await }),
        world.awx.serve(a, async move { s2.cancelled().await }),
        world.kube.serve(k, async move { s3.cancelled().await }),
    );
    r1?;
    r2?;
    r3?;
    Ok(())
}

async fn kube(args: KubeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let KubeArgs {
        listen,
        config,
        replicas,
        pod_start_secs,
    } = args;
    let pipeline = Pipeline::load(&config)?;
    let sim = conveyor_sim::kube_for(&pipeline, replicas).await;
    sim.set_default_behavior(conveyor_sim::kube::Behavior::ReadyAfter(
        Duration::from_secs(pod_start_secs),
    ));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Kubernetes API simulator ready");
    sim.serve(listener, async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
