//! Safe delivery through rollout-watcher over the real broker and the Kubernetes simulator:
//! verification after the rollout (a scripted HTTP service), the automatic rollback after a
//! failed verification or rollout — once, never after a failed rollback — and the pod stuck on a
//! broken revision deleted once the rollback is applied over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use conveyor::config::Pipeline;
use conveyor::events::{DeployRequested, Envelope, Event, GitRef, ImageRef, Stage, Trigger};
use conveyor::{Bus, Topology, testing};
use conveyor_rollout_watcher::{Clients, Metrics, RolloutWatcher};
use conveyor_sim::kube::{Behavior, KubeSim};
use tokio_util::sync::CancellationToken;

const NS: &str = "fragalysis-guarded";

/// A service whose health answer the test sets, counting the questions.
#[derive(Clone, Default)]
struct Service {
    status: Arc<AtomicU16>,
    asked: Arc<AtomicUsize>,
    /// Answer 503 to this many questions first.
    fail_first: Arc<AtomicUsize>,
}

impl Service {
    async fn serve(&self) -> String {
        let s = self.clone();
        s.status.store(200, Ordering::SeqCst);
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let s = s.clone();
                async move {
                    s.asked.fetch_add(1, Ordering::SeqCst);
                    let early = s
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if early {
                        503
                    } else {
                        s.status.load(Ordering::SeqCst)
                    };
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

fn pipeline(health: &str) -> String {
    format!(
        r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"
branches = ["master"]

[[environment]]
name = "guarded"
repository = "xchem/fragalysis-stack"
on = {{ branch = "master" }}
executor = {{ kubernetes = {{ container = "stack" }} }}
statefulset = {{ namespace = "{NS}", name = "checked" }}
verify = {{ http = {{ url = "{health}", consecutive = 2, interval_secs = 1, within_secs = 4 }} }}
on_failure = "rollback"

[[environment]]
name = "sticky"
repository = "xchem/fragalysis-stack"
on = {{ branch = "master" }}
executor = {{ kubernetes = {{ container = "stack" }} }}
statefulset = {{ namespace = "{NS}", name = "sticky" }}
on_failure = "rollback"
unstick = true

[rollout]
stall_after_secs = 600
fail_grace_secs = 2
"#
    )
}

struct Harness {
    sim: KubeSim,
    bus: Bus,
    obs: testing::Observer,
    service: Service,
    /// Stops the test; `watcher` stops only the current rollout-watcher.
    stop: CancellationToken,
    watcher: CancellationToken,
    pipeline: Arc<Pipeline>,
    kube_url: String,
    _cleanup: testing::Cleanup,
}

impl Harness {
    async fn start(label: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let topology = Topology::conveyor(testing::unique_namespace(label))
            .with_retry_tiers(&[Duration::from_millis(200), Duration::from_secs(1)]);
        let cleanup = testing::Cleanup::new(topology.clone());
        let bus = testing::connect(&format!("rollout-safety-{label}"), topology)
            .await
            .unwrap();
        let service = Service::default();
        let health = service.serve().await;
        let sim = KubeSim::new();
        sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(100)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
        let stop = CancellationToken::new();
        let obs = testing::Observer::new(&bus).await.unwrap();
        let mut h = Self {
            sim,
            bus,
            obs,
            service,
            watcher: stop.child_token(),
            stop,
            pipeline: Arc::new(Pipeline::parse(&pipeline(&health)).unwrap()),
            kube_url: url,
            _cleanup: cleanup,
        };
        h.restart_watcher();
        h
    }

    /// Stop the running rollout-watcher (as a killed process: nothing of it survives) and
    /// start a new one.
    fn restart_watcher(&mut self) {
        self.watcher.cancel();
        self.watcher = self.stop.child_token();
        let client =
            kube::Client::try_from(kube::Config::new(self.kube_url.parse().unwrap())).unwrap();
        let watcher = Arc::new(RolloutWatcher::new(
            self.pipeline.clone(),
            Clients::single(client),
            self.bus.clone(),
            Metrics::default(),
            self.watcher.clone(),
        ));
        tokio::spawn(conveyor_rollout_watcher::run(
            self.bus.clone(),
            watcher,
            self.watcher.clone(),
        ));
    }

    async fn statefulset(&self, name: &str, replicas: i64) {
        self.sim
            .create_statefulset(NS, name, "stack", "xchem/fragalysis-stack:latest", replicas);
        tokio::time::timeout(Duration::from_secs(10), self.sim.wait_settled(NS, name))
            .await
            .expect("the simulated StatefulSet settles");
    }

    /// Request `digest` for `environment` (newest: its change is now).
    async fn deploy(&self, environment: &str, digest: &str) -> Envelope {
        let e = Envelope::new(
            "conveyor/build-trigger",
            Event::DeployRequested(DeployRequested {
                environment: environment.into(),
                repository: "xchem/fragalysis-stack".into(),
                sha: "a".repeat(40),
                git_ref: GitRef::branch("master"),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: None,
                    digest: Some(digest.into()),
                },
                upstream: Vec::new(),
                origin_time: Some(time::OffsetDateTime::now_utc()),
                operation: Default::default(),
            }),
        );
        self.bus.publish(&e).await.unwrap();
        e
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        self.obs.until(what, Duration::from_secs(30), pred).await
    }

    /// The deployment requests the watcher itself published (automatic rollbacks).
    fn rollbacks(&self) -> Vec<Envelope> {
        self.obs
            .seen
            .iter()
            .filter(|e| {
                matches!(&e.event, Event::DeployRequested(r) if r.operation.trigger == Trigger::Rollback)
            })
            .cloned()
            .collect()
    }

    fn image(&self, name: &str) -> String {
        self.sim.get_statefulset(NS, name).unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn finish(self) {
        self.stop.cancel();
        self.bus.delete_topology().await.unwrap();
    }
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn is(e: &Envelope, of: &Envelope, key: &str) -> bool {
    e.correlation_id == of.correlation_id && e.routing_key() == key
}

#[tokio::test]
async fn a_verified_deployment_completes_only_once_its_checks_pass() {
    let mut h = Harness::start("verify-pass").await;
    h.statefulset("checked", 2).await;
    h.service.fail_first.store(2, Ordering::SeqCst);
    let a = h.deploy("guarded", &digest('a')).await;
    let verifying = h
        .until("deploy.verifying", |e| {
            is(e, &a, "deploy.verifying.guarded")
        })
        .await;
    match &verifying.event {
        Event::DeployVerifying(v) => {
            assert!(
                v.checks[0].ends_with("→ 200, 2 in a row within 4 s"),
                "{:?}",
                v.checks
            )
        }
        other => panic!("{other:?}"),
    }
    let done = h
        .until("deploy.completed", |e| {
            is(e, &a, "deploy.completed.guarded")
        })
        .await;
    match &done.event {
        Event::DeployCompleted(c) => assert!(c.verified, "{c:?}"),
        other => panic!("{other:?}"),
    }
    assert!(
        h.service.asked.load(Ordering::SeqCst) >= 4,
        "two 503s, then two 200s in a row"
    );
    let order: Vec<String> = h
        .obs
        .seen
        .iter()
        .filter(|e| e.correlation_id == a.correlation_id)
        .map(|e| e.routing_key())
        .filter(|k| k.starts_with("rollout.completed") || k.starts_with("deploy."))
        .collect();
    assert_eq!(
        order[order.len() - 3..],
        [
            "rollout.completed.guarded",
            "deploy.verifying.guarded",
            "deploy.completed.guarded"
        ]
    );
    h.finish().await;
}

#[tokio::test]
async fn a_failed_verification_rolls_back_once_to_the_image_that_ran_before() {
    let mut h = Harness::start("verify-rollback").await;
    h.statefulset("checked", 2).await;
    let a = h.deploy("guarded", &digest('a')).await;
    h.until("A completed", |e| is(e, &a, "deploy.completed.guarded"))
        .await;

    // B's pods are Ready, but the service answers 502.
    h.service.answer(502);
    let b = h.deploy("guarded", &digest('b')).await;
    let failed = h
        .until("B failed", |e| is(e, &b, "deploy.failed.guarded"))
        .await;
    match &failed.event {
        Event::DeployFailed(f) => {
            assert_eq!(f.stage, Stage::Verify);
            assert!(f.reason.contains("→ 502"), "{}", f.reason);
        }
        other => panic!("{other:?}"),
    }
    let rollback = h
        .until("the automatic rollback", |e| {
            matches!(&e.event, Event::DeployRequested(r) if r.operation.trigger == Trigger::Rollback)
        })
        .await;
    h.service.answer(200);
    match &rollback.event {
        Event::DeployRequested(r) => {
            assert_eq!(r.image.digest.as_deref(), Some(digest('a').as_str()));
            assert_eq!(r.operation.actor.as_ref().unwrap().name, "conveyor");
            assert_eq!(
                r.operation.source_deployment.as_deref(),
                Some(format!("{}.guarded", a.correlation_id).as_str())
            );
            assert_eq!(
                r.operation.replaces.as_deref(),
                Some(format!("{}.guarded", b.correlation_id).as_str())
            );
        }
        other => panic!("{other:?}"),
    }
    h.until("the rollback completed", |e| {
        is(e, &rollback, "deploy.completed.guarded")
    })
    .await;
    assert_eq!(
        h.image("checked"),
        format!("xchem/fragalysis-stack@{}", digest('a'))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.obs.drain().await;
    assert_eq!(h.rollbacks().len(), 1, "one rollback for one failure");
    h.finish().await;
}

#[tokio::test]
async fn a_follow_resumed_after_the_rollback_reports_the_failure_again_not_a_completion() {
    let mut h = Harness::start("verify-resume").await;
    h.statefulset("checked", 1).await;
    let a = h.deploy("guarded", &digest('a')).await;
    h.until("A completed", |e| is(e, &a, "deploy.completed.guarded"))
        .await;
    h.service.answer(502);
    let b = h.deploy("guarded", &digest('b')).await;
    let launched = h
        .until("B launched", |e| is(e, &b, "deploy.launched.guarded"))
        .await;
    let failed = h
        .until("B failed", |e| is(e, &b, "deploy.failed.guarded"))
        .await;
    let rollback = h
        .until("the automatic rollback", |e| {
            matches!(&e.event, Event::DeployRequested(r) if r.operation.trigger == Trigger::Rollback)
        })
        .await;
    h.service.answer(200);
    h.until("the rollback completed", |e| {
        is(e, &rollback, "deploy.completed.guarded")
    })
    .await;

    // The watcher dies before B's follow lease comes back: a new one gets B's launch, long
    // after it was published, with the rollback's healthy pods in the set.
    let mut again = launched.clone();
    again.time -= time::Duration::seconds(60);
    // Meanwhile the completions journal names another image as the last to complete before
    // B (a journal that changed, or one read in part while another reader walked it): the
    // rollback decided when B failed must be the one requested again, or one rollback id would
    // name two requests (found by the fault campaign: two GitHub deployments for one rollback).
    let mut other = Envelope::new(
        "test",
        Event::DeployCompleted(conveyor::events::DeployCompleted {
            environment: "guarded".into(),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: None,
                digest: Some(digest('c')),
            },
            revision: None,
            operation: None,
            sha: Some("c".repeat(40)),
            verified: true,
        }),
    );
    other.time = again.time - time::Duration::seconds(1);
    h.bus.publish(&other).await.unwrap();
    h.restart_watcher();
    h.bus.publish(&again).await.unwrap();
    let republished = h
        .until("B's failure published again", |e| {
            is(e, &b, "deploy.failed.guarded") && e.time > failed.time
        })
        .await;
    assert_eq!(
        republished.id, failed.id,
        "the same event, not a second end"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.obs.drain().await;
    let completions = h
        .obs
        .seen
        .iter()
        .filter(|e| is(e, &b, "deploy.completed.guarded"))
        .count();
    assert_eq!(completions, 0, "B failed; it never completes");
    let rollbacks = h.rollbacks();
    let ids: std::collections::BTreeSet<&str> = rollbacks.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one rollback for one failure");
    assert!(
        rollbacks.len() > 1,
        "the resumed follow requested the rollback again"
    );
    for r in &rollbacks {
        assert_eq!(
            r.event, rollback.event,
            "every copy of the rollback is the same request"
        );
    }
    h.finish().await;
}

#[tokio::test]
async fn a_failed_rollback_never_triggers_another() {
    let mut h = Harness::start("verify-twice").await;
    h.statefulset("checked", 1).await;
    let a = h.deploy("guarded", &digest('a')).await;
    h.until("A completed", |e| is(e, &a, "deploy.completed.guarded"))
        .await;
    h.service.answer(502);
    h.deploy("guarded", &digest('b')).await;
    let rollback = h
        .until("the automatic rollback", |e| {
            matches!(&e.event, Event::DeployRequested(r) if r.operation.trigger == Trigger::Rollback)
        })
        .await;
    h.until("the rollback failed too", |e| {
        is(e, &rollback, "deploy.failed.guarded")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.obs.drain().await;
    assert_eq!(
        h.rollbacks().len(),
        1,
        "a failed rollback is reported, not retried"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_pod_stuck_on_a_bad_revision_is_deleted_once_the_rollback_is_applied() {
    let mut h = Harness::start("unstick").await;
    h.statefulset("sticky", 2).await;
    let a = h.deploy("sticky", &digest('a')).await;
    h.until("A completed", |e| is(e, &a, "deploy.completed.sticky"))
        .await;
    // B crash-loops: its first pod never becomes Ready, and the controller stops there.
    h.sim.kubelet_rule(
        &"b".repeat(64),
        Behavior::CrashLoop {
            every: Duration::from_millis(80),
        },
    );
    let b = h.deploy("sticky", &digest('b')).await;
    h.until("B failed", |e| is(e, &b, "deploy.failed.sticky"))
        .await;
    let rollback = h
        .until("the automatic rollback", |e| {
            matches!(&e.event, Event::DeployRequested(r) if r.operation.trigger == Trigger::Rollback)
        })
        .await;
    let unstuck = h
        .until("rollout.unstuck", |e| {
            e.routing_key() == "rollout.unstuck.sticky"
        })
        .await;
    match &unstuck.event {
        Event::RolloutUnstuck(u) => {
            assert_eq!(u.pod, "sticky-1", "the pod of the broken revision");
            assert!(
                u.reason == "CrashLoopBackOff" || u.reason == "RepeatedRestarts",
                "{}",
                u.reason
            );
        }
        other => panic!("{other:?}"),
    }
    h.until("the rollback completed", |e| {
        is(e, &rollback, "deploy.completed.sticky")
    })
    .await;
    let good = format!("xchem/fragalysis-stack@{}", digest('a'));
    let pods: Vec<String> = h
        .sim
        .pods(NS)
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("sticky-"))
        })
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        pods,
        [good.clone(), good],
        "every pod on the previous image"
    );
    h.obs.drain().await;
    let unstuck: Vec<&Envelope> = h
        .obs
        .seen
        .iter()
        .filter(|e| e.routing_key() == "rollout.unstuck.sticky")
        .collect();
    assert_eq!(unstuck.len(), 1, "deleted once: {unstuck:#?}");
    h.finish().await;
}

#[tokio::test]
async fn a_newer_request_waits_until_the_deployment_being_verified_has_ended() {
    let mut h = Harness::start("verify-busy").await;
    h.statefulset("checked", 1).await;
    // The checks need a few rounds: the StatefulSet is at rest all that time.
    h.service.fail_first.store(2, Ordering::SeqCst);
    let a = h.deploy("guarded", &digest('a')).await;
    h.until("A verifying", |e| is(e, &a, "deploy.verifying.guarded"))
        .await;
    let b = h.deploy("guarded", &digest('b')).await;
    let b_launched = h
        .until("B launched", |e| is(e, &b, "deploy.launched.guarded"))
        .await;
    let a_done = h
        .obs
        .seen
        .iter()
        .find(|e| is(e, &a, "deploy.completed.guarded"))
        .cloned()
        .expect("A completed before B was patched");
    assert!(
        a_done.time <= b_launched.time,
        "{a_done:?} / {b_launched:?}"
    );
    match &a_done.event {
        Event::DeployCompleted(c) => assert!(c.verified),
        other => panic!("{other:?}"),
    }
    h.until("B completed", |e| is(e, &b, "deploy.completed.guarded"))
        .await;
    h.finish().await;
}
