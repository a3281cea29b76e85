//! The fault campaign: the real binaries (ingest, build-trigger ×2, awx-launcher ×2,
//! rollout-watcher ×2, notifier, ledger) on a private RabbitMQ node, the simulators in this
//! process, many deployments across four environments (two AWX, two Kubernetes-executor) —
//! while processes are SIGKILLed and restarted, the broker is restarted or blocks publishers,
//! and the simulators fail. Then, from the simulators' own records and every published event:
//! nothing lost, nothing run twice, no overlapping rollouts, nothing stuck.
//!
//! Operators act throughout (several of them, through the ledger's control API): they pause and
//! resume environments, deploy images by hand (some forced through a pause), redeploy and roll
//! back; the checks add that nothing is launched or patched while an environment is paused,
//! that after a resume only the newest held request runs, that a rollback deploys exactly the
//! image of the completed deployment it returns to, and that the ledger has every action once.
//!
//! One environment delivers safely (`kube-b`: verified against the simulated application's
//! health check, rolled back on failure, unstuck): operators deploy releases there that serve
//! 500s or crash-loop; the checks add that none of them ever completes, each failure is rolled
//! back at most once (exactly once when there was something to return to), a rollback is never
//! rolled back, and every automatic rollback ends exactly once.
//!
//! `CONVEYOR_CAMPAIGN_DEPLOYMENTS` sets the number of pushes (200 by default; the soak runs
//! 2000 through `scripts/soak`), `CONVEYOR_CAMPAIGN_SEED` replays a run's random choices.
//! `CONVEYOR_CAMPAIGN_CLUSTER=3` runs it on a cluster of three private nodes instead of one:
//! the broker faults then stop or SIGKILL one node at a time (often the one leading the most
//! queues) and raise alarms on one node, and every service's `AMQP_URL` lists the nodes.

