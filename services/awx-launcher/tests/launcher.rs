//! awx-launcher over the real broker against the AWX simulator (and ingest, for notifications).

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use conveyor::config::{Pipeline, Secret};
use conveyor::events::{DeployRequested, Envelope, Event, ExecutorRun, GitRef, ImageRef};
use conveyor::executor::DecisionKind;
use conveyor::{Bus, Topology, testing};
use conveyor_awx_launcher::awx::Credentials;
use conveyor_awx_launcher::{AwxLauncher, DEPLOYMENT_VAR, Decision, Metrics, Settings};
use conveyor_sim::awx::{AwxSim, Fault, PlaybookResult, TemplateSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "awx-write-token-0123";
const HOOK_TOKEN: &str = "hook-token-abc";
const STAGING: &str = "Staging Fragalysis Stack (Version Change)";
const PRODUCTION: &str = "Production Fragalysis Stack (Version Change)";

fn pipeline(tweak: &str) -> String {
    format!("{}\n{tweak}", include_str!("../../../conveyor.toml"))
        .replace("[awx]\n", "[awx]\n# test overrides below win\n")
}

struct Harness {
    sim: AwxSim,
    staging_template: u64,
    bus: Bus,
    metrics: Metrics,
    url: String,
    pipeline: Arc<Pipeline>,
    obs: testing::Observer,
    stop: CancellationToken,
    _cleanup: testing::Cleanup,
}

struct Options {
    notifications: bool,
    pipeline: String,
    staging: TemplateSpec,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            notifications: false,
            pipeline: include_str!("../../../conveyor.toml").to_owned(),
            staging: TemplateSpec::prompting(STAGING),
        }
    }
}

impl Options {
    /// The shipped pipeline with `settings` added to its `[awx]` table.
    fn awx(settings: &str) -> Self {
        Self {
            pipeline: pipeline("").replace(
                "pending_deadline_secs = 1800",
                &format!("pending_deadline_secs = 1800\n{settings}"),
            ),
            ..Self::default()
        }
    }
}

