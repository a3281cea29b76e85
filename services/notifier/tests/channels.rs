//! The notifier over the real broker, against the GitHub simulator and recording Slack and
//! webhook receivers: deployment events in, the exact GitHub deployment statuses, commit
//! statuses, Block Kit messages and signed CloudEvents out — once each, whatever is redelivered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use conveyor::bus::DeadLetterAction;
use conveyor::config::{Pipeline, Secret};
use conveyor::events::{
    DeployCompleted, DeployFailed, DeployJobFinished, DeployLaunched, DeployRequested,
    DeploySuperseded, ExecutorRun, GitRef, ImageRef, UpstreamCommit,
};
use conveyor::{Bus, Envelope, Event, Topology, testing};
use conveyor_notifier::{Channel, Decision, Delivery, Metrics, Notifier, Settings};
use conveyor_sim::github::{Fault, GitHubSim};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ghp_notifier_test_token_0123456789";
const SLACK_PATH: &str = "/services/T000/B000/slack-secret-path-XYZ";
const WEBHOOK_SECRET: &str = "webhook-hmac-secret";
const STACK: &str = "xchem/fragalysis-stack";
const FRONTEND: &str = "xchem/fragalysis-frontend";

/// An HTTP receiver that records what arrived and answers from a script (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    script: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
}

