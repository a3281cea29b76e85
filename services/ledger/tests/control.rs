//! The control API through HTTP against a ledger fed over RabbitMQ: authentication and its
//! refusals, the CSRF rules, each action's event on the bus (trigger, actor, reason, image), the
//! pause latch, the audit record, and every bad input refused with a clear error and nothing
//! published.

use std::sync::Arc;
use std::time::Duration;

use conveyor::config::Pipeline;
use conveyor::events::Trigger;
use conveyor::{Bus, Envelope, Event, Topology, testing};
use conveyor_ledger::auth::{Operators, token_hash};
use conveyor_ledger::control::Control;
use conveyor_ledger::{Decision, Metrics};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[path = "fixture/chain.rs"]
mod chain;

const PIPELINE: &str = r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"
branches = ["master"]
tags = '^\d+\.\d+\.\d+$'

[[environment]]
name = "staging"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
executor = { awx = { template = "Staging Fragalysis Stack (Version Change)", image_var = "stack_image_tag" } }
statefulset = { namespace = "fragalysis-staging", name = "stack" }

[[environment]]
name = "dev"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-dev", name = "stack" }
freeze = [{ from = "2020-01-01 00:00", to = "2020-01-02 00:00", timezone = "UTC" }]

[[environment]]
name = "archive"
repository = "xchem/fragalysis-stack"
on = { tag = '^\d+\.\d+\.\d+$' }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-archive", name = "stack" }
freeze = [{ from = "2020-01-01 00:00", to = "2100-01-01 00:00", timezone = "Europe/London", reason = "read-only" }]
"#;

