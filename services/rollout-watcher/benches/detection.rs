//! How soon after a pod turns Ready does Conveyor know? rollout-watcher (watching) against the
//! Fragalysis Ansible role's wait (`wait-for-stack.yaml`: per pod, highest ordinal first, poll
//! every 5 s until not ready, then every 20 s until ready), both following the same simulated
//! 3-replica rollout (pods Ready 3 s after creation). `cargo bench -p conveyor-rollout-watcher --bench detection`.

use std::sync::Arc;
use std::time::Duration;

use conveyor::config::Pipeline;
use conveyor::events::{DeployLaunched, Envelope, Event, ExecutorRun, ImageRef, PodStep};
use conveyor::{ConsumerOptions, Outcome, Topology, testing};
use conveyor_rollout_watcher::{Clients, Metrics, RolloutWatcher};
use conveyor_sim::kube::{Behavior, KubeSim};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NS: &str = "fragalysis-staging";
const REPLICAS: i64 = 3;
const POD_START: Duration = Duration::from_secs(3);

const PIPELINE: &str = r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"

[[environment]]
name = "staging"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
executor = { awx = { template = "Staging", image_var = "stack_image_tag" } }
statefulset = { namespace = "fragalysis-staging", name = "stack" }
"#;

fn ready(pod: &Value) -> bool {
    pod["status"]["containerStatuses"][0]["ready"].as_bool() == Some(true)
}

/// The Ansible role's wait, against the same API: returns when it saw each pod Ready.
async fn ansible_wait(url: String) -> Vec<(String, OffsetDateTime)> {
    let http = reqwest::Client::new();
    let get = |pod: String| {
        let http = http.clone();
        let url = format!("{url}/api/v1/namespaces/{NS}/pods/{pod}");
        async move {
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    let uid = |p: &Value| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let before: Vec<String> = {
        let mut v = Vec::new();
        for ordinal in 0..REPLICAS {
            v.push(
                get(format!("stack-{ordinal}"))
                    .await
                    .map(|p| uid(&p))
                    .unwrap_or_default(),
            );
        }
        v
    };
    let mut seen = Vec::new();
    for ordinal in (0..REPLICAS).rev() {
        let pod = format!("stack-{ordinal}");
        // The role waits for `ready == false`; our pods start in seconds, not minutes, so a
        // replacement that finished between two polls also counts (else it would wait forever).
        let old = &before[ordinal as usize];
        while get(pod.clone())
            .await
            .is_some_and(|p| ready(&p) && uid(&p) == *old)
        {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            if get(pod.clone()).await.is_some_and(|p| ready(&p)) {
                seen.push((pod.clone(), OffsetDateTime::now_utc()));
                break;
            }
        }
    }
    seen
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let bus = testing::connect(
        "bench-rollout",
        Topology::conveyor(testing::unique_namespace("bench-rollout")),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let sim = KubeSim::new();
    sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    sim.create_statefulset(
        NS,
        "stack",
        "stack",
        "xchem/fragalysis-stack:latest",
        REPLICAS,
    );
    sim.wait_settled(NS, "stack").await;
    sim.set_default_behavior(Behavior::ReadyAfter(POD_START));

    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let watcher = Arc::new(RolloutWatcher::new(
        Arc::new(Pipeline::parse(PIPELINE).unwrap()),
        Clients::single(client),
        bus.clone(),
        Metrics::default(),
        stop.clone(),
    ));
    tokio::spawn(conveyor_rollout_watcher::run(
        bus.clone(),
        watcher,
        stop.clone(),
    ));
    let (tx, mut rx) = mpsc::unbounded_channel::<(OffsetDateTime, Envelope)>();
    let ledger = bus.topology().queue(conveyor::bus::queues::LEDGER);
    let (b, st) = (bus.clone(), stop.clone());
    tokio::spawn(async move {
        b.consume(
            &ledger,
            ConsumerOptions::default(),
            move |i| {
                let _ = tx.send((OffsetDateTime::now_utc(), i.envelope));
                async { Outcome::ack() }
            },
            st,
        )
        .await
    });

    let launched = Envelope::new(
        "conveyor/bench",
        Event::DeployLaunched(DeployLaunched {
            environment: "staging".into(),
            executor: ExecutorRun::Awx {
                job_id: 1,
                url: String::new(),
                template: "Staging".into(),
            },
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("latest".into()),
                digest: None,
            },
            namespace: NS.into(),
            statefulset: "stack".into(),
            operation: None,
            sha: None,
        }),
    );
    bus.publish(&launched).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ansible = tokio::spawn(ansible_wait(url.clone()));
    reqwest::Client::new()
        .patch(format!("{url}/apis/apps/v1/namespaces/{NS}/statefulsets/stack?fieldManager=ansible"))
        .header("content-type", "application/strategic-merge-patch+json")
        .body(json!({"spec": {"template": {"metadata": {"annotations": {"ANSIBLE_DATE_TIME_ISO8601_MICRO": "bench"}}}}}).to_string())
        .send()
        .await
        .unwrap();

    let mut conveyor_ready = Vec::new();
    let completed_at = loop {
        let (at, e) = rx.recv().await.unwrap();
        match e.event {
            Event::RolloutProgress(p) if p.step == PodStep::Ready => {
                conveyor_ready.push((p.pod, at))
            }
            Event::RolloutCompleted(_) => break at,
            _ => {}
        }
    };
    let ansible_ready = ansible.await.unwrap();
    let truth = sim.ready_log();
    let truth_of = |pod: &str| {
        truth
            .iter()
            .filter(|(p, _)| p == pod)
            .map(|(_, t)| *t)
            .max()
            .unwrap()
    };
    println!(
        "Pod Ready → known (3 replicas, each Ready {} s after creation)",
        POD_START.as_secs()
    );
    println!("| pod | rollout-watcher | Ansible role (20 s polls) |");
    println!("|---|---|---|");
    let ms = |d: time::Duration| d.as_seconds_f64() * 1e3;
    let (mut sum_c, mut sum_a) = (0.0, 0.0);
    for (pod, at) in &conveyor_ready {
        let t = truth_of(pod);
        let a = ansible_ready
            .iter()
            .find(|(p, _)| p == pod)
            .map(|(_, at)| *at - t)
            .unwrap();
        sum_c += ms(*at - t);
        sum_a += ms(a);
        println!("| {pod} | {:.0} ms | {:.0} ms |", ms(*at - t), ms(a));
    }
    let n = conveyor_ready.len() as f64;
    println!("| mean | {:.0} ms | {:.0} ms |", sum_c / n, sum_a / n);
    let last = truth.iter().map(|(_, t)| *t).max().unwrap();
    let ansible_done = ansible_ready.last().map(|(_, t)| *t).unwrap();
    println!(
        "| rollout complete | {:.0} ms | {:.0} ms |",
        ms(completed_at - last),
        ms(ansible_done - last)
    );
    let (ours, theirs) = (ms(completed_at - last), ms(ansible_done - last));
    println!(
        "SUMMARY|rollout completion noticed after the last Ready|{ours:.0} ms|{theirs:.0} ms (Ansible role)|{:.4}|< 100 ms|{}",
        ours / theirs,
        if ours < 100.0 { "pass" } else { "FAIL" }
    );
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.delete_topology().await.unwrap();
}