impl Receiver {
    async fn serve(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let me = me.clone();
            async move {
                let answer = conveyor::sync::lock(&me.script).pop_front();
                match answer {
                    Some((code, text)) => (StatusCode::from_u16(code).unwrap(), text),
                    None => {
                        conveyor::sync::lock(&me.got).push((headers, body));
                        (StatusCode::OK, "ok")
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn fail_next(&self, times: usize, code: u16, text: &'static str) {
        let mut s = conveyor::sync::lock(&self.script);
        for _ in 0..times {
            s.push_back((code, text));
        }
    }

    fn bodies(&self) -> Vec<Value> {
        conveyor::sync::lock(&self.got)
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

struct Harness {
    sim: GitHubSim,
    bus: Bus,
    slack: Receiver,
    webhook: Receiver,
    settings: Settings,
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
    stop: CancellationToken,
    _cleanup: testing::Cleanup,
}

impl Harness {
    async fn start(label: &str) -> Self {
        let topology = Topology::conveyor(testing::unique_namespace(label)).with_retry_tiers(&[
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::from_secs(2),
        ]);
        let cleanup = testing::Cleanup::new(topology.clone());
        let bus = testing::connect(&format!("notifier-test-{label}"), topology)
            .await
            .unwrap();
        let pipeline = Arc::new(Pipeline::parse(include_str!("../../../conveyor.toml")).unwrap());
        let sim = conveyor_sim::github_for(&pipeline, TOKEN);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let github_url = format!("http://{}", listener.local_addr().unwrap());
        let s = sim.clone();
        tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
        let slack = Receiver::default();
        let webhook = Receiver::default();
        let settings = Settings {
            github: Some(conveyor::github::Settings {
                api_url: github_url,
                token: Secret::new(TOKEN),
            }),
            slack: Some(Secret::new(format!("{}{SLACK_PATH}", slack.serve().await))),
            webhook: Some(Secret::new(format!("{}/hooks", webhook.serve().await))),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
            ledger_url: Some("https://conveyor.example".into()),
        };
        let h = Self {
            _cleanup: cleanup,
            sim,
            bus,
            slack,
            webhook,
            settings,
            pipeline,
            metrics: Metrics::default(),
            stop: CancellationToken::new(),
        };
        h.spawn_notifier(h.stop.clone());
        h
    }

    /// A notifier process (fresh memory) consuming until `stop`.
    fn spawn_notifier(&self, stop: CancellationToken) {
        let notifier = Arc::new(Notifier::new(
            self.pipeline.clone(),
            &self.settings,
            self.metrics.clone(),
        ));
        tokio::spawn(conveyor_notifier::run(self.bus.clone(), notifier, stop));
    }

    async fn publish(&self, events: &[&Envelope]) {
        for e in events {
            self.bus.publish(e).await.unwrap();
        }
    }

    fn statuses(&self, environment: &str) -> Vec<Vec<String>> {
        self.sim
            .deployments()
            .iter()
            .filter(|d| d.environment == environment)
            .map(|d| d.statuses.iter().map(|s| s.state.clone()).collect())
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn eventually(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn image(tag: &str) -> ImageRef {
    ImageRef {
        repository: STACK.into(),
        tag: Some(tag.into()),
        digest: None,
    }
}

/// A deployment chain's events, correlated as the services publish them.
struct Chain {
    requested: Envelope,
}

impl Chain {
    fn new(environment: &str, c: char) -> Self {
        let requested = Envelope::new(
            "conveyor/build-trigger",
            Event::DeployRequested(DeployRequested {
                environment: environment.into(),
                repository: STACK.into(),
                sha: sha(c),
                git_ref: GitRef::branch("master"),
                image: image("latest"),
                upstream: vec![UpstreamCommit {
                    repository: FRONTEND.into(),
                    sha: sha('f'),
                }],
                origin_time: None,
                operation: Default::default(),
            }),
        );
        Self { requested }
    }

    fn env(&self) -> String {
        match &self.requested.event {
            Event::DeployRequested(r) => r.environment.clone(),
            _ => unreachable!(),
        }
    }

    fn next(&self, source: &str, event: Event) -> Envelope {
        Envelope::caused_by(&self.requested, source, event)
    }

    fn launched(&self) -> Envelope {
        self.next(
            "conveyor/awx-launcher",
            Event::DeployLaunched(DeployLaunched {
                environment: self.env(),
                executor: ExecutorRun::Awx {
                    job_id: 968,
                    url: "https://awx.example/#/jobs/playbook/968".into(),
                    template: "Staging Fragalysis Stack (Version Change)".into(),
                },
                image: image("latest"),
                namespace: "fragalysis-staging".into(),
                statefulset: "stack".into(),
                operation: None,
                sha: None,
            }),
        )
    }

    fn job_finished(&self) -> Envelope {
        self.next(
            "conveyor/awx-launcher",
            Event::DeployJobFinished(DeployJobFinished {
                environment: self.env(),
                job_id: 968,
                status: "successful".into(),
                failed: false,
                elapsed_seconds: 40.0,
                explanation: None,
                failed_task: None,
                stdout_tail: None,
            }),
        )
    }

    fn completed(&self) -> Envelope {
        self.next(
            "conveyor/rollout-watcher",
            Event::DeployCompleted(DeployCompleted {
                environment: self.env(),
                image: image("latest"),
                revision: Some("stack-abc".into()),
                operation: None,
                sha: None,
                verified: false,
            }),
        )
    }

    fn failed(&self, stage: &str, reason: &str) -> Envelope {
        self.next(
            "conveyor/rollout-watcher",
            Event::DeployFailed(DeployFailed {
                environment: self.env(),
                stage: serde_json::from_value(serde_json::json!(stage)).unwrap(),
                reason: reason.into(),
                operation: None,
            }),
        )
    }

    fn superseded(&self, by: &str) -> Envelope {
        self.next(
            "conveyor/awx-launcher",
            Event::DeploySuperseded(DeploySuperseded {
                environment: self.env(),
                superseded_by: by.into(),
                operation: None,
            }),
        )
    }
}

#[tokio::test]
async fn a_staging_deployment_is_reported_once_with_the_exact_sequence() {
    let h = Harness::start("notify-staging").await;
    let chain = Chain::new("staging", 'a');
    let events = [
        chain.requested.clone(),
        chain.launched(),
        chain.job_finished(),
        chain.completed(),
    ];
    h.publish(&events.iter().collect::<Vec<_>>()).await;
    eventually("staging reaches success", Duration::from_secs(20), || {
        h.statuses("staging") == [["queued", "in_progress", "success"]]
    })
    .await;
    eventually("4 webhooks", Duration::from_secs(10), || {
        h.webhook.bodies().len() == 4
    })
    .await;

    let deployments = h.sim.deployments();
    let d = &deployments[0];
    assert_eq!(d.sha, sha('a'));
    assert!(!d.production_environment);
    assert_eq!(
        d.payload["conveyor"]["correlation_id"],
        chain.requested.correlation_id.as_str()
    );
    let in_progress = &d.statuses[1];
    assert_eq!(
        in_progress.log_url.as_deref(),
        Some(
            format!(
                "https://conveyor.example/deployments/{}.staging",
                chain.requested.correlation_id
            )
            .as_str()
        )
    );
    assert!(in_progress.description.contains("AWX job 968"));

    // conveyor/staging on the stack commit and on the frontend commit it carries.
    let commit = |c: char| {
        h.sim
            .commit_statuses()
            .iter()
            .filter(|s| s.sha == sha(c) && s.context == "conveyor/staging")
            .map(|s| s.state.clone())
            .collect::<Vec<_>>()
    };
    // The commit statuses follow the deployment status in the same handler: wait for them.
    eventually(
        "both commits reach success",
        Duration::from_secs(10),
        || commit('a') == ["pending", "success"] && commit('f') == ["pending", "success"],
    )
    .await;
    assert_eq!(commit('a'), ["pending", "success"]);
    assert_eq!(commit('f'), ["pending", "success"]);

    // Staging routes only failures to Slack.
    assert!(h.slack.bodies().is_empty(), "{:?}", h.slack.bodies());

    // Every webhook is a CloudEvent carrying the event's own id, signed with our secret.
    let got = conveyor::sync::lock(&h.webhook.got).clone();
    for ((headers, body), event) in got.iter().zip(&events) {
        assert_eq!(
            headers["content-type"],
            "application/cloudevents+json; charset=utf-8"
        );
        let sig = headers[conveyor_notifier::webhook::SIGNATURE_HEADER]
            .to_str()
            .unwrap();
        assert!(conveyor_notifier::webhook::verify(
            &Secret::new(WEBHOOK_SECRET),
            body,
            sig
        ));
        let ce: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], event.id.as_str());
    }

    // Redelivery — to this notifier, and to a restarted one with an empty memory — changes
    // nothing on GitHub: GitHub is the record.
    let nothing_before = h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing));
    h.publish(&events.iter().collect::<Vec<_>>()).await;
    eventually("redeliveries handled", Duration::from_secs(10), || {
        h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing)) >= nothing_before + 4
    })
    .await;
    h.stop.cancel();
    let restarted = CancellationToken::new();
    h.spawn_notifier(restarted.clone());
    let nothing_before = h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing));
    h.publish(&events.iter().collect::<Vec<_>>()).await;
    eventually(
        "restarted redeliveries handled",
        Duration::from_secs(10),
        || h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing)) >= nothing_before + 4,
    )
    .await;
    restarted.cancel();
    assert_eq!(
        h.statuses("staging"),
        [["queued", "in_progress", "success"]]
    );
    assert_eq!(commit('a'), ["pending", "success"]);
    assert_eq!(commit('f'), ["pending", "success"]);
}

