//! rollout-watcher over the real broker against the Kubernetes API simulator over HTTP.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use conveyor::config::Pipeline;
use conveyor::events::{
    DeployJobFinished, DeployLaunched, DeployRequested, Envelope, Event, ExecutorRun, GitRef,
    ImageRef, PodStep,
};
use conveyor::executor::DecisionKind;
use conveyor::{Bus, Topology, testing};
use conveyor_rollout_watcher::{Clients, Decision, Metrics, RolloutWatcher};
use conveyor_sim::kube::{Behavior, KubeSim};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: &str = "fragalysis-staging";

fn pipeline(stall_after: u64, grace: u64) -> String {
    format!(
        r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"
branches = ["master"]

[[environment]]
name = "staging"
repository = "xchem/fragalysis-stack"
on = {{ branch = "master" }}
executor = {{ awx = {{ template = "Staging", image_var = "stack_image_tag" }} }}
statefulset = {{ namespace = "{NS}", name = "stack" }}

[[environment]]
name = "direct"
repository = "xchem/fragalysis-stack"
on = {{ branch = "master" }}
executor = {{ kubernetes = {{ container = "stack" }} }}
statefulset = {{ namespace = "{NS}", name = "direct" }}

[[environment]]
name = "frozen"
repository = "xchem/fragalysis-stack"
on = {{ branch = "master" }}
executor = {{ kubernetes = {{ container = "stack" }} }}
statefulset = {{ namespace = "{NS}", name = "frozen" }}
freeze = [{{ from = "2020-01-01 00:00", to = "2100-01-01 00:00", timezone = "Europe/London", reason = "the long freeze" }}]

[rollout]
stall_after_secs = {stall_after}
fail_grace_secs = {grace}
start_within_secs = 3
"#
    )
}

struct Harness {
    sim: KubeSim,
    url: String,
    bus: Bus,
    metrics: Metrics,
    obs: testing::Observer,
    stop: CancellationToken,
}

