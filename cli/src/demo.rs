//! `conveyor demo`: the whole pipeline in one process — ingest, build-trigger, awx-launcher,
//! rollout-watcher, the notifier and the ledger on the in-memory bus (or RabbitMQ), against the GitHub, AWX and Kubernetes
//! simulators — playing the Fragalysis scenario and printing what happened and how long
//! Conveyor itself took.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use conveyor::config::Pipeline;
use conveyor::events::{Envelope, Event, ExecutorRun, PodStep};
use conveyor::telemetry::BusMetrics;
use conveyor::{Bus, ConsumerOptions, Outcome, Topology};

mod approval;
mod bad_release;
mod operator;

use crate::stack::{Stack, StackOptions};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FRONTEND: &str = "xchem/fragalysis-frontend";
const STACK: &str = "xchem/fragalysis-stack";
const DEMO_QUEUE: &str = "demo.events";

/// Which story to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A frontend commit reaches staging, then tag 1.0.3 reaches production.
    Happy,
    /// The staging rollout crash-loops and is reported as a stall, then a failure.
    Failure,
    /// An operator's hand: production is paused, a new tag is held, the resume deploys it
    /// once, and a rollback restores the previous image.
    Operator,
    /// Production verifies each release: one that serves errors and one that crash-loops are
    /// rolled back by Conveyor; the pod the second leaves stuck is unstuck.
    BadRelease,
    /// Production takes only what passed staging, approved by a release manager; a release
    /// that skipped staging is rejected.
    Approval,
}

/// Demo options.
pub struct Options {
    /// The story.
    pub scenario: Scenario,
    /// Seconds a simulated "3-minute" pod start takes; builds and jobs scale with it.
    pub pod_seconds: f64,
    /// Run over this RabbitMQ instead of the in-memory bus.
    pub amqp_url: Option<String>,
    /// The pipeline file.
    pub config: PathBuf,
    /// Keep the ledger's dashboard up after the scenario, until Ctrl-C.
    pub keep_serving: bool,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
}

/// A running demo: the pipeline, the event stream it prints, and what it saw.
pub struct Demo {
    stack: Stack,
    events: mpsc::UnboundedReceiver<Envelope>,
    started: OffsetDateTime,
    seen: Vec<Envelope>,
    tty: bool,
    unit: f64,
}