#[path = "support/broker.rs"]
mod broker;
#[path = "support/processes.rs"]
mod processes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conveyor::Topology;
use conveyor::config::Pipeline;
use conveyor::events::{Envelope, Event, Stage, Trigger, deployment_id};
use conveyor_sim::awx::{Fault as AwxFault, PlaybookResult};
use conveyor_sim::github::Fault as GitHubFault;
use conveyor_sim::world::{Credentials, Options, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use broker::{BrokerCluster, BrokerNode};
use processes::{Fleet, Spec, free_port};

const GITHUB_TOKEN: &str = "ghp_CampaignToken";
const HOOK_SECRET: &str = "whsec_CampaignHookSecret";
const AWX_TOKEN: &str = "awx_CampaignToken";
const HOOK_TOKEN: &str = "reg_CampaignHookToken";
/// The operators the campaign's ledger knows, and their tokens.
const OPERATORS: [(&str, &str); 3] = [
    ("alice", "cvy_CampaignAliceToken"),
    ("bob", "cvy_CampaignBobToken"),
    ("carol", "cvy_CampaignCarolToken"),
];
/// The release manager who decides what `awx-b` (the environment that needs an approval) runs.
const APPROVER: (&str, &str) = ("rita", "cvy_CampaignRitaToken");
/// The environment whose every deployment waits for an approval.
const APPROVED: &str = "awx-b";

/// How long after a pause is confirmed a decision taken just before it may still apply (the
/// executor reads the hold, then asks AWX about the launch — which may be a slow answer — and
/// launches).
const PAUSE_GRACE: time::Duration = time::Duration::seconds(10);

/// Four environments on one repository's branches (two deployed by AWX, two by the Kubernetes
/// executor) and an upstream library whose builds dispatch the app's build on `awx-a`.
const PIPELINE: &str = r#"
[[repository]]
name = "campaign/lib"
build_workflow = "build main"
branches = ["main"]
downstream = ["campaign/app"]
downstream_inputs = { lib_tag = "{upstream.tag}" }
image = "campaign/lib"

[[repository]]
name = "campaign/app"
build_workflow = "build main"
branches = ["awx-a", "awx-b", "kube-a", "kube-b"]
image = "campaign/app"
dispatch_ref = "awx-a"

[[environment]]
name = "awx-a"
repository = "campaign/app"
on = { branch = "awx-a" }
executor = { awx = { template = "Deploy awx-a", image_var = "image_tag" } }
statefulset = { namespace = "ns-awx-a", name = "app" }

[[environment]]
name = "awx-b"
repository = "campaign/app"
on = { branch = "awx-b" }
executor = { awx = { template = "Deploy awx-b", image_var = "image_tag" } }
statefulset = { namespace = "ns-awx-b", name = "app" }
approval = { approvers = ["release-manager"], expires_secs = 600 }

[[environment]]
name = "kube-a"
repository = "campaign/app"
on = { branch = "kube-a" }
executor = { kubernetes = { container = "app" } }
statefulset = { namespace = "ns-kube-a", name = "app" }

[[environment]]
name = "kube-b"
repository = "campaign/app"
on = { branch = "kube-b" }
executor = { kubernetes = { container = "app" } }
statefulset = { namespace = "ns-kube-b", name = "app" }
on_failure = "rollback"
unstick = true
# VERIFY

[awx]
api_prefix = "/api/v2"

[rollout]
stall_after_secs = 60
fail_grace_secs = 5
"#;

/// The environments, the guarded one last (pushes pick it by its own odds).
const ENVIRONMENTS: [&str; 4] = ["awx-a", "awx-b", "kube-a", GUARDED];
/// The environment that verifies and rolls back, and the images that fail there.
const GUARDED: &str = "kube-b";
const SERVES_ERRORS: &str = ":bad-";
const CRASHES: &str = ":crash-";

/// One push the campaign made: the webhook chain it should start.
#[derive(Debug, Clone)]
struct Push {
    repository: &'static str,
    sha: String,
    /// The environment its chain deploys to.
    environment: &'static str,
}

/// What an operator did, as the control API answered it.
#[derive(Debug, Clone)]
struct Act {
    kind: &'static str,
    environment: &'static str,
    actor: &'static str,
    /// When the request was sent and when its answer came.
    sent: time::OffsetDateTime,
    answered: time::OffsetDateTime,
    /// The correlation id of the deployment it requested (deploy, redeploy, rollback).
    correlation: Option<String>,
    /// The image it requested.
    image: Option<String>,
    /// The event of a pause or a resume.
    event: Option<String>,
    forced: bool,
}

/// One pause, from its confirmation to the resume being sent.
#[derive(Debug, Clone)]
struct Paused {
    environment: &'static str,
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
}

/// The operators' side of the campaign: a client of the ledger's control API.
struct Operators {
    ledger: String,
    http: reqwest::Client,
    acts: Mutex<Vec<Act>>,
    /// Per environment, since when it is paused (as far as the operators know).
    paused: Mutex<HashMap<&'static str, (time::OffsetDateTime, Duration)>>,
    pauses: Mutex<Vec<Paused>>,
    refused: Mutex<BTreeMap<String, u32>>,
}

impl Operators {
    fn new(ledger: String) -> Self {
        Self {
            ledger,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            acts: Mutex::default(),
            paused: Mutex::default(),
            pauses: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    /// POST one action as `actor`; the answer's status and body (none when unreachable).
    async fn post(
        &self,
        actor: &str,
        environment: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Option<(u16, serde_json::Value)> {
        let token = OPERATORS.iter().find(|(n, _)| *n == actor)?.1;
        let answer = self
            .http
            .post(format!(
                "{}/api/environments/{environment}/{action}",
                self.ledger
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json().await.unwrap_or_default()))
    }

    fn refuse(&self, why: String) {
        *conveyor::sync::lock(&self.refused).entry(why).or_default() += 1;
    }

    async fn act(
        &self,
        kind: &'static str,
        environment: &'static str,
        actor: &'static str,
        body: serde_json::Value,
    ) -> Option<Act> {
        let sent = time::OffsetDateTime::now_utc();
        let forced = body["force"] == true;
        let Some((status, reply)) = self.post(actor, environment, kind, body).await else {
            self.refuse(format!("{kind}: unreachable"));
            return None;
        };
        let answered = time::OffsetDateTime::now_utc();
        if !(200..300).contains(&status) {
            let error = reply["error"].as_str().unwrap_or("").to_owned();
            // What the operators know changes with what the API says.
            if kind == "pause" && error.ends_with("is paused already") {
                conveyor::sync::lock(&self.paused)
                    .entry(environment)
                    .or_insert((answered, Duration::from_secs(5)));
            }
            if kind == "resume" && error.ends_with("is not paused") {
                conveyor::sync::lock(&self.paused).remove(environment);
            }
            let error = error.split(':').next().unwrap_or("").to_owned();
            self.refuse(format!("{kind}: {status} {error}"));
            return None;
        }
        let act = Act {
            kind,
            environment,
            actor,
            sent,
            answered,
            correlation: reply["correlation_id"].as_str().map(str::to_owned),
            image: reply["image"].as_str().map(str::to_owned),
            event: reply["event"].as_str().map(str::to_owned),
            forced,
        };
        conveyor::sync::lock(&self.acts).push(act.clone());
        Some(act)
    }

    /// Resume `environment`, however long the API takes to answer.
    async fn resume(&self, environment: &'static str, actor: &'static str) {
        let Some((since, _)) = conveyor::sync::lock(&self.paused).get(environment).copied() else {
            return;
        };
        for _ in 0..60 {
            let sent = time::OffsetDateTime::now_utc();
            if self
                .act("resume", environment, actor, serde_json::json!({}))
                .await
                .is_some()
            {
                conveyor::sync::lock(&self.paused).remove(environment);
                conveyor::sync::lock(&self.pauses).push(Paused {
                    environment,
                    from: since,
                    until: sent,
                });
                return;
            }
            if !conveyor::sync::lock(&self.paused).contains_key(environment) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One random action (or none) on a random environment.
    async fn step(&self, rng: &mut StdRng, n: usize) {
        // The guarded environment gets a third of the operators' attention: its bad releases
        // are what the safe-delivery checks are about.
        let environment = if rng.random_bool(0.33) {
            GUARDED
        } else {
            ENVIRONMENTS[rng.random_range(0..ENVIRONMENTS.len())]
        };
        let actor = OPERATORS[rng.random_range(0..OPERATORS.len())].0;
        let paused = conveyor::sync::lock(&self.paused).get(environment).copied();
        if let Some((since, hold)) = paused {
            if time::OffsetDateTime::now_utc() - since > hold {
                self.resume(environment, actor).await;
            } else if rng.random_bool(0.3) {
                let image = format!("campaign/app:forced-{n}");
                self.act(
                    "deploy",
                    environment,
                    actor,
                    serde_json::json!({"image": image, "reason": "hotfix through the pause", "force": true}),
                )
                .await;
            }
            return;
        }
        // Half of the guarded environment's actions are releases, so that even a short run
        // deploys a few bad ones there.
        let action = if environment == GUARDED && rng.random_bool(0.5) {
            25
        } else {
            rng.random_range(0..100)
        };
        match action {
            0..=24 => {
                // Long enough that the grace after the confirmation leaves a real pause to check.
                let hold = Duration::from_secs(rng.random_range(14..24));
                if let Some(act) = self
                    .act(
                        "pause",
                        environment,
                        actor,
                        serde_json::json!({"reason": format!("campaign pause {n}")}),
                    )
                    .await
                {
                    conveyor::sync::lock(&self.paused).insert(environment, (act.answered, hold));
                }
            }
            25..=49 => {
                // Where releases are verified, some are bad: they serve 500s or crash-loop.
                let image = match rng.random_range(0..10) {
                    0..=3 if environment == GUARDED => format!("campaign/app{SERVES_ERRORS}{n}"),
                    4..=7 if environment == GUARDED => format!("campaign/app{CRASHES}{n}"),
                    _ => format!("campaign/app:m{n}"),
                };
                self.act(
                    "deploy",
                    environment,
                    actor,
                    serde_json::json!({"image": image, "reason": "by hand"}),
                )
                .await;
            }
            50..=69 => {
                self.act(
                    "rollback",
                    environment,
                    actor,
                    serde_json::json!({"reason": "campaign rollback"}),
                )
                .await;
            }
            70..=79 => {
                self.act("redeploy", environment, actor, serde_json::json!({}))
                    .await;
            }
            _ => {}
        }
    }

    /// Resume every environment the API says is paused (some pauses' answers were lost).
    async fn resume_all(&self) {
        for environment in ENVIRONMENTS {
            for _ in 0..60 {
                let status = self
                    .http
                    .get(format!("{}/api/status/{environment}", self.ledger))
                    .send()
                    .await;
                let Ok(status) = status else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let status: serde_json::Value = status.json().await.unwrap_or_default();
                if status["paused"].is_null() && status["environment"] == environment {
                    conveyor::sync::lock(&self.paused).remove(environment);
                    break;
                }
                conveyor::sync::lock(&self.paused)
                    .entry(environment)
                    .or_insert((time::OffsetDateTime::now_utc(), Duration::ZERO));
                self.resume(environment, "alice").await;
            }
        }
    }
}

/// Every event published, as a durable queue of the campaign's own (bound to `#`) received
/// them; survives broker restarts, so nothing published escapes it.
#[derive(Clone, Default)]
struct Tap {
    seen: Arc<Mutex<Vec<(Instant, Envelope)>>>,
}

impl Tap {
    /// Declare and bind the tap's queue (before anything the campaign checks is published),
    /// then consume it until `stop`, reconnecting whenever the broker goes away.
    async fn start(&self, urls: Vec<String>, exchange: String, stop: CancellationToken) {
        let queue = format!("{exchange}.campaign-tap");
        let connection = lapin::Connection::connect(&urls[0], Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        conveyor::testing::bare_quorum_queue(&channel, &queue)
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.clone().into(),
                exchange.clone().into(),
                "#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "tap bound".into()).await;
        let seen = self.seen.clone();
        // One message at a time with basic.get, every broker call bounded: a consumer stream
        // can go quiet for good across a broker restart without ever reporting an error (the
        // first soak's tap stopped with 22 641 events waiting).
        tokio::spawn(async move {
            use lapin::options::{BasicAckOptions, BasicGetOptions};
            let bounded = Duration::from_secs(5);
            let mut attempt = 0usize;
            while !stop.is_cancelled() {
                // On a cluster, the next node when one is away.
                let url = urls[attempt % urls.len()].clone();
                attempt += 1;
                let connected = tokio::time::timeout(bounded, async {
                    let connection = lapin::Connection::connect(&url, Default::default()).await?;
                    let channel = connection.create_channel().await?;
                    Ok::<_, lapin::Error>((connection, channel))
                })
                .await;
                let Ok(Ok((_connection, channel))) = connected else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while !stop.is_cancelled() {
                    let got = tokio::time::timeout(
                        bounded,
                        channel.basic_get(queue.clone().into(), BasicGetOptions::default()),
                    )
                    .await;
                    match got {
                        Ok(Ok(Some(m))) => {
                            if let Ok(e) = Envelope::from_json(&m.delivery.data) {
                                conveyor::sync::lock(&seen).push((Instant::now(), e));
                            }
                            let acked = tokio::time::timeout(
                                bounded,
                                m.delivery.acker.ack(BasicAckOptions::default()),
                            )
                            .await;
                            if !matches!(acked, Ok(Ok(_))) {
                                break;
                            }
                        }
                        Ok(Ok(None)) => tokio::time::sleep(Duration::from_millis(20)).await,
                        _ => break,
                    }
                }
            }
        });
    }

    fn events(&self) -> Vec<(Instant, Envelope)> {
        conveyor::sync::lock(&self.seen).clone()
    }
}

/// One decision the release manager took on a deployment waiting in [`APPROVED`].
#[derive(Debug, Clone)]
struct Decision {
    correlation: String,
    approve: bool,
    /// The API's answer (2xx: the decision is on record).
    status: u16,
}

/// The release manager: decides every deployment that waits for an approval — most are
/// approved, some rejected — until the campaign stops.
#[derive(Clone)]
struct Approver {
    ledger: String,
    http: reqwest::Client,
    decisions: Arc<Mutex<Vec<Decision>>>,
}

impl Approver {
    fn new(ledger: String) -> Self {
        Self {
            ledger,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            decisions: Arc::default(),
        }
    }

    async fn run(self, tap: Tap, seed: u64, stop: CancellationToken) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xa99e);
        let mut decided: HashMap<String, bool> = HashMap::new();
        while !stop.is_cancelled() {
            let events = tap.events();
            let ended: BTreeSet<&str> = events
                .iter()
                .filter(|(_, e)| terminal(e).is_some())
                .map(|(_, e)| e.correlation_id.as_str())
                .collect();
            let waiting: BTreeSet<String> = events
                .iter()
                .filter(|(_, e)| {
                    matches!(&e.event, Event::DeployAwaitingApproval(w) if w.environment == APPROVED)
                        && !ended.contains(e.correlation_id.as_str())
                })
                .map(|(_, e)| e.correlation_id.clone())
                .collect();
            for correlation in waiting {
                // Once decided, the same decision is asked again until the API takes it.
                let approve = *decided
                    .entry(correlation.clone())
                    .or_insert_with(|| rng.random_bool(0.75));
                if conveyor::sync::lock(&self.decisions)
                    .iter()
                    .any(|d| d.correlation == correlation && (200..300).contains(&d.status))
                {
                    continue;
                }
                let id = deployment_id(&correlation, APPROVED);
                let action = if approve { "approve" } else { "reject" };
                let answer = self
                    .http
                    .post(format!("{}/api/deployments/{id}/{action}", self.ledger))
                    .bearer_auth(APPROVER.1)
                    .json(&serde_json::json!({"reason": format!("campaign {action}")}))
                    .send()
                    .await;
                if let Ok(answer) = answer {
                    conveyor::sync::lock(&self.decisions).push(Decision {
                        correlation,
                        approve,
                        status: answer.status().as_u16(),
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(700)) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// The approval invariants of [`APPROVED`]: no AWX job without an approval on record before
/// it, none for a rejected deployment, and each rejection ends its deployment at stage
/// `approval`. A summary of the decisions.
fn check_approvals(
    world: &World,
    decisions: &[Decision],
    events: &[(Instant, Envelope)],
    problems: &mut Vec<String>,
    suspects: &mut Vec<String>,
) -> String {
    let approved_at: HashMap<&str, time::OffsetDateTime> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployApproved(a) if a.environment == APPROVED => {
                Some((e.correlation_id.as_str(), e.time))
            }
            _ => None,
        })
        .collect();
    let rejected: BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployRejected(r) if r.environment == APPROVED => {
                Some(e.correlation_id.as_str())
            }
            _ => None,
        })
        .collect();
    let ours: BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployRequested(r) if r.environment == APPROVED => {
                Some(e.correlation_id.as_str())
            }
            _ => None,
        })
        .collect();
    let mut launched = 0;
    for job in world.awx.jobs() {
        let Some(id) = job
            .extra_vars
            .get("conveyor_deployment_id")
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        if !ours.contains(id) {
            continue;
        }
        launched += 1;
        match approved_at.get(id) {
            Some(at) if *at <= job.created => {}
            other => {
                problems.push(format!(
                    "{APPROVED}: job {} launched for {id} with its approval at {other:?}",
                    job.id
                ));
                suspects.push(id.to_owned());
            }
        }
        if rejected.contains(id) {
            problems.push(format!(
                "{APPROVED}: job {} launched for the rejected {id}",
                job.id
            ));
            suspects.push(id.to_owned());
        }
    }
    for id in &rejected {
        let failed_at_approval = events.iter().any(|(_, e)| {
            e.correlation_id == *id
                && matches!(&e.event, Event::DeployFailed(f) if f.environment == APPROVED && f.stage == Stage::Approval)
        });
        let superseded = events.iter().any(|(_, e)| {
            e.correlation_id == *id
                && matches!(&e.event, Event::DeploySuperseded(s) if s.environment == APPROVED)
        });
        if !failed_at_approval && !superseded {
            problems.push(format!(
                "{APPROVED}: the rejected {id} did not fail at stage approval"
            ));
            suspects.push((*id).to_owned());
        }
    }
    let on_record = |approve: bool| {
        decisions
            .iter()
            .filter(|d| d.approve == approve && (200..300).contains(&d.status))
            .count()
    };
    let refused: BTreeMap<u16, usize> = decisions
        .iter()
        .filter(|d| !(200..300).contains(&d.status))
        .fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.status).or_default() += 1;
            m
        });
    format!(
        "{} requests; {} approved, {} rejected (refused by the API: {refused:?}); {launched} AWX jobs, each after its approval",
        ours.len(),
        on_record(true),
        on_record(false),
    )
}

/// The terminal events of deployments.
fn terminal(e: &Envelope) -> Option<&str> {
    match &e.event {
        Event::DeployCompleted(d) => Some(&d.environment),
        Event::DeployFailed(d) => Some(&d.environment),
        Event::DeploySuperseded(d) => Some(&d.environment),
        _ => None,
    }
}

/// What the fault injector did.
#[derive(Default)]
struct FaultLog {
    by_kind: BTreeMap<&'static str, u32>,
    /// When each fault ended (the process restarted, the broker answered again, …).
    ended: Vec<Instant>,
}

impl FaultLog {
    fn note(&mut self, kind: &'static str) {
        *self.by_kind.entry(kind).or_default() += 1;
        self.ended.push(Instant::now());
    }
}

fn spec(name: &str, env: Vec<(&str, String)>, common: &[(String, String)]) -> Spec {
    let admin = free_port();
    let mut all: Vec<(String, String)> = common.to_vec();
    all.extend(env.into_iter().map(|(k, v)| (k.to_owned(), v)));
    all.push(("CONVEYOR_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}")));
    Spec {
        name: name.to_owned(),
        args: Vec::new(),
        env: all,
        ready: Some(format!("http://127.0.0.1:{admin}/ready")),
    }
}

/// The broker the campaign runs on: one private node, or a cluster of them.
enum Broker {
    Node(BrokerNode),
    Cluster(BrokerCluster),
}

impl Broker {
    async fn start() -> Self {
        match std::env::var("CONVEYOR_CAMPAIGN_CLUSTER")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n > 1 => Broker::Cluster(BrokerCluster::start("conveyor-faults", n).await),
            _ => Broker::Node(BrokerNode::start("conveyor-faults", "").await),
        }
    }

    /// `AMQP_URL`: the node, or every node of the cluster.
    fn url(&self) -> String {
        match self {
            Broker::Node(n) => n.url(),
            Broker::Cluster(c) => c.url(0),
        }
    }

    /// One node's URL for the campaign's own plain connections (the tap, a peek): the `i`th
    /// of the nodes, in turn.
    fn node_url(&self, i: usize) -> String {
        match self {
            Broker::Node(n) => n.url(),
            Broker::Cluster(c) => c.nodes[i % c.nodes.len()].url(),
        }
    }

    fn nodes(&self) -> usize {
        match self {
            Broker::Node(_) => 1,
            Broker::Cluster(c) => c.nodes.len(),
        }
    }

    /// Take the broker (or one of its nodes) away for `down` and bring it back.
    async fn restart(&self, rng: &mut StdRng, down: Duration) -> &'static str {
        match self {
            Broker::Node(n) => {
                n.restart_app(down).await;
                "restart RabbitMQ"
            }
            Broker::Cluster(c) => {
                // Often the node that leads the most queues: the loss that moves the most.
                let leaders = c.leaders().await;
                let i = if rng.random_bool(0.5) {
                    (0..leaders.len()).max_by_key(|i| leaders[*i]).unwrap_or(0)
                } else {
                    rng.random_range(0..c.nodes.len())
                };
                if rng.random_bool(0.5) {
                    c.kill_and_restart(i, down).await;
                    "SIGKILL a RabbitMQ node"
                } else {
                    c.stop(i).await;
                    tokio::time::sleep(down).await;
                    c.start_node(i).await;
                    "stop a RabbitMQ node"
                }
            }
        }
    }

    /// A memory alarm (on one node of a cluster: it blocks publishers everywhere).
    async fn block_publishers(&self, block: bool) {
        match self {
            Broker::Node(n) => n.block_publishers(block).await,
            Broker::Cluster(c) => c.nodes[0].block_publishers(block).await,
        }
    }

    async fn queue_depths(&self) -> Vec<(String, u64)> {
        match self {
            Broker::Node(n) => n.queue_depths().await,
            Broker::Cluster(c) => c.queue_depths().await,
        }
    }
}

