//! Orchestration overhead and scale: the whole pipeline in one process (cli::stack) over the
//! real RabbitMQ, against the simulators, N environments deploying at once from one stack build.
//!
//! Measured per deployment from the ledger's record: wall time from request to completion and
//! Conveyor's own share (the time between each outside fact and Conveyor's reaction). Beside it,
//! the Fragalysis way on the same simulated work — the Ansible role's pod polling (until not
//! ready every 5 s, then until ready every 20 s, pod by pod) and the GitHub action's AWX polling
//! (`awx … --monitor`, every 5 s) — modelled on the pod times the same run recorded.
//! `cargo bench -p conveyor-cli --bench orchestration` (AMQP_URL as the tests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::{Topology, testing};
use conveyor_cli::stack::{Stack, StackOptions, fan_out_pipeline};
use conveyor_ledger::store::Filter;
use conveyor_ledger::timeline::{Deployment, Status};
use lapin::options::QueueDeclareOptions;
use tokio_util::sync::CancellationToken;

const STACK: &str = "xchem/fragalysis-stack";

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The Fragalysis way's wall time for `d`, request to "deployed" known, in ms: the role waits
/// for each pod (highest ordinal first) polling until not ready every 5 s, then until ready
/// every 20 s; the GitHub action polls the AWX job every 5 s from the launch.
fn fragalysis_ms(d: &Deployment) -> Option<f64> {
    let launched = d
        .stages
        .iter()
        .find(|s| s.name == "AWX job")
        .map(|s| s.start)?;
    let rollout = d.stages.iter().find(|s| s.name == "rollout")?.start;
    let mut t = rollout;
    let mut pods = d.pods.clone();
    pods.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    for p in &pods {
        let gone = p.deleted.or(p.created)?;
        while t < gone {
            t += 5_000;
        }
        let ready = p.ready?;
        while t < ready {
            t += 20_000;
        }
    }
    let mut noticed = launched;
    while noticed < t {
        noticed += 5_000;
    }
    Some((noticed - d.requested_at) as f64)
}

/// One burst: `n` environments deployed at once by one stack build.
#[derive(Debug, Clone, Copy)]
struct Burst {
    n: usize,
    /// Seconds a pod takes to become Ready.
    pod_seconds: f64,
    /// Replicas of each worker.
    replicas: usize,
    /// Pods per StatefulSet.
    pods_per_set: i64,
    /// What each AWX and Kubernetes request takes, in ms (min, max); none: at once.
    latency_ms: Option<(u64, u64)>,
    /// Run the notifier's GitHub channel too (deployments and commit statuses).
    notifier: bool,
}

impl Burst {
    fn of(n: usize) -> Self {
        Self {
            n,
            pod_seconds: 0.5,
            replicas: 1,
            pods_per_set: 3,
            latency_ms: None,
            notifier: false,
        }
    }
}

struct Outcome {
    n: usize,
    /// Push → the ledger shows every deployment ended (its catch-up included).
    wall: Duration,
    /// Push → the last deployment ended, by the deployments' own end times: the pipeline's
    /// throughput, without the ledger's lag in recording it.
    span: Duration,
    completed: usize,
    deployments: Vec<Deployment>,
    max_depth: u32,
    /// Requests the AWX simulator answered (every attempt, for the capacity arithmetic).
    awx_requests: usize,
    /// Requests the GitHub simulator answered: (reads, writes).
    github_requests: (usize, usize),
}

/// Every deployment the ledger holds, page by page.
async fn recorded(ledger: &conveyor_ledger::Ledger) -> Vec<Deployment> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let (page, next) = ledger
            .store()
            .list(&Filter {
                limit: Some(500),
                before,
                ..Filter::default()
            })
            .await
            .unwrap();
        all.extend(page);
        match next {
            Some(cursor) => before = Some(cursor),
            None => return all,
        }
    }
}

