//! ingest through its real HTTP endpoint against the real broker: every fixture, the signed
//! captures, and every kind of bad input (asserting that nothing was published).

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
/// The published secret of the Cogni test app that signed the captured deliveries.
const CAPTURE_SECRET: &str = "402786017574bd28f9d8f7a18648939751c47fe09077d56e10f0444f14fbb73b";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

struct Harness {
    url: String,
    bus: Bus,
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
        let app = router(bus.clone(), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let observer = tokio::sync::Mutex::new(testing::Observer::new(&bus).await.unwrap());
        Self {
            url,
            bus,
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

/// What each GitHub fixture must produce.
enum Expect {
    Pong,
    Ignored,
    One(fn(&Envelope)),
}

fn github_expectations(file: &str) -> Option<(&'static str, Expect)> {
    use Expect::*;
    Some(match file {
        "ping.json" | "ping.app.json" => ("ping", Pong),
        "push.branch.json" => (
            "push",
            One(|e| {
                assert_eq!(e.routing_key(), "scm.push");
                let Event::ScmPush(p) = &e.event else {
                    panic!()
                };
                assert_eq!(p.repository, "Codertocat/Hello-World");
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str()),
                    (RefKind::Branch, "master")
                );
                assert!(p.after.starts_with("199eddf4") && !p.deleted && !p.created);
                assert!(p.head_commit.as_ref().unwrap().timestamp.is_some());
            }),
        ),
        "push.branch-create.json" => (
            "push",
            One(|e| {
                let Event::ScmPush(p) = &e.event else {
                    panic!()
                };
                assert!(p.created && p.after.starts_with("6113728f"));
            }),
        ),
        "push.branch-delete.json" => (
            "push",
            One(|e| {
                let Event::ScmPush(p) = &e.event else {
                    panic!()
                };
                assert!(p.deleted);
                assert_eq!(p.git_ref.name, "feature-branch");
            }),
        ),
        "push.tag.json" => (
            "push",
            One(|e| {
                let Event::ScmPush(p) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str()),
                    (RefKind::Tag, "v0.0.1")
                );
                assert_eq!(p.repository, "bradrydzewski/drone-test-go");
            }),
        ),
        "push.tag-delete.json" => (
            "push",
            One(|e| {
                let Event::ScmPush(p) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (p.git_ref.kind, p.git_ref.name.as_str(), p.deleted),
                    (RefKind::Tag, "simple-tag", true)
                );
            }),
        ),
        "workflow_run.completed.success.json" => (
            "workflow_run",
            One(|e| {
                assert_eq!(e.routing_key(), "build.succeeded");
                let Event::BuildSucceeded(b) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (b.run_id, b.repository.as_str(), b.head_branch.as_deref()),
                    (289782451, "octo-org/octo-repo", Some("master"))
                );
                assert!(b.head_sha.starts_with("3484a3fb"));
                assert_eq!(b.conclusion.as_deref(), Some("success"));
            }),
        ),
        "workflow_run.completed.success.pull_request.json" => (
            "workflow_run",
            One(|e| {
                let Event::BuildSucceeded(b) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (b.run_id, b.trigger.as_deref(), b.workflow_name.as_str()),
                    (29534601016, Some("pull_request"), "ci")
                );
            }),
        ),
        "workflow_run.completed.failure.json" => (
            "workflow_run",
            One(|e| {
                assert_eq!(e.routing_key(), "build.failed");
                let Event::BuildFailed(b) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (b.run_id, b.conclusion.as_deref(), b.workflow_name.as_str()),
                    (29540088375, Some("failure"), "demo-web")
                );
            }),
        ),
        "workflow_run.requested.json" => (
            "workflow_run",
            One(|e| {
                assert_eq!(e.routing_key(), "build.started");
                let Event::BuildStarted(b) = &e.event else {
                    panic!()
                };
                assert_eq!(b.status, "queued");
            }),
        ),
        "workflow_run.in_progress.json" => (
            "workflow_run",
            One(|e| {
                let Event::BuildStarted(b) = &e.event else {
                    panic!()
                };
                assert_eq!(
                    (b.run_id, b.head_branch.as_deref()),
                    (18436407157, Some("refs/pull/166/head"))
                );
            }),
        ),
        "registry_package.published.json" => ("registry_package", One(ghcr_image)),
        "package.published.docker.json" => ("package", One(ghcr_image)),
        "package.published.npm.json" => ("package", Ignored),
        "create.branch.json" | "create.tag.json" => ("create", Ignored),
        "delete.branch.json" | "delete.tag.json" => ("delete", Ignored),
        "check_suite.completed.json" | "check_suite.completed.signed-body.json" => {
            ("check_suite", Ignored)
        }
        "deployment.created.json" => ("deployment", Ignored),
        "deployment_status.created.json" => ("deployment_status", Ignored),
        "release.published.json" => ("release", Ignored),
        "repository_dispatch.json" => ("repository_dispatch", Ignored),
        "status.json" => ("status", Ignored),
        "workflow_dispatch.json" => ("workflow_dispatch", Ignored),
        "workflow_job.completed.success.json" | "workflow_job.completed.failure.json" => {
            ("workflow_job", Ignored)
        }
        _ => return None,
    })
}