#[tokio::test]
async fn a_chain_deep_in_a_busy_environments_history_is_found_not_created_again() {
    let h = Harness::start("notify-deep").await;
    let chain = Chain::new("staging", 'd');
    let correlation = chain.requested.correlation_id.clone();
    h.publish(&[&chain.requested]).await;
    eventually("the deployment is created", Duration::from_secs(10), || {
        h.statuses("staging") == [["queued"]]
    })
    .await;

    // 150 newer deployments of other chains push it past the first page GitHub lists.
    let api = &h.settings.github.as_ref().unwrap().api_url;
    let http = reqwest::Client::new();
    for i in 0..150u32 {
        let res = http
            .post(format!("{api}/repos/{STACK}/deployments"))
            .bearer_auth(TOKEN)
            .header("user-agent", "someone-else")
            .json(&serde_json::json!({
                "ref": format!("{i:040x}"),
                "environment": "staging",
                "required_contexts": [],
                "auto_merge": false,
                "payload": {"conveyor": {"correlation_id": format!("other-{i}")}},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }

    // A notifier with an empty memory gets the request again, then the rest of the chain.
    h.stop.cancel();
    let restarted = CancellationToken::new();
    h.spawn_notifier(restarted.clone());
    h.publish(&[&chain.requested, &chain.launched(), &chain.completed()])
        .await;
    let ours = || {
        h.sim
            .deployments()
            .into_iter()
            .filter(|d| d.payload["conveyor"]["correlation_id"] == correlation.as_str())
            .map(|d| d.statuses.iter().map(|s| s.state.clone()).collect())
            .collect::<Vec<Vec<String>>>()
    };
    eventually(
        "the deep deployment succeeds",
        Duration::from_secs(20),
        || ours() == [["queued", "in_progress", "success"]],
    )
    .await;
    restarted.cancel();
    assert_eq!(ours().len(), 1, "one GitHub deployment for the chain");
}

#[tokio::test]
async fn a_create_still_on_the_wire_when_its_notifier_dies_is_waited_for_not_repeated() {
    let mut h = Harness::start("notify-in-flight").await;
    // The first notifier to consume has its own connection, and dies while GitHub (taking
    // 4 s) still holds its create; its delivery reaches a survivor in about 2 s, which, had it
    // looked at once, would create another.
    h.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let doomed_name = format!("notifier-doomed-{}", std::process::id());
    let doomed_bus = testing::connect(&doomed_name, h.bus.topology().clone())
        .await
        .unwrap();
    let doomed = tokio::spawn(conveyor_notifier::run(
        doomed_bus,
        Arc::new(Notifier::new(
            h.pipeline.clone(),
            &h.settings,
            h.metrics.clone(),
        )),
        CancellationToken::new(),
    ));
    h.sim.inject_on(
        axum::http::Method::POST,
        "/deployments",
        Fault::Slow(Duration::from_secs(4)),
    );
    let chain = Chain::new("staging", 'e');
    let correlation = chain.requested.correlation_id.clone();
    h.publish(&[&chain.requested]).await;
    // The create follows the answered lookup.
    eventually("the lookup", Duration::from_secs(10), || {
        h.sim
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.uri.contains("/deployments?"))
    })
    .await;
    let posted = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.sim.deployments().is_empty(),
        "GitHub has not created it yet"
    );
    doomed.abort();
    testing::close_connections_named(&doomed_name).unwrap();
    h.stop = CancellationToken::new();
    h.spawn_notifier(h.stop.clone());

    eventually("queued", Duration::from_secs(20), || {
        h.statuses("staging") == [["queued"]]
    })
    .await;
    // Both creates, had there been two, have landed by now.
    tokio::time::sleep_until(posted + Duration::from_secs(5)).await;
    let ours = h
        .sim
        .deployments()
        .into_iter()
        .filter(|d| d.payload["conveyor"]["correlation_id"] == correlation.as_str())
        .count();
    assert_eq!(ours, 1, "one GitHub deployment for the chain");
}

#[tokio::test]
async fn a_failed_rollout_names_its_cause_everywhere() {
    let h = Harness::start("notify-failure").await;
    let chain = Chain::new("production", 'b');
    h.publish(&[
        &chain.requested,
        &chain.launched(),
        &chain.job_finished(),
        &chain.failed("rollout", "stack-1: ImagePullBackOff"),
    ])
    .await;
    eventually("production fails", Duration::from_secs(20), || {
        h.statuses("production") == [["queued", "in_progress", "failure"]]
    })
    .await;
    let d = &h.sim.deployments()[0];
    assert!(d.production_environment);
    assert_eq!(d.statuses[2].description, "stack-1: ImagePullBackOff");
    // Production routes everything to Slack: one message on start, one on the end.
    eventually("two Slack messages", Duration::from_secs(10), || {
        h.slack.bodies().len() == 2
    })
    .await;
    let slack = h.slack.bodies();
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .contains("Deploying to production")
    );
    let end = slack[1].to_string();
    assert!(
        end.contains("FAILED") && end.contains("stack-1: ImagePullBackOff"),
        "{end}"
    );
    assert!(
        end.contains("https://awx.example/#/jobs/playbook/968"),
        "{end}"
    );
    assert_eq!(slack[1]["blocks"][0]["type"], "header");
    let failures: Vec<_> = h
        .sim
        .commit_statuses()
        .into_iter()
        .filter(|s| s.state == "failure")
        .collect();
    assert_eq!(failures.len(), 2, "stack and frontend commits");
    assert!(failures.iter().all(|s| s.context == "conveyor/production"));
}

