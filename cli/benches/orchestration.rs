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
use conveyor_ledger::timeline::Deployment;
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

struct Outcome {
    n: usize,
    wall: Duration,
    completed: usize,
    deployments: Vec<Deployment>,
    max_depth: u32,
}

async fn run(n: usize, pod_seconds: f64, replicas: usize) -> Outcome {
    let topology = Topology::conveyor(testing::unique_namespace("bench-orch"));
    let mut buses = Vec::new();
    for r in 0..replicas.max(1) {
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
            pod_seconds,
            replicas,
            ..StackOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();

    // Queue depths, sampled from the broker while it runs.
    let depth_stop = CancellationToken::new();
    let queues: Vec<String> = topology.queues.iter().map(|q| q.name.clone()).collect();
    let ds = depth_stop.clone();
    let depth = tokio::spawn(async move {
        let conn = lapin::Connection::connect(&testing::amqp_url(), Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut max = 0u32;
        while !ds.is_cancelled() {
            let mut total = 0;
            for q in &queues {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                if let Ok(info) = ch
                    .queue_declare(q.clone().into(), passive, Default::default())
                    .await
                {
                    total += info.message_count();
                }
            }
            max = max.max(total);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    });

    let start = Instant::now();
    let sha = conveyor_sim::github::fake_sha(STACK, &format!("bench-{n}"));
    stack
        .world
        .github
        .push_build(STACK, "build main", "master", false, &sha)
        .await
        .expect("the stack build starts");
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64);
    let deployments = loop {
        let (all, _) = stack
            .ledger
            .store()
            .list(&Filter {
                limit: Some(500),
                ..Filter::default()
            })
            .await
            .unwrap();
        let ended = all.iter().filter(|d| !d.status.in_flight()).count();
        if (ended == n && all.len() == n) || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    depth_stop.cancel();
    let max_depth = depth.await.unwrap_or(0);
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = buses[0].delete_topology().await;
    Outcome {
        n,
        wall,
        completed: deployments
            .iter()
            .filter(|d| d.status == conveyor_ledger::timeline::Status::Completed)
            .count(),
        deployments,
        max_depth,
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

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("orchestration: the pipeline in one process over RabbitMQ, against the simulators");

        // 1. External work ~zero (pods Ready in 50 ms): what is left is Conveyor and the broker.
        let zero = run(1, 0.05, 1).await;
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

        // 2. Realistic scripted times (a "3-minute" pod = 3 s here), and the Fragalysis way
        //    on the same recorded pod times.
        let real = run(1, 3.0, 1).await;
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

        // 3. Scale: 1, 10, 100 environments at once, 2 replicas of each worker.
        println!("\nscale: N environments deployed at once by one stack build, 2 replicas per worker, pods 0.5 s");
        println!(
            "{:>4} {:>10} {:>9} {:>14} {:>12} {:>12} {:>14}",
            "N", "completed", "wall s", "deploys/s", "own p50 ms", "own p99 ms", "max queued"
        );
        for n in [1usize, 10, 100] {
            let o = run(n, 0.5, 2).await;
            println!(
                "{:>4} {:>10} {:>9.1} {:>14.2} {:>12.0} {:>12.0} {:>14}",
                o.n,
                o.completed,
                o.wall.as_secs_f64(),
                o.completed as f64 / o.wall.as_secs_f64(),
                median(overheads(&o)),
                p99(overheads(&o)),
                o.max_depth
            );
            // Where the time went, per stage (p50 / p99 over the deployments).
            let mut names: Vec<String> = Vec::new();
            for d in &o.deployments {
                for st in &d.stages {
                    if !names.contains(&st.name) {
                        names.push(st.name.clone());
                    }
                }
            }
            let per_stage: Vec<String> = names
                .iter()
                .map(|name| {
                    let v: Vec<f64> = o
                        .deployments
                        .iter()
                        .flat_map(|d| d.stages.iter().filter(|s| &s.name == name))
                        .filter_map(|s| s.end.map(|e| (e - s.start) as f64))
                        .collect();
                    format!("{name} {:.0}/{:.0}", median(v.clone()), p99(v))
                })
                .collect();
            println!("     stages ms p50/p99: {}", per_stage.join(", "));
            println!(
                "SUMMARY|orchestration overhead p99, {n} env(s)|{:.0} ms|–|–|< 1000 ms|{}",
                p99(overheads(&o)),
                if p99(overheads(&o)) < 1000.0 && o.completed == n { "pass" } else { "FAIL" }
            );
        }
        println!(
            "SUMMARY|deployment wall time vs Fragalysis way|{:.0} ms|{:.0} ms|{:.2}|faster|{}",
            conveyor_ms,
            fragalysis,
            conveyor_ms / fragalysis,
            if conveyor_ms < fragalysis { "pass" } else { "FAIL" }
        );
        println!(
            "SUMMARY|orchestration overhead, zero-time world|{} ms|–|–|< 1000 ms|{}",
            d.overhead_ms,
            if d.overhead_ms < 1000 { "pass" } else { "FAIL" }
        );
    });
}