impl Harness {
    async fn start(label: &str, stall_after: u64, grace: u64) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let topology = Topology::conveyor(testing::unique_namespace(label))
            .with_retry_tiers(&[Duration::from_millis(200), Duration::from_secs(1)]);
        let bus = testing::connect(&format!("rollout-test-{label}"), topology)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let sim = KubeSim::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        tokio::spawn(async move { server.serve(listener, std::future::pending()).await });

        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let metrics = Metrics::default();
        let watcher = Arc::new(RolloutWatcher::new(
            Arc::new(Pipeline::parse(&pipeline(stall_after, grace)).unwrap()),
            Clients::single(client),
            bus.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        tokio::spawn(conveyor_rollout_watcher::run(
            bus.clone(),
            watcher,
            stop.clone(),
        ));
        let obs = testing::Observer::new(&bus).await.unwrap();
        Self {
            sim,
            url,
            bus,
            metrics,
            obs,
            stop,
        }
    }

    /// A settled StatefulSet of `replicas` pods.
    async fn statefulset(&self, name: &str, image: &str, replicas: i64) {
        self.sim
            .create_statefulset(NS, name, "stack", image, replicas);
        tokio::time::timeout(Duration::from_secs(10), self.sim.wait_settled(NS, name))
            .await
            .expect("the simulated StatefulSet settles");
    }

    /// What AWX's job would publish once launched.
    async fn launched(&self, environment: &str, name: &str) -> Envelope {
        let e = Envelope::new(
            "conveyor/awx-launcher",
            Event::DeployLaunched(DeployLaunched {
                environment: environment.into(),
                executor: ExecutorRun::Awx {
                    job_id: 968,
                    url: "https://awx.example/#/jobs/playbook/968/output".into(),
                    template: "Staging".into(),
                },
                image: image("2026.11.1"),
                namespace: NS.into(),
                statefulset: name.into(),
                operation: None,
                sha: None,
            }),
        );
        self.bus.publish(&e).await.unwrap();
        e
    }

    /// What the Ansible role does: re-apply the template with a new timestamp (here, a
    /// strategic patch of an env-like annotation) — a new revision, rolled pod by pod.
    async fn ansible_applies(&self, name: &str, patch: serde_json::Value) {
        let res = reqwest::Client::new()
            .patch(format!(
                "{}/apis/apps/v1/namespaces/{NS}/statefulsets/{name}?fieldManager=ansible",
                self.url
            ))
            .header("content-type", "application/strategic-merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    async fn until(&mut self, what: &str, secs: u64, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        self.obs.until(what, Duration::from_secs(secs), pred).await
    }

    fn progress(&self) -> Vec<(String, String, PodStep)> {
        self.obs
            .seen
            .iter()
            .filter_map(|e| match &e.event {
                Event::RolloutProgress(p) => Some((e.id.clone(), p.pod.clone(), p.step)),
                _ => None,
            })
            .collect()
    }

    /// Hand `envelope` to a watcher of its own — a replica that saw nothing before — and
    /// return the routing keys of what it decided to publish.
    async fn handle_fresh(&self, envelope: Envelope, redelivered: bool) -> Vec<String> {
        let client = kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap();
        let fresh = RolloutWatcher::new(
            Arc::new(Pipeline::parse(&pipeline(600, 120)).unwrap()),
            Clients::single(client),
            self.bus.clone(),
            Metrics::default(),
            self.stop.clone(),
        );
        let outcome = fresh
            .handle(conveyor::Incoming {
                envelope,
                attempt: 1,
                redelivered,
                held: None,
                queue: "rollout-watcher.deployments".into(),
            })
            .await;
        outcome.publish.iter().map(|e| e.routing_key()).collect()
    }

    /// How many times the Kubernetes executor patched a StatefulSet.
    fn conveyor_patches(&self) -> usize {
        self.sim
            .patches()
            .into_iter()
            .filter(|p| p.field_manager.as_deref() == Some("conveyor"))
            .count()
    }

    async fn finish(self) {
        self.stop.cancel();
        self.bus.delete_topology().await.unwrap();
    }
}

fn image(tag: &str) -> ImageRef {
    ImageRef {
        repository: "xchem/fragalysis-stack".into(),
        tag: Some(tag.into()),
        digest: None,
    }
}

/// A deployment request for the Kubernetes-executor environment `direct`, by `digest`.
fn direct_request(digest: &str) -> Envelope {
    request_to("direct", digest)
}

/// A deployment request for the Kubernetes-executor environment `environment`, by `digest`.
fn request_to(environment: &str, digest: &str) -> Envelope {
    Envelope::new(
        "conveyor/build-trigger",
        Event::DeployRequested(DeployRequested {
            environment: environment.into(),
            repository: "xchem/fragalysis-stack".into(),
            sha: "a".repeat(40),
            git_ref: GitRef::branch("master"),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("latest".into()),
                digest: Some(digest.to_owned()),
            },
            upstream: Vec::new(),
            origin_time: None,
            operation: Default::default(),
        }),
    )
}

fn restart_patch(stamp: &str) -> serde_json::Value {
    json!({"spec": {"template": {"metadata": {"annotations": {"ansible_date_time": stamp}}}}})
}

#[tokio::test]
async fn a_three_replica_restart_reports_each_pod_in_reverse_order_and_completes_at_once() {
    let mut h = Harness::start("ro-restart", 600, 120).await;
    h.statefulset("stack", "xchem/fragalysis-stack:latest", 3)
        .await;
    let launched = h.launched("staging", "stack").await;
    // The AWX job runs a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.ansible_applies("stack", restart_patch("2026-11-27T15:00:00.123456Z"))
        .await;

    let done = h
        .until("deploy.completed", 20, |e| {
            e.routing_key() == "deploy.completed.staging"
        })
        .await;
    assert_eq!(done.correlation_id, launched.correlation_id);
    let ready: Vec<String> = h
        .progress()
        .into_iter()
        .filter(|(_, _, s)| *s == PodStep::Ready)
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(
        ready,
        ["stack-2", "stack-1", "stack-0"],
        "highest ordinal first: launched {} ready_log {:?} {:#?}",
        launched.time,
        h.sim.ready_log(),
        h.obs
            .seen
            .iter()
            .map(|e| format!("{} {:?}", e.routing_key(), e.event))
            .collect::<Vec<_>>()
    );
    let deleted: Vec<String> = h
        .progress()
        .into_iter()
        .filter(|(_, _, s)| *s == PodStep::Deleted)
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(deleted, ["stack-2", "stack-1", "stack-0"]);
    let started = h
        .until("rollout.started", 1, |e| {
            e.routing_key() == "rollout.started.staging"
        })
        .await;
    let completed = h
        .until("rollout.completed", 1, |e| {
            e.routing_key() == "rollout.completed.staging"
        })
        .await;
    let Event::RolloutCompleted(c) = &completed.event else {
        unreachable!()
    };
    let Event::RolloutStarted(s) = &started.event else {
        unreachable!()
    };
    assert_eq!(c.revision, s.to_revision);
    assert_eq!(c.replicas, 3);
    assert_eq!(c.pods.len(), 3);
    // Noticed within 100 ms of the last pod turning Ready (the simulator's clock).
    let last_ready = h.sim.ready_log().iter().map(|(_, t)| *t).max().unwrap();
    let lag = completed.time - last_ready;
    assert!(
        lag < time::Duration::milliseconds(100),
        "completion published {lag} after the last pod turned Ready"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_bad_image_stalls_with_image_pull_back_off_then_fails() {
    let mut h = Harness::start("ro-pull", 600, 1).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 2)
        .await;
    h.sim
        .kubelet_rule(":does-not-exist", Behavior::ImagePullBackOff);
    h.launched("staging", "stack").await;
    h.ansible_applies(
        "stack",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": "xchem/fragalysis-stack:does-not-exist"}]}}}}),
    )
    .await;
    let stalled = h
        .until("rollout.stalled", 15, |e| {
            e.routing_key() == "rollout.stalled.staging"
        })
        .await;
    let Event::RolloutStalled(s) = stalled.event else {
        unreachable!()
    };
    assert_eq!(s.pod, "stack-1");
    assert_eq!(s.container.as_deref(), Some("stack"));
    assert!(
        s.reason == "ErrImagePull" || s.reason == "ImagePullBackOff",
        "{}",
        s.reason
    );
    assert!(s.hint.unwrap().contains("delete"));
    let failed = h
        .until("deploy.failed", 15, |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    let Event::DeployFailed(f) = failed.event else {
        unreachable!()
    };
    assert_eq!(f.stage, conveyor::events::Stage::Rollout);
    assert!(f.reason.starts_with("stack-1: "), "{}", f.reason);
    assert!(f.reason.contains("ImagePullBackOff") || f.reason.contains("ErrImagePull"));
    h.finish().await;
}

#[tokio::test]
async fn a_pod_the_controller_cannot_create_stalls_and_fails_saying_why() {
    let mut h = Harness::start("ro-refused", 1, 1).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 2)
        .await;
    // A quota refuses the replacement pod: no pod shows anything, only the controller's Event.
    let quota = "pods \"stack-1\" is forbidden: exceeded quota: compute, requested: limits.cpu=2, used: limits.cpu=8, limited: limits.cpu=8";
    h.sim.refuse_pods(NS, "stack", quota);
    h.launched("staging", "stack").await;
    h.ansible_applies(
        "stack",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": "xchem/fragalysis-stack:1.0.1"}]}}}}),
    )
    .await;
    let stalled = h
        .until("rollout.stalled", 15, |e| {
            e.routing_key() == "rollout.stalled.staging"
        })
        .await;
    let Event::RolloutStalled(s) = stalled.event else {
        unreachable!()
    };
    assert_eq!(s.reason, "FailedCreate");
    assert!(
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("exceeded quota")),
        "{:?}",
        s.message
    );
    let failed = h
        .until("deploy.failed", 15, |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    let Event::DeployFailed(f) = failed.event else {
        unreachable!()
    };
    assert_eq!(f.stage, conveyor::events::Stage::Rollout);
    assert!(
        f.reason.starts_with(
            "no progress for 1 s: create Pod stack-1 in StatefulSet stack failed error: "
        ),
        "{}",
        f.reason
    );
    assert!(f.reason.contains("exceeded quota"), "{}", f.reason);
    h.finish().await;
}

#[tokio::test]
async fn a_crash_looping_pod_stalls_with_its_restarts_counted() {
    let mut h = Harness::start("ro-crash", 600, 30).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 2)
        .await;
    h.sim.kubelet_rule(
        ":crashes",
        Behavior::CrashLoop {
            every: Duration::from_millis(80),
        },
    );
    h.launched("staging", "stack").await;
    h.ansible_applies(
        "stack",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "stack", "image": "xchem/fragalysis-stack:crashes"}]}}}}),
    )
    .await;
    let stalled = h
        .until("rollout.stalled", 15, |e| {
            e.routing_key() == "rollout.stalled.staging"
        })
        .await;
    let Event::RolloutStalled(s) = stalled.event else {
        unreachable!()
    };
    assert_eq!(s.pod, "stack-1");
    assert!(
        s.reason == "CrashLoopBackOff" || s.reason == "RepeatedRestarts",
        "{}",
        s.reason
    );
    assert!(s.restarts >= 1 || s.reason == "CrashLoopBackOff");
    assert!(s.message.unwrap_or_default().contains("back-off") || s.restarts >= 3);
    h.finish().await;
}

