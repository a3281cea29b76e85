//! ingest through its real HTTP endpoint against the real broker: the payloads kept in
//! `tests/payloads/` (written here, in GitHub's and the registries' documented shapes), GitHub's
//! community corpus of example webhooks (`@octokit/webhooks-examples`, which `scripts/test`
//! installs into `testdata/`), signed captures, and every kind of bad input (asserting that
//! nothing was published).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use conveyor::config::Secret;
use conveyor::events::{Envelope, Event, RefKind};
use conveyor::{Bus, Topology, testing};
use conveyor_ingest::{Settings, router, signature::sign_github};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "test-webhook-secret";
const TOKEN: &str = "registry-token-123";
/// The secret the captured deliveries in `tests/payloads/github/*.delivery.json` were signed
/// with (made up for them; no real hook uses it).
const CAPTURE_SECRET: &str = "conveyor-capture-secret-2026";

fn payloads() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/payloads")
}

fn payload(path: &str) -> Vec<u8> {
    std::fs::read(payloads().join(path)).unwrap_or_else(|e| panic!("payload {path}: {e}"))
}

/// GitHub's example webhooks, one `index.json` per GitHub flavour (github.com and each GHES
/// release), from the npm package `scripts/test` installs.
fn octokit_examples() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/node_modules/@octokit/webhooks-examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run scripts/test, or scripts/ensure-testdata, which installs it",
                root.display()
            )
        })
        .filter_map(|entry| Some(entry.ok()?.path().join("index.json")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

struct Harness {
    url: String,
    bus: Bus,
    /// What `/metrics` would serve: ingest's request metrics.
    registry: prometheus_client::registry::Registry,
    observer: tokio::sync::Mutex<testing::Observer>,
    client: reqwest::Client,
}

impl Harness {
    async fn start(label: &str, tweak: impl FnOnce(&mut Settings)) -> Self {
        let bus = testing::connect(
            &format!("ingest-test-{label}"),
            Topology::conveyor(testing::unique_namespace(label)),
        )
        .await
        .unwrap();
        let mut settings = Settings {
            github_secrets: vec![Secret::new(SECRET), Secret::new(CAPTURE_SECRET)],
            webhook_token: Some(Secret::new(TOKEN)),
            ..Settings::default()
        };
        tweak(&mut settings);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = conveyor_ingest::metrics::register_metrics(&mut registry);
        let app = conveyor_ingest::metrics::instrument(router(bus.clone(), settings), metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let observer = tokio::sync::Mutex::new(testing::Observer::new(&bus).await.unwrap());
        Self {
            url,
            bus,
            registry,
            observer,
            client: reqwest::Client::new(),
        }
    }

    /// Everything published since the last call.
    async fn published(&self) -> Vec<Envelope> {
        let mut observer = self.observer.lock().await;
        let before = observer.seen.len();
        observer.drain().await;
        observer.seen[before..].to_vec()
    }

    async fn github(&self, event: &str, delivery: &str, body: &[u8]) -> (StatusCode, Value) {
        let sig = sign_github(SECRET, body);
        self.post(
            "/webhooks/github",
            body.to_vec(),
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &sig),
                ("content-type", "application/json"),
            ],
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn finish(self) {
        self.bus.delete_topology().await.unwrap();
    }
}

fn uuid() -> String {
    uuid_like(&format!("{:?}", std::time::SystemTime::now()))
}

fn uuid_like(seed: &str) -> String {
    conveyor::events::derive_id(seed)
}

/// What each GitHub payload must produce.
enum Expect {
    Ignored,
    One(fn(&Envelope)),
}

const STACK_PUSH_SHA: &str = "4c4a97c1d2e3f405162738495a6b7c8d9e0f1a2b";
const GHCR_DIGEST: &str = "sha256:7915fd433981348325199f71a39e01ad0297a5120f5b380ed4fd2261a7d83031";

fn scm_push(e: &Envelope) -> &conveyor::events::ScmPush {
    assert_eq!(e.routing_key(), "scm.push");
    match &e.event {
        Event::ScmPush(p) => p,
        other => panic!("not a push: {other:?}"),
    }
}

fn build_run(e: &Envelope, key: &str) -> conveyor::events::BuildRun {
    assert_eq!(e.routing_key(), key);
    match &e.event {
        Event::BuildStarted(b) | Event::BuildSucceeded(b) | Event::BuildFailed(b) => b.clone(),
        other => panic!("not a build: {other:?}"),
    }
}

fn github_expectations(file: &str) -> Option<(&'static str, Expect)> {
    use Expect::*;
    Some(match file {
        "push.branch.json" => (
            "push",
            One(|e| {
                let p = scm_push(e);
                assert_eq!(p.repository, "xchem/fragalysis-stack");
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str()),
                    (RefKind::Branch, "master")
                );
                assert_eq!(p.after, STACK_PUSH_SHA);
                assert!(!p.deleted && !p.created);
                assert_eq!(p.commit_count, 2);
                let head = p.head_commit.as_ref().unwrap();
                assert_eq!(head.sha, STACK_PUSH_SHA);
                assert!(head.timestamp.is_some());
                assert_eq!(head.message.as_deref(), Some("Raise the gunicorn timeout"));
                assert_eq!(p.pusher.as_deref(), Some("alanbchristie"));
            }),
        ),
        "push.branch-create.json" => (
            "push",
            One(|e| {
                let p = scm_push(e);
                assert!(p.created && p.after.starts_with("7a9b3c2d"));
                assert_eq!(p.before, "0".repeat(40));
            }),
        ),
        "push.branch-delete.json" => (
            "push",
            One(|e| {
                let p = scm_push(e);
                assert!(p.deleted && p.head_commit.is_none());
                assert_eq!(p.git_ref.name, "staging-hotfix");
            }),
        ),
        "push.tag.json" => (
            "push",
            One(|e| {
                let p = scm_push(e);
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str()),
                    (RefKind::Tag, "1.0.3")
                );
                assert_eq!(p.repository, "xchem/fragalysis-stack");
            }),
        ),
        "push.tag-delete.json" => (
            "push",
            One(|e| {
                let p = scm_push(e);
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str(), p.deleted),
                    (RefKind::Tag, "1.0.2-rc1", true)
                );
            }),
        ),
        "workflow_run.completed.success.json" => (
            "workflow_run",
            One(|e| {
                let b = build_run(e, "build.succeeded");
                assert_eq!(
                    (b.run_id, b.repository.as_str(), b.head_branch.as_deref()),
                    (12034567890, "xchem/fragalysis-stack", Some("master"))
                );
                assert_eq!(b.head_sha, STACK_PUSH_SHA);
                assert_eq!(b.conclusion.map(|c| c.as_str()), Some("success"));
                assert_eq!(b.workflow_name, "build main");
                assert_eq!(
                    b.workflow_path.as_deref(),
                    Some(".github/workflows/build-main.yaml")
                );
                assert_eq!((b.run_number, b.run_attempt), (Some(412), Some(1)));
                assert_eq!(b.head_repository, None, "not a fork");
                assert!(b.created_at.unwrap() < b.updated_at.unwrap());
            }),
        ),
        "workflow_run.completed.success.pull_request.json" => (
            "workflow_run",
            One(|e| {
                let b = build_run(e, "build.succeeded");
                assert_eq!(
                    (b.run_id, b.trigger.as_deref(), b.workflow_name.as_str()),
                    (12034999001, Some("pull_request"), "build pull request")
                );
                assert_eq!(
                    b.head_repository.as_deref(),
                    Some("someone/fragalysis-frontend")
                );
            }),
        ),
        "workflow_run.completed.failure.json" => (
            "workflow_run",
            One(|e| {
                let b = build_run(e, "build.failed");
                assert_eq!(
                    (
                        b.run_id,
                        b.conclusion.map(|c| c.as_str()),
                        b.workflow_name.as_str()
                    ),
                    (12035000777, Some("failure"), "build main")
                );
                assert_eq!(b.repository, "xchem/fragalysis-frontend");
            }),
        ),
        "workflow_run.requested.json" => (
            "workflow_run",
            One(|e| {
                let b = build_run(e, "build.started");
                assert_eq!(b.status.as_str(), "queued");
                assert_eq!(b.conclusion, None);
            }),
        ),
        "workflow_run.in_progress.json" => (
            "workflow_run",
            One(|e| {
                let b = build_run(e, "build.started");
                assert_eq!(
                    (b.run_id, b.head_branch.as_deref(), b.status.as_str()),
                    (12036111222, Some("1.0.3"), "in_progress")
                );
            }),
        ),
        "registry_package.published.json" => {
            ("registry_package", One(|e| ghcr_image(e, Some("1.0.3"))))
        }
        "package.published.docker.json" => ("package", One(|e| ghcr_image(e, Some("latest")))),
        "package.published.npm.json" => ("package", Ignored),
        _ => return None,
    })
}

