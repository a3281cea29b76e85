//! build-trigger over the real broker, with ingest and the GitHub simulator: runs move on the
//! simulator, its signed webhooks go through ingest, build-trigger dispatches on the simulator.

use std::sync::Arc;
use std::time::Duration;

use conveyor::config::{Pipeline, Secret};
use conveyor::events::{BuildRequested, BuildRun, DeployRequested, Envelope, Event, GitRef};
use conveyor::{Bus, Topology, testing};
use conveyor_build_trigger::rules::Ignored;
use conveyor_build_trigger::{BuildTrigger, Decision, Metrics, Settings};
use conveyor_sim::github::{Fault, GitHubSim, fake_sha};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ghp_simulated_token_0123456789";
const HOOK_SECRET: &str = "webhook-secret";
const FRONTEND: &str = "xchem/fragalysis-frontend";
const STACK: &str = "xchem/fragalysis-stack";

fn fragalysis() -> String {
    include_str!("../../../conveyor.toml").to_owned()
}

struct Harness {
    sim: GitHubSim,
    bus: Bus,
    metrics: Metrics,
    obs: testing::Observer,
    stop: CancellationToken,
    /// Stops the running build-trigger only (see [`Harness::replace_trigger`]).
    trigger_stop: CancellationToken,
    settings: Settings,
    pipeline: Arc<Pipeline>,
}

impl Harness {
    /// Everything wired: `sim_pipeline` shapes the simulated GitHub, `pipeline` is what
    /// build-trigger runs with (they differ only when a test wants GitHub to disagree).
    async fn start(
        label: &str,
        sim_pipeline: &str,
        pipeline: &str,
        tweak: impl FnOnce(&GitHubSim),
    ) -> Self {
        let topology = Topology::conveyor(testing::unique_namespace(label))
            .with_retry_tiers(&[Duration::from_millis(300), Duration::from_secs(1)]);
        let bus = testing::connect(&format!("build-trigger-test-{label}"), topology)
            .await
            .unwrap();
        let stop = CancellationToken::new();

        let ingest = conveyor_ingest::router(
            bus.clone(),
            conveyor_ingest::Settings {
                github_secrets: vec![Secret::new(HOOK_SECRET)],
                ..conveyor_ingest::Settings::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingest_url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
        tokio::spawn(async move { axum_serve(listener, ingest).await });

        let sim = conveyor_sim::github_for(&Pipeline::parse(sim_pipeline).unwrap(), TOKEN);
        sim.deliver_webhooks_to(ingest_url, HOOK_SECRET);
        tweak(&sim);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            server
                .serve(listener, async move { s.cancelled().await })
                .await
        });

        let metrics = Metrics::default();
        let settings = Settings {
            api_url,
            token: Secret::new(TOKEN),
        };
        let pipeline = Arc::new(Pipeline::parse(pipeline).unwrap());
        let trigger_stop = stop.child_token();
        tokio::spawn(conveyor_build_trigger::run(
            bus.clone(),
            Arc::new(BuildTrigger::new(
                pipeline.clone(),
                &settings,
                metrics.clone(),
            )),
            trigger_stop.clone(),
        ));

        let obs = testing::Observer::new(&bus).await.unwrap();
        Self {
            sim,
            bus,
            metrics,
            obs,
            stop,
            trigger_stop,
            settings,
            pipeline,
        }
    }

    /// Stop the build-trigger and start a fresh one (nothing in memory) on the same queue: a
    /// replica taking over from one that died.
    fn replace_trigger(&mut self) {
        self.trigger_stop.cancel();
        self.trigger_stop = self.stop.child_token();
        tokio::spawn(conveyor_build_trigger::run(
            self.bus.clone(),
            Arc::new(BuildTrigger::new(
                self.pipeline.clone(),
                &self.settings,
                self.metrics.clone(),
            )),
            self.trigger_stop.clone(),
        ));
    }

    async fn drain(&mut self) {
        self.obs.drain().await;
    }

    /// Wait (up to 15 s) until `pred` holds over everything published so far.
    async fn until(&mut self, what: &str, pred: impl Fn(&[Envelope]) -> bool) {
        self.obs
            .until_all(what, Duration::from_secs(15), pred)
            .await;
    }