#[tokio::test]
async fn a_partitioned_rollout_completes_by_kubectls_rule() {
    let mut h = Harness::start("ro-partition", 600, 120).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 3)
        .await;
    h.launched("staging", "stack").await;
    h.ansible_applies(
        "stack",
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 1}},
                        "template": {"spec": {"containers": [{"name": "stack", "image": "xchem/fragalysis-stack:1.1.0"}]}}}}),
    )
    .await;
    h.until("deploy.completed", 20, |e| {
        e.routing_key() == "deploy.completed.staging"
    })
    .await;
    let ready: Vec<String> = h
        .progress()
        .into_iter()
        .filter(|(_, _, s)| *s == PodStep::Ready)
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(
        ready,
        ["stack-2", "stack-1"],
        "stack-0 stays below the partition: {:#?}",
        h.obs
            .seen
            .iter()
            .map(|e| format!("{} {:?}", e.routing_key(), e.event))
            .collect::<Vec<_>>()
    );
    let sts = h.sim.get_statefulset(NS, "stack").unwrap();
    assert_ne!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    h.finish().await;
}

#[tokio::test]
async fn a_watch_broken_mid_rollout_loses_no_pod_and_reports_none_twice() {
    let mut h = Harness::start("ro-410", 600, 120).await;
    h.sim
        .set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(400)));
    h.statefulset("stack", "xchem/fragalysis-stack:latest", 3)
        .await;
    h.launched("staging", "stack").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.ansible_applies("stack", restart_patch("2026-11-27T16:00:00Z"))
        .await;
    // Mid-rollout: cut every watch and forget history, twice, so resumes meet 410 Expired.
    for _ in 0..2 {
        h.until(
            "a pod Ready",
            15,
            |e| matches!(&e.event, Event::RolloutProgress(p) if p.step == PodStep::Ready),
        )
        .await;
        h.sim.expire_history();
        h.sim.drop_watches();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.until("deploy.completed", 20, |e| {
        e.routing_key() == "deploy.completed.staging"
    })
    .await;
    let progress = h.progress();
    let ready: Vec<&str> = progress
        .iter()
        .filter(|(_, _, s)| *s == PodStep::Ready)
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(ready, ["stack-2", "stack-1", "stack-0"]);
    let ids: HashSet<&str> = progress.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids.len(),
        progress.len(),
        "no progress event published twice"
    );
    let mut pod_steps: Vec<(String, PodStep)> =
        progress.iter().map(|(_, p, s)| (p.clone(), *s)).collect();
    pod_steps.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(format!("{:?}", a.1).cmp(&format!("{:?}", b.1)))
    });
    let before = pod_steps.len();
    pod_steps.dedup();
    assert_eq!(
        before,
        pod_steps.len(),
        "no pod step reported twice: {progress:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_kubernetes_executor_patches_the_image_by_digest_and_follows_it() {
    let mut h = Harness::start("ro-exec", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 2)
        .await;
    let digest = format!("sha256:{}", "d".repeat(64));
    let request = direct_request(&digest);
    h.bus.publish(&request).await.unwrap();
    let launched = h
        .until("deploy.launched", 15, |e| {
            e.routing_key() == "deploy.launched.direct"
        })
        .await;
    let Event::DeployLaunched(l) = &launched.event else {
        unreachable!()
    };
    assert!(matches!(
        l.executor,
        ExecutorRun::Kubernetes { generation: 2 }
    ));
    let patches = h.sim.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].content_type,
        "application/strategic-merge-patch+json"
    );
    assert_eq!(patches[0].field_manager.as_deref(), Some("conveyor"));
    let wanted = format!("xchem/fragalysis-stack@{digest}");
    assert_eq!(
        patches[0].body["spec"]["template"]["spec"]["containers"][0]["image"],
        wanted.as_str()
    );
    let done = h
        .until("deploy.completed", 20, |e| {
            e.routing_key() == "deploy.completed.direct"
        })
        .await;
    assert_eq!(done.correlation_id, request.correlation_id);
    let pods = h.sim.pods(NS);
    let images: Vec<&str> = pods
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("direct-")
        })
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, [wanted.as_str(), wanted.as_str()]);
    // A redelivered request finds its own deployment applied and does not patch again.
    h.bus.publish(&request).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.metrics.get(Decision::Executor(DecisionKind::Adopted)) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the repeat was not recognised"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.sim.patches().len(), 1);
    // Its launch is published again as it was: the same id, and the time it was applied (a
    // follow resumed from the copy judges by it which pods the launch replaced).
    let launches = |seen: &[Envelope]| -> Vec<Envelope> {
        seen.iter()
            .filter(|e| {
                e.correlation_id == request.correlation_id
                    && e.routing_key() == "deploy.launched.direct"
            })
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while launches(&h.obs.seen).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the adopted launch was not published again: {:?}",
            launches(&h.obs.seen)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.obs.drain().await;
    }
    let seen = launches(&h.obs.seen);
    assert_eq!(seen[1].id, seen[0].id);
    assert_eq!(seen[1].time, seen[0].time, "the launch keeps its time");
    h.finish().await;
}