/// Inject one fault, chosen at random; returns its kind.
async fn inject(
    rng: &mut StdRng,
    world: &World,
    node: &Broker,
    fleet: &Mutex<Fleet>,
    tap: &Tap,
) -> &'static str {
    let pick = rng.random_range(0..100);
    let down = Duration::from_millis(rng.random_range(0..600));
    let kill_all = |name: &str| {
        let mut f = conveyor::sync::lock(fleet);
        for i in f.named(name) {
            f.kill(i);
        }
    };
    let restart_all = |name: &str| {
        let mut f = conveyor::sync::lock(fleet);
        for i in f.named(name) {
            f.restart(i);
        }
    };
    match pick {
        0..=24 => {
            let i = rng.random_range(0..conveyor::sync::lock(fleet).members.len());
            conveyor::sync::lock(fleet).kill(i);
            tokio::time::sleep(down).await;
            conveyor::sync::lock(fleet).restart(i);
            "SIGKILL a random process"
        }
        25..=31 => {
            // AWX creates the job, then hangs before answering: kill the launchers then.
            let before = world.awx.jobs().len();
            world.awx.inject_on(
                http::Method::POST,
                "/launch/",
                AwxFault::AcceptThenHang(Duration::from_secs(3)),
            );
            let deadline = Instant::now() + Duration::from_secs(8);
            while world.awx.jobs().len() == before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            kill_all("awx-launcher");
            tokio::time::sleep(down).await;
            restart_all("awx-launcher");
            "SIGKILL awx-launcher during a launch POST"
        }
        32..=38 => {
            // Wait for a rollout in progress, then kill the watchers.
            let deadline = Instant::now() + Duration::from_secs(8);
            loop {
                let events = tap.events();
                let ended: BTreeSet<String> = events
                    .iter()
                    .filter(|(_, e)| terminal(e).is_some())
                    .map(|(_, e)| e.correlation_id.clone())
                    .collect();
                let rolling = events.iter().any(|(_, e)| {
                    matches!(e.event, Event::RolloutStarted(_))
                        && !ended.contains(&e.correlation_id)
                });
                if rolling || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            kill_all("rollout-watcher");
            tokio::time::sleep(down).await;
            restart_all("rollout-watcher");
            "SIGKILL rollout-watcher during a rollout"
        }
        39..=44 => {
            // The broker blocks publishers: ingest's publish waits for its confirm; kill it there.
            node.block_publishers(true).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            kill_all("ingest");
            node.block_publishers(false).await;
            tokio::time::sleep(down).await;
            restart_all("ingest");
            "SIGKILL ingest during a blocked publish"
        }
        45..=52 => {
            let down = Duration::from_millis(rng.random_range(200..2000));
            node.restart(rng, down).await
        }
        53..=60 => {
            for _ in 0..rng.random_range(1..4) {
                world.github.inject(None, GitHubFault::ServerError(502));
            }
            "GitHub 5xx"
        }
        61..=66 => {
            world.github.inject(
                None,
                GitHubFault::RateLimited {
                    status: 429,
                    retry_after: Some(1),
                },
            );
            "GitHub 429"
        }
        67..=73 => {
            for _ in 0..rng.random_range(1..4) {
                world.awx.inject(None, AwxFault::Html502);
            }
            "AWX HTML 502"
        }
        74..=78 => {
            world
                .awx
                .inject(None, AwxFault::Slow(Duration::from_secs(3)));
            "AWX slow answer"
        }
        79..=84 => {
            world.kube.drop_watches();
            "Kubernetes watch drop"
        }
        85..=89 => {
            world.kube.expire_history();
            world.kube.drop_watches();
            "Kubernetes 410 Gone"
        }
        90..=93 => {
            world.kube.fail_next("statefulsets", 503);
            "Kubernetes 503"
        }
        _ => {
            // An AWX job ends failed or canceled while it runs.
            let running = world.awx.jobs().into_iter().find(|j| j.status == "running");
            match running {
                Some(job) if rng.random_bool(0.5) => {
                    world
                        .awx
                        .finish_job(job.id, PlaybookResult::failed("injected failure"))
                        .await;
                    "AWX job failed"
                }
                Some(job) => {
                    let canceled = PlaybookResult {
                        status: "canceled".into(),
                        stdout: Vec::new(),
                        explanation: String::new(),
                        failed_task: None,
                    };
                    world.awx.finish_job(job.id, canceled).await;
                    "AWX job canceled"
                }
                None => {
                    // No job to fail right now: fail AWX's next answer instead.
                    world.awx.inject(None, AwxFault::Html502);
                    "AWX HTML 502"
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_run_twice_while_processes_die_the_broker_restarts_and_apis_fail() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pushes_wanted: usize = std::env::var("CONVEYOR_CAMPAIGN_DEPLOYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("CONVEYOR_CAMPAIGN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("campaign: {pushes_wanted} pushes, CONVEYOR_CAMPAIGN_SEED={seed}");
    let started = Instant::now();

    let node = Broker::start().await;
    let url = node.url();
    if node.nodes() > 1 {
        eprintln!("campaign: on a cluster of {} RabbitMQ nodes", node.nodes());
    }
    let namespace = conveyor::testing::unique_namespace("campaign");
    let pipeline = Pipeline::parse(PIPELINE).unwrap();

    // The simulators, in this process: the campaign drives their faults and reads their records.
    let ingest_port = free_port();
    let world = World::build(
        &pipeline,
        &Credentials {
            github_token: GITHUB_TOKEN.into(),
            webhook_secret: HOOK_SECRET.into(),
            awx_token: AWX_TOKEN.into(),
            hook_token: HOOK_TOKEN.into(),
        },
        &Options {
            pod_seconds: 0.15,
            crash_image: None,
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            replicas: 2,
        },
    )
    .await;
    // History expires by age, as etcd compacts it, only much sooner than a real cluster's five
    // minutes: a watch that reconnects after a drop often resumes from a forgotten
    // resourceVersion, so the 410 → relist path runs without being scripted.
    world.kube.set_history_age(Duration::from_millis(400));
    let serve = conveyor_cli::stack::serve;
    let github_url = serve(world.github.router()).await.unwrap();
    let awx_url = serve(world.awx.router()).await.unwrap();
    let kube_url = serve(world.kube.router()).await.unwrap();
    // The guarded environment's application: its health check answers by the images of its
    // Ready pods; bad releases start but serve 500s, crashing ones never become Ready.
    let app_url = serve(world.kube.app_router()).await.unwrap();
    world.kube.app_rule(SERVES_ERRORS, 500);
    world.kube.kubelet_rule(
        CRASHES,
        conveyor_sim::kube::Behavior::CrashLoop {
            every: Duration::from_millis(100),
        },
    );
    let pipeline_text = PIPELINE.replace(
        "# VERIFY",
        &format!(
            "verify = {{ http = {{ url = \"{app_url}/apps/ns-{GUARDED}/app/health\", consecutive = 2, interval_secs = 1, within_secs = 6 }} }}"
        ),
    );
    Pipeline::parse(&pipeline_text).expect("the guarded pipeline is valid");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), &pipeline_text).unwrap();

    // The services, as processes.
    let ledger_dir = tempfile::tempdir().unwrap();
    let tokens = ledger_dir.path().join("operators.toml");
    std::fs::write(
        &tokens,
        OPERATORS
            .iter()
            .map(|(name, token)| (name, token, "operator"))
            .chain(std::iter::once((
                &APPROVER.0,
                &APPROVER.1,
                "release-manager",
            )))
            .map(|(name, token, role)| {
                format!(
                    "[[operator]]\nname = \"{name}\"\nroles = [\"{role}\"]\nsha256 = \"{}\"\n\n",
                    conveyor_ledger::auth::token_hash(token)
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    let ledger_port = free_port();
    let common: Vec<(String, String)> = [
        ("AMQP_URL", url.clone()),
        ("CONVEYOR_EXCHANGE", namespace.clone()),
        ("CONVEYOR_CONFIG", config.path().display().to_string()),
        ("RUST_LOG", "info,lapin=warn".into()),
        ("GITHUB_TOKEN", GITHUB_TOKEN.into()),
        ("GITHUB_WEBHOOK_SECRET", HOOK_SECRET.into()),
        ("AWX_TOKEN", AWX_TOKEN.into()),
        ("REGISTRY_WEBHOOK_TOKEN", HOOK_TOKEN.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    {
        let mut f = conveyor::sync::lock(&fleet);
        f.start(spec(
            "ingest",
            vec![("INGEST_LISTEN", format!("127.0.0.1:{ingest_port}"))],
            &common,
        ));
        for _ in 0..2 {
            f.start(spec(
                "build-trigger",
                vec![("GITHUB_API_URL", github_url.clone())],
                &common,
            ));
            f.start(spec(
                "awx-launcher",
                vec![("AWX_URL", awx_url.clone())],
                &common,
            ));
            f.start(spec(
                "rollout-watcher",
                vec![("CONVEYOR_KUBE_API_URL", kube_url.clone())],
                &common,
            ));
        }
        f.start(spec(
            "notifier",
            vec![("GITHUB_API_URL", github_url.clone())],
            &common,
        ));
        f.start(spec(
            "ledger",
            vec![
                (
                    "LEDGER_DATABASE_URL",
                    format!(
                        "sqlite://{}?mode=rwc",
                        ledger_dir.path().join("ledger.db").display()
                    ),
                ),
                ("LEDGER_LISTEN", format!("127.0.0.1:{ledger_port}")),
                (
                    "CONVEYOR_OPERATOR_TOKENS_FILE",
                    tokens.display().to_string(),
                ),
            ],
            &common,
        ));
    }
    let members = conveyor::sync::lock(&fleet).members.len();
    for i in 0..members {
        let url = conveyor::sync::lock(&fleet).members[i]
            .0
            .ready
            .clone()
            .unwrap();
        processes::ready(&url).await;
    }
    let stop = CancellationToken::new();
    let tap = Tap::default();
    tap.start(
        (0..node.nodes()).map(|i| node.node_url(i)).collect(),
        namespace.clone(),
        stop.clone(),
    )
    .await;
    let bus = conveyor::Bus::connect(
        &url,
        "campaign",
        Topology::conveyor(&namespace),
        Default::default(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    eprintln!(
        "campaign: {members} processes ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Pushes at a steady pace, faults at random moments meanwhile.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fault_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let pushing = async {
        let mut pushes = Vec::new();
        for n in 0..pushes_wanted {
            let push = if rng.random_bool(0.15) {
                Push {
                    repository: "campaign/lib",
                    sha: conveyor_sim::github::fake_sha("campaign/lib", &n.to_string()),
                    environment: "awx-a",
                }
            } else {
                // The guarded environment gets few pushes, so that the operators' bad releases
                // there live long enough to fail rather than being superseded at once.
                let environment = if rng.random_bool(0.1) {
                    GUARDED
                } else {
                    ENVIRONMENTS[rng.random_range(0..ENVIRONMENTS.len() - 1)]
                };
                Push {
                    repository: "campaign/app",
                    sha: conveyor_sim::github::fake_sha("campaign/app", &n.to_string()),
                    environment,
                }
            };
            let branch = if push.repository == "campaign/lib" {
                "main"
            } else {
                push.environment
            };
            world
                .github
                .push_build(push.repository, "build main", branch, false, &push.sha)
                .await
                .expect("the workflow exists");
            pushes.push(push);
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        }
        pushes
    };
    let faults = Mutex::new(FaultLog::default());
    // A fault is never cut short: the injector stops between faults (a fault abandoned halfway
    // once left the broker blocking every publisher, and the soak could not drain).
    let pushed = CancellationToken::new();
    let injecting = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        while !pushed.is_cancelled() {
            let kind = inject(&mut fault_rng, &world, &node, &fleet, &tap).await;
            conveyor::sync::lock(&faults).note(kind);
            let pause = Duration::from_millis(fault_rng.random_range(300..1500));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = pushed.cancelled() => {}
            }
        }
    };
    let operators = Operators::new(format!("http://127.0.0.1:{ledger_port}"));
    // The release manager works through the faults and the drain alike.
    let approver = Approver::new(format!("http://127.0.0.1:{ledger_port}"));
    tokio::spawn(approver.clone().run(tap.clone(), seed, stop.clone()));
    let mut operator_rng = StdRng::seed_from_u64(seed ^ 0x0be7);
    let operating = async {
        let mut n = 0;
        tokio::time::sleep(Duration::from_secs(2)).await;
        while !pushed.is_cancelled() {
            operators.step(&mut operator_rng, n).await;
            n += 1;
            let pause = Duration::from_millis(operator_rng.random_range(700..2500));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = pushed.cancelled() => {}
            }
        }
        // Nothing stays held once the campaign stops pushing.
        operators.resume_all().await;
    };
    let (pushes, (), ()) = tokio::join!(
        async {
            let pushes = pushing.await;
            pushed.cancel();
            pushes
        },
        injecting,
        operating
    );
    let acts = conveyor::sync::lock(&operators.acts).clone();
    let pauses = conveyor::sync::lock(&operators.pauses).clone();
    let faults = faults.into_inner().unwrap();
    let faults_over = Instant::now();
    // Every process is up again (a kill may have raced with the end of the pushes).
    {
        let mut f = conveyor::sync::lock(&fleet);
        for i in 0..f.members.len() {
            if f.members[i].1.is_none() {
                f.restart(i);
            }
        }
    }
    eprintln!(
        "campaign: {} pushes and {} faults in {:.1} s; draining",
        pushes.len(),
        faults.ended.len(),
        faults_over.duration_since(started).as_secs_f64()
    );

    // As an operator would: redeliver the webhooks that got no 2xx (GitHub never does by itself).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut redelivered = 0;
    let mut last_report = Instant::now();
    let (chains, undelivered) = loop {
        if world.github.failed_deliveries() > 0 {
            redelivered += world.github.redeliver_failed().await;
        }
        let events = tap.events();
        let chains = chains_of(&pushes, &events);
        let open = chains
            .iter()
            .filter(|c| c.correlation.is_some() && c.terminals.is_empty())
            .count()
            + operated_open(&acts, &events).len()
            + automatic_rollbacks(&events)
                .iter()
                .filter(|(_, ends)| *ends == 0)
                .count();
        let undelivered = chains.iter().filter(|c| c.correlation.is_none()).count();
        if (open == 0 && undelivered == 0) || Instant::now() > deadline {
            break (chains, undelivered);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let waiting: Vec<String> = chains
                .iter()
                .filter(|c| c.correlation.is_some() && c.terminals.is_empty())
                .take(5)
                .map(|c| format!("{:?}→{}", c.correlation, c.push.environment))
                .collect();
            eprintln!("campaign: {open} chains open ({waiting:?}), {undelivered} undelivered");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled = Instant::now();

    // Queues drain once nothing is happening (delay tiers included).
    // Journals keep their entries by design; the dead queue is checked below.
    let journals: Vec<String> = Topology::conveyor(&namespace)
        .journals
        .into_iter()
        .map(|j| j.name)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let depths = loop {
        let depths: Vec<(String, u64)> = node
            .queue_depths()
            .await
            .into_iter()
            // Approvals, rejections and overrides are latches per deployment: state kept on
            // purpose (until they expire), not messages left behind.
            .filter(|(q, n)| {
                *n > 0
                    && !q.ends_with(".dead")
                    && !journals.contains(q)
                    && ![".latch.approved.", ".latch.rejected.", ".latch.override."]
                        .iter()
                        .any(|l| q.contains(l))
            })
            .collect();
        if depths.is_empty() || Instant::now() > deadline {
            break depths;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("campaign: waiting for queues to drain: {depths:?}");
            for (queue, _) in &depths {
                for (key, attempt, reason) in
                    peek(&node.node_url(0), queue).await.into_iter().take(5)
                {
                    eprintln!("    {queue}: {key} attempt {attempt}: {reason}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained = Instant::now();
    let events = tap.events();

    // --- The checks -----------------------------------------------------------------------
    let mut problems: Vec<String> = Vec::new();
    // Correlation ids whose story is printed when a check fails.
    let mut suspects: Vec<String> = Vec::new();
    let lost: Vec<&Chain> = chains
        .iter()
        .filter(|c| c.correlation.is_some() && c.terminals.is_empty())
        .collect();
    let duplicated: Vec<&Chain> = chains.iter().filter(|c| c.terminals.len() > 1).collect();
    for c in &lost {
        problems.push(format!(
            "lost: {} {} → {} (correlation {:?}) has no terminal event",
            c.push.repository,
            &c.push.sha[..8],
            c.push.environment,
            c.correlation
        ));
    }
    for c in &duplicated {
        problems.push(format!(
            "duplicated: {} {} → {} ended {:?}",
            c.push.repository,
            &c.push.sha[..8],
            c.push.environment,
            c.terminals
        ));
    }
    if undelivered > 0 {
        problems.push(format!(
            "{undelivered} pushes never got a 2xx for their webhook, even redelivered"
        ));
    }

    // Operators' deployments end exactly once too.
    for (act, ends) in operated_ends(&acts, &events) {
        if ends != 1 {
            problems.push(format!(
                "{} of {} by {} ({:?}) ended {ends} times",
                act.kind, act.environment, act.actor, act.correlation
            ));
            suspects.extend(act.correlation.clone());
        }
    }
    check_operators(
        &world,
        &acts,
        &pauses,
        &events,
        &format!("http://127.0.0.1:{ledger_port}"),
        &mut problems,
        &mut suspects,
    )
    .await;

    let safety = check_bad_releases(&events, &mut problems, &mut suspects);
    let decisions = conveyor::sync::lock(&approver.decisions).clone();
    let approvals = check_approvals(&world, &decisions, &events, &mut problems, &mut suspects);

    // No AWX job launched twice for one deployment.
    let mut launches: HashMap<(u64, String), u32> = HashMap::new();
    for job in world.awx.jobs() {
        let id = job
            .extra_vars
            .get("conveyor_deployment_id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        *launches.entry((job.template_id, id)).or_default() += 1;
    }
    let awx_jobs: u32 = launches.values().sum();
    for ((template, id), n) in &launches {
        if *n > 1 {
            problems.push(format!(
                "AWX launched {n} jobs of template {template} for deployment {id}"
            ));
            suspects.push(id.clone());
        }
    }
    // Jobs of one template never overlapped: each was created after the one before finished.
    let mut jobs = world.awx.jobs();
    jobs.sort_by_key(|j| (j.template_id, j.created));
    for w in jobs.windows(2) {
        if w[0].template_id == w[1].template_id && w[0].finished.is_none_or(|f| w[1].created < f) {
            problems.push(format!(
                "AWX job {} was launched while job {} of the same template was active",
                w[1].id, w[0].id
            ));
        }
    }

    // No StatefulSet patched twice for one deployment, nor while rolling out — unless the
    // rollout was a failed deployment's, which a rollback (or a newer release) must be applied
    // over: a crash-looping release never comes to rest by itself.
    let failed_before = |id: &str, environment: &str, at: time::OffsetDateTime| {
        events.iter().any(|(_, e)| {
            e.correlation_id == id
                && e.time <= at
                && matches!(&e.event, Event::DeployFailed(f) if f.environment == environment)
        })
    };
    let mut patched: HashMap<String, u32> = HashMap::new();
    let mut applied: HashMap<String, String> = HashMap::new();
    let mut executor_patches = 0;
    for p in world.kube.patches() {
        if p.field_manager.as_deref() != Some("conveyor") {
            continue;
        }
        executor_patches += 1;
        let id = p.body["metadata"]["annotations"]["conveyor.io/deployment-id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        *patched.entry(id.clone()).or_default() += 1;
        let environment = p.namespace.trim_start_matches("ns-").to_owned();
        let over = applied.insert(p.namespace.clone(), id.clone());
        if !p.at_rest && !over.is_some_and(|o| failed_before(&o, &environment, p.at)) {
            problems.push(format!(
                "{}/{} was patched for {id} while a rollout was in progress",
                p.namespace, p.name
            ));
        }
    }
    for (id, n) in &patched {
        if *n > 1 {
            problems.push(format!("the StatefulSet was patched {n} times for {id}"));
            suspects.push(id.clone());
            for p in world.kube.patches() {
                if p.body["metadata"]["annotations"]["conveyor.io/deployment-id"] == id.as_str() {
                    eprintln!(
                        "patch of {}/{} at rest {}: {}",
                        p.namespace, p.name, p.at_rest, p.body
                    );
                }
            }
        }
    }

    // Newest wins, and stays: each environment fed only by its own branch ends on its newest
    // request — a push's or an operator's — and no stale request (a copy published again, a
    // redelivery to a replica that never saw the newer one) rolled it back afterwards.
    for environment in ["awx-b", "kube-a", "kube-b"] {
        let Some(newest) = events
            .iter()
            .filter_map(|(_, e)| match &e.event {
                Event::DeployRequested(r) if r.environment == environment => Some((
                    conveyor::supersede::request_order(e),
                    e.correlation_id.clone(),
                )),
                _ => None,
            })
            .max()
            .map(|(_, id)| id)
        else {
            continue;
        };
        let last = if environment.starts_with("kube") {
            world
                .kube
                .get_statefulset(&format!("ns-{environment}"), "app")
                .and_then(|s| {
                    s["metadata"]["annotations"]["conveyor.io/deployment-id"]
                        .as_str()
                        .map(str::to_owned)
                })
        } else {
            let ours: BTreeSet<&str> = events
                .iter()
                .filter_map(|(_, e)| match &e.event {
                    Event::DeployRequested(r) if r.environment == environment => {
                        Some(e.correlation_id.as_str())
                    }
                    _ => None,
                })
                .collect();
            world
                .awx
                .jobs()
                .into_iter()
                .filter_map(|j| {
                    let id = j.extra_vars.get("conveyor_deployment_id")?.as_str()?;
                    ours.contains(id).then(|| (j.created, id.to_owned()))
                })
                .max()
                .map(|(_, id)| id)
        };
        // Where deployments need an approval, the newest may have been rejected: then the
        // environment stays on what ran before it, which nothing newer replaced.
        let rejected = environment == APPROVED
            && events.iter().any(|(_, e)| {
                e.correlation_id == newest
                    && matches!(&e.event, Event::DeployFailed(f) if f.stage == Stage::Approval)
            });
        if last.as_deref() != Some(newest.as_str()) && !rejected {
            problems.push(format!(
                "{environment} ended on deployment {last:?}, not on its newest push's {newest}"
            ));
            suspects.push(newest);
            suspects.extend(last);
        }
    }

    // No workflow dispatched twice for one upstream build.
    let dispatches: Vec<_> = world
        .github
        .runs()
        .into_iter()
        .filter(|r| r.event == "workflow_dispatch")
        .collect();
    let mut dispatched_for: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for e in events.iter().map(|(_, e)| e) {
        if let Event::BuildRequested(r) = &e.event
            && let Some(run) = r.run_id
        {
            dispatched_for
                .entry(r.upstream_sha.clone())
                .or_default()
                .insert(run);
        }
    }
    for (sha, runs) in &dispatched_for {
        if runs.len() > 1 {
            problems.push(format!(
                "upstream {} dispatched {} runs: {runs:?}",
                &sha[..8.min(sha.len())],
                runs.len()
            ));
        }
    }
    let unattributed = dispatches
        .iter()
        .filter(|r| !dispatched_for.values().any(|runs| runs.contains(&r.id)))
        .count();
    if unattributed > 0 {
        problems.push(format!(
            "{unattributed} of {} dispatched runs belong to no build.requested",
            dispatches.len()
        ));
    }

    // GitHub was told once per deployment.
    let mut reported: HashMap<(String, String), u32> = HashMap::new();
    for d in world.github.deployments() {
        let id = d.payload["conveyor"]["correlation_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        *reported.entry((id, d.environment.clone())).or_default() += 1;
    }
    for ((id, environment), n) in &reported {
        if *n > 1 {
            problems.push(format!(
                "{n} GitHub deployments for {}",
                deployment_id(id, environment)
            ));
            suspects.push(id.clone());
        }
    }

    // Nothing parked: the campaign injects only transient faults.
    let dead = bus
        .dead_letters(conveyor::bus::DeadLetterAction::Peek)
        .await
        .unwrap();
    for d in &dead {
        problems.push(format!(
            "dead-lettered from {} ({}): {}",
            d.origin_queue, d.routing_key, d.reason
        ));
    }
    if !depths.is_empty() {
        problems.push(format!("queues did not drain: {depths:?}"));
    }

    // Recovery: from each fault's end to the next deployment's end.
    let mut ends: Vec<Instant> = events
        .iter()
        .filter(|(_, e)| terminal(e).is_some())
        .map(|(t, _)| *t)
        .collect();
    ends.sort();
    let max_recovery = faults
        .ended
        .iter()
        .filter_map(|f| ends.iter().find(|t| *t >= f).map(|t| t.duration_since(*f)))
        .max()
        .unwrap_or_default();

    let outcome = |kind: &str| {
        chains
            .iter()
            .filter(|c| c.terminals.len() == 1 && c.terminals[0].0 == kind)
            .count()
    };
    eprintln!("\n=== fault campaign (seed {seed}) ===");
    eprintln!(
        "deployments: {} pushes → {} completed, {} failed, {} superseded, {} coalesced",
        chains.len(),
        outcome("completed"),
        outcome("failed"),
        outcome("superseded"),
        chains.iter().filter(|c| c.coalesced).count()
    );
    eprintln!(
        "executors: {awx_jobs} AWX jobs, {executor_patches} StatefulSet patches, {} dispatches",
        dispatches.len()
    );
    let mut by_kind: BTreeMap<&str, u32> = BTreeMap::new();
    for a in &acts {
        *by_kind.entry(a.kind).or_default() += 1;
    }
    eprintln!(
        "operators: {by_kind:?}, {} forced, {} pauses checked; images by hand or rolled back to: {}",
        acts.iter().filter(|a| a.forced).count(),
        pauses.len(),
        acts.iter().filter(|a| a.image.is_some()).count()
    );
    eprintln!("safe delivery in {GUARDED}: {safety}");
    eprintln!("approvals in {APPROVED}: {approvals}");
    eprintln!(
        "operator actions refused: {:?}",
        conveyor::sync::lock(&operators.refused)
    );
    eprintln!("faults injected: {}", faults.ended.len());
    for (kind, n) in &faults.by_kind {
        eprintln!("  {n:>4}  {kind}");
    }
    eprintln!(
        "Kubernetes watches that resumed from a forgotten resourceVersion (410, relisted): {}",
        world.kube.expired_watches()
    );
    eprintln!(
        "webhooks redelivered: {redelivered}; lost = {}, duplicated = {}, dead-lettered = {}",
        lost.len(),
        duplicated.len(),
        dead.len()
    );
    eprintln!(
        "max recovery {:.1} s; settled {:.1} s and drained {:.1} s after the last fault; total {:.1} s",
        max_recovery.as_secs_f64(),
        settled.duration_since(faults_over).as_secs_f64(),
        drained.duration_since(faults_over).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if !problems.is_empty() {
        // What each lost or duplicated chain went through, for the one reading the failure.
        let lines = conveyor::sync::lock(&fleet).log_lines();
        let stories = lost
            .iter()
            .chain(&duplicated)
            .filter_map(|c| Some((c.correlation.clone()?, c.push.environment)))
            .chain(suspects.iter().map(|id| (id.clone(), "?")));
        for (id, environment) in stories {
            eprintln!("\n--- chain {id} → {environment}");
            for (_, e) in events.iter().filter(|(_, e)| e.correlation_id == id) {
                eprintln!("  {} {} ({})", e.time, e.routing_key(), e.source);
            }
            for (file, line) in lines.iter().filter(|(_, l)| l.contains(id.as_str())) {
                eprintln!("  {file}: {line}");
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        outcome("completed") >= ENVIRONMENTS.len(),
        "the campaign should complete deployments, not only fail them"
    );
    stop.cancel();
    drop(fleet);
}

/// One push's chain as the events tell it.
struct Chain {
    push: Push,
    /// The correlation id of the `build.succeeded` its webhook produced (none: never delivered).
    correlation: Option<String>,
    /// Its terminal events for its environment: (kind, event id), distinct ids.
    terminals: Vec<(&'static str, String)>,
    /// Its dispatch was folded into another chain's (a coalesced `build.requested`).
    coalesced: bool,
}

fn chains_of(pushes: &[Push], events: &[(Instant, Envelope)]) -> Vec<Chain> {
    let mut starts: HashMap<(&str, &str), String> = HashMap::new();
    let mut coalesced_into: HashMap<String, String> = HashMap::new();
    let mut ends: HashMap<String, Vec<(&'static str, String)>> = HashMap::new();
    for (_, e) in events {
        match &e.event {
            Event::BuildSucceeded(run) if run.trigger.as_deref() == Some("push") => {
                starts.insert(
                    (run.repository.as_str(), run.head_sha.as_str()),
                    e.correlation_id.clone(),
                );
            }
            Event::BuildRequested(r) => {
                if let Some(into) = &r.coalesced_into {
                    coalesced_into.insert(e.correlation_id.clone(), into.clone());
                }
            }
            _ => {}
        }
        let kind = match &e.event {
            Event::DeployCompleted(_) => "completed",
            Event::DeployFailed(_) => "failed",
            Event::DeploySuperseded(_) => "superseded",
            _ => continue,
        };
        let environment = terminal(e).unwrap_or_default();
        let list = ends
            .entry(deployment_id(&e.correlation_id, environment))
            .or_default();
        if !list.iter().any(|(_, id)| *id == e.id) {
            list.push((kind, e.id.clone()));
        }
    }
    pushes
        .iter()
        .map(|p| {
            let correlation = starts.get(&(p.repository, p.sha.as_str())).cloned();
            let (terminals, coalesced) = match &correlation {
                None => (Vec::new(), false),
                Some(c) => {
                    let own = ends
                        .get(&deployment_id(c, p.environment))
                        .cloned()
                        .unwrap_or_default();
                    match coalesced_into.get(c) {
                        // Folded into another chain: that chain's end is its end.
                        Some(into) if own.is_empty() => (
                            ends.get(&deployment_id(into, p.environment))
                                .cloned()
                                .unwrap_or_default(),
                            true,
                        ),
                        _ => (own, false),
                    }
                }
            };
            Chain {
                push: p.clone(),
                correlation,
                terminals,
                coalesced,
            }
        })
        .collect()
}

/// The messages waiting in `queue`: routing key, attempt and retry reason (they go back to the
/// queue when the channel closes).
async fn peek(url: &str, queue: &str) -> Vec<(String, String, String)> {
    let Ok(connection) = lapin::Connection::connect(url, Default::default()).await else {
        return Vec::new();
    };
    let Ok(channel) = connection.create_channel().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(Some(m)) = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
        .await
    {
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let get = |k: &str| {
            headers
                .inner()
                .get(k)
                .map(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        out.push((
            get(conveyor::bus::HEADER_ROUTING_KEY),
            get(conveyor::bus::HEADER_ATTEMPT),
            get(conveyor::bus::HEADER_RETRY_REASON),
        ));
    }
    let _ = connection.close(0, "peeked".into()).await;
    out
}

/// Each operator's deployment request and how many terminal events its deployment has.
fn operated_ends<'a>(acts: &'a [Act], events: &[(Instant, Envelope)]) -> Vec<(&'a Act, usize)> {
    acts.iter()
        .filter_map(|a| {
            let id = a.correlation.as_deref()?;
            let ends: BTreeSet<&str> = events
                .iter()
                .filter(|(_, e)| e.correlation_id == id && terminal(e) == Some(a.environment))
                .map(|(_, e)| e.id.as_str())
                .collect();
            Some((a, ends.len()))
        })
        .collect()
}

/// The operators' deployments that have not ended yet.
fn operated_open<'a>(acts: &'a [Act], events: &[(Instant, Envelope)]) -> Vec<&'a Act> {
    operated_ends(acts, events)
        .into_iter()
        .filter(|(_, n)| *n == 0)
        .map(|(a, _)| a)
        .collect()
}

/// The operators' invariants: nothing launched or patched while paused (unless forced), only
/// the newest held request of a pause runs after it, a rollback deploys exactly the image of
/// the deployment it returns to, and the ledger recorded every action once.
async fn check_operators(
    world: &World,
    acts: &[Act],
    pauses: &[Paused],
    events: &[(Instant, Envelope)],
    ledger: &str,
    problems: &mut Vec<String>,
    suspects: &mut Vec<String>,
) {
    let forced: BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployRequested(r) if r.operation.forced => Some(e.correlation_id.as_str()),
            _ => None,
        })
        .collect();
    let requested: HashMap<&str, &conveyor::events::DeployRequested> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployRequested(r) => Some((e.correlation_id.as_str(), r)),
            _ => None,
        })
        .collect();
    // What each executor applied, when, for which deployment: (environment, at, deployment).
    let mut applied: Vec<(String, time::OffsetDateTime, String, String)> = Vec::new();
    for job in world.awx.jobs() {
        let Some(id) = job
            .extra_vars
            .get("conveyor_deployment_id")
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        let environment = requested
            .get(id)
            .map(|r| r.environment.clone())
            .unwrap_or_default();
        let tag = job
            .extra_vars
            .get("image_tag")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        applied.push((
            environment,
            job.created,
            id.to_owned(),
            format!("campaign/app:{tag}"),
        ));
    }
    for p in world.kube.patches() {
        if p.field_manager.as_deref() != Some("conveyor") {
            continue;
        }
        let id = p.body["metadata"]["annotations"]["conveyor.io/deployment-id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let image = p.body["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "restart".into());
        let environment = p.namespace.trim_start_matches("ns-").to_owned();
        applied.push((environment, p.at, id, image));
    }
    // 1. Nothing applied while paused, past the grace for decisions taken just before.
    for pause in pauses {
        for (environment, at, id, _) in &applied {
            if environment == pause.environment
                && *at > pause.from + PAUSE_GRACE
                && *at < pause.until
                && !forced.contains(id.as_str())
            {
                problems.push(format!(
                    "{environment}: deployment {id} was applied at {at} while paused ({} to {})",
                    pause.from, pause.until
                ));
                suspects.push(id.clone());
            }
        }
        // 2. Of the requests it held, at most one runs — the newest.
        let held: Vec<&str> = events
            .iter()
            .filter_map(|(_, e)| match &e.event {
                Event::DeployHeld(h)
                    if h.environment == pause.environment
                        && e.time >= pause.from
                        && e.time <= pause.until =>
                {
                    Some(e.correlation_id.as_str())
                }
                _ => None,
            })
            .collect();
        let newest = events
            .iter()
            .filter(|(_, e)| held.contains(&e.correlation_id.as_str()))
            .filter(|(_, e)| matches!(e.event, Event::DeployRequested(_)))
            .map(|(_, e)| {
                (
                    conveyor::supersede::request_order(e),
                    e.correlation_id.as_str(),
                )
            })
            .max()
            .map(|(_, id)| id);
        for id in &held {
            let launched = events.iter().any(|(_, e)| {
                e.correlation_id == *id
                    && matches!(&e.event, Event::DeployLaunched(l) if l.environment == pause.environment)
            });
            if launched && Some(*id) != newest {
                problems.push(format!(
                    "{}: held request {id} ran after the resume, but {newest:?} was newer",
                    pause.environment
                ));
                suspects.push((*id).to_owned());
            }
        }
    }
    // 3. A rollback deploys exactly the image its target completed with.
    for act in acts.iter().filter(|a| a.kind == "rollback") {
        let Some(id) = act.correlation.as_deref() else {
            continue;
        };
        let Some(request) = requested.get(id) else {
            problems.push(format!("rollback {id} was answered but never published"));
            continue;
        };
        let target = request
            .operation
            .source_deployment
            .clone()
            .unwrap_or_default();
        let completed_with = events.iter().find_map(|(_, e)| match &e.event {
            Event::DeployCompleted(c)
                if deployment_id(&e.correlation_id, &c.environment) == target
                    && e.time < act.sent =>
            {
                Some(c.image.reference())
            }
            _ => None,
        });
        if completed_with.as_deref() != Some(request.image.reference().as_str()) {
            problems.push(format!(
                "rollback {id} of {} requested {} but its target {target} completed with {completed_with:?} before it",
                act.environment,
                request.image.reference()
            ));
            suspects.push(id.to_owned());
        }
        for (_, _, applied_id, image) in applied.iter().filter(|a| a.2 == id) {
            let wanted = request.image.reference();
            if *image != wanted && image != "restart" {
                problems.push(format!(
                    "rollback {applied_id} applied {image}, not {wanted}"
                ));
            }
        }
    }
    // 4. The ledger has every action once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let list: Vec<serde_json::Value> =
            match reqwest::get(format!("{ledger}/api/actions?limit=500")).await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
        let missing = acts.iter().filter(|a| !recorded_once(a, &list)).count();
        if missing == 0 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ids: Vec<&str> = recorded.iter().filter_map(|a| a["id"].as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    if distinct.len() != ids.len() {
        problems.push(format!("the ledger recorded an action twice: {ids:?}"));
    }
    for act in acts {
        if !recorded_once(act, &recorded) {
            problems.push(format!(
                "the ledger does not have {} of {} by {} exactly once",
                act.kind, act.environment, act.actor
            ));
        }
    }
}

/// Whether the ledger's action list has `act` exactly once (by its event, or the deployment it
/// requested), by the right operator.
fn recorded_once(act: &Act, list: &[serde_json::Value]) -> bool {
    let wanted = match (&act.event, &act.correlation) {
        (Some(event), _) => list.iter().filter(|a| a["id"] == event.as_str()).count(),
        (None, Some(c)) => {
            let deployment = deployment_id(c, act.environment);
            // The deployment's own request: an approval of it is an action on it too.
            list.iter()
                .filter(|a| a["deployment"] == deployment.as_str() && a["action"] == act.kind)
                .count()
        }
        (None, None) => return true,
    };
    wanted == 1
        && list
            .iter()
            .any(|a| a["actor"]["name"] == act.actor && a["environment"] == act.environment)
}

/// Each automatic rollback (requested by Conveyor after a failure) and how many distinct
/// terminal events its deployment has.
fn automatic_rollbacks(events: &[(Instant, Envelope)]) -> Vec<(&Envelope, usize)> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|(_, e)| {
            matches!(&e.event, Event::DeployRequested(r)
                if r.operation.trigger == Trigger::Rollback
                    && r.operation.actor.as_ref().is_some_and(|a| a.name == "conveyor"))
        })
        .filter(|(_, e)| seen.insert(e.id.clone()))
        .map(|(_, request)| {
            let ends: BTreeSet<&str> = events
                .iter()
                .filter(|(_, e)| {
                    e.correlation_id == request.correlation_id && terminal(e) == Some(GUARDED)
                })
                .map(|(_, e)| e.id.as_str())
                .collect();
            (request, ends.len())
        })
        .collect()
}

/// The safe-delivery invariants of the guarded environment; a summary of what happened there.
fn check_bad_releases(
    events: &[(Instant, Envelope)],
    problems: &mut Vec<String>,
    suspects: &mut Vec<String>,
) -> String {
    let bad = |tag: Option<&str>| {
        tag.is_some_and(|t| t.starts_with(&SERVES_ERRORS[1..]) || t.starts_with(&CRASHES[1..]))
    };
    // 1. A bad release never completes: the verification or the rollout stops it.
    let mut completions = BTreeSet::new();
    for (_, e) in events {
        if let Event::DeployCompleted(c) = &e.event
            && c.environment == GUARDED
            && bad(c.image.tag.as_deref())
            && completions.insert(e.id.clone())
        {
            problems.push(format!(
                "{GUARDED} completed the bad release {} ({})",
                c.image.reference(),
                e.correlation_id
            ));
            suspects.push(e.correlation_id.clone());
        }
    }
    let requests: HashMap<&str, &conveyor::events::DeployRequested> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::DeployRequested(r) if r.environment == GUARDED => {
                Some((e.correlation_id.as_str(), r))
            }
            _ => None,
        })
        .collect();
    let rollbacks = automatic_rollbacks(events);
    // 2. Each failed rollout or verification is rolled back at most once — exactly once when
    // something had completed before it — and a failed rollback never is.
    let mut failures: BTreeMap<String, (&Envelope, Stage)> = BTreeMap::new();
    for (_, e) in events {
        if let Event::DeployFailed(f) = &e.event
            && f.environment == GUARDED
            && matches!(f.stage, Stage::Rollout | Stage::Verify)
        {
            failures
                .entry(deployment_id(&e.correlation_id, GUARDED))
                .or_insert((e, f.stage));
        }
    }
    let (mut verify_failures, mut rollout_failures) = (0, 0);
    for (id, (failed, stage)) in &failures {
        match stage {
            Stage::Verify => verify_failures += 1,
            _ => rollout_failures += 1,
        }
        let replacing: Vec<&&Envelope> = rollbacks
            .iter()
            .map(|(r, _)| r)
            .filter(|r| {
                matches!(&r.event, Event::DeployRequested(q) if q.operation.replaces.as_deref() == Some(id.as_str()))
            })
            .collect();
        let was_rollback = requests
            .get(failed.correlation_id.as_str())
            .is_some_and(|r| r.operation.trigger == Trigger::Rollback);
        let completed_before = events.iter().any(|(_, e)| {
            matches!(&e.event, Event::DeployCompleted(c) if c.environment == GUARDED)
                && e.correlation_id != failed.correlation_id
                && e.time <= failed.time
        });
        let expected = usize::from(!was_rollback && completed_before);
        if replacing.len() != expected {
            problems.push(format!(
                "{id} failed at {stage} (a rollback: {was_rollback}, something completed before: {completed_before}) and was rolled back {} times",
                replacing.len()
            ));
            suspects.push(failed.correlation_id.clone());
        }
    }
    // 3. Every automatic rollback ends exactly once.
    for (request, ends) in &rollbacks {
        if *ends != 1 {
            problems.push(format!(
                "the automatic rollback {} ended {ends} times",
                request.correlation_id
            ));
            suspects.push(request.correlation_id.clone());
        }
    }
    let bad_requested = requests
        .values()
        .filter(|r| bad(r.image.tag.as_deref()))
        .count();
    let unstuck = events
        .iter()
        .filter(|(_, e)| e.routing_key() == format!("rollout.unstuck.{GUARDED}"))
        .map(|(_, e)| e.id.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    format!(
        "{bad_requested} bad releases requested; {verify_failures} failed verification, {rollout_failures} failed rollouts; {} automatic rollbacks; {unstuck} stuck pods deleted",
        rollbacks.len()
    )
}