    fn requested(&self) -> Vec<(Envelope, BuildRequested)> {
        self.obs
            .seen
            .iter()
            .filter_map(|e| match &e.event {
                Event::BuildRequested(b) => Some((e.clone(), b.clone())),
                _ => None,
            })
            .collect()
    }

    fn deploys(&self) -> Vec<(Envelope, DeployRequested)> {
        self.obs
            .seen
            .iter()
            .filter_map(|e| match &e.event {
                Event::DeployRequested(d) => Some((e.clone(), d.clone())),
                _ => None,
            })
            .collect()
    }

    fn dispatched_runs(&self, repo: &str) -> Vec<conveyor_sim::github::Run> {
        self.sim
            .runs()
            .into_iter()
            .filter(|r| r.repository == repo && r.event == "workflow_dispatch")
            .collect()
    }

    /// A push build of `repo` at `head` that succeeds; returns its run id.
    async fn successful_push_build(&self, repo: &str, head: &str, seed: &str) -> u64 {
        let sha = fake_sha(repo, seed);
        let id = self
            .sim
            .push_run(repo, "build main", head, &sha)
            .await
            .unwrap();
        self.sim.complete_run(id, "success").await;
        id
    }

    /// A frontend success on `staging`, once build-trigger has dispatched the stack for it.
    async fn frontend_success_dispatched(&mut self) -> Envelope {
        self.successful_push_build(FRONTEND, "staging", "fe1").await;
        self.until("build.requested", |s| {
            s.iter().any(|e| e.routing_key() == "build.requested")
        })
        .await;
        succeeded_of(&self.obs.seen, FRONTEND).unwrap()
    }