#[tokio::test]
async fn a_job_that_fails_before_the_statefulset_changed_fails_the_deployment_at_once() {
    let mut h = Harness::start("ro-jobfail", 600, 120).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 2)
        .await;
    let launched = h.launched("staging", "stack").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished = Envelope::caused_by(
        &launched,
        "conveyor/awx-launcher",
        Event::DeployJobFinished(DeployJobFinished {
            environment: "staging".into(),
            job_id: 968,
            status: "failed".into(),
            failed: true,
            elapsed_seconds: 12.0,
            explanation: None,
            failed_task: Some(
                "task \"Wait for stack-1\" (role fragalysis-stack) failed on localhost: timed out"
                    .into(),
            ),
            stdout_tail: Some("fatal: [localhost]: FAILED!".into()),
        }),
    );
    h.bus.publish(&finished).await.unwrap();
    let failed = h
        .until("deploy.failed", 5, |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    let Event::DeployFailed(f) = failed.event else {
        unreachable!()
    };
    assert_eq!(f.stage, conveyor::events::Stage::Job);
    assert!(
        f.reason.ends_with(
            "job 968 failed: task \"Wait for stack-1\" (role fragalysis-stack) failed on localhost: timed out"
        ),
        "the failing task is named: {}",
        f.reason
    );
    assert!(
        !h.obs
            .seen
            .iter()
            .any(|e| e.routing_key().starts_with("rollout.started"))
    );
    h.finish().await;
}