/// The most messages waiting at once in the queues something consumes (partition queues
/// included; the notifier's, which this bench does not run, left out), sampled from the broker
/// every 100 ms until `stop`.
fn sample_depths(topology: &Topology, stop: CancellationToken) -> tokio::task::JoinHandle<u32> {
    let queues: Vec<String> = topology
        .queues
        .iter()
        .flat_map(|q| q.physical_queues())
        .collect();
    tokio::spawn(async move {
        let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut max = 0u32;
        while !stop.is_cancelled() {
            let mut total = 0;
            for q in &queues {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                if let Ok(info) = ch
                    .queue_declare(q.clone().into(), passive, Default::default())
                    .await
                    && info.consumer_count() > 0
                {
                    total += info.message_count();
                }
            }
            max = max.max(total);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    })
}

async fn run(burst: Burst) -> Outcome {
    let n = burst.n;
    let topology = Topology::conveyor(testing::unique_namespace("bench-orch"));
    let mut buses = Vec::new();
    for r in 0..burst.replicas.max(1) {
        buses.push(
            testing::connect(&format!("bench-orch-{r}"), topology.clone())
                .await
                .unwrap(),
        );
    }
    let stop = CancellationToken::new();
    let stack = Stack::start(
        &buses,
        Arc::new(fan_out_pipeline(STACK, n)),
        &StackOptions {
            pod_seconds: burst.pod_seconds,
            replicas: burst.replicas,
            pods_per_set: burst.pods_per_set,
            api_latency: burst
                .latency_ms
                .map(|(a, b)| (Duration::from_millis(a), Duration::from_millis(b))),
            notifier: burst.notifier,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let depth_stop = CancellationToken::new();
    let depth = sample_depths(&topology, depth_stop.clone());

    let start = Instant::now();
    let pushed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let sha = conveyor_sim::github::fake_sha(STACK, &format!("bench-{n}"));
    stack
        .world
        .github
        .push_build(STACK, "build main", "master", false, &sha)
        .await
        .expect("the stack build starts");
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64);
    // Reading a thousand records costs CPU the pipeline needs: look less often as N grows.
    let every = Duration::from_millis((n as u64).clamp(50, 1000));
    let deployments = loop {
        let all = recorded(&stack.ledger).await;
        let ended = all.iter().filter(|d| !d.status.in_flight()).count();
        if (ended == n && all.len() == n) || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(every).await;
    };
    let wall = start.elapsed();
    if deployments.iter().any(|d| d.status.in_flight()) || deployments.len() < n {
        let mut states = std::collections::BTreeMap::new();
        for d in &deployments {
            let last = d.stages.last().map(|s| s.name.as_str()).unwrap_or("-");
            *states
                .entry(format!("{} (last stage {last})", d.status.as_str()))
                .or_insert(0) += 1;
        }
        eprintln!(
            "  {n} environments: {} recorded, {states:?}",
            deployments.len()
        );
    }
    let awx_requests = stack.world.awx.requests().len();
    let github = stack.world.github.requests();
    let github_requests = (
        github.iter().filter(|r| r.method == "GET").count(),
        github.iter().filter(|r| r.method != "GET").count(),
    );
    depth_stop.cancel();
    let max_depth = depth.await.unwrap_or(0);
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = buses[0].delete_topology().await;
    let last_end = deployments.iter().filter_map(|d| d.finished_at).max();
    let span = last_end.map_or(wall, |end| {
        Duration::from_millis((end - pushed_ms).max(0) as u64)
    });
    Outcome {
        n,
        wall,
        span,
        completed: deployments
            .iter()
            .filter(|d| d.status == Status::Completed)
            .count(),
        deployments,
        max_depth,
        awx_requests,
        github_requests,
    }
}

fn overheads(o: &Outcome) -> Vec<f64> {
    o.deployments.iter().map(|d| d.overhead_ms as f64).collect()
}

fn durations(o: &Outcome) -> Vec<f64> {
    o.deployments
        .iter()
        .filter_map(|d| d.duration_ms().map(|x| x as f64))
        .collect()
}

/// One row of a scale table, and where the time went per stage (p50/p99 over the deployments).
fn print_row(label: &str, o: &Outcome) {
    println!(
        "{:>10} {:>6} {:>10} {:>9.1} {:>9.1} {:>11.1} {:>12.0} {:>12.0} {:>11}",
        label,
        o.n,
        o.completed,
        o.span.as_secs_f64(),
        o.wall.as_secs_f64(),
        rate(o),
        median(overheads(o)),
        p99(overheads(o)),
        o.max_depth
    );
    let mut names: Vec<&str> = Vec::new();
    for d in &o.deployments {
        for st in &d.stages {
            if !names.contains(&st.name.as_str()) {
                names.push(&st.name);
            }
        }
    }
    let per_stage: Vec<String> = names
        .iter()
        .map(|name| {
            let v: Vec<f64> = o
                .deployments
                .iter()
                .flat_map(|d| d.stages.iter().filter(|s| s.name == *name))
                .filter_map(|s| s.end.map(|e| (e - s.start) as f64))
                .collect();
            format!("{name} {:.0}/{:.0}", median(v.clone()), p99(v))
        })
        .collect();
    println!("           stages ms p50/p99: {}", per_stage.join(", "));
    let events: usize = o.deployments.iter().map(|d| d.events).sum();
    println!(
        "           per deployment: {:.1} events recorded, {:.1} AWX requests; GitHub in all: {} reads, {} writes",
        events as f64 / o.n as f64,
        o.awx_requests as f64 / o.n as f64,
        o.github_requests.0,
        o.github_requests.1
    );
    let mut failed = std::collections::BTreeMap::new();
    for d in o
        .deployments
        .iter()
        .filter(|d| d.status != Status::Completed)
    {
        let why = format!(
            "{}: {}",
            d.status.as_str(),
            d.reason.as_deref().unwrap_or("-")
        );
        *failed.entry(why).or_insert(0) += 1;
    }
    for (why, count) in failed {
        println!("           not completed ×{count}: {why}");
    }
}

fn print_header() {
    println!(
        "{:>10} {:>6} {:>10} {:>9} {:>9} {:>11} {:>12} {:>12} {:>11}",
        "",
        "N",
        "completed",
        "span s",
        "ledger s",
        "deploys/s",
        "own p50 ms",
        "own p99 ms",
        "max queued"
    );
    println!(
        "           (span: push → last deployment ended; ledger: push → all of them recorded)"
    );
}

/// Deployments completed per second of the span.
fn rate(o: &Outcome) -> f64 {
    o.completed as f64 / o.span.as_secs_f64()
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "FAIL" }
}

/// `CONVEYOR_BENCH_BURST=N[,replicas[,latency_ms]]`: run one burst of N and print its row
/// alone (to measure a size or a replica count of your own).
fn burst_from_env() -> Option<Burst> {
    let text = std::env::var("CONVEYOR_BENCH_BURST").ok()?;
    let mut parts = text.split(',').map(|p| p.trim().parse::<u64>());
    let mut burst = Burst::of(parts.next()?.ok()? as usize);
    burst.pods_per_set = 1;
    if let Some(Ok(r)) = parts.next() {
        burst.replicas = r as usize;
    }
    if let Some(Ok(ms)) = parts.next() {
        burst.latency_ms = Some((ms, ms * 2));
    }
    Some(burst)
}

fn main() {
    // The stack's own log, when asked for (RUST_LOG=info): to see why a stage waited.
    if std::env::var_os("RUST_LOG").is_some() {
        conveyor::telemetry::init_tracing("bench-orchestration");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("orchestration: the pipeline in one process over RabbitMQ, against the simulators");
        if let Some(burst) = burst_from_env() {
            println!("\n{burst:?}");
            print_header();
            print_row("burst", &run(burst).await);
            return;
        }

        // 1. External work ~zero (pods Ready in 50 ms): what is left is Conveyor and the broker.
        let zero = run(Burst {
            pod_seconds: 0.05,
            notifier: true,
            ..Burst::of(1)
        })
        .await;
        let d = &zero.deployments[0];
        println!("\nzero-time simulators, 1 environment: stages of the deployment (from the ledger)");
        println!("{:<28} {:>10} {:>10}", "stage", "whose", "ms");
        for s in &d.stages {
            println!(
                "{:<28} {:>10} {:>10}",
                s.name,
                s.owner.label(),
                s.end.map(|e| e - s.start).unwrap_or(-1)
            );
        }
        println!(
            "request → completed {} ms, of which Conveyor {} ms",
            d.duration_ms().unwrap_or(-1),
            d.overhead_ms
        );
        println!(
            "{} events recorded; {} AWX requests; GitHub (build dispatch and the notifier's deployment and statuses): {} reads, {} writes",
            d.events, zero.awx_requests, zero.github_requests.0, zero.github_requests.1
        );

        // 2. Realistic scripted times (a "3-minute" pod = 3 s here), and the Fragalysis way
        //    on the same recorded pod times.
        let real = run(Burst {
            pod_seconds: 3.0,
            ..Burst::of(1)
        })
        .await;
        let conveyor_ms = median(durations(&real));
        let fragalysis = median(real.deployments.iter().filter_map(fragalysis_ms).collect());
        println!("\nscripted times (pods Ready 3 s after creation), 1 environment");
        println!(
            "request → deployed known: Conveyor {:.0} ms (own share {:.0} ms) | Fragalysis way {:.0} ms | ratio {:.2}",
            conveyor_ms,
            median(overheads(&real)),
            fragalysis,
            fragalysis / conveyor_ms
        );

        // 3. Scale: N environments at once, 2 replicas of each worker. The thousand have one
        //    pod each, so that the simulated cluster's own work (a controller pass over every
        //    set and pod) stays off the two cores the pipeline is measured on.
        println!("\nscale: N environments deployed at once by one stack build, 2 replicas per worker, pods Ready in 0.5 s (3 per set; 1 at N = 1000)");
        print_header();
        for n in [1usize, 10, 100, 1000] {
            let o = run(Burst {
                replicas: 2,
                pods_per_set: if n >= 1000 { 1 } else { 3 },
                ..Burst::of(n)
            })
            .await;
            print_row("2 replicas", &o);
            let own = p99(overheads(&o));
            println!(
                "SUMMARY|orchestration overhead p99, {n} env(s)|{own:.0} ms|–|–|< 1000 ms|{}",
                pass(own < 1000.0 && o.completed == n)
            );
        }

        // 4. Scale-out: the same burst of a thousand with 1, 2 and 4 replicas of each worker,
        //    every AWX and Kubernetes request answered after 100–200 ms as across a network:
        //    the wait a replica adds capacity for.
        println!("\nscale-out: 1000 environments at once, AWX and Kubernetes answering in 100–200 ms, pods Ready in 0.5 s (1 per set)");
        print_header();
        let mut rates = Vec::new();
        for replicas in [1usize, 2, 4] {
            let o = run(Burst {
                replicas,
                pods_per_set: 1,
                latency_ms: Some((100, 200)),
                ..Burst::of(1000)
            })
            .await;
            print_row(&format!("{replicas} replica{}", if replicas == 1 { "" } else { "s" }), &o);
            rates.push((replicas, rate(&o), o.completed));
        }
        let (_, one, _) = rates[0];
        for &(replicas, rate, completed) in &rates[1..] {
            println!(
                "SUMMARY|deploys/s of 1000 at once (100–200 ms APIs), {replicas} replicas vs 1|{rate:.1}/s|{one:.1}/s|{:.2}|> 1|{}",
                rate / one,
                pass(rate > one && completed == 1000)
            );
        }

        println!(
            "SUMMARY|deployment wall time vs Fragalysis way|{:.0} ms|{:.0} ms|{:.2}|faster|{}",
            conveyor_ms,
            fragalysis,
            conveyor_ms / fragalysis,
            pass(conveyor_ms < fragalysis)
        );
        println!(
            "SUMMARY|orchestration overhead, zero-time world|{} ms|–|–|< 1000 ms|{}",
            d.overhead_ms,
            pass(d.overhead_ms < 1000)
        );
    });
}