#[tokio::test]
async fn a_superseded_request_becomes_inactive_and_a_long_cause_is_cut_to_140() {
    let h = Harness::start("notify-superseded").await;
    let old = Chain::new("staging", 'c');
    let new = Chain::new("staging", 'd');
    h.publish(&[
        &old.requested,
        &old.superseded(&new.requested.correlation_id),
        &new.requested,
        &new.launched(),
        &new.failed("job", &"AWX says no. ".repeat(30)),
    ])
    .await;
    eventually("both reported", Duration::from_secs(20), || {
        let s = h.statuses("staging");
        s.len() == 2 && s[0].last().map(String::as_str) == Some("inactive") && s[1].len() == 3
    })
    .await;
    let deployments = h.sim.deployments();
    assert_eq!(deployments[0].statuses[1].state, "inactive");
    let failed = &deployments[1].statuses[2];
    assert_eq!(failed.state, "failure");
    assert_eq!(failed.description.chars().count(), 140);
    assert!(failed.description.starts_with("job: AWX says no."));
    // Staging's Slack level is "failures": only the failure was posted.
    eventually("one Slack message", Duration::from_secs(10), || {
        h.slack.bodies().len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out_and_a_down_channel_delays_only_itself() {
    let h = Harness::start("notify-limits").await;
    h.sim.inject(
        Some("/deployments"),
        Fault::RateLimited {
            status: 403,
            retry_after: Some(2),
        },
    );
    // Slack is down for a while: production's start message waits, GitHub does not.
    h.slack.fail_next(3, 503, "service unavailable");
    let chain = Chain::new("production", 'e');
    h.publish(&[&chain.requested, &chain.launched(), &chain.completed()])
        .await;
    eventually("production succeeds", Duration::from_secs(20), || {
        h.statuses("production") == [["queued", "in_progress", "success"]]
    })
    .await;
    // The first call on the deployments endpoint was refused; the next call of any kind
    // came only after GitHub's retry-after.
    let log = h.sim.requests();
    let refused = log
        .iter()
        .position(|r| r.status == 403)
        .expect("the fault was hit");
    assert!(log[refused].uri.contains("/deployments"));
    let waited = log[refused + 1].at - log[refused].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retry-after honoured: {waited:?}"
    );
    assert_eq!(h.sim.deployments().len(), 1);
    assert_eq!(
        h.sim.deployments()[0].statuses[2]
            .environment_url
            .as_deref(),
        Some("https://fragalysis.diamond.ac.uk")
    );
    eventually("Slack catches up", Duration::from_secs(20), || {
        h.slack.bodies().len() == 2
    })
    .await;
    assert!(h.metrics.get(Decision(Channel::Slack, Delivery::Retried)) >= 1);
}

#[tokio::test]
async fn a_refused_notification_is_dead_lettered_with_its_reason_and_no_secret() {
    let h = Harness::start("notify-refused").await;
    h.slack.fail_next(1, 404, "channel_not_found");
    let chain = Chain::new("production", '9');
    h.publish(&[&chain.requested]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let parked = loop {
        let dead = h.bus.dead_letters(DeadLetterAction::Peek).await.unwrap();
        if let Some(d) = dead.into_iter().next() {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        // The stage's partition queue it came from (replay goes back there).
        parked.origin_queue.contains("notifier.slack"),
        "{parked:?}"
    );
    assert!(parked.reason.contains("404") && parked.reason.contains("channel_not_found"));
    assert!(
        !parked.reason.contains("slack-secret-path"),
        "{}",
        parked.reason
    );
    assert!(!parked.reason.contains(TOKEN));
    // GitHub, on its own queue, went ahead.
    eventually("queued on GitHub", Duration::from_secs(10), || {
        h.statuses("production") == [["queued"]]
    })
    .await;
}

#[tokio::test]
async fn a_rollback_says_who_rolled_back_and_why_on_github_and_an_untracked_image_is_not_reported()
{
    let h = Harness::start("notify-rollback").await;
    let mut chain = Chain::new("staging", 'b');
    let operation = conveyor::events::Operation {
        trigger: conveyor::events::Trigger::Rollback,
        actor: Some(conveyor::events::Actor {
            name: "on-call".into(),
            via: "token".into(),
            from: None,
        }),
        reason: Some("500s on /api".into()),
        forced: false,
        source_deployment: Some("earlier.staging".into()),
        untracked: false,
        replaces: None,
    };
    if let Event::DeployRequested(r) = &mut chain.requested.event {
        r.operation = operation.clone();
    }
    let mut completed = chain.completed();
    if let Event::DeployCompleted(c) = &mut completed.event {
        c.operation = Some(operation.clone());
    }
    h.publish(&[&chain.requested]).await;
    eventually("queued", Duration::from_secs(10), || {
        h.statuses("staging") == [["queued"]]
    })
    .await;
    h.publish(&[&completed]).await;
    eventually("success", Duration::from_secs(10), || {
        h.statuses("staging") == [["queued", "success"]]
    })
    .await;
    let deployment = &h.sim.deployments()[0];
    assert_eq!(
        deployment.description.as_deref(),
        Some("Rolled back by on-call: 500s on /api")
    );
    let said: Vec<&str> = deployment
        .statuses
        .iter()
        .map(|s| s.description.as_str())
        .collect();
    assert_eq!(
        said,
        [
            "Rolled back by on-call: 500s on /api · Queued: xchem/fragalysis-stack:latest",
            "Rolled back by on-call: 500s on /api · Deployed xchem/fragalysis-stack:latest",
        ]
    );

    // An image deployed by hand that no recorded build made has no commit to report on.
    let mut untracked = Chain::new("staging", 'u');
    if let Event::DeployRequested(r) = &mut untracked.requested.event {
        r.sha = String::new();
        r.operation = conveyor::events::Operation {
            trigger: conveyor::events::Trigger::Manual,
            untracked: true,
            replaces: None,
            ..operation
        };
    }
    let nothing = h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing));
    h.publish(&[&untracked.requested]).await;
    eventually("skipped", Duration::from_secs(10), || {
        h.metrics.get(Decision(Channel::GitHub, Delivery::Nothing)) > nothing
    })
    .await;
    assert_eq!(
        h.sim.deployments().len(),
        1,
        "no deployment of an unknown commit"
    );
    assert!(
        h.sim.commit_statuses().iter().all(|s| !s.sha.is_empty()),
        "no status posted to an empty sha"
    );
}
