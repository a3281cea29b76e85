//! How long after an AWX job ends does `deploy.job_finished` appear on the bus — with AWX
//! notifications going through ingest, and with polling alone? Real broker, AWX simulator, the
//! production delay tiers. Baseline: the Fragalysis action (awxkit `--monitor`) polls every 5 s,
//! so its mean detection delay is 2.5 s. `cargo bench -p conveyor-awx-launcher --bench job_end`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor::config::{Pipeline, Secret};
use conveyor::events::{DeployRequested, Envelope, Event, GitRef, ImageRef};
use conveyor::{ConsumerOptions, Outcome, Topology, testing};
use conveyor_awx_launcher::awx::Credentials;
use conveyor_awx_launcher::{AwxLauncher, Decision, Metrics, Settings};
use conveyor_sim::awx::{AwxSim, PlaybookResult, TemplateSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token";
const HOOK: &str = "bench-hook";
/// How long each job runs before the simulator ends it: detection by polling depends on it.
const JOB_SECONDS: &[u64] = &[1, 3, 8, 20];

/// Each duration runs twice on one template: the first run is the history the second is polled
/// by (AWX templates run about as long each time). Returns (seconds, detection delay, polls)
/// of the second runs.
async fn run(notifications: bool) -> Vec<(u64, Duration, u64)> {
    let bus = testing::connect(
        "bench-awx",
        Topology::conveyor(testing::unique_namespace("bench-awx")),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let sim = AwxSim::new("/api/v2", "admin", "pw", TOKEN);
    sim.add_template(TemplateSpec::prompting(
        "Staging Fragalysis Stack (Version Change)",
    ));
    if notifications {
        let ingest = conveyor_ingest::router(
            bus.clone(),
            conveyor_ingest::Settings {
                webhook_token: Some(Secret::new(HOOK)),
                ..conveyor_ingest::Settings::default()
            },
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sim.notify_to(
            format!("http://{}/webhooks/awx", l.local_addr().unwrap()),
            HOOK,
        );
        tokio::spawn(async move { axum::serve(l, ingest).await });
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(l, std::future::pending()).await });
    let pipeline = Arc::new(Pipeline::parse(include_str!("../../../conveyor.toml")).unwrap());
    let metrics = Metrics::default();
    let launcher = Arc::new(AwxLauncher::new(
        pipeline,
        &Settings {
            url,
            credentials: Credentials::Token(Secret::new(TOKEN)),
        },
        bus.clone(),
        metrics.clone(),
    ));
    tokio::spawn(conveyor_awx_launcher::run(
        bus.clone(),
        launcher,
        stop.clone(),
    ));

    // Watch the ledger queue (bound to everything) for launches and finishes.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Envelope)>();
    let ledger = bus.topology().queue(conveyor::bus::queues::LEDGER);
    let (b, st) = (bus.clone(), stop.clone());
    tokio::spawn(async move {
        b.consume(
            &ledger,
            ConsumerOptions::default(),
            move |i| {
                let _ = tx.send((Instant::now(), i.envelope));
                async { Outcome::ack() }
            },
            st,
        )
        .await
    });

    let mut out = Vec::new();
    for (secs, measured) in JOB_SECONDS.iter().flat_map(|&s| [(s, false), (s, true)]) {
        let polls_before = metrics.get(Decision::Polled);
        let request = Envelope::new(
            "conveyor/bench",
            Event::DeployRequested(DeployRequested {
                environment: "staging".into(),
                repository: "xchem/fragalysis-stack".into(),
                sha: "a".repeat(40),
                git_ref: GitRef::branch("master"),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some(format!("t{secs}-{measured}")),
                    digest: None,
                },
                upstream: Vec::new(),
                origin_time: None,
                operation: Default::default(),
            }),
        );
        bus.publish(&request).await.unwrap();
        let job_id = loop {
            let (_, e) = rx.recv().await.unwrap();
            if let Event::DeployLaunched(l) = e.event
                && e.correlation_id == request.correlation_id
                && let conveyor::events::ExecutorRun::Awx { job_id, .. } = l.executor
            {
                break job_id;
            }
        };
        // A job ends at no particular phase of the polls: a fraction of a second past whole
        // seconds, different per duration (the same for both runs of a duration).
        let fraction = Duration::from_millis(100 + 250 * (secs % 4));
        tokio::time::sleep(Duration::from_secs(secs) + fraction).await;
        let ended = Instant::now();
        sim.finish_job(job_id, PlaybookResult::successful()).await;
        let seen = loop {
            let (at, e) = rx.recv().await.unwrap();
            if matches!(e.event, Event::DeployJobFinished(_))
                && e.correlation_id == request.correlation_id
            {
                break at;
            }
        };
        if measured {
            out.push((
                secs,
                seen - ended,
                metrics.get(Decision::Polled) - polls_before,
            ));
        }
    }
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.delete_topology().await.unwrap();
    out
}

#[tokio::main]
async fn main() {
    println!(
        "AWX job end → deploy.job_finished published (baseline: awxkit polls every 5 s, mean 2.5 s)"
    );
    println!("| job ran | with notification | polling only | polls (polling only) |");
    println!("|---|---|---|---|");
    let with = run(true).await;
    let without = run(false).await;
    for ((secs, a, _), (_, b, polls)) in with.iter().zip(&without) {
        println!(
            "| {secs} s | {:.0} ms | {:.0} ms | {polls} |",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
    }
    let mean = |v: &[(u64, Duration, u64)]| {
        v.iter().map(|(_, d, _)| d.as_secs_f64()).sum::<f64>() / v.len() as f64
    };
    println!(
        "| mean | {:.0} ms | {:.0} ms |",
        mean(&with) * 1e3,
        mean(&without) * 1e3
    );
    let ms = mean(&with) * 1e3;
    println!(
        "SUMMARY|AWX job end noticed (notification), mean|{ms:.0} ms|2500 ms (awx CLI, 5 s polls)|{:.3}|< 1000 ms|{}",
        ms / 2500.0,
        if ms < 1000.0 { "pass" } else { "FAIL" }
    );
    let polled = mean(&without) * 1e3;
    println!(
        "SUMMARY|AWX job end noticed (polling only, after one run of the template), mean|{polled:.0} ms|2500 ms (awx CLI, 5 s polls)|{:.2}|< 1000 ms|{}",
        polled / 2500.0,
        if polled < 1000.0 { "pass" } else { "FAIL" }
    );
}