struct Harness {
    url: String,
    bus: Bus,
    observer: testing::Observer,
    metrics: Metrics,
    client: reqwest::Client,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(label: &str, pipeline: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("operators.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[operator]]\nname = \"alice\"\nroles = [\"operator\", \"release-manager\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"victor\"\nroles = [\"viewer\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"olga\"\nroles = [\"operator\"]\nsha256 = \"{}\"\nexpires = \"2021-01-01T00:00:00Z\"\n\n[[operator]]\nname = \"rita\"\nroles = [\"viewer\", \"release-manager\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"bob\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n",
                token_hash("alice-token"),
                token_hash("victor-token"),
                token_hash("olga-token"),
                token_hash("rita-token"),
                token_hash("bob-token"),
            ),
        )
        .unwrap();
        let bus = testing::connect(
            &format!("ledger-control-{label}"),
            Topology::conveyor(testing::unique_namespace(label)),
        )
        .await
        .unwrap();
        let control = Arc::new(Control {
            bus: bus.clone(),
            pipeline: Arc::new(Pipeline::parse(pipeline).unwrap()),
            operators: Operators::new(Some(tokens), false).unwrap(),
        });
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let metrics = Metrics::default();
        let stop = CancellationToken::new();
        let url = chain::spawn_ledger_with(&bus, &db, &metrics, &stop, Some(control)).await;
        let observer = testing::Observer::new(&bus).await.unwrap();
        Self {
            url,
            bus,
            observer,
            metrics,
            client: reqwest::Client::new(),
            stop,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn act(&self, env: &str, action: &str, body: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/api/environments/{env}/{action}"),
            Some("alice-token"),
            body,
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Everything published since the last call.
    async fn published(&mut self) -> Vec<Envelope> {
        let before = self.observer.seen.len();
        // What the control API publishes is confirmed before it answers: one drain sees it.
        self.observer.drain().await;
        self.observer.seen[before..].to_vec()
    }

    /// Publish `events` and wait until the ledger recorded all of them.
    async fn record(&mut self, events: &[Envelope]) {
        let before = self.metrics.decisions.get(Decision::Recorded);
        for e in events {
            self.bus.publish(e).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.metrics.decisions.get(Decision::Recorded);
            if now >= before + events.len() as u64 {
                // They are not the control API's: out of what the next `published` returns.
                self.observer.drain().await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ledger recorded {} of {} events",
                now - before,
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Wait until the audit record of `environment` holds `n` actions.
    async fn actions(&self, environment: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .get(&format!("/api/actions?environment={environment}"))
                .await;
            let list = v.as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                return list;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {n} actions of {environment}, saw {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) {
        self.stop.cancel();
        self.bus.delete_topology().await.unwrap();
    }
}

fn request_of(e: &Envelope) -> &conveyor::events::DeployRequested {
    match &e.event {
        Event::DeployRequested(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[tokio::test]
async fn every_action_needs_an_operator_and_a_same_site_json_request() {
    let mut h = Harness::start("control-auth", PIPELINE).await;
    let pause = "/api/environments/staging/pause";
    let body = json!({"reason": "incident 42"});
    for (token, status, says) in [
        (None, StatusCode::UNAUTHORIZED, "authentication required"),
        (Some("nope"), StatusCode::UNAUTHORIZED, "unknown token"),
        (Some("olga-token"), StatusCode::UNAUTHORIZED, "expired"),
        (
            Some("victor-token"),
            StatusCode::FORBIDDEN,
            "does not have the operator role",
        ),
    ] {
        let (s, v) = h.post(pause, token, body.clone()).await;
        assert_eq!(s, status, "{token:?}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(says), "{token:?}: {error}");
        assert!(!error.contains("token\""), "{error}");
        if let Some(t) = token {
            assert!(
                !error.contains(t),
                "a refusal never repeats the token: {error}"
            );
        }
    }
    // Not JSON (a form another site could post), or sent from another site.
    let res = h
        .client
        .post(format!("{}{pause}", h.url))
        .bearer_auth("alice-token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let res = h
            .client
            .post(format!("{}{pause}", h.url))
            .bearer_auth("alice-token")
            .header("content-type", "application/json")
            .header(header, value)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{header}: {value}");
    }
    assert!(h.published().await.is_empty(), "nothing was published");
    assert!(
        !conveyor::control::is_paused(&h.bus, "staging")
            .await
            .unwrap()
    );
    h.finish().await;
}

#[tokio::test]
async fn pause_and_resume_set_the_latch_and_are_recorded_once() {
    let mut h = Harness::start("control-pause", PIPELINE).await;
    // Bad input changes nothing.
    let (s, v) = h.act("staging", "resume", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "staging is not paused");
    let (s, v) = h.act("staging", "pause", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = h.act("nowhere", "pause", json!({"reason": "x"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("known: staging, dev, archive")
    );
    assert!(h.published().await.is_empty());

    let (s, v) = h
        .act("staging", "pause", json!({"reason": "500s on /api"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Confirmed before the answer: any look from now on sees it.
    assert!(
        conveyor::control::is_paused(&h.bus, "staging")
            .await
            .unwrap()
    );
    assert!(!conveyor::control::is_paused(&h.bus, "dev").await.unwrap());
    let published = h.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key(), "control.paused.staging");
    match &published[0].event {
        Event::EnvironmentPaused(p) => {
            assert_eq!(
                (p.actor.name.as_str(), p.actor.via.as_str()),
                ("alice", "token")
            );
            assert_eq!(p.actor.from.as_deref(), Some("127.0.0.1"));
            assert_eq!(p.reason, "500s on /api");
        }
        other => panic!("{other:?}"),
    }
    let (s, v) = h.act("staging", "pause", json!({"reason": "again"})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("staging is paused already"))
    );

    let actions = h.actions("staging", 1).await;
    assert_eq!(actions[0]["action"], "pause");
    assert_eq!(actions[0]["actor"]["name"], "alice");
    let status = h.get("/api/status/staging").await;
    assert_eq!(status["paused"]["by"], "alice");
    assert_eq!(status["paused"]["reason"], "500s on /api");

    let (s, v) = h.act("staging", "resume", json!({"reason": "fixed"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !conveyor::control::is_paused(&h.bus, "staging")
            .await
            .unwrap()
    );
    let published = h.published().await;
    assert_eq!(
        published
            .iter()
            .map(Envelope::routing_key)
            .collect::<Vec<_>>(),
        ["control.resumed.staging"]
    );
    let actions = h.actions("staging", 2).await;
    assert_eq!(
        actions
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["resume", "pause"],
        "each action once, newest first"
    );
    assert!(h.get("/api/status/staging").await["paused"].is_null());
    // The status also knows each executor and the pipeline file's freeze windows.
    let all = h.get("/api/status").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(
        (all[0]["executor"].as_str(), all[1]["executor"].as_str()),
        (Some("awx"), Some("kubernetes"))
    );
    assert!(
        all[1]["frozen"].is_null(),
        "a window in the past holds nothing"
    );
    assert!(
        all[2]["frozen"]["reason"]
            .as_str()
            .unwrap()
            .ends_with(": read-only"),
        "{}",
        all[2]
    );
    h.finish().await;
}

#[tokio::test]
async fn deploy_rollback_and_redeploy_request_through_the_pipeline_with_their_operation() {
    let mut h = Harness::start("control-deploy", PIPELINE).await;
    // No history: nothing to roll back to or redeploy.
    for action in ["rollback", "redeploy"] {
        let (s, v) = h.act("staging", action, json!({})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{action}: {v}");
        assert!(
            v["error"].as_str().unwrap().starts_with("nothing to"),
            "{v}"
        );
    }
    // Images that do not parse, run elsewhere, or cannot go through AWX.
    let digest = format!("sha256:{}", "c".repeat(64));
    for (image, says) in [
        ("xchem/fragalysis-stack", "name a tag"),
        ("XCHEM/stack:1", "is not an image reference"),
        (
            "other/app:1.0",
            "staging runs xchem/fragalysis-stack, not other/app",
        ),
        (
            &*format!("xchem/fragalysis-stack@{digest}"),
            "whose job takes a tag (stack_image_tag)",
        ),
    ] {
        let (s, v) = h.act("staging", "deploy", json!({"image": image})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{image}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{image}: {v}");
    }
    let (s, v) = h
        .act("staging", "deploy", json!({"image": "x:1", "typo": 1}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        h.published().await.is_empty(),
        "nothing was published by bad input"
    );

    // A manual deployment.
    let before = OffsetDateTime::now_utc();
    let (s, v) = h
        .act(
            "staging",
            "deploy",
            json!({"image": "xchem/fragalysis-stack:2026.12.1", "reason": "hotfix", "force": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let published = h.published().await;
    assert_eq!(published.len(), 1);
    let r = request_of(&published[0]);
    assert_eq!(published[0].routing_key(), "deploy.requested.staging");
    assert_eq!(
        v["deployment"],
        format!("{}.staging", published[0].correlation_id)
    );
    assert_eq!(r.image.reference(), "xchem/fragalysis-stack:2026.12.1");
    assert_eq!(r.operation.trigger, Trigger::Manual);
    assert_eq!(r.operation.actor.as_ref().unwrap().name, "alice");
    assert_eq!(r.operation.reason.as_deref(), Some("hotfix"));
    assert!(r.operation.forced);
    assert!(
        r.origin_time.unwrap() >= before,
        "an operator's request is the newest change"
    );
    // The Kubernetes executor takes a digest.
    let (s, v) = h
        .act(
            "dev",
            "deploy",
            json!({"image": format!("xchem/fragalysis-stack@{digest}")}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(h.published().await.len(), 1);

    // History: 1.0.1 then 1.0.2 completed; 1.0.3 failed after them.
    let t = OffsetDateTime::now_utc() - time::Duration::hours(3);
    let mut events = chain::deployment("chain-a", "staging", t, "1.0.1", false);
    events.extend(chain::deployment(
        "chain-b",
        "staging",
        t + time::Duration::hours(1),
        "1.0.2",
        false,
    ));
    events.extend(chain::deployment(
        "chain-c",
        "staging",
        t + time::Duration::hours(2),
        "1.0.3",
        true,
    ));
    h.record(&events).await;

    let (s, v) = h
        .act("staging", "rollback", json!({"reason": "500s on /api"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let published = h.published().await;
    let r = request_of(&published[0]);
    assert_eq!(
        r.image.reference(),
        "xchem/fragalysis-stack:1.0.1",
        "the completed one before the current"
    );
    assert_eq!(r.operation.trigger, Trigger::Rollback);
    assert_eq!(
        r.operation.source_deployment.as_deref(),
        Some("chain-a.staging")
    );
    assert_eq!(r.sha, "a".repeat(40), "the commit it ran");
    assert_eq!(
        r.operation.describe().as_deref(),
        Some("Rolled back by alice: 500s on /api")
    );
    // --to: only a completed deployment of this environment.
    let (s, v) = h
        .act("staging", "rollback", json!({"to": "chain-c.staging"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("is failed"), "{v}");
    let (s, _) = h
        .act("staging", "rollback", json!({"to": "no-such.staging"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h
        .act("dev", "rollback", json!({"to": "chain-b.staging"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(h.published().await.is_empty());

    let (s, v) = h.act("staging", "redeploy", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let published = h.published().await;
    let r = request_of(&published[0]);
    assert_eq!(
        r.image.reference(),
        "xchem/fragalysis-stack:1.0.2",
        "what runs now"
    );
    assert_eq!(r.operation.trigger, Trigger::Redeploy);

    // The record: every action once, with who and what.
    let actions = h.actions("staging", 3).await;
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["redeploy", "rollback", "deploy"]);
    assert_eq!(actions[2]["forced"], true);
    assert_eq!(actions[1]["image"], "xchem/fragalysis-stack:1.0.1");
    let d = h
        .get(&format!(
            "/api/deployments/{}",
            actions[1]["deployment"].as_str().unwrap()
        ))
        .await;
    assert_eq!(d["operation"]["trigger"], "rollback");
    assert_eq!(d["operation"]["actor"]["name"], "alice");
    h.finish().await;
}

const GUARDED: &str = r#"
[[repository]]
name = "xchem/fragalysis-stack"
build_workflow = "build main"
branches = ["master"]
tags = '^\d+\.\d+\.\d+$'

[[environment]]
name = "staging"
repository = "xchem/fragalysis-stack"
on = { branch = "master" }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-staging", name = "stack" }
unstick = true

[[environment]]
name = "production"
repository = "xchem/fragalysis-stack"
on = { tag = '^\d+\.\d+\.\d+$' }
executor = { kubernetes = { container = "stack" } }
statefulset = { namespace = "fragalysis-production", name = "stack" }
requires = { environment = "staging" }
approval = { approvers = ["release-manager"] }
"#;

impl Harness {
    /// Deploy `image` to `env` as `token`'s operator and wait until the ledger has it.
    async fn requested(&mut self, env: &str, image: &str, token: &str) -> String {
        let (s, v) = self
            .post(
                &format!("/api/environments/{env}/deploy"),
                Some(token),
                json!({"image": image}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let id = v["deployment"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.get(&format!("/api/deployments/{id}")).await["id"] != id.as_str() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never recorded"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        self.observer.drain().await;
        id
    }

    async fn decide(&self, id: &str, verb: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/api/deployments/{id}/{verb}"), Some(token), body)
            .await
    }
}

#[tokio::test]
async fn approvals_come_from_an_approver_other_than_the_requester_and_only_while_it_waits() {
    let mut h = Harness::start("control-approve", GUARDED).await;
    let digest = |c: char| format!("xchem/fragalysis-stack@sha256:{}", c.to_string().repeat(64));
    let (s, v) = h
        .decide("nope.production", "approve", "rita-token", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let first = h.requested("production", &digest('a'), "alice-token").await;
    // Not an approver, the requester, no reason for a rejection, an unknown field.
    for (token, verb, body, status, says) in [
        (
            "bob-token",
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "approvers: release-manager",
        ),
        (
            "victor-token",
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "may not decide",
        ),
        (
            "alice-token",
            "approve",
            json!({}),
            StatusCode::FORBIDDEN,
            "another approver",
        ),
        (
            "rita-token",
            "reject",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason is required",
        ),
        (
            "rita-token",
            "approve",
            json!({"typo": true}),
            StatusCode::BAD_REQUEST,
            "typo",
        ),
    ] {
        let (s, v) = h.decide(&first, verb, token, body).await;
        assert_eq!(s, status, "{token} {verb}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{token} {verb}: {v}"
        );
    }
    let (s, _) = h
        .post(
            &format!("/api/deployments/{first}/approve"),
            None,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        h.published().await.is_empty(),
        "no refused decision is published"
    );
    assert!(
        !h.bus
            .latch_is_set(&conveyor::control::approval_latch(&first))
            .await
            .unwrap()
    );

    // A viewer with the approver role approves: the record first, then the latch.
    let (s, v) = h
        .decide(
            &first,
            "approve",
            "rita-token",
            json!({"reason": "release notes read", "override_requires": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["by"], "rita");
    let published = h.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key(), "deploy.approved.production");
    assert_eq!(format!("{}.production", published[0].correlation_id), first);
    match &published[0].event {
        Event::DeployApproved(d) => {
            assert_eq!(d.actor.name, "rita");
            assert_eq!(d.reason.as_deref(), Some("release notes read"));
            assert!(d.overrides_requires);
        }
        other => panic!("{other:?}"),
    }
    for latch in [
        conveyor::control::approval_latch(&first),
        conveyor::control::override_latch(&first),
    ] {
        assert!(h.bus.latch_is_set(&latch).await.unwrap(), "{latch}");
    }
    assert!(
        !h.bus
            .latch_is_set(&conveyor::control::rejection_latch(&first))
            .await
            .unwrap()
    );

    // A newer request supersedes the first: nothing left to decide about it.
    let second = h.requested("production", &digest('b'), "alice-token").await;
    let superseded = Envelope::new(
        "conveyor/test",
        Event::DeploySuperseded(conveyor::events::DeploySuperseded {
            environment: "production".into(),
            superseded_by: second.clone(),
            operation: None,
        }),
    )
    .with_correlation_id(first.trim_end_matches(".production"));
    h.record(&[superseded]).await;
    let (s, v) = h
        .decide(&first, "reject", "rita-token", json!({"reason": "late"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("nothing to decide"),
        "{v}"
    );

    let (s, v) = h
        .decide(
            &second,
            "reject",
            "rita-token",
            json!({"reason": "breaks the API"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        h.published().await[0].routing_key(),
        "deploy.rejected.production"
    );
    assert!(
        h.bus
            .latch_is_set(&conveyor::control::rejection_latch(&second))
            .await
            .unwrap()
    );
    assert!(
        !h.bus
            .latch_is_set(&conveyor::control::approval_latch(&second))
            .await
            .unwrap()
    );

    // Staging asks for no decision; production's requires is lifted only with an approval.
    let staged = h.requested("staging", &digest('c'), "alice-token").await;
    let (s, v) = h
        .decide(
            &staged,
            "approve",
            "rita-token",
            json!({"override_requires": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("needs no approval"),
        "{v}"
    );

    // The audit record names each decision once.
    let actions = h.actions("production", 4).await;
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reject", "deploy", "approve", "deploy"]);
    assert_eq!(actions[0]["actor"]["name"], "rita");
    h.finish().await;
}

#[tokio::test]
async fn unstick_is_asked_of_the_watcher_only_where_the_environment_allows_it() {
    let mut h = Harness::start("control-unstick", GUARDED).await;
    let (s, v) = h.act("production", "unstick", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("unstick = true"),
        "{v}"
    );
    let (s, _) = h
        .post(
            "/api/environments/staging/unstick",
            Some("victor-token"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a viewer may not");
    assert!(h.published().await.is_empty());
    let (s, v) = h
        .act(
            "staging",
            "unstick",
            json!({"reason": "stack-1 on the bad image"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let published = h.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key(), "control.unstick.staging");
    match &published[0].event {
        Event::UnstickRequested(u) => {
            assert_eq!(u.actor.name, "alice");
            assert_eq!(u.reason.as_deref(), Some("stack-1 on the bad image"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.actions("staging", 1).await[0]["action"], "unstick");
    h.finish().await;
}