    async fn finish(self) {
        self.stop.cancel();
        self.bus.delete_topology().await.unwrap();
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}

fn succeeded_of(seen: &[Envelope], repo: &str) -> Option<Envelope> {
    seen.iter()
        .find(|e| matches!(&e.event, Event::BuildSucceeded(b) if b.repository == repo))
        .cloned()
}

#[tokio::test]
async fn frontend_success_dispatches_the_stack_whose_success_requests_staging() {
    let p = fragalysis();
    let mut h = Harness::start("bt-chain", &p, &p, |_| {}).await;
    h.successful_push_build(FRONTEND, "staging", "fe1").await;
    h.until("build.requested", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;

    let (requested_env, requested) = h.requested().remove(0);
    assert_eq!(requested.repository, STACK);
    assert_eq!(requested.git_ref, "master");
    assert_eq!(
        requested.inputs,
        [("fe_image_tag".to_string(), "latest".to_string())].into()
    );
    assert_eq!(requested.coalesced_into, None);
    let runs = h.dispatched_runs(STACK);
    assert_eq!(runs.len(), 1);
    assert_eq!(
        requested.run_id,
        Some(runs[0].id),
        "the 200 answer's run id is carried"
    );
    assert_eq!(
        runs[0].inputs, requested.inputs,
        "GitHub received the inputs"
    );
    assert_eq!(runs[0].head_branch, "master");
    let frontend_success = succeeded_of(&h.obs.seen, FRONTEND).unwrap();
    assert_eq!(
        requested_env.correlation_id,
        frontend_success.correlation_id
    );

    h.sim.complete_run(runs[0].id, "success").await;
    h.until("deploy.requested.staging", |s| {
        s.iter()
            .any(|e| e.routing_key() == "deploy.requested.staging")
    })
    .await;
    let (deploy_env, deploy) = h.deploys().remove(0);
    assert_eq!(deploy.environment, "staging");
    assert_eq!(deploy.repository, STACK);
    assert_eq!(deploy.git_ref, GitRef::branch("master"));
    assert_eq!(deploy.image.reference(), "xchem/fragalysis-stack:latest");
    assert_eq!(deploy.sha, runs[0].head_sha);
    assert_eq!(
        deploy_env.correlation_id, frontend_success.correlation_id,
        "the deployment continues the chain the frontend commit started"
    );
    let upstream: Vec<&str> = deploy
        .upstream
        .iter()
        .map(|u| u.repository.as_str())
        .collect();
    assert_eq!(upstream, [FRONTEND, STACK]);
    assert!(
        h.deploys()
            .iter()
            .all(|(e, _)| e.routing_key() != "deploy.requested.production")
    );
    h.finish().await;
}

#[tokio::test]
async fn stack_semver_tag_deploys_production_and_v_tag_nothing() {
    let p = fragalysis();
    let mut h = Harness::start("bt-tags", &p, &p, |sim| {
        sim.set_tag(STACK, "1.2.3", &fake_sha(STACK, "t1"));
        sim.set_tag(STACK, "v1.2", &fake_sha(STACK, "t2"));
    })
    .await;
    h.successful_push_build(STACK, "v1.2", "t2").await;
    h.successful_push_build(STACK, "1.2.3", "t1").await;
    h.until("deploy.requested.production", |s| {
        s.iter()
            .any(|e| e.routing_key() == "deploy.requested.production")
    })
    .await;
    // Both successes went through the single consumer in order; the v-tag was looked at first.
    assert_eq!(h.metrics.get(Decision::Ignored(Ignored::UnwatchedRef)), 1);
    let deploys = h.deploys();
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    assert_eq!(deploys[0].1.git_ref, GitRef::tag("1.2.3"));
    assert_eq!(deploys[0].1.image.tag.as_deref(), Some("1.2.3"));
    assert!(h.dispatched_runs(STACK).is_empty());
    h.finish().await;
}

#[tokio::test]
async fn five_rapid_frontend_successes_dispatch_the_stack_once() {
    let p = fragalysis();
    let mut h = Harness::start("bt-coalesce", &p, &p, |_| {}).await;
    for i in 0..5 {
        h.successful_push_build(FRONTEND, "staging", &format!("c{i}"))
            .await;
    }
    h.until("five build.requested", |s| {
        s.iter()
            .filter(|e| e.routing_key() == "build.requested")
            .count()
            == 5
    })
    .await;
    let runs = h.dispatched_runs(STACK);
    assert_eq!(runs.len(), 1, "one stack build for five frontend commits");
    let requested = h.requested();
    let dispatched: Vec<_> = requested
        .iter()
        .filter(|(_, b)| b.coalesced_into.is_none())
        .collect();
    assert_eq!(dispatched.len(), 1);
    let chain = &dispatched[0].0.correlation_id;
    for (_, b) in requested.iter().filter(|(_, b)| b.coalesced_into.is_some()) {
        assert_eq!(b.coalesced_into.as_ref(), Some(chain));
        assert_eq!(b.run_id, Some(runs[0].id));
    }
    assert_eq!(h.metrics.get(Decision::Coalesced), 4);

    // Once the stack build has started, the next frontend success needs a new build.
    h.sim.start_run(runs[0].id).await;
    h.successful_push_build(FRONTEND, "staging", "c5").await;
    h.until("a second dispatch", |s| {
        s.iter()
            .filter(|e| e.routing_key() == "build.requested")
            .count()
            == 6
    })
    .await;
    assert_eq!(h.dispatched_runs(STACK).len(), 2);
    h.finish().await;
}

#[tokio::test]
async fn newer_inputs_wait_for_the_pending_build_to_start_then_dispatch_once() {
    let p = fragalysis();
    let mut h = Harness::start("bt-newer", &p, &p, |sim| {
        sim.set_tag(FRONTEND, "3.0.0", &fake_sha(FRONTEND, "t3"));
        sim.set_tag(FRONTEND, "3.0.1", &fake_sha(FRONTEND, "t4"));
    })
    .await;
    h.successful_push_build(FRONTEND, "staging", "s1").await;
    h.until("first dispatch", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;
    // Two tagged frontends arrive while the stack build is queued: they carry new inputs.
    h.successful_push_build(FRONTEND, "3.0.0", "t3").await;
    h.successful_push_build(FRONTEND, "3.0.1", "t4").await;
    h.until("both waiting", |_| true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.metrics.get(Decision::Waited) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tagged successes never waited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.dispatched_runs(STACK).len(),
        1,
        "nothing dispatched while the first is queued"
    );

    let first = h.dispatched_runs(STACK)[0].id;
    h.sim.start_run(first).await;
    h.until("three build.requested", |s| {
        s.iter()
            .filter(|e| e.routing_key() == "build.requested")
            .count()
            == 3
    })
    .await;
    let runs = h.dispatched_runs(STACK);
    assert_eq!(
        runs.len(),
        2,
        "one follow-up build, not one per success: {:#?}",
        h.requested()
    );
    assert_eq!(
        runs[1].inputs,
        [("fe_image_tag".to_string(), "3.0.1".to_string())].into(),
        "the follow-up carries the newest inputs"
    );
    h.finish().await;
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured_before_dispatching_again() {
    let p = fragalysis();
    let mut h = Harness::start("bt-429", &p, &p, |sim| {
        sim.inject(
            Some("/dispatches"),
            Fault::RateLimited {
                status: 429,
                retry_after: Some(2),
            },
        );
    })
    .await;
    h.successful_push_build(FRONTEND, "staging", "r1").await;
    h.until("build.requested", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;
    let posts: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/dispatches"))
        .collect();
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = posts[1].at - posts[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, GitHub asked for 2 s"
    );
    assert_eq!(h.dispatched_runs(STACK).len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_5xx_on_dispatch_looks_for_the_run_instead_of_posting_blindly() {
    let p = fragalysis();
    let mut h = Harness::start("bt-502", &p, &p, |sim| {
        sim.inject(Some("/dispatches"), Fault::ServerError(502));
    })
    .await;
    h.successful_push_build(FRONTEND, "staging", "x1").await;
    h.until("build.requested", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;
    let log = h.sim.requests();
    let posts = log.iter().filter(|r| r.method == "POST").count();
    let lookups = log
        .iter()
        .filter(|r| r.method == "GET" && r.uri.contains("/runs?event=workflow_dispatch"))
        .count();
    assert_eq!(posts, 2, "the 502 was not a dispatch; the second POST was");
    assert!(lookups >= 1, "a lookup came before the second POST");
    assert_eq!(h.dispatched_runs(STACK).len(), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_422_dead_letters_with_githubs_message() {
    let p = fragalysis();
    // build-trigger sends an input the stack's workflow does not declare.
    let sends_more = p.replace(
        "dispatch_ref = \"master\"\n",
        "dispatch_ref = \"master\"\ndispatch_inputs = { stack_namespace = \"xchem\" }\n",
    );
    assert_ne!(sends_more, p);
    let mut h = Harness::start("bt-422", &p, &sends_more, |_| {}).await;
    h.successful_push_build(FRONTEND, "staging", "u1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let dead = loop {
        if let Some(d) = h.bus.take_dead_letter().await.unwrap() {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(dead.reason.contains("422"), "{}", dead.reason);
    assert!(
        dead.reason.contains("Unexpected inputs provided"),
        "{}",
        dead.reason
    );
    assert!(!dead.reason.contains(TOKEN));
    assert_eq!(dead.routing_key, "build.succeeded");
    assert!(matches!(
        Envelope::from_json(&dead.body).unwrap().event,
        Event::BuildSucceeded(_)
    ));
    h.drain().await;
    assert!(h.requested().is_empty());
    assert!(h.dispatched_runs(STACK).is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_duplicate_event_never_dispatches_twice() {
    let p = fragalysis();
    let mut h = Harness::start("bt-dup", &p, &p, |_| {}).await;
    let run = BuildRun {
        repository: FRONTEND.into(),
        workflow_name: "build main".into(),
        workflow_path: Some(".github/workflows/build-main.yaml".into()),
        run_id: 1,
        run_number: None,
        run_attempt: None,
        trigger: Some("push".into()),
        head_branch: Some("staging".into()),
        head_sha: fake_sha(FRONTEND, "d1"),
        status: "completed".into(),
        conclusion: Some("success".into()),
        display_title: None,
        html_url: None,
        head_repository: None,
        created_at: None,
        updated_at: None,
    };
    let event = Envelope::new("conveyor/ingest", Event::BuildSucceeded(run));
    h.bus.publish(&event).await.unwrap();
    h.until("build.requested", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;
    // The stack build starts, so only duplicate suppression can stop a second dispatch.
    let first = h.dispatched_runs(STACK)[0].id;
    h.sim.start_run(first).await;
    h.until("started", |s| {
        s.iter()
            .any(|e| matches!(&e.event, Event::BuildStarted(b) if b.status == conveyor::events::RunStatus::InProgress))
    })
    .await;
    h.bus.publish(&event).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.metrics.get(Decision::Duplicate) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the duplicate was never seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.dispatched_runs(STACK).len(), 1);
    h.drain().await;
    let ids: Vec<_> = h.requested().iter().map(|(e, _)| e.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(
        ids[0], ids[1],
        "the repeated build.requested has the same id"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_204_dispatch_learns_its_run_from_the_webhook_and_keeps_the_chain() {
    let p = fragalysis();
    let mut h = Harness::start("bt-204", &p, &p, |sim| sim.without_run_details()).await;
    h.successful_push_build(FRONTEND, "staging", "n1").await;
    h.until("build.requested", |s| {
        s.iter().any(|e| e.routing_key() == "build.requested")
    })
    .await;
    let (requested_env, requested) = h.requested().remove(0);
    assert_eq!(requested.run_id, None, "GitHub did not say");
    let run = h.dispatched_runs(STACK)[0].id;
    // The `requested` webhook of the dispatched run tells build-trigger its id.
    h.until("the dispatched run's webhook", |s| {
        s.iter()
            .any(|e| matches!(&e.event, Event::BuildStarted(b) if b.run_id == run))
    })
    .await;
    h.sim.complete_run(run, "success").await;
    h.until("deploy.requested.staging", |s| {
        s.iter()
            .any(|e| e.routing_key() == "deploy.requested.staging")
    })
    .await;
    let (deploy_env, _) = h.deploys().remove(0);
    assert_eq!(deploy_env.correlation_id, requested_env.correlation_id);
    h.finish().await;
}

#[tokio::test]
async fn a_dispatched_run_continues_its_chain_on_a_replica_that_did_not_dispatch_it() {
    let p = fragalysis();
    let mut h = Harness::start("bt-journal", &p, &p, |_| {}).await;
    let frontend_success = h.frontend_success_dispatched().await;

    // The replica that dispatched is gone; one that never saw the dispatch finishes the chain
    // from the dispatch journal on the broker.
    h.replace_trigger();
    let runs = h.dispatched_runs(STACK);
    assert_eq!(runs.len(), 1);
    h.sim.complete_run(runs[0].id, "success").await;
    h.until("deploy.requested.staging", |s| {
        s.iter()
            .any(|e| e.routing_key() == "deploy.requested.staging")
    })
    .await;
    let (deploy_env, deploy) = h.deploys().remove(0);
    assert_eq!(
        deploy_env.correlation_id, frontend_success.correlation_id,
        "the deployment continues the frontend commit's chain"
    );
    let upstream: Vec<&str> = deploy
        .upstream
        .iter()
        .map(|u| u.repository.as_str())
        .collect();
    assert_eq!(upstream, [FRONTEND, STACK]);
    h.finish().await;
}

#[tokio::test]
async fn a_success_repeated_after_a_restart_never_dispatches_again() {
    let p = fragalysis();
    let mut h = Harness::start("bt-late-repeat", &p, &p, |_| {}).await;
    let success = h.frontend_success_dispatched().await;
    let first = h.requested().remove(0).0;

    // The same success again, long after, to a build-trigger that remembers nothing of it.
    h.replace_trigger();
    h.bus.publish(&success).await.unwrap();
    h.until("the build.requested again", |s| {
        s.iter()
            .filter(|e| e.routing_key() == "build.requested")
            .count()
            >= 2
    })
    .await;
    let again = h.requested().remove(1).0;
    assert_eq!(again.id, first.id, "the same event, republished");
    assert_eq!(h.dispatched_runs(STACK).len(), 1, "dispatched once");
    h.finish().await;
}