#[tokio::test]
async fn a_job_that_succeeds_without_changing_the_statefulset_fails_the_deployment() {
    let mut h = Harness::start("ro-jobnoop", 600, 120).await;
    h.statefulset("stack", "xchem/fragalysis-stack:1.0.0", 2)
        .await;
    let launched = h.launched("staging", "stack").await;
    // The role skipped its task: the job succeeds, the StatefulSet stays as it was.
    let finished = Envelope::caused_by(
        &launched,
        "conveyor/awx-launcher",
        Event::DeployJobFinished(DeployJobFinished {
            environment: "staging".into(),
            job_id: 968,
            status: "successful".into(),
            failed: false,
            elapsed_seconds: 4.0,
            explanation: None,
            failed_task: None,
            stdout_tail: None,
        }),
    );
    h.bus.publish(&finished).await.unwrap();
    let failed = h
        .until("deploy.failed", 10, |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    let Event::DeployFailed(f) = failed.event else {
        unreachable!()
    };
    assert_eq!(f.stage, conveyor::events::Stage::Job);
    assert_eq!(
        f.reason,
        format!(
            "the AWX job succeeded, but 3 s after the launch StatefulSet {NS}/stack shows no new revision and no replaced pod (the job was sent stack_image_tag=2026.11.1)"
        )
    );
    assert!(
        failed.time - launched.time >= time::Duration::seconds(3),
        "not before start_within_secs"
    );
    h.finish().await;
}

#[tokio::test]
async fn two_requests_handled_at_once_never_patch_over_a_rollout_in_progress() {
    let h = Harness::start("ro-exec-race", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 2)
        .await;
    let request = |d: char| direct_request(&format!("sha256:{}", d.to_string().repeat(64)));
    // Two replicas each holding a request at the same moment (one took the queue over while
    // the other, cut off from the broker, still ran its handler): both see it at rest.
    let replica = || {
        let client = kube::Client::try_from(kube::Config::new(h.url.parse().unwrap())).unwrap();
        RolloutWatcher::new(
            Arc::new(Pipeline::parse(&pipeline(600, 120)).unwrap()),
            Clients::single(client),
            h.bus.clone(),
            Metrics::default(),
            h.stop.clone(),
        )
    };
    let incoming = |e: &Envelope| conveyor::Incoming {
        envelope: e.clone(),
        attempt: 1,
        redelivered: false,
        held: None,
        queue: "rollout-watcher.deployments".into(),
    };
    let (a, b) = (replica(), replica());
    let (first, second) = (request('1'), request('2'));
    let _ = tokio::join!(a.handle(incoming(&first)), b.handle(incoming(&second)));
    let patches: Vec<_> = h
        .sim
        .patches()
        .into_iter()
        .filter(|p| p.field_manager.as_deref() == Some("conveyor"))
        .collect();
    assert_eq!(
        patches.len(),
        1,
        "one rollout started, the other request looks again later"
    );
    assert!(patches[0].at_rest);
    h.finish().await;
}

#[tokio::test]
async fn a_follow_resumed_after_its_rollout_ended_reports_it_completed_not_stalled() {
    // Stalls are reported after 2 s without progress, failures 1 s later.
    let mut h = Harness::start("ro-resume-ended", 2, 1).await;
    h.statefulset("stack", "xchem/fragalysis-stack:2026.11.0", 2)
        .await;
    // The rollout happened while no watcher ran: launched a minute ago (so this is a resumed
    // follow), applied, every pod replaced and Ready.
    let mut launched = Envelope::new(
        "conveyor/awx-launcher",
        Event::DeployLaunched(DeployLaunched {
            environment: "staging".into(),
            executor: ExecutorRun::Awx {
                job_id: 969,
                url: "https://awx.example/#/jobs/playbook/969/output".into(),
                template: "Staging".into(),
            },
            image: image("2026.11.1"),
            namespace: NS.into(),
            statefulset: "stack".into(),
            operation: None,
            sha: None,
        }),
    );
    launched.time -= time::Duration::seconds(60);
    h.ansible_applies("stack", restart_patch("2026-11-27T10:00:00Z"))
        .await;
    tokio::time::timeout(Duration::from_secs(10), h.sim.wait_settled(NS, "stack"))
        .await
        .unwrap();
    h.bus.publish(&launched).await.unwrap();
    let done = h
        .until("deploy.completed", 10, |e| {
            e.routing_key() == "deploy.completed.staging"
        })
        .await;
    assert_eq!(done.correlation_id, launched.correlation_id);
    // Nothing more: no stall, no failure after the end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.obs.drain().await;
    let later: Vec<String> = h
        .obs
        .seen
        .iter()
        .filter(|e| e.correlation_id == launched.correlation_id)
        .map(|e| e.routing_key())
        .filter(|k| k.starts_with("rollout.stalled") || k.starts_with("deploy.failed"))
        .collect();
    assert!(later.is_empty(), "{later:?}");
    h.finish().await;
}

#[tokio::test]
async fn an_older_request_arriving_late_never_rolls_back_over_a_newer_one() {
    let mut h = Harness::start("ro-exec-late", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 2)
        .await;
    let mut older = direct_request(&format!("sha256:{}", "1".repeat(64)));
    older.time -= time::Duration::seconds(30);
    let newer = direct_request(&format!("sha256:{}", "2".repeat(64)));
    h.bus.publish(&newer).await.unwrap();
    h.until("the newer one completed", 20, |e| {
        e.correlation_id == newer.correlation_id && e.routing_key() == "deploy.completed.direct"
    })
    .await;
    // The older request comes back late (a redelivery after a restart) to a replica that never
    // saw the newer one.
    let kinds = h.handle_fresh(older.clone(), true).await;
    assert_eq!(kinds, ["deploy.superseded.direct"]);
    assert_eq!(
        h.conveyor_patches(),
        1,
        "the StatefulSet was not rolled back"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_request_published_again_after_it_was_overtaken_is_not_applied_twice() {
    let mut h = Harness::start("ro-exec-again", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 2)
        .await;
    let first = direct_request(&format!("sha256:{}", "3".repeat(64)));
    let second = direct_request(&format!("sha256:{}", "4".repeat(64)));
    for request in [&first, &second] {
        h.bus.publish(request).await.unwrap();
        h.until("it completed", 20, |e| {
            e.correlation_id == request.correlation_id
                && e.routing_key() == "deploy.completed.direct"
        })
        .await;
    }
    // The first request is published again — same id, a later time (a build handled twice) —
    // to a replica that never saw the second.
    let mut again = first.clone();
    again.time = time::OffsetDateTime::now_utc();
    let kinds = h.handle_fresh(again, false).await;
    assert_eq!(kinds, ["deploy.superseded.direct"]);
    assert_eq!(
        h.conveyor_patches(),
        2,
        "the first deployment was not applied again"
    );
    h.finish().await;
}

#[tokio::test]
async fn an_older_change_published_again_after_a_newer_one_never_rolls_back() {
    let mut h = Harness::start("ro-exec-origin", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 2)
        .await;
    let with_origin = |digit: char, origin: time::OffsetDateTime| {
        let mut e = direct_request(&format!("sha256:{}", digit.to_string().repeat(64)));
        if let Event::DeployRequested(r) = &mut e.event {
            r.origin_time = Some(origin);
        }
        e
    };
    let now = time::OffsetDateTime::now_utc();
    let older = with_origin('5', now - time::Duration::minutes(10));
    let newer = with_origin('6', now - time::Duration::minutes(5));
    h.bus.publish(&newer).await.unwrap();
    h.until("the newer one completed", 20, |e| {
        e.correlation_id == newer.correlation_id && e.routing_key() == "deploy.completed.direct"
    })
    .await;
    // The older change's request, never applied, is published again now (its build handled a
    // second time), to a replica that never saw the newer one: its envelope is the newest.
    let mut again = older.clone();
    again.time = time::OffsetDateTime::now_utc();
    let kinds = h.handle_fresh(again, false).await;
    assert_eq!(kinds, ["deploy.superseded.direct"]);
    assert_eq!(
        h.conveyor_patches(),
        1,
        "the StatefulSet was not rolled back"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_freeze_window_holds_the_patch_and_a_forced_request_goes_through_it() {
    let mut h = Harness::start("ro-freeze", 600, 120).await;
    h.statefulset("frozen", "xchem/fragalysis-stack:latest", 1)
        .await;
    let held = request_to("frozen", &format!("sha256:{}", "1".repeat(64)));
    h.bus.publish(&held).await.unwrap();
    let report = h
        .until("deploy.held", 15, |e| {
            e.routing_key() == "deploy.held.frozen"
        })
        .await;
    match &report.event {
        Event::DeployHeld(d) => {
            assert_eq!(d.kind, conveyor::events::HoldKind::Frozen);
            assert!(
                d.reason.ends_with("Europe/London: the long freeze"),
                "{}",
                d.reason
            );
            assert_eq!(
                d.until,
                Some(time::macros::datetime!(2100-01-01 00:00 UTC)),
                "London keeps GMT on New Year's Day"
            );
        }
        other => panic!("{other:?}"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.metrics.get(Decision::Executor(DecisionKind::Held)) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.sim.patches().is_empty(), "no patch inside the window");

    // Forced: it overrides the window (and, being newer, supersedes the held one).
    let mut forced = request_to("frozen", &format!("sha256:{}", "2".repeat(64)));
    if let Event::DeployRequested(r) = &mut forced.event {
        r.operation.trigger = conveyor::events::Trigger::Manual;
        r.operation.forced = true;
        r.origin_time = Some(time::OffsetDateTime::now_utc());
    }
    h.bus.publish(&forced).await.unwrap();
    h.until("the forced one launched", 15, |e| {
        e.correlation_id == forced.correlation_id && e.routing_key() == "deploy.launched.frozen"
    })
    .await;
    h.until("the held one superseded", 15, |e| {
        e.correlation_id == held.correlation_id && e.routing_key() == "deploy.superseded.frozen"
    })
    .await;
    assert_eq!(h.sim.patches().len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_paused_statefulset_is_patched_only_after_the_resume() {
    let mut h = Harness::start("ro-pause", 600, 120).await;
    h.statefulset("direct", "xchem/fragalysis-stack:latest", 1)
        .await;
    let actor = conveyor::events::Actor {
        name: "carol".into(),
        via: "proxy".into(),
        from: None,
    };
    conveyor::control::pause(&h.bus, "direct", actor.clone(), "db migration")
        .await
        .unwrap();
    let request = direct_request(&format!("sha256:{}", "3".repeat(64)));
    h.bus.publish(&request).await.unwrap();
    h.until("deploy.held", 15, |e| {
        e.routing_key() == "deploy.held.direct"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.sim.patches().is_empty(), "no patch while paused");
    conveyor::control::resume(&h.bus, "direct", actor, None)
        .await
        .unwrap();
    h.until("deploy.completed", 30, |e| {
        e.correlation_id == request.correlation_id && e.routing_key() == "deploy.completed.direct"
    })
    .await;
    assert_eq!(h.sim.patches().len(), 1, "patched once, after the resume");
    h.finish().await;
}