fn ghcr_image(e: &Envelope) {
    assert_eq!(e.routing_key(), "image.pushed");
    let Event::ImagePushed(i) = &e.event else {
        panic!()
    };
    assert_eq!(i.registry, "ghcr");
    assert_eq!(i.image.repository, "ghcr.io/codertocat/hello-world");
    assert_eq!(
        i.image.digest.as_deref(),
        Some("sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b")
    );
    assert_eq!(i.image.tag, None);
}

#[tokio::test]
async fn every_github_fixture_gives_its_event_or_the_documented_answer() {
    let h = Harness::start("gh-fixtures", |_| {}).await;
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures().join("github")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !file.ends_with(".json") || file.ends_with(".delivery.json") {
            continue;
        }
        let (event, expect) = github_expectations(&file)
            .unwrap_or_else(|| panic!("no expectation for fixture {file}"));
        let body = std::fs::read(&path).unwrap();
        let (status, reply) = h.github(event, &uuid_like(&file), &body).await;
        let published = h.published().await;
        match expect {
            Expect::Pong => {
                assert_eq!(
                    (status, reply["status"].as_str()),
                    (StatusCode::OK, Some("pong")),
                    "{file}"
                );
                assert!(published.is_empty(), "{file}");
            }
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
    assert!(seen >= 29, "only {seen} fixtures");
    h.finish().await;
}

/// (repository, tag, digest) of one expected `image.pushed`.
type Pushed = (&'static str, Option<&'static str>, Option<&'static str>);

#[tokio::test]
async fn every_registry_fixture_gives_image_pushes_or_is_ignored() {
    let h = Harness::start("registry-fixtures", |_| {}).await;
    // (file, kind, expected (repository, tag, digest) per published event)
    let table: &[(&str, &str, &[Pushed])] = &[
        (
            "dockerhub.push.json",
            "dockerhub",
            &[("svendowideit/testhook", Some("latest"), None)],
        ),
        (
            "dockerhub.push.legacy-images.json",
            "dockerhub",
            &[("svendowideit/testhook", Some("latest"), None)],
        ),
        ("dockerhub.callback.success.json", "dockerhub", &[]),
        (
            "quay.repo_push.json",
            "quay",
            &[("quay.io/dgangaia/test", Some("latest"), None)],
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
                "localhost/harbor/alpine",
                None,
                Some("sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"),
            )],
        ),
        (
            "harbor.push_artifact.cloudevents.json",
            "harbor",
            &[(
                "localhost/harbor/alpine",
                None,
                Some("sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"),
            )],
        ),
        (
            "harbor.push_artifact.v2-zulip.json",
            "harbor",
            &[(
                "harbor.example.com/example/test",
                Some("latest"),
                Some("sha256:d72f37f783ed6a8d58ac70b4db052707d1ec9d4ea010ef5ccd84652faf9ed844"),
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
            &[(
                "registrycluster.local/library/test",
                None,
                Some("sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"),
            )],
        ),
        ("distribution.events.pull.json", "distribution", &[]),
    ];
    for (file, kind, expected) in table {
        let body = std::fs::read(fixtures().join("dockerhub").join(file)).unwrap();
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
    // Every fixture in the folder is covered, except ACR, which is not a supported kind.
    for entry in std::fs::read_dir(fixtures().join("dockerhub")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file.ends_with(".json") && !file.starts_with("acr.") {
            assert!(
                table.iter().any(|(f, ..)| *f == file),
                "fixture {file} is not in the table"
            );
        }
    }
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
        let capture: Value =
            serde_json::from_slice(&std::fs::read(fixtures().join("github").join(file)).unwrap())
                .unwrap();
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
    let push = std::fs::read(fixtures().join("github/push.branch.json")).unwrap();
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
    let hub = std::fs::read(fixtures().join("dockerhub/dockerhub.push.json")).unwrap();
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

    let push = std::fs::read(fixtures().join("github/push.tag.json")).unwrap();
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
    let push = std::fs::read_to_string(fixtures().join("github/push.branch.json")).unwrap();
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
    let push = std::fs::read(fixtures().join("github/push.branch.json")).unwrap();
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
    let push: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("github/push.branch.json")).unwrap())
            .unwrap();

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

    // Still healthy: the fixture goes through, and nothing else was published.
    let (s, _) = h
        .github("push", &uuid(), &serde_json::to_vec(&push).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.published().await.len(), 1);
    h.finish().await;
}