impl Demo {
    /// The next event, printed, before `deadline`.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Option<Envelope> {
        let e = tokio::select! {
            e = self.events.recv() => e,
            _ = tokio::time::sleep_until(deadline) => None,
        }?;
        println!(
            "[{:>6.2}s] {}",
            (e.time - self.started).as_seconds_f64(),
            describe(&e)
        );
        if self.tty
            && let Event::RolloutProgress(p) = &e.event
        {
            println!("{}", bar(p));
        }
        self.seen.push(e.clone());
        Some(e)
    }

    /// Print events until one matches `want` (`Some`) or the scenario's time is up (`None`).
    async fn until(
        &mut self,
        within: Duration,
        want: impl Fn(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let deadline = tokio::time::Instant::now() + within;
        while let Some(e) = self.next(deadline).await {
            if want(&e) {
                return Some(e);
            }
        }
        None
    }

    /// POST `body` to the control API at `path` as the operator of `token`: the status and
    /// the answer (refusals are part of some stories).
    async fn control(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        crate::operate::post(&self.stack.dashboard, path, token, &body).await
    }

    /// A stack build on `git_ref` (a tag with `tag`) of commit `sha`: its success requests a
    /// deployment to staging (master) or production (a tag).
    async fn push_stack(&self, git_ref: &str, tag: bool, sha: &str) -> anyhow::Result<()> {
        self.stack
            .world
            .github
            .push_build(STACK, "build main", git_ref, tag, sha)
            .await
            .with_context(|| format!("stack build on {git_ref}"))
            .map(|_| ())
    }

    /// Push tag `tag` of the stack on a commit of its own.
    async fn push_tag(&self, tag: &str) -> anyhow::Result<()> {
        self.push_stack(tag, true, &conveyor_sim::github::fake_sha(STACK, tag))
            .await
    }

    /// The image tag of each job Conveyor launched, oldest first.
    fn launched_tags(&self) -> Vec<String> {
        self.stack
            .world
            .awx
            .jobs()
            .into_iter()
            .filter(|j| {
                j.extra_vars
                    .contains_key(conveyor_awx_launcher::DEPLOYMENT_VAR)
            })
            .filter_map(|j| {
                j.extra_vars
                    .get("stack_image_tag")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    /// A stage's time budget: `n` simulated pod starts, and some slack.
    fn budget(&self, n: f64) -> Duration {
        secs(n * self.unit + 20.0)
    }

    /// The next event of `of`'s chain with one of `keys` (routing keys), within a budget of
    /// `n` pod starts.
    async fn next_of(&mut self, n: f64, of: &Envelope, keys: &[&str]) -> Option<Envelope> {
        let budget = self.budget(n);
        self.until(budget, |e| {
            e.correlation_id == of.correlation_id && keys.contains(&e.routing_key().as_str())
        })
        .await
    }
}

/// Play the scenario; `Ok(true)` when its expected outcome happened.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let unit = options.pod_seconds;
    let (mut pipeline, app) = load_pipeline(&options.config, unit).await?;
    let app_url = format!("http://{}", app.local_addr()?);
    match options.scenario {
        Scenario::BadRelease => bad_release::configure(&mut pipeline, &app_url, unit),
        Scenario::Approval => approval::configure(&mut pipeline),
        Scenario::Happy | Scenario::Failure | Scenario::Operator => {}
    }
    let pipeline = Arc::new(pipeline);
    let stop = CancellationToken::new();

    let bus = connect(options.amqp_url.as_deref()).await?;

    let stack = Stack::start(
        std::slice::from_ref(&bus),
        pipeline.clone(),
        &StackOptions {
            pod_seconds: unit,
            crash_image: match options.scenario {
                Scenario::Failure => Some(":latest".to_owned()),
                Scenario::BadRelease => Some(bad_release::CRASHES.to_owned()),
                _ => None,
            },
            replicas: 1,
            dashboard: Some("127.0.0.1:8090".parse()?),
            notifier: true,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await?;
    let apps = stack.world.kube.app_router();
    tokio::spawn(async move { axum::serve(app, apps).await });
    println!(
        "GitHub (simulated) at {}: GET /_sim/deployments shows what it was told",
        stack.github_url
    );
    println!(
        "Kubernetes (simulated) at {0}: kubectl --server {0} get statefulsets,pods,events -A",
        stack.kube_url
    );
    println!(
        "AWX (simulated) at {0}: awx --conf.host {0} --conf.token {1} jobs list\n",
        stack.awx_url,
        crate::stack::AWX_TOKEN
    );
    println!(
        "Ledger dashboard: {}/ (live while the demo runs)\n",
        stack.dashboard
    );

    let events = tap(&bus, &stop);
    println!("Conveyor demo: the Fragalysis pipeline against simulated GitHub, AWX and Kubernetes");
    println!("(a pod start of ~3 minutes takes {unit} s here)\n");
    let mut demo = Demo {
        stack,
        events,
        started: OffsetDateTime::now_utc(),
        seen: Vec::new(),
        // A progress bar per rollout step on a terminal; plain lines otherwise (logs, CI).
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        unit,
    };
    let ok = match options.scenario {
        Scenario::Happy | Scenario::Failure => pipeline_story(&mut demo, options.scenario).await?,
        Scenario::Operator => operator::play(&mut demo).await?,
        Scenario::BadRelease => bad_release::play(&mut demo).await?,
        Scenario::Approval => approval::play(&mut demo).await?,
    };
    summarise(&mut demo).await;
    let dashboard = demo.stack.dashboard.clone();
    if options.keep_serving {
        println!("\nThe dashboard stays up at {dashboard}/ — Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.cancel();
    if options.amqp_url.is_some() {
        let _ = bus.delete_topology().await;
    }
    println!(
        "\nresult: {}",
        if ok {
            "the scenario's expected outcome happened"
        } else {
            "the expected outcome did NOT happen"
        }
    );
    Ok(ok)
}

/// The pipeline file, its rollout clocks scaled to the demo's `unit`, and a listener for the
/// applications' health checks (the simulated cluster answers them), bound now so a story's
/// pipeline can name them.
async fn load_pipeline(
    config: &std::path::Path,
    unit: f64,
) -> anyhow::Result<(Pipeline, tokio::net::TcpListener)> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mut pipeline = Pipeline::parse(&text)?;
    // Simulated minutes pass in seconds: scale the rollout clocks with them.
    pipeline.rollout.fail_grace_secs = (3.0 * unit).ceil() as u64;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok((pipeline, app))
}

/// The broker at `amqp_url` (a namespace of the demo's own), or an in-memory bus. The demo's
/// own queue, bound to everything, is how it prints the event stream.
async fn connect(amqp_url: Option<&str>) -> anyhow::Result<Bus> {
    let topology = Topology::conveyor(match amqp_url {
        Some(_) => format!("demo-{}", std::process::id()),
        None => "conveyor".into(),
    })
    .with_queue(DEMO_QUEUE, &["#"]);
    Ok(match amqp_url {
        Some(url) => {
            Bus::connect(
                url,
                "conveyor-demo",
                topology,
                BusMetrics::default(),
                Duration::from_secs(20),
            )
            .await?
        }
        None => Bus::in_memory(topology, BusMetrics::default()),
    })
}

/// Everything published, in order.
fn tap(bus: &Bus, stop: &CancellationToken) -> mpsc::UnboundedReceiver<Envelope> {
    let (tx, events) = mpsc::unbounded_channel::<Envelope>();
    let stream = bus.topology().queue(DEMO_QUEUE);
    let (b, s) = (bus.clone(), stop.clone());
    tokio::spawn(async move {
        b.consume(
            &stream,
            ConsumerOptions::default(),
            move |i| {
                let _ = tx.send(i.envelope);
                async { Outcome::ack() }
            },
            s,
        )
        .await
    });
    events
}

/// Let the last facts arrive, then print the timelines, GitHub's record and the ledger's.
async fn summarise(demo: &mut Demo) {
    // Let the last facts of the chain (job end, rollout summary) arrive before the summary.
    let settle = tokio::time::Instant::now() + secs(demo.unit.min(1.0));
    while demo.next(settle).await.is_some() {}
    let github = demo.stack.world.github.clone();
    // The notifier reports on its own queue; give it a moment to reach each deployment's end.
    let reported = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < reported && !all_reported(&github) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print_timelines(&demo.seen);
    print_github_record(&github);
    let dashboard = demo.stack.dashboard.clone();
    print_ledger(&demo.stack.ledger, &dashboard, &demo.seen).await;
}

/// The pipeline on its own: a frontend commit reaches staging (or crash-loops there), then
/// tag 1.0.3 reaches production.
async fn pipeline_story(demo: &mut Demo, scenario: Scenario) -> anyhow::Result<bool> {
    let github = demo.stack.world.github.clone();
    println!(
        "→ a commit lands on xchem/fragalysis-frontend@staging; its \"build main\" run starts"
    );
    let sha = conveyor_sim::github::fake_sha(FRONTEND, "demo-commit");
    github
        .push_build(FRONTEND, "build main", "staging", false, &sha)
        .await
        .context("frontend run")?;
    let staging_end = |e: &Envelope| {
        let key = e.routing_key();
        key == "deploy.completed.staging" || key.starts_with("deploy.failed")
    };
    let Some(end) = demo.until(demo.budget(40.0), staging_end).await else {
        return Ok(false);
    };
    if scenario == Scenario::Failure {
        return Ok(end.routing_key() == "deploy.failed.staging");
    }
    if end.routing_key() != "deploy.completed.staging" {
        return Ok(false);
    }
    println!("\n→ tag 1.0.3 is pushed to xchem/fragalysis-stack; its \"build main\" run starts");
    let sha = conveyor_sim::github::fake_sha(STACK, "1.0.3");
    github
        .push_build(STACK, "build main", "1.0.3", true, &sha)
        .await
        .context("stack tag run")?;
    let production_end = |e: &Envelope| {
        let key = e.routing_key();
        key == "deploy.completed.production" || key.starts_with("deploy.failed")
    };
    Ok(demo
        .until(demo.budget(20.0), production_end)
        .await
        .is_some_and(|e| e.routing_key() == "deploy.completed.production"))
}

/// What the ledger recorded: each deployment of the run, and the DORA keys it yields.
async fn print_ledger(ledger: &conveyor_ledger::Ledger, dashboard: &str, seen: &[Envelope]) {
    // The ledger consumes on its own queue: wait until it holds every deployment's end.
    let ends: Vec<String> = seen
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                Event::DeployCompleted(_) | Event::DeployFailed(_) | Event::DeploySuperseded(_)
            )
        })
        .map(|e| {
            conveyor_ledger::timeline::Deployment::id_of(
                &e.correlation_id,
                conveyor_ledger::timeline::environment_of(&e.event).unwrap_or(""),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut recorded = Vec::new();
    loop {
        recorded.clear();
        for id in &ends {
            if let Ok(Some(d)) = ledger.store().get(id).await
                && !d.status.in_flight()
            {
                recorded.push(d);
            }
        }
        if recorded.len() == ends.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("\nThe ledger's record ({dashboard}/)");
    for d in &recorded {
        println!(
            "  {:<11} {:<10} {:>9}  Conveyor {:>7}  {dashboard}/deployments/{}",
            d.environment,
            d.status.as_str(),
            d.duration_ms()
                .map(conveyor_ledger::dashboard::duration)
                .unwrap_or_default(),
            conveyor_ledger::dashboard::duration(d.overhead_ms),
            d.id
        );
    }
    let mut environments: Vec<&str> = recorded.iter().map(|d| d.environment.as_str()).collect();
    environments.dedup();
    for env in environments {
        if let Ok(d) = ledger.dora(env, 30).await {
            let secs = |s: Option<f64>| {
                s.map_or("–".into(), |s| {
                    conveyor_ledger::dashboard::duration((s * 1000.0) as i64)
                })
            };
            println!(
                "  DORA {env}: {} deployment(s), lead time {}, change failure rate {}, time to restore {}",
                d.deployments,
                secs(d.lead_time_seconds),
                d.change_failure_rate
                    .map_or("–".into(), |r| format!("{:.0} %", r * 100.0)),
                secs(d.time_to_restore_seconds)
            );
        }
    }
}

/// Every GitHub deployment has reached a final status.
fn all_reported(github: &conveyor_sim::github::GitHubSim) -> bool {
    let final_state = |s: &str| matches!(s, "success" | "failure" | "error" | "inactive");
    github
        .deployments()
        .iter()
        .all(|d| d.statuses.last().is_some_and(|s| final_state(&s.state)))
}

/// What GitHub learned from the notifier: each deployment's statuses and the commit statuses.
fn print_github_record(github: &conveyor_sim::github::GitHubSim) {
    println!("\nGitHub deployments (as the simulated GitHub received them from the notifier)");
    for d in github.deployments() {
        let states: Vec<&str> = d.statuses.iter().map(|s| s.state.as_str()).collect();
        let last = d
            .statuses
            .last()
            .map(|s| s.description.as_str())
            .unwrap_or("");
        println!(
            "  {:<11} {}@{}  {}  ({last})",
            d.environment,
            d.repository,
            &d.sha[..7],
            states.join(" → ")
        );
    }
    let statuses = github.commit_statuses();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for s in &statuses {
        let key = (s.repository.clone(), s.sha.clone(), s.context.clone());
        if seen.contains(&key) {
            continue;
        }
        let states: Vec<&str> = statuses
            .iter()
            .filter(|x| x.repository == s.repository && x.sha == s.sha && x.context == s.context)
            .map(|x| x.state.as_str())
            .collect();
        println!(
            "  commit {}@{} {}: {}",
            s.repository,
            &s.sha[..7],
            s.context,
            states.join(" → ")
        );
        seen.push(key);
    }
}

/// `staging  [███░░░] 1/3 updated, 2 ready`.
fn bar(p: &conveyor::events::RolloutProgress) -> String {
    let width = 30usize;
    let total = p.replicas.max(1) as usize;
    let done = (p.updated.max(0) as usize * width) / total;
    format!(
        "           {:<12} [{}{}] {}/{} updated, {} ready",
        p.environment,
        "█".repeat(done),
        "░".repeat(width - done),
        p.updated,
        p.replicas,
        p.ready
    )
}

fn describe(e: &Envelope) -> String {
    let what = match &e.event {
        Event::BuildStarted(b) => format!("{} run {} {}", b.repository, b.run_id, b.status),
        Event::BuildSucceeded(b) | Event::BuildFailed(b) => {
            format!(
                "{} run {} {} on {}",
                b.repository,
                b.run_id,
                b.conclusion.map_or("?", |c| c.as_str()),
                b.head_branch.as_deref().unwrap_or("?")
            )
        }
        Event::BuildRequested(b) => format!(
            "dispatched {} on {} with {:?}",
            b.repository, b.git_ref, b.inputs
        ),
        Event::DeployRequested(d) => match d.operation.describe() {
            Some(who) => format!(
                "deploy {} to {} — {who}",
                d.image.reference(),
                d.environment
            ),
            None => format!("deploy {} to {}", d.image.reference(), d.environment),
        },
        Event::DeployHeld(h) => format!("HELD: {}", h.reason),
        Event::EnvironmentPaused(p) => {
            format!("{} paused by {}: {}", p.environment, p.actor.name, p.reason)
        }
        Event::EnvironmentResumed(r) => format!("{} resumed by {}", r.environment, r.actor.name),
        Event::DeployLaunched(l) => match &l.executor {
            ExecutorRun::Awx {
                job_id, template, ..
            } => format!("AWX job {job_id} of {template:?}"),
            ExecutorRun::Kubernetes { generation } => format!("patched, generation {generation}"),
        },
        Event::AwxJobStarted(j) | Event::AwxJobFinished(j) => {
            format!("AWX says job {} is {}", j.job_id, j.status)
        }
        Event::DeployJobFinished(j) => format!(
            "job {} {} after {:.1} s",
            j.job_id, j.status, j.elapsed_seconds
        ),
        Event::RolloutStarted(r) => format!(
            "{}/{} → revision {}",
            r.namespace, r.statefulset, r.to_revision
        ),
        Event::RolloutProgress(p) => format!(
            "{} {:?} ({} of {} updated, {} ready)",
            p.pod, p.step, p.updated, p.replicas, p.ready
        ),
        Event::RolloutStalled(s) => format!(
            "STALLED {}: {} ({} restarts) — {}",
            s.pod,
            s.reason,
            s.restarts,
            s.hint.as_deref().unwrap_or("")
        ),
        Event::RolloutCompleted(c) => format!(
            "all {} pods at {} in {} ms",
            c.replicas, c.revision, c.duration_ms
        ),
        Event::DeployCompleted(d) => format!("{} runs {}", d.environment, d.image.reference()),
        Event::DeployFailed(f) => format!("FAILED at {}: {}", f.stage, f.reason),
        Event::DeploySuperseded(s) => format!("superseded by {}", s.superseded_by),
        Event::DeployVerifying(v) => format!("verifying: {}", v.checks.join("; ")),
        Event::DeployAwaitingApproval(a) => {
            format!("AWAITING APPROVAL by {}", a.approvers.join(" or "))
        }
        Event::DeployApproved(d) | Event::DeployRejected(d) => format!(
            "by {}{}",
            d.actor.name,
            d.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Event::UnstickRequested(u) => format!("asked by {}", u.actor.name),
        Event::RolloutUnstuck(u) => format!(
            "deleted {} ({}, revision {})",
            u.pod,
            u.reason,
            u.revision.as_deref().unwrap_or("?")
        ),
        other => other.name().to_owned(),
    };
    format!("{:<28} {what}", e.routing_key())
}

/// Per deployment: when each stage started, how long it took, and Conveyor's own share — the
/// time between an outside fact and Conveyor's reaction to it.
fn print_timelines(seen: &[Envelope]) {
    for deploy in seen {
        if let Event::DeployRequested(d) = &deploy.event {
            print_timeline(&Moments::of(seen, deploy, d), deploy, d);
        }
    }
}

type At = Option<OffsetDateTime>;

/// When each step of one deployment's chain happened, as the demo saw the events.
struct Moments {
    /// The chain's first event.
    t0: OffsetDateTime,
    upstream_ok: At,
    requested: At,
    /// The build that requested the deployment.
    stack_ok: At,
    held: At,
    launched: At,
    /// AWX's notification of the job's end.
    notified: At,
    job_done: At,
    rollout_start: At,
    last_ready: At,
    rollout_done: At,
    done: At,
}

impl Moments {
    fn of(seen: &[Envelope], deploy: &Envelope, d: &conveyor::events::DeployRequested) -> Self {
        let chain = &deploy.correlation_id;
        let in_chain = |e: &Envelope| &e.correlation_id == chain;
        let first = |pred: &dyn Fn(&Event) -> bool| {
            seen.iter()
                .find(|e| in_chain(e) && pred(&e.event))
                .map(|e| e.time)
        };
        let job_id = seen.iter().find_map(|e| match &e.event {
            Event::DeployLaunched(l) if in_chain(e) => match l.executor {
                ExecutorRun::Awx { job_id, .. } => Some(job_id),
                _ => None,
            },
            _ => None,
        });
        Moments {
            t0: seen
                .iter()
                .filter(|e| in_chain(e))
                .map(|e| e.time)
                .min()
                .unwrap_or(deploy.time),
            upstream_ok: first(
                &|e| matches!(e, Event::BuildSucceeded(b) if b.repository != d.repository),
            ),
            requested: first(&|e| matches!(e, Event::BuildRequested(_))),
            // Ingest gave the build its own chain id; build-trigger carried the deployment on
            // in the upstream's chain.
            stack_ok: seen
                .iter()
                .find(|e| deploy.causation_id.as_deref() == Some(e.id.as_str()))
                .map(|e| e.time),
            held: first(&|e| matches!(e, Event::DeployHeld(_))),
            launched: first(&|e| matches!(e, Event::DeployLaunched(_))),
            notified: seen
                .iter()
                .find(|e| matches!(&e.event, Event::AwxJobFinished(j) if Some(j.job_id) == job_id))
                .map(|e| e.time),
            job_done: first(&|e| matches!(e, Event::DeployJobFinished(_))),
            rollout_start: first(&|e| matches!(e, Event::RolloutStarted(_))),
            last_ready: seen
                .iter()
                .filter(|e| {
                    in_chain(e)
                        && matches!(&e.event, Event::RolloutProgress(p) if p.step == PodStep::Ready)
                })
                .map(|e| e.time)
                .max(),
            rollout_done: first(&|e| matches!(e, Event::RolloutCompleted(_))),
            done: first(&|e| matches!(e, Event::DeployCompleted(_) | Event::DeployFailed(_))),
        }
    }
}

fn gap(a: At, b: At) -> Option<time::Duration> {
    a.zip(b).map(|(a, b)| b - a)
}

fn print_timeline(m: &Moments, deploy: &Envelope, d: &conveyor::events::DeployRequested) {
    println!(
        "\nTimeline of the {} deployment ({})",
        d.environment,
        d.image.reference()
    );
    println!("| stage | starts at | takes | of which Conveyor |");
    println!("|---|---|---|---|");
    let row = |stage: &str, from: At, to: At, overhead: Option<time::Duration>| {
        if let (Some(a), Some(b)) = (from, to) {
            println!(
                "| {stage} | {:.2} s | {:.2} s | {} |",
                (a - m.t0).as_seconds_f64(),
                (b - a).as_seconds_f64(),
                overhead
                    .map(|o| format!("{:.1} ms", o.as_seconds_f64() * 1e3))
                    .unwrap_or_else(|| "–".into())
            );
        }
    };
    row(
        "upstream build → stack dispatched",
        m.upstream_ok,
        m.requested,
        gap(m.upstream_ok, m.requested),
    );
    row("stack build", m.requested.or(Some(m.t0)), m.stack_ok, None);
    match m.held {
        // Time held by a pause or a freeze is the operator's, not Conveyor's.
        Some(held) => {
            row(
                "deployment requested → held",
                m.stack_ok.or(Some(deploy.time)),
                Some(held),
                gap(Some(deploy.time), Some(held)),
            );
            row("held (by the operator)", Some(held), m.launched, None);
        }
        None => row(
            "deployment requested → launched",
            m.stack_ok,
            m.launched,
            gap(Some(deploy.time), m.launched),
        ),
    }
    row("AWX job", m.launched, m.notified.or(m.job_done), None);
    row(
        "job end noticed",
        m.notified,
        m.job_done,
        gap(m.notified, m.job_done),
    );
    row("rollout", m.rollout_start, m.last_ready, None);
    row(
        "last pod Ready → completed",
        m.last_ready,
        m.rollout_done,
        gap(m.last_ready, m.rollout_done),
    );
    let overhead: f64 = [
        gap(m.upstream_ok, m.requested),
        m.stack_ok.map(|s| deploy.time - s),
        gap(Some(deploy.time), m.held.or(m.launched)),
        gap(m.notified, m.job_done),
        gap(m.last_ready, m.rollout_done),
    ]
    .iter()
    .flatten()
    .map(|d| d.as_seconds_f64())
    .sum();
    if let Some(end) = m.done {
        println!(
            "| **total** | 0.00 s | {:.2} s | {:.1} ms |",
            (end - m.t0).as_seconds_f64(),
            overhead * 1e3
        );
    }
}