fn ghcr_image(e: &Envelope, tag: Option<&str>) {
    assert_eq!(e.routing_key(), "image.pushed");
    let Event::ImagePushed(i) = &e.event else {
        panic!()
    };
    assert_eq!(i.registry, "ghcr");
    assert_eq!(i.image.repository, "ghcr.io/xchem/fragalysis-stack");
    assert_eq!(i.image.digest.as_deref(), Some(GHCR_DIGEST));
    assert_eq!(i.image.tag.as_deref(), tag);
    assert_eq!(
        i.source_repository.as_deref(),
        Some("xchem/fragalysis-stack")
    );
    assert_eq!(i.pusher.as_deref(), Some("alanbchristie"));
}

#[tokio::test]
async fn every_github_payload_gives_its_event_or_the_documented_answer() {
    let h = Harness::start("gh-payloads", |_| {}).await;
    let mut seen = 0;
    for entry in std::fs::read_dir(payloads().join("github")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !file.ends_with(".json") || file.ends_with(".delivery.json") {
            continue;
        }
        let (event, expect) = github_expectations(&file)
            .unwrap_or_else(|| panic!("no expectation for payload {file}"));
        let body = std::fs::read(&path).unwrap();
        let (status, reply) = h.github(event, &uuid_like(&file), &body).await;
        let published = h.published().await;
        match expect {
            Expect::Ignored => {
                assert_eq!(status, StatusCode::ACCEPTED, "{file}: {reply}");
                assert_eq!(reply["status"], "ignored", "{file}");
                assert!(
                    reply["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "{file}"
                );
                assert!(published.is_empty(), "{file}");
            }
            Expect::One(check) => {
                assert_eq!(status, StatusCode::OK, "{file}: {reply}");
                assert_eq!(published.len(), 1, "{file}");
                assert_eq!(reply["events"][0]["id"], published[0].id.as_str(), "{file}");
                assert_eq!(published[0].source, "conveyor/ingest");
                check(&published[0]);
            }
        }
        seen += 1;
    }
    assert_eq!(
        seen, 13,
        "every payload in tests/payloads/github was posted"
    );
    h.finish().await;
}

/// What the corpus example `payload` of `event` must have produced: `Err` says why not.
fn matches_example(event: &str, payload: &Value, published: &[Envelope]) -> Result<(), String> {
    let repository = payload["repository"]["full_name"].as_str();
    match event {
        "push" => {
            let [e] = published else {
                return Err(format!("{} events for one push", published.len()));
            };
            let Event::ScmPush(p) = &e.event else {
                return Err(format!("published {}", e.routing_key()));
            };
            if Some(p.repository.as_str()) != repository
                || p.after != payload["after"]
                || p.before != payload["before"]
                || Some(p.git_ref.full().as_str()) != payload["ref"].as_str()
            {
                return Err(format!("published {p:?}"));
            }
        }
        "workflow_run" => {
            let [e] = published else {
                return Err(format!("{} events for one run", published.len()));
            };
            let run = &payload["workflow_run"];
            let key = match (payload["action"].as_str(), run["conclusion"].as_str()) {
                (Some("completed"), Some("success")) => "build.succeeded",
                (Some("completed"), Some(_)) => "build.failed",
                (Some("completed"), None) => return Err("a run without a conclusion ended".into()),
                _ => "build.started",
            };
            let (Event::BuildStarted(b) | Event::BuildSucceeded(b) | Event::BuildFailed(b)) =
                &e.event
            else {
                return Err(format!("published {}", e.routing_key()));
            };
            if e.routing_key() != key
                || Some(b.repository.as_str()) != repository
                || b.head_sha != run["head_sha"]
                || b.head_branch.as_deref() != run["head_branch"].as_str()
                || run["id"].as_u64() != Some(b.run_id)
            {
                return Err(format!("published {} {b:?}", e.routing_key()));
            }
        }
        "package" | "registry_package" => {
            for e in published {
                let Event::ImagePushed(i) = &e.event else {
                    return Err(format!("published {}", e.routing_key()));
                };
                if i.source_repository.as_deref() != repository {
                    return Err(format!("published {i:?}"));
                }
            }
        }
        _ if !published.is_empty() => {
            return Err(format!("{} events for a {event} delivery", published.len()));
        }
        _ => {}
    }
    Ok(())
}

/// GitHub's whole community corpus: every event and action of every GitHub flavour is answered
/// — 200 with its events, or 202 ignored with a reason — and never with a 5xx or a 4xx, and
/// what is published is exactly the payload's repository, commit and ref.
#[tokio::test]
async fn every_example_in_githubs_webhook_corpus_is_answered_and_published_faithfully() {
    let h = Harness::start("octokit", |_| {}).await;
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    let mut examples = 0;
    for index in octokit_examples() {
        let flavour = index
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let groups: Vec<Value> = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
        for group in &groups {
            let event = group["name"].as_str().unwrap();
            for (n, example) in group["examples"].as_array().unwrap().iter().enumerate() {
                examples += 1;
                let body = serde_json::to_vec(example).unwrap();
                let delivery = uuid_like(&format!("{flavour}/{event}/{n}"));
                let (status, reply) = h.github(event, &delivery, &body).await;
                let published = h.published().await;
                let what = format!("{flavour} {event}[{n}] ({:?})", example["action"]);
                let verdict = match status {
                    StatusCode::OK if event == "ping" => {
                        if reply["status"] == "pong" && published.is_empty() {
                            Ok("pong")
                        } else {
                            Err(format!("ping answered {reply}"))
                        }
                    }
                    StatusCode::OK => matches_example(event, example, &published).and_then(|()| {
                        let ids: Vec<&str> = reply["events"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|e| e["id"].as_str()).collect())
                            .unwrap_or_default();
                        let want: Vec<&str> = published.iter().map(|e| e.id.as_str()).collect();
                        (ids == want && !ids.is_empty())
                            .then_some("published")
                            .ok_or_else(|| format!("answered {reply}, published {want:?}"))
                    }),
                    StatusCode::ACCEPTED => {
                        if reply["status"] == "ignored"
                            && reply["reason"].as_str().is_some_and(|r| !r.is_empty())
                            && published.is_empty()
                        {
                            Ok("ignored")
                        } else {
                            Err(format!("202 with {reply} and {} events", published.len()))
                        }
                    }
                    other => Err(format!("{other}: {reply}")),
                };
                match verdict {
                    Ok(kind) => *answered.entry(format!("{event}: {kind}")).or_default() += 1,
                    Err(why) => failures.push(format!("{what}: {why}")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {examples} examples:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The corpus has every event GitHub sends; a package update that shrank it would hide gaps.
    assert!(examples > 700, "only {examples} examples in the corpus");
    for kind in [
        "push: published",
        "workflow_run: published",
        "ping: pong",
        "package: published",
        "issues: ignored",
    ] {
        assert!(
            answered.contains_key(kind),
            "no example was {kind}: {answered:?}"
        );
    }
    eprintln!("{examples} corpus examples: {answered:?}");
    h.finish().await;
}

/// (repository, tag, digest) of one expected `image.pushed`.
type Pushed = (&'static str, Option<&'static str>, Option<&'static str>);

const HARBOR_DIGEST: &str =
    "sha256:7db733f01a777f6853f17bb4c315134c156c48da45ab047b35f48523745fcd03";
const DISTRIBUTION_DIGEST: &str =
    "sha256:5d446d71c772e304f646f171bdaed21649a72f7b95d83436bc8bd87d438d1094";

#[tokio::test]
async fn every_registry_payload_gives_image_pushes_or_is_ignored() {
    let h = Harness::start("registry-payloads", |_| {}).await;
    // (file, kind, expected (repository, tag, digest) per published event)
    let table: &[(&str, &str, &[Pushed])] = &[
        (
            "dockerhub.push.json",
            "dockerhub",
            &[("xchem/fragalysis-stack", Some("latest"), None)],
        ),
        (
            "dockerhub.push.legacy-images.json",
            "dockerhub",
            &[("xchem/fragalysis-stack", Some("latest"), None)],
        ),
        ("dockerhub.callback.success.json", "dockerhub", &[]),
        (
            "quay.repo_push.json",
            "quay",
            &[
                ("quay.io/xchem/fragalysis-stack", Some("latest"), None),
                ("quay.io/xchem/fragalysis-stack", Some("1.0.3"), None),
            ],
        ),
        ("quay.build_queued.json", "quay", &[]),
        ("quay.build_start.json", "quay", &[]),
        ("quay.build_success.json", "quay", &[]),
        ("quay.build_failure.json", "quay", &[]),
        ("quay.build_cancelled.json", "quay", &[]),
        ("quay.vulnerability_found.json", "quay", &[]),
        (
            "harbor.push_artifact.json",
            "harbor",
            &[(
                "harbor.xchem.example/fragalysis/stack",
                None,
                Some(HARBOR_DIGEST),
            )],
        ),
        (
            "harbor.push_artifact.cloudevents.json",
            "harbor",
            &[(
                "harbor.xchem.example/fragalysis/stack",
                None,
                Some(HARBOR_DIGEST),
            )],
        ),
        (
            "harbor.push_artifact.tagged.json",
            "harbor",
            &[(
                "harbor.xchem.example/fragalysis/stack",
                Some("1.0.3"),
                Some(HARBOR_DIGEST),
            )],
        ),
        ("harbor.pull_artifact.json", "harbor", &[]),
        ("harbor.delete_artifact.json", "harbor", &[]),
        ("harbor.delete_artifact.cloudevents.json", "harbor", &[]),
        ("harbor.scanning_completed.json", "harbor", &[]),
        ("harbor.scanning_completed.cloudevents.json", "harbor", &[]),
        (
            "distribution.events.push.json",
            "distribution",
            // The layer blob pushed beside the manifest is no image.
            &[(
                "registry.xchem.example/xchem/fragalysis-stack",
                Some("1.0.3"),
                Some(DISTRIBUTION_DIGEST),
            )],
        ),
        ("distribution.events.pull.json", "distribution", &[]),
    ];
    for (file, kind, expected) in table {
        let body = payload(&format!("registry/{file}"));
        let ct = if *kind == "distribution" {
            "application/vnd.docker.distribution.events.v2+json"
        } else {
            "application/json"
        };
        let (status, reply) = h
            .post(
                &format!("/webhooks/registry/{kind}"),
                body,
                &[("content-type", ct), ("x-conveyor-token", TOKEN)],
            )
            .await;
        let published = h.published().await;
        if expected.is_empty() {
            // dockerhub.callback.success.json is not a push notification at all: wrong shape.
            if *file == "dockerhub.callback.success.json" {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{file}: {reply}");
            } else {
                assert_eq!(
                    (status, reply["status"].as_str()),
                    (StatusCode::ACCEPTED, Some("ignored")),
                    "{file}: {reply}"
                );
            }
            assert!(published.is_empty(), "{file}");
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{file}: {reply}");
        let got: Vec<(String, Option<String>, Option<String>)> = published
            .iter()
            .map(|e| {
                assert_eq!(e.routing_key(), "image.pushed");
                let Event::ImagePushed(i) = &e.event else {
                    panic!()
                };
                assert_eq!(i.registry, *kind);
                (
                    i.image.repository.clone(),
                    i.image.tag.clone(),
                    i.image.digest.clone(),
                )
            })
            .collect();
        let want: Vec<(String, Option<String>, Option<String>)> = expected
            .iter()
            .map(|(r, t, d)| ((*r).into(), t.map(Into::into), d.map(Into::into)))
            .collect();
        assert_eq!(got, want, "{file}");
    }
    // Every payload in the folder is covered.
    for entry in std::fs::read_dir(payloads().join("registry")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            table.iter().any(|(f, ..)| *f == file),
            "payload {file} is not in the table"
        );
    }
    // Azure's registry is not a supported kind.
    let (status, _) = h
        .post(
            "/webhooks/registry/acr",
            b"{}".to_vec(),
            &[
                ("content-type", "application/json"),
                ("x-conveyor-token", TOKEN),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.finish().await;
}

#[tokio::test]
async fn captured_deliveries_verify_and_one_flipped_byte_does_not() {
    let h = Harness::start("captures", |_| {}).await;
    for (file, expected) in [
        (
            "workflow_run.in_progress.delivery.json",
            Some("build.started"),
        ),
        ("check_suite.completed.delivery.json", None),
    ] {
        let capture: Value = serde_json::from_slice(&payload(&format!("github/{file}"))).unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(capture["body_raw_base64"].as_str().unwrap())
            .unwrap();
        let hdr = |k: &str| capture["headers"][k].as_str().unwrap().to_owned();
        let headers = [
            ("x-github-event", hdr("x-github-event")),
            ("x-github-delivery", hdr("x-github-delivery")),
            ("x-hub-signature-256", hdr("x-hub-signature-256")),
            ("content-type", hdr("content-type")),
        ];
        let as_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let mut flipped = body.clone();
        flipped[100] ^= 0x01;
        let (status, _) = h.post("/webhooks/github", flipped, &as_refs).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{file} with a flipped byte"
        );
        assert!(h.published().await.is_empty());

        let (status, reply) = h.post("/webhooks/github", body, &as_refs).await;
        let published = h.published().await;
        match expected {
            Some(key) => {
                assert_eq!(status, StatusCode::OK, "{file}: {reply}");
                assert_eq!(published[0].routing_key(), key);
                // The event id is derived from the delivery id.
                let delivery = hdr("x-github-delivery");
                assert_eq!(
                    published[0].id,
                    conveyor::events::derive_id(&format!("github:{delivery}:0"))
                );
            }
            None => {
                assert_eq!(status, StatusCode::ACCEPTED, "{file}: {reply}");
                assert!(published.is_empty());
            }
        }
    }
    h.finish().await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_publishes_nothing() {
    let h = Harness::start("bad-input", |s| s.body_limit = 64 * 1024).await;
    let push = payload("github/push.branch.json");
    let sig = sign_github(SECRET, &push);
    let base = |delivery: &'static str| {
        vec![
            ("x-github-event", "push"),
            ("x-github-delivery", delivery),
            ("content-type", "application/json"),
        ]
    };

    // No signature, a wrong one, one made with another secret.
    let (s, _) = h.post("/webhooks/github", push.clone(), &base("d1")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut hs = base("d1");
    hs.push(("x-hub-signature-256", "sha256=0000"));
    assert_eq!(
        h.post("/webhooks/github", push.clone(), &hs).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = sign_github("not-the-secret", &push);
    let mut hs = base("d1");
    hs.push(("x-hub-signature-256", &other));
    assert_eq!(
        h.post("/webhooks/github", push.clone(), &hs).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Wrong content type (correctly signed).
    let hs = vec![
        ("x-github-event", "push"),
        ("x-github-delivery", "d2"),
        ("content-type", "text/plain"),
        ("x-hub-signature-256", sig.as_str()),
    ];
    assert_eq!(
        h.post("/webhooks/github", push.clone(), &hs).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    // Malformed JSON and valid JSON of the wrong shape.
    let (s, reply) = h.github("push", "d3", b"{\"ref\": ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{reply}"
    );
    let (s, reply) = h
        .github("push", "d4", br#"{"ref": 42, "repository": []}"#)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid push payload"),
        "{reply}"
    );
    let (s, _) = h
        .github("workflow_run", "d5", br#"{"action": "completed"}"#)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Too large.
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024)).into_bytes();
    let (s, _) = h.github("push", "d6", &huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Registry: unknown kind, no token, wrong token, wrong content type.
    let hub = payload("registry/dockerhub.push.json");
    assert_eq!(
        h.post(
            "/webhooks/registry/nexus",
            hub.clone(),
            &[
                ("content-type", "application/json"),
                ("x-conveyor-token", TOKEN)
            ]
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.post(
            "/webhooks/registry/dockerhub",
            hub.clone(),
            &[("content-type", "application/json")]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.post(
            "/webhooks/registry/dockerhub?token=nope",
            hub.clone(),
            &[("content-type", "application/json")]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.post(
            "/webhooks/registry/dockerhub",
            hub.clone(),
            &[("content-type", "text/xml"), ("x-conveyor-token", TOKEN)]
        )
        .await
        .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        h.post(
            "/webhooks/awx",
            br#"{"id": 1, "status": "bogus"}"#.to_vec(),
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {TOKEN}"))
            ]
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    assert!(
        h.published().await.is_empty(),
        "nothing was published by bad input"
    );

    // A good delivery, then the same delivery again: duplicate, published once.
    let (s, _) = h.github("push", "d7", &push).await;
    assert_eq!(s, StatusCode::OK);
    let (s, reply) = h.github("push", "d7", &push).await;
    assert_eq!(
        (s, reply["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(h.published().await.len(), 1);

    // Token in the query string works too; an AWX notification becomes awx.job.finished.
    let (s, _) = h
        .post(
            &format!("/webhooks/registry/dockerhub?token={TOKEN}"),
            hub,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.post("/webhooks/awx", br#"{"id": 968, "name": "Staging Fragalysis Stack (Version Change)", "url": "https://awx/#/jobs/playbook/968", "status": "failed", "started": "2026-11-27T10:00:00Z"}"#.to_vec(), &[("content-type", "application/json"), ("authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<String> = h
        .published()
        .await
        .iter()
        .map(Envelope::routing_key)
        .collect();
    assert_eq!(keys, ["image.pushed", "awx.job.finished"]);

    // Each outcome counted, with the event named only once the request could be trusted.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &h.registry).unwrap();
    for (labels, count) in [
        (r#"source="github",event="",outcome="unauthorised""#, 3),
        (r#"source="github",event="push",outcome="bad_request""#, 3),
        (
            r#"source="github",event="workflow_run",outcome="bad_request""#,
            1,
        ),
        (r#"source="github",event="",outcome="too_large""#, 1),
        (r#"source="github",event="push",outcome="published""#, 1),
        (r#"source="github",event="push",outcome="duplicate""#, 1),
        (r#"source="registry",event="",outcome="not_found""#, 1),
        (r#"source="registry",event="",outcome="unauthorised""#, 2),
        (
            r#"source="registry",event="dockerhub",outcome="bad_request""#,
            1,
        ),
        (
            r#"source="registry",event="dockerhub",outcome="published""#,
            1,
        ),
        (r#"source="awx",event="job",outcome="bad_request""#, 1),
        (r#"source="awx",event="job",outcome="published""#, 1),
    ] {
        let line = format!("ingest_requests_total{{{labels}}} {count}");
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    assert!(
        text.contains(r#"ingest_request_seconds_count{source="github"} 10"#),
        "{text}"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_same_delivery_at_two_replicas_yields_the_same_event_id() {
    let a = Harness::start("replica-a", |_| {}).await;
    // A second router on the same bus: its own (empty) delivery log, as another replica has.
    let app = router(
        a.bus.clone(),
        Settings {
            github_secrets: vec![Secret::new(SECRET)],
            ..Settings::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let push = payload("github/push.tag.json");
    let delivery = uuid();
    assert_eq!(a.github("push", &delivery, &push).await.0, StatusCode::OK);
    let res = a
        .client
        .post(format!("{b_url}/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", &delivery)
        .header("x-hub-signature-256", sign_github(SECRET, &push))
        .header("content-type", "application/json")
        .body(push.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let published = a.published().await;
    assert_eq!(published.len(), 2);
    assert_eq!(
        published[0].id, published[1].id,
        "downstream can recognise the duplicate"
    );
    a.finish().await;
}

#[tokio::test]
async fn form_encoded_deliveries_are_accepted() {
    let h = Harness::start("form", |_| {}).await;
    let push = String::from_utf8(payload("github/push.branch.json")).unwrap();
    let body = serde_urlencoded::to_string([("payload", push.as_str())])
        .unwrap()
        .into_bytes();
    let sig = sign_github(SECRET, &body);
    let (s, reply) = h
        .post(
            "/webhooks/github",
            body,
            &[
                ("x-github-event", "push"),
                ("x-github-delivery", "form-1"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-hub-signature-256", &sig),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{reply}");
    assert_eq!(h.published().await[0].routing_key(), "scm.push");
    h.finish().await;
}

#[tokio::test]
async fn a_broker_that_cannot_take_the_event_gets_503_with_retry_after() {
    let h = Harness::start("broker-down", |s| {
        s.publish_timeout = Duration::from_secs(1)
    })
    .await;
    // Remove the exchange under the running service: every publish now fails on the broker.
    h.bus.delete_topology().await.unwrap();
    let push = payload("github/push.branch.json");
    let sig = sign_github(SECRET, &push);
    let res = h
        .client
        .post(format!("{}/webhooks/github", h.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "down-1")
        .header("x-hub-signature-256", sig)
        .header("content-type", "application/json")
        .body(push)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("retry"));
}

#[tokio::test]
async fn hostile_refs_names_and_nesting_are_answered_and_never_route_elsewhere() {
    let h = Harness::start("hostile", |_| {}).await;
    let push: Value = serde_json::from_slice(&payload("github/push.branch.json")).unwrap();

    // Routing-key metacharacters, unicode and control characters in the ref and the repository
    // name: published as they are, under the fixed key `scm.push` (refs never become keys).
    let mut odd = push.clone();
    odd["ref"] = json!("refs/heads/feat/#.*.\u{1F680}\u{0007}");
    odd["repository"]["full_name"] = json!("xchem/fragalysis-stäck\u{0000}#");
    let body = serde_json::to_vec(&odd).unwrap();
    let (s, _) = h.github("push", &uuid(), &body).await;
    assert_eq!(s, StatusCode::OK);
    let published = h.published().await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key(), "scm.push");
    match &published[0].event {
        conveyor::Event::ScmPush(p) => {
            assert_eq!(p.git_ref.name, "feat/#.*.\u{1F680}\u{0007}");
            assert_eq!(p.repository, "xchem/fragalysis-stäck\u{0000}#");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Nesting 100 000 deep — no stack overflow either way. In a field ingest reads, the
    // parser's depth limit answers 400; in a field it skips, skipping is iterative, so the
    // delivery is judged on the rest (a ping is a pong).
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_read = format!(
        "{{\"ref\": \"refs/heads/x\", \"repository\": {}}}",
        nest(100_000)
    );
    let (s, reply) = h.github("push", &uuid(), deep_read.as_bytes()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{reply}");
    let deep_skipped = format!("{{\"zen\": \"x\", \"pad\": {}}}", nest(100_000));
    let (s, reply) = h.github("ping", &uuid(), deep_skipped.as_bytes()).await;
    assert_eq!((s, &reply["status"]), (StatusCode::OK, &json!("pong")));
    let (s, _) = h
        .github("ping", &uuid(), &deep_skipped.as_bytes()[..5000])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "truncated JSON");

    // Wrong types in every field ingest reads.
    for (field, value) in [
        ("ref", json!(["refs/heads/x"])),
        ("after", json!(7)),
        ("repository", json!("xchem/x")),
        ("head_commit", json!({"id": false})),
    ] {
        let mut bad = push.clone();
        bad[field] = value;
        let (s, reply) = h
            .github("push", &uuid(), &serde_json::to_vec(&bad).unwrap())
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("invalid push payload"),
            "{field}: {reply}"
        );
    }

    // Still healthy: the payload goes through, and nothing else was published.
    let (s, _) = h
        .github("push", &uuid(), &serde_json::to_vec(&push).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.published().await.len(), 1);
    h.finish().await;
}