/// A launcher on a broker connection of its own, started to be killed.
struct Doomed {
    name: String,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Harness {
    /// Stop the harness's launcher; the next to consume is a separate worker that will die.
    async fn doomed_launcher(&self, label: &str) -> Doomed {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let name = format!("awx-doomed-{label}-{}", std::process::id());
        let bus = testing::connect(&name, self.bus.topology().clone())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = self.spawn_launcher(bus, stop.clone());
        Doomed { name, task, stop }
    }

    /// Kill the doomed worker — its task goes, and the broker sees its connection drop — and
    /// start a survivor in its place.
    fn kill_and_replace(&mut self, doomed: &Doomed) {
        doomed.task.abort();
        testing::close_connections_named(&doomed.name).unwrap();
        let survivor = CancellationToken::new();
        self.stop = survivor.clone();
        self.spawn_launcher(self.bus.clone(), survivor);
    }

    async fn start(label: &str, options: Options) -> Self {
        let topology = Topology::conveyor(testing::unique_namespace(label)).with_retry_tiers(&[
            Duration::from_millis(100),
            Duration::from_millis(300),
            Duration::from_secs(1),
        ]);
        let cleanup = testing::Cleanup::new(topology.clone());
        let bus = testing::connect(&format!("awx-test-{label}"), topology)
            .await
            .unwrap();
        let stop = CancellationToken::new();

        let sim = AwxSim::new("/api/v2", "admin", "password", TOKEN);
        let staging_template = sim.add_template(options.staging);
        sim.add_template(TemplateSpec::prompting(PRODUCTION));
        sim.set_explain_after(Duration::from_millis(200));
        if options.notifications {
            let ingest = conveyor_ingest::router(
                bus.clone(),
                conveyor_ingest::Settings {
                    webhook_token: Some(Secret::new(HOOK_TOKEN)),
                    ..conveyor_ingest::Settings::default()
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let hook = format!("http://{}/webhooks/awx", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, ingest).await });
            sim.notify_to(hook, HOOK_TOKEN);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = sim.clone();
        // The simulator outlives any one launcher (the kill test replaces them).
        tokio::spawn(async move { server.serve(listener, std::future::pending()).await });

        let pipeline = Arc::new(Pipeline::parse(&options.pipeline).unwrap());
        let metrics = Metrics::default();
        let obs = testing::Observer::new(&bus).await.unwrap();
        let h = Self {
            obs,
            sim,
            staging_template,
            bus,
            metrics,
            url,
            pipeline,
            stop,
            _cleanup: cleanup,
        };
        h.spawn_launcher(h.bus.clone(), h.stop.clone());
        h
    }

    fn spawn_launcher(&self, bus: Bus, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let launcher = Arc::new(AwxLauncher::new(
            self.pipeline.clone(),
            &Settings {
                url: self.url.clone(),
                credentials: Credentials::Token(Secret::new(TOKEN)),
            },
            bus.clone(),
            self.metrics.clone(),
        ));
        tokio::spawn(async move {
            let _ = conveyor_awx_launcher::run(bus, launcher, stop).await;
        })
    }

    /// Publish a request for `environment` (no origin time: ordered by its envelope's).
    async fn request(&self, environment: &str, tag: &str) -> Envelope {
        self.request_with(environment, tag, None).await
    }

    /// Publish a request for `environment` whose change came to be at `origin`.
    async fn request_of(
        &self,
        environment: &str,
        tag: &str,
        origin: time::OffsetDateTime,
    ) -> Envelope {
        self.request_with(environment, tag, Some(origin)).await
    }

    async fn request_with(
        &self,
        environment: &str,
        tag: &str,
        origin_time: Option<time::OffsetDateTime>,
    ) -> Envelope {
        let e = Envelope::new(
            "conveyor/build-trigger",
            Event::DeployRequested(DeployRequested {
                environment: environment.into(),
                repository: "xchem/fragalysis-stack".into(),
                sha: "a".repeat(40),
                git_ref: GitRef::branch("master"),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some(tag.into()),
                    digest: None,
                },
                upstream: Vec::new(),
                origin_time,
                operation: Default::default(),
            }),
        );
        self.bus.publish(&e).await.unwrap();
        e
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        self.obs.until(what, Duration::from_secs(15), pred).await
    }

    async fn launched(&mut self, of: &Envelope) -> u64 {
        let e = self
            .until("deploy.launched", |e| {
                e.correlation_id == of.correlation_id
                    && e.routing_key().starts_with("deploy.launched")
            })
            .await;
        match e.event {
            Event::DeployLaunched(l) => match l.executor {
                ExecutorRun::Awx { job_id, .. } => job_id,
                other => panic!("not an AWX run: {other:?}"),
            },
            _ => unreachable!(),
        }
    }

    async fn job_finished(&mut self, of: &Envelope) -> conveyor::events::DeployJobFinished {
        let e = self
            .until("deploy.job_finished", |e| {
                e.correlation_id == of.correlation_id
                    && e.routing_key().starts_with("deploy.job_finished")
            })
            .await;
        match e.event {
            Event::DeployJobFinished(f) => f,
            _ => unreachable!(),
        }
    }

    async fn dead_letter(&self) -> conveyor::bus::DeadLetter {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(d) = self.bus.take_dead_letter().await.unwrap() {
                return d;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dead-lettered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn launch_posts(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.uri.contains("/launch"))
            .count()
    }

    /// A job started outside Conveyor (a human in the AWX UI), through the HTTP API.
    async fn human_launch(&self, template_id: u64) -> u64 {
        let res: Value = reqwest::Client::new()
            .post(format!(
                "{}/api/v2/job_templates/{template_id}/launch/",
                self.url
            ))
            .basic_auth("admin", Some("password"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        res["job"].as_u64().unwrap()
    }

    async fn finish(self) {
        self.stop.cancel();
        self.bus.delete_topology().await.unwrap();
    }
}

#[tokio::test]
async fn a_deployment_launches_once_and_its_end_is_noticed_through_the_notification() {
    let mut h = Harness::start(
        "awx-ok",
        Options {
            notifications: true,
            ..Options::default()
        },
    )
    .await;
    let req = h.request("staging", "2026.11.1").await;
    let job_id = h.launched(&req).await;
    let jobs = h.sim.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, job_id);
    assert_eq!(jobs[0].extra_vars["stack_image_tag"], "2026.11.1");
    assert_eq!(
        jobs[0].extra_vars[DEPLOYMENT_VAR],
        req.correlation_id.as_str()
    );
    let posts: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].uri.ends_with("/launch/"), "{}", posts[0].uri);

    h.sim.finish_job(job_id, PlaybookResult::successful()).await;
    let finished = h.job_finished(&req).await;
    assert_eq!(finished.status.as_str(), "successful");
    assert!(!finished.failed);
    assert_eq!(finished.job_id, job_id);
    assert_eq!(finished.stdout_tail, None, "stdout only for failures");
    // The notification went through ingest and was acted on.
    assert!(
        h.obs
            .seen
            .iter()
            .any(|e| e.routing_key() == "awx.job.finished")
    );
    h.finish().await;
}

#[tokio::test]
async fn failed_error_and_canceled_jobs_are_failures_with_the_stdout_tail() {
    let mut h = Harness::start("awx-fail", Options::default()).await;
    for (status, tag) in [("failed", "f1"), ("error", "f2"), ("canceled", "f3")] {
        let req = h.request("staging", tag).await;
        let job_id = h.launched(&req).await;
        let mut result = PlaybookResult::failed("stack-1 never became ready");
        result.status = status.into();
        if status == "error" {
            result.explanation =
                "Task was marked as running but was not present in the job queue, so it has been marked as failed.".into();
        }
        h.sim.finish_job(job_id, result).await;
        // Without notifications the poll notices the end.
        let finished = h.job_finished(&req).await;
        assert_eq!(finished.status.as_str(), status);
        assert!(finished.failed, "{status} is a failure");
        let tail = finished
            .stdout_tail
            .expect("a failure carries its stdout tail");
        assert!(tail.contains("fatal: [localhost]: FAILED!"), "{tail}");
        // The failing task, read from the job's failed events, is named.
        assert_eq!(
            finished.failed_task.as_deref(),
            Some(
                "task \"Wait for stack-1\" (role fragalysis-stack, module kubernetes.core.k8s_info) failed on localhost: stack-1 never became ready"
            ),
            "{status}"
        );
        if status == "error" {
            assert!(finished.explanation.unwrap().contains("marked as failed"));
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn an_unknown_template_fails_the_deployment_and_launches_nothing() {
    let mut h = Harness::start(
        "awx-notemplate",
        Options {
            staging: TemplateSpec::prompting("Some Other Template"),
            ..Options::default()
        },
    )
    .await;
    let req = h.request("staging", "x").await;
    let dead = h.dead_letter().await;
    assert!(dead.reason.contains(STAGING), "{}", dead.reason);
    let failed = h
        .until("deploy.failed", |e| {
            e.routing_key() == "deploy.failed.staging"
        })
        .await;
    assert_eq!(failed.correlation_id, req.correlation_id);
    match failed.event {
        Event::DeployFailed(f) => assert_eq!(f.stage, conveyor::events::Stage::Launch),
        _ => unreachable!(),
    }
    assert!(h.sim.jobs().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_template_that_does_not_prompt_for_variables_is_never_launched() {
    let mut spec = TemplateSpec::prompting(STAGING);
    spec.ask_variables_on_launch = false;
    let mut h = Harness::start(
        "awx-noprompt",
        Options {
            staging: spec,
            ..Options::default()
        },
    )
    .await;
    h.request("staging", "x").await;
    let dead = h.dead_letter().await;
    assert!(dead.reason.contains("Prompt on launch"), "{}", dead.reason);
    assert!(dead.reason.contains("stack_image_tag"), "{}", dead.reason);
    assert!(!dead.reason.contains(TOKEN));
    h.until("deploy.failed", |e| {
        e.routing_key() == "deploy.failed.staging"
    })
    .await;
    assert!(
        h.sim.jobs().is_empty(),
        "no job that would deploy the default image"
    );
    assert_eq!(h.launch_posts(), 0);
    h.finish().await;
}

#[tokio::test]
async fn a_redirect_is_never_followed_so_a_launch_cannot_become_a_get() {
    let mut h = Harness::start("awx-301", Options::default()).await;
    h.sim.inject_on(Method::POST, "/launch/", Fault::Migrating);
    let req = h.request("staging", "r1").await;
    let job_id = h.launched(&req).await;
    let log = h.sim.requests();
    let launches: Vec<_> = log.iter().filter(|r| r.uri.contains("/launch")).collect();
    // GET launch/ (prompt check), POST → 301, then the retry: GET launch/, POST → 201.
    let posts: Vec<u16> = launches
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [301, 201]);
    assert!(
        !log.iter().any(|r| r.uri.contains("migrations_notran")),
        "the redirect was not followed"
    );
    assert_eq!(h.sim.jobs().len(), 1);
    assert_eq!(h.sim.jobs()[0].id, job_id);
    h.finish().await;
}

#[tokio::test]
async fn the_simulator_shows_the_trailing_slash_trap_that_the_client_avoids() {
    let h = Harness::start("awx-slash", Options::default()).await;
    // A client that follows redirects and forgets the slash launches nothing and sees 200.
    let res = reqwest::Client::new()
        .post(format!("{}/api/v2/job_templates/1/launch", h.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"extra_vars": {"stack_image_tag": "x"}}))
        .send()
        .await
        .unwrap();
    let template = h.sim.requests()[0].uri.clone();
    assert_eq!(res.status(), 404, "template 1 does not exist: {template}");
    let id = {
        let list: Value = reqwest::Client::new()
            .get(format!(
                "{}/api/v2/job_templates/?name={}",
                h.url, "Staging%20Fragalysis%20Stack%20%28Version%20Change%29"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["results"][0]["id"].as_u64().unwrap()
    };
    let res = reqwest::Client::new()
        .post(format!("{}/api/v2/job_templates/{id}/launch", h.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"extra_vars": {"stack_image_tag": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "the followed 301 became a GET of the launch metadata"
    );
    assert!(h.sim.jobs().is_empty(), "and no job was created");
    let methods: Vec<_> = h
        .sim
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert!(methods.contains(&("POST".into(), 301)) && methods.contains(&("GET".into(), 200)));
    h.finish().await;
}

#[tokio::test]
async fn a_launch_whose_answer_was_lost_is_adopted_not_repeated() {
    let mut h = Harness::start("awx-adopt", Options::default()).await;
    h.sim
        .inject_on(Method::POST, "/launch/", Fault::AcceptThenDrop);
    let req = h.request("staging", "a1").await;
    let job_id = h.launched(&req).await;
    assert_eq!(h.sim.jobs().len(), 1, "exactly one job");
    assert_eq!(h.sim.jobs()[0].id, job_id);
    assert_eq!(h.launch_posts(), 1, "the launch was not posted again");
    assert_eq!(h.metrics.get(Decision::Executor(DecisionKind::Adopted)), 1);
    // The adopted launch is dated when AWX created the job, not when it was found: a follow
    // judges by it which pods the launch replaced.
    let launched = h
        .until("deploy.launched", |e| {
            e.correlation_id == req.correlation_id && e.routing_key().starts_with("deploy.launched")
        })
        .await;
    let created = h.sim.jobs()[0].created;
    assert!(
        (launched.time - created).abs() < time::Duration::milliseconds(1),
        "launched at {} for a job created at {created}",
        launched.time
    );
    h.finish().await;
}

#[tokio::test]
async fn a_worker_killed_between_the_launch_and_the_ack_is_resumed_by_another_without_a_second_job()
{
    let mut h = Harness::start("awx-kill", Options::default()).await;
    // The first launcher to consume dies while AWX is answering the launch.
    let doomed = h.doomed_launcher("kill").await;
    h.sim.inject_on(
        Method::POST,
        "/launch/",
        Fault::AcceptThenHang(Duration::from_secs(3)),
    );
    let req = h.request("staging", "k1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.sim.jobs().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never launched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.kill_and_replace(&doomed);

    let job_id = h.launched(&req).await;
    assert_eq!(h.sim.jobs().len(), 1, "exactly one job");
    assert_eq!(h.sim.jobs()[0].id, job_id);
    // The simulator logs a request when it answers: the only launch POST is the dead
    // worker's (answered into the void once its hang ends, as AWX would).
    assert!(h.launch_posts() <= 1, "{} launch POSTs", h.launch_posts());
    assert_eq!(
        h.metrics.get(Decision::Executor(DecisionKind::Adopted)),
        1,
        "the redelivery adopted the job"
    );
    assert_eq!(
        h.metrics.get(Decision::Executor(DecisionKind::Applied)),
        0,
        "nobody launched a second time"
    );
    doomed.stop.cancel();
    h.finish().await;
}

#[tokio::test]
async fn a_launch_still_on_the_wire_when_its_worker_dies_is_waited_for_not_repeated() {
    // AWX takes 4 s to commit the launch; the worker dies 0.3 s after sending it, and its
    // delivery reaches a survivor in about 2 s. A survivor that looked at once would find no
    // job and launch a second one beside it.
    let mut h = Harness::start("awx-in-flight", Options::awx("request_timeout_secs = 6")).await;
    let doomed = h.doomed_launcher("wire").await;
    h.sim.inject_on(
        Method::POST,
        "/launch/",
        Fault::Slow(Duration::from_secs(4)),
    );
    let req = h.request("staging", "w1").await;
    // The launch POST follows the answered `GET …/launch/` (the template's launch needs).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !h
        .sim
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.uri.contains("/launch/"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never asked to launch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let posted = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.sim.jobs().is_empty(),
        "AWX has not committed the launch yet"
    );
    h.kill_and_replace(&doomed);

    let job_id = h.launched(&req).await;
    // Both launches, had there been two, have landed by now.
    tokio::time::sleep_until(posted + Duration::from_secs(5)).await;
    let jobs = h.sim.jobs();
    assert_eq!(jobs.len(), 1, "exactly one job: {jobs:?}");
    assert_eq!(jobs[0].id, job_id);
    assert_eq!(
        h.metrics.get(Decision::Executor(DecisionKind::Applied)),
        0,
        "the survivor launched nothing"
    );
    assert_eq!(
        h.metrics.get(Decision::Executor(DecisionKind::Adopted)),
        1,
        "it adopted the late job"
    );
    doomed.stop.cancel();
    h.finish().await;
}

#[tokio::test]
async fn requests_queued_behind_a_busy_environment_launch_only_the_newest() {
    let mut h = Harness::start("awx-supersede", Options::default()).await;
    // Someone is already deploying staging by hand.
    let blocker = h.human_launch(h.staging_template).await;
    let older = h.request("staging", "old").await;
    let newer = h.request("staging", "new").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.metrics.get(Decision::Executor(DecisionKind::Busy)) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests did not wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.sim.jobs().len(), 1, "nothing launched while busy");
    h.sim
        .finish_job(blocker, PlaybookResult::successful())
        .await;

    let superseded = h
        .until("deploy.superseded", |e| {
            e.routing_key() == "deploy.superseded.staging"
        })
        .await;
    assert_eq!(superseded.correlation_id, older.correlation_id);
    match &superseded.event {
        Event::DeploySuperseded(s) => assert_eq!(s.superseded_by, newer.correlation_id),
        _ => unreachable!(),
    }
    let job_id = h.launched(&newer).await;
    let ours: Vec<_> = h
        .sim
        .jobs()
        .into_iter()
        .filter(|j| j.extra_vars.contains_key(DEPLOYMENT_VAR))
        .collect();
    assert_eq!(ours.len(), 1, "one job for two requests");
    assert_eq!(ours[0].id, job_id);
    assert_eq!(ours[0].extra_vars["stack_image_tag"], "new");
    h.finish().await;
}

#[tokio::test]
async fn an_html_502_while_following_the_job_is_retried() {
    let mut h = Harness::start("awx-502", Options::default()).await;
    let req = h.request("staging", "p1").await;
    let job_id = h.launched(&req).await;
    let job_path = format!("/api/v2/jobs/{job_id}/");
    h.sim.inject(Some(&job_path), Fault::Html502);
    h.sim.inject(Some(&job_path), Fault::Json500);
    h.sim.finish_job(job_id, PlaybookResult::successful()).await;
    let finished = h.job_finished(&req).await;
    assert_eq!(finished.status.as_str(), "successful");
    let statuses: Vec<u16> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.uri == job_path)
        .map(|r| r.status)
        .collect();
    assert!(
        statuses.starts_with(&[502, 500]) || statuses.windows(2).any(|w| w == [502, 500]),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&200));
    h.finish().await;
}

#[tokio::test]
async fn a_job_pending_past_the_deadline_is_reported_and_canceled() {
    let mut h = Harness::start(
        "awx-stuck",
        Options {
            pipeline: pipeline("").replace(
                "pending_deadline_secs = 1800",
                "pending_deadline_secs = 1\ncancel_stuck = true",
            ),
            ..Options::default()
        },
    )
    .await;
    h.sim.set_capacity(Some(0));
    let req = h.request("staging", "s1").await;
    let job_id = h.launched(&req).await;
    let finished = h.job_finished(&req).await;
    assert_eq!(finished.status.as_str(), "stuck");
    assert!(finished.failed);
    let explanation = finished.explanation.unwrap();
    assert!(
        explanation.contains("not enough available capacity"),
        "{explanation}"
    );
    assert!(
        explanation.contains("canceled by Conveyor"),
        "{explanation}"
    );
    let job = h.sim.jobs().into_iter().find(|j| j.id == job_id).unwrap();
    assert_eq!(job.status, "canceled");
    h.finish().await;
}

#[tokio::test]
async fn an_older_change_arriving_after_a_newer_launch_never_rolls_back() {
    // Short fences: the older request may reach the stopping launcher first and come to the
    // fresh one redelivered.
    let mut h = Harness::start("awx-origin", Options::awx("request_timeout_secs = 2")).await;
    let now = time::OffsetDateTime::now_utc();
    let newer = h
        .request_of("staging", "n1", now - time::Duration::minutes(5))
        .await;
    let job_id = h.launched(&newer).await;
    h.sim.finish_job(job_id, PlaybookResult::successful()).await;
    h.job_finished(&newer).await;

    // A launcher that never saw the newer request (a replica taking over) gets an older
    // change's request, published just now (its build handled a second time).
    h.stop.cancel();
    let fresh = CancellationToken::new();
    h.stop = fresh.clone();
    h.spawn_launcher(h.bus.clone(), fresh);
    let older = h
        .request_of("staging", "o1", now - time::Duration::minutes(10))
        .await;
    let ended = h
        .until("the older request's end", |e| {
            e.correlation_id == older.correlation_id
                && e.routing_key().starts_with("deploy.superseded")
        })
        .await;
    match ended.event {
        Event::DeploySuperseded(s) => assert_eq!(s.superseded_by, newer.correlation_id),
        other => panic!("not superseded: {other:?}"),
    }
    assert_eq!(h.sim.jobs().len(), 1, "the older change was not launched");
    h.finish().await;
}

#[tokio::test]
async fn a_deployments_job_is_found_however_many_jobs_ran_since() {
    let mut h = Harness::start("awx-deep", Options::default()).await;
    let req = h.request("staging", "d1").await;
    let job_id = h.launched(&req).await;
    h.sim.finish_job(job_id, PlaybookResult::successful()).await;
    h.job_finished(&req).await;
    // More jobs than one page of the template's list ran since (people, in the AWX UI).
    for _ in 0..60 {
        let id = h.human_launch(h.staging_template).await;
        h.sim.finish_job(id, PlaybookResult::successful()).await;
    }
    // The request comes again, to a launcher that never saw it.
    h.stop.cancel();
    let fresh = CancellationToken::new();
    h.stop = fresh.clone();
    h.spawn_launcher(h.bus.clone(), fresh);
    h.bus.publish(&req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while h.metrics.get(Decision::Executor(DecisionKind::Adopted)) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never adopted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = h
        .sim
        .jobs()
        .into_iter()
        .filter(|j| {
            j.extra_vars.get(DEPLOYMENT_VAR).and_then(Value::as_str)
                == Some(req.correlation_id.as_str())
        })
        .count();
    assert_eq!(ours, 1, "launched once");
    assert_eq!(h.metrics.get(Decision::Executor(DecisionKind::Applied)), 1);
    h.finish().await;
}

#[tokio::test]
async fn a_paused_environment_holds_its_requests_and_on_resume_only_the_newest_runs() {
    let mut h = Harness::start("awx-pause", Options::default()).await;
    let operator = conveyor::events::Actor {
        name: "alice".into(),
        via: "token".into(),
        from: None,
    };
    conveyor::control::pause(&h.bus, "staging", operator.clone(), "incident 42")
        .await
        .unwrap();
    let older = h.request("staging", "2026.12.1").await;
    let held = h
        .until("deploy.held", |e| {
            e.correlation_id == older.correlation_id && e.routing_key() == "deploy.held.staging"
        })
        .await;
    match &held.event {
        Event::DeployHeld(d) => {
            assert_eq!(d.kind, conveyor::events::HoldKind::Paused);
            assert_eq!(d.reason, "staging is paused");
        }
        other => panic!("{other:?}"),
    }
    let newer = h.request("staging", "2026.12.2").await;
    h.until("the newer request held too", |e| {
        e.correlation_id == newer.correlation_id && e.routing_key() == "deploy.held.staging"
    })
    .await;
    // Held, not lost: they keep coming back (each counted) and nothing reaches AWX.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while h.metrics.get(Decision::Executor(DecisionKind::Held)) < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "held {} times",
            h.metrics.get(Decision::Executor(DecisionKind::Held))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.launch_posts(), 0, "no launch while paused");
    assert_eq!(
        h.obs
            .seen
            .iter()
            .filter(|e| e.routing_key() == "deploy.held.staging")
            .count(),
        2,
        "each hold is reported once, however often the request comes back"
    );

    conveyor::control::resume(&h.bus, "staging", operator, None)
        .await
        .unwrap();
    let job = h.launched(&newer).await;
    let superseded = h
        .until("the older one superseded", |e| {
            e.correlation_id == older.correlation_id
                && e.routing_key() == "deploy.superseded.staging"
        })
        .await;
    match &superseded.event {
        Event::DeploySuperseded(s) => assert_eq!(s.superseded_by, newer.correlation_id),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.launch_posts(),
        1,
        "the newest held request runs exactly once"
    );
    assert_eq!(h.sim.jobs()[0].id, job);
    assert_eq!(h.sim.jobs()[0].extra_vars["stack_image_tag"], "2026.12.2");
    h.finish().await;
}

#[tokio::test]
async fn a_forced_request_runs_through_a_pause_and_says_so() {
    let mut h = Harness::start("awx-force", Options::default()).await;
    let operator = conveyor::events::Actor {
        name: "bob".into(),
        via: "token".into(),
        from: None,
    };
    conveyor::control::pause(&h.bus, "staging", operator.clone(), "freeze")
        .await
        .unwrap();
    let mut e = Envelope::new(
        "conveyor/control",
        Event::DeployRequested(DeployRequested {
            environment: "staging".into(),
            repository: "xchem/fragalysis-stack".into(),
            sha: String::new(),
            git_ref: GitRef::branch("master"),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("hotfix".into()),
                digest: None,
            },
            upstream: Vec::new(),
            origin_time: Some(time::OffsetDateTime::now_utc()),
            operation: conveyor::events::Operation {
                trigger: conveyor::events::Trigger::Manual,
                actor: Some(operator),
                reason: Some("the fix".into()),
                forced: true,
                source_deployment: None,
                untracked: false,
                replaces: None,
            },
        }),
    );
    e.time = time::OffsetDateTime::now_utc();
    h.bus.publish(&e).await.unwrap();
    h.launched(&e).await;
    let launched = h
        .until("launched", |x| {
            x.correlation_id == e.correlation_id && x.routing_key() == "deploy.launched.staging"
        })
        .await;
    match &launched.event {
        Event::DeployLaunched(l) => {
            let op = l.operation.as_ref().expect("the operation is carried");
            assert!(op.forced);
            assert_eq!(
                op.describe().as_deref(),
                Some("Deployed by hand by bob (forced): the fix")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.metrics.get(Decision::Executor(DecisionKind::Held)), 0);
    h.finish().await;
}

/// The shipped pipeline with `settings` added to production.
fn guarded(settings: &str) -> Options {
    Options {
        pipeline: pipeline("").replace(
            "url = \"https://fragalysis.diamond.ac.uk\"\n",
            &format!("url = \"https://fragalysis.diamond.ac.uk\"\n{settings}\n"),
        ),
        ..Options::default()
    }
}

impl Harness {
    fn deployment(of: &Envelope, environment: &str) -> String {
        conveyor::events::deployment_id(&of.correlation_id, environment)
    }

    /// Wait until `of` came back held `n` times in all, launching nothing.
    async fn held_times(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.metrics.get(Decision::Executor(DecisionKind::Held)) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "held {} times",
                self.metrics.get(Decision::Executor(DecisionKind::Held))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.launch_posts(), 0, "nothing launched while held");
    }

    async fn failed(&mut self, of: &Envelope) -> conveyor::events::DeployFailed {
        let e = self
            .until("deploy.failed", |e| {
                e.correlation_id == of.correlation_id
                    && e.routing_key().starts_with("deploy.failed")
            })
            .await;
        match e.event {
            Event::DeployFailed(f) => f,
            _ => unreachable!(),
        }
    }

    fn reports(&self, key: &str) -> usize {
        self.obs
            .seen
            .iter()
            .filter(|e| e.routing_key() == key)
            .count()
    }
}

#[tokio::test]
async fn a_request_awaits_its_approval_and_launches_once_it_is_given() {
    let mut h = Harness::start(
        "awx-approve",
        guarded(r#"approval = { approvers = ["release-manager", "bob"], expires_secs = 600 }"#),
    )
    .await;
    let r = h.request("production", "1.0.3").await;
    let awaiting = h
        .until("deploy.awaiting_approval", |e| {
            e.correlation_id == r.correlation_id
                && e.routing_key() == "deploy.awaiting_approval.production"
        })
        .await;
    match &awaiting.event {
        Event::DeployAwaitingApproval(a) => {
            assert_eq!(a.approvers, ["release-manager", "bob"]);
            assert_eq!(a.expires_at, r.time + time::Duration::seconds(600));
        }
        other => panic!("{other:?}"),
    }
    h.held_times(4).await;
    h.obs.drain().await;
    assert_eq!(
        h.reports("deploy.awaiting_approval.production"),
        1,
        "the wait is reported once, however often the request comes back"
    );
    // What the ledger does on `conveyor approve`: the record, then the latch.
    h.bus
        .raise_latch(
            &conveyor::control::approval_latch(&Harness::deployment(&r, "production")),
            None,
        )
        .await
        .unwrap();
    h.launched(&r).await;
    assert_eq!(h.launch_posts(), 1);
    assert_eq!(h.sim.jobs()[0].extra_vars["stack_image_tag"], "1.0.3");
    // Staging needs no approval.
    let s = h.request("staging", "2026.12.2").await;
    h.launched(&s).await;
    h.finish().await;
}

#[tokio::test]
async fn a_rejected_or_expired_request_fails_at_the_approval_and_launches_nothing() {
    let mut h = Harness::start(
        "awx-reject",
        guarded(
            r#"approval = { approvers = ["release-manager"], expires_secs = 2 }
requires = { environment = "staging" }"#,
        ),
    )
    .await;
    // Turned down while it still waits for staging.
    let rejected = h.request("production", "1.0.3").await;
    h.until("held for staging", |e| {
        e.correlation_id == rejected.correlation_id && e.routing_key() == "deploy.held.production"
    })
    .await;
    h.bus
        .raise_latch(
            &conveyor::control::rejection_latch(&Harness::deployment(&rejected, "production")),
            None,
        )
        .await
        .unwrap();
    let f = h.failed(&rejected).await;
    assert_eq!(f.stage, conveyor::events::Stage::Approval);
    assert_eq!(f.reason, "rejected by an approver");

    // Past staging, nobody approves it in time.
    h.bus
        .publish(&Envelope::new(
            "conveyor/rollout-watcher",
            Event::DeployCompleted(conveyor::events::DeployCompleted {
                environment: "staging".into(),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some("latest".into()),
                    digest: None,
                },
                revision: None,
                operation: None,
                sha: Some("a".repeat(40)),
                verified: false,
            }),
        ))
        .await
        .unwrap();
    let late = h.request("production", "1.0.4").await;
    h.until("awaiting", |e| {
        e.correlation_id == late.correlation_id
            && e.routing_key() == "deploy.awaiting_approval.production"
    })
    .await;
    let f = h.failed(&late).await;
    assert_eq!(f.stage, conveyor::events::Stage::Approval);
    assert_eq!(f.reason, "not approved within 2 s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.launch_posts(), 0);
    assert!(
        h.bus.take_dead_letter().await.unwrap().is_none(),
        "a decided request is not a fault to look into"
    );
    h.finish().await;
}

#[tokio::test]
async fn production_waits_for_the_commit_to_pass_staging_and_soak_unless_an_approval_lifts_it() {
    let mut h = Harness::start(
        "awx-requires",
        guarded(r#"requires = { environment = "staging", soak_secs = 2 }"#),
    )
    .await;
    let r = h.request("production", "1.0.3").await;
    let held = h
        .until("deploy.held", |e| {
            e.correlation_id == r.correlation_id && e.routing_key() == "deploy.held.production"
        })
        .await;
    match &held.event {
        Event::DeployHeld(d) => {
            assert_eq!(d.kind, conveyor::events::HoldKind::Requires);
            assert_eq!(
                d.reason,
                "xchem/fragalysis-stack@aaaaaaa has not completed in staging yet"
            );
        }
        other => panic!("{other:?}"),
    }
    h.held_times(3).await;
    // Another commit completing in staging is not this one.
    let completed = |sha: char| {
        Envelope::new(
            "conveyor/rollout-watcher",
            Event::DeployCompleted(conveyor::events::DeployCompleted {
                environment: "staging".into(),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some("latest".into()),
                    digest: None,
                },
                revision: None,
                operation: None,
                sha: Some(sha.to_string().repeat(40)),
                verified: false,
            }),
        )
    };
    h.bus.publish(&completed('b')).await.unwrap();
    let before = h.metrics.get(Decision::Executor(DecisionKind::Held));
    h.held_times(before + 3).await;
    let passed = completed('a');
    h.bus.publish(&passed).await.unwrap();
    let job_id = h.launched(&r).await;
    let job = &h.sim.jobs()[0];
    assert!(
        job.created >= passed.time + time::Duration::seconds(2),
        "launched {} after staging completed at {}: it soaked 2 s first",
        job.created,
        passed.time
    );
    h.sim.finish_job(job_id, PlaybookResult::successful()).await;

    // An approval with --override-requires lets a commit staging never ran through.
    let mut hotfix = Envelope::new(
        "conveyor/control",
        Event::DeployRequested(DeployRequested {
            environment: "production".into(),
            repository: "xchem/fragalysis-stack".into(),
            sha: "c".repeat(40),
            git_ref: GitRef::tag("1.0.4"),
            image: ImageRef {
                repository: "xchem/fragalysis-stack".into(),
                tag: Some("1.0.4".into()),
                digest: None,
            },
            upstream: Vec::new(),
            origin_time: Some(time::OffsetDateTime::now_utc()),
            operation: Default::default(),
        }),
    );
    hotfix.time = time::OffsetDateTime::now_utc();
    h.bus.publish(&hotfix).await.unwrap();
    h.until("the hotfix held", |e| {
        e.correlation_id == hotfix.correlation_id && e.routing_key() == "deploy.held.production"
    })
    .await;
    h.bus
        .raise_latch(
            &conveyor::control::override_latch(&Harness::deployment(&hotfix, "production")),
            None,
        )
        .await
        .unwrap();
    h.launched(&hotfix).await;
    h.finish().await;
}
