use super::*;
use std::path::PathBuf;
use time::macros::datetime;

fn operator() -> Actor {
    Actor {
        name: "alice".into(),
        via: "token".into(),
        from: Some("10.0.0.7".into()),
    }
}

fn operation() -> Operation {
    Operation {
        trigger: Trigger::Rollback,
        actor: Some(operator()),
        reason: Some("500s on /api".into()),
        forced: false,
        source_deployment: Some("0193c2a0-0000-7000-8000-000000000042.staging".into()),
        untracked: false,
        replaces: None,
    }
}

fn image() -> ImageRef {
    ImageRef {
        repository: "xchem/fragalysis-stack".into(),
        tag: Some("1.0.3".into()),
        digest: Some("sha256:0123abcd".into()),
    }
}

/// One representative of every event type. The match is exhaustive, so a new event type
/// without a sample (and so without a golden file) does not compile.
fn sample(name: &str) -> Event {
    let at = datetime!(2026-11-27 12:00:00 UTC);
    let build = BuildRun {
        repository: "xchem/fragalysis-frontend".into(),
        workflow_name: "build main".into(),
        workflow_path: Some(".github/workflows/build-main.yaml".into()),
        run_id: 42,
        run_number: Some(7),
        run_attempt: Some(1),
        trigger: Some("push".into()),
        head_branch: Some("staging".into()),
        head_sha: "a".repeat(40),
        status: "completed".into(),
        conclusion: Some("success".into()),
        display_title: None,
        html_url: Some("https://github.com/xchem/fragalysis-frontend/actions/runs/42".into()),
        head_repository: None,
        created_at: Some(at),
        updated_at: Some(at),
    };
    let env = "staging".to_string();
    let event = match name {
        "scm.push" => Event::ScmPush(ScmPush {
            repository: "xchem/fragalysis-stack".into(),
            git_ref: GitRef::tag("1.0.3"),
            before: "0".repeat(40),
            after: "b".repeat(40),
            created: true,
            deleted: false,
            forced: false,
            pusher: Some("alice".into()),
            head_commit: Some(CommitInfo {
                sha: "b".repeat(40),
                timestamp: Some(at),
                message: Some("Release".into()),
            }),
            commit_count: 1,
        }),
        "build.started" => Event::BuildStarted(build),
        "build.succeeded" => Event::BuildSucceeded(build),
        "build.failed" => Event::BuildFailed(build),
        "build.requested" => Event::BuildRequested(BuildRequested {
            repository: "xchem/fragalysis-stack".into(),
            workflow: "build main".into(),
            git_ref: "master".into(),
            inputs: [("fe_image_tag".to_string(), "latest".to_string())].into(),
            run_id: Some(43),
            upstream_repository: "xchem/fragalysis-frontend".into(),
            upstream_sha: "a".repeat(40),
            coalesced: 1,
            coalesced_into: None,
        }),
        "image.pushed" => Event::ImagePushed(ImagePushed {
            registry: "dockerhub".into(),
            image: image(),
            pusher: Some("ci".into()),
            source_repository: None,
            revision: Some("b".repeat(40)),
        }),
        "awx.job.started" | "awx.job.finished" => {
            let n = AwxJobNotification {
                job_id: 968,
                template: Some("Staging Fragalysis Stack (Version Change)".into()),
                status: "successful".into(),
                url: Some("https://awx.example/#/jobs/playbook/968".into()),
            };
            if name == "awx.job.started" {
                Event::AwxJobStarted(n)
            } else {
                Event::AwxJobFinished(n)
            }
        }
        "deploy.requested" => Event::DeployRequested(DeployRequested {
            environment: env,
            repository: "xchem/fragalysis-stack".into(),
            sha: "b".repeat(40),
            git_ref: GitRef::branch("master"),
            image: image(),
            upstream: vec![UpstreamCommit {
                repository: "xchem/fragalysis-frontend".into(),
                sha: "a".repeat(40),
            }],
            origin_time: Some(datetime!(2026-11-27 11:48:07 UTC)),
            operation: operation(),
        }),
        "deploy.held" => Event::DeployHeld(DeployHeld {
            environment: env,
            kind: HoldKind::Frozen,
            reason: "frozen from Fri 16:00 to Mon 08:00 Europe/London".into(),
            until: Some(datetime!(2026-11-30 08:00 UTC)),
        }),
        "deploy.verifying" => Event::DeployVerifying(DeployVerifying {
            environment: env,
            checks: vec!["GET https://fragalysis.example/ → 200, 3 in a row within 300 s".into()],
            soak_secs: 600,
        }),
        "deploy.awaiting_approval" => Event::DeployAwaitingApproval(DeployAwaitingApproval {
            environment: env,
            approvers: vec!["release-manager".into(), "sre-lead".into()],
            expires_at: datetime!(2026-11-28 12:00 UTC),
            operation: Some(operation()),
        }),
        "deploy.approved" | "deploy.rejected" => {
            let d = DeployDecided {
                environment: env,
                actor: operator(),
                reason: Some("release 1.0.3".into()),
                overrides_requires: false,
            };
            if name == "deploy.approved" {
                Event::DeployApproved(d)
            } else {
                Event::DeployRejected(d)
            }
        }
        "rollout.unstuck" => Event::RolloutUnstuck(RolloutUnstuck {
            environment: env,
            pod: "stack-2".into(),
            revision: Some("stack-bad1".into()),
            reason: "CrashLoopBackOff".into(),
        }),
        "control.unstick" => Event::UnstickRequested(UnstickRequested {
            environment: env,
            actor: operator(),
            reason: None,
        }),
        "control.paused" => Event::EnvironmentPaused(EnvironmentPaused {
            environment: env,
            actor: operator(),
            reason: "500s on /api".into(),
        }),
        "control.resumed" => Event::EnvironmentResumed(EnvironmentResumed {
            environment: env,
            actor: operator(),
            reason: None,
        }),
        "deploy.superseded" => Event::DeploySuperseded(DeploySuperseded {
            environment: env,
            superseded_by: "0193c2a0-0000-7000-8000-000000000001".into(),
            operation: None,
        }),
        "deploy.launched" => Event::DeployLaunched(DeployLaunched {
            environment: env,
            executor: ExecutorRun::Awx {
                job_id: 968,
                url: "https://awx.example/#/jobs/playbook/968".into(),
                template: "Staging Fragalysis Stack (Version Change)".into(),
            },
            image: image(),
            namespace: "fragalysis-staging".into(),
            statefulset: "stack".into(),
            operation: Some(operation()),
            sha: None,
        }),
        "deploy.job_finished" => Event::DeployJobFinished(DeployJobFinished {
            environment: env,
            job_id: 968,
            status: "failed".into(),
            failed: true,
            elapsed_seconds: 12.5,
            explanation: None,
            failed_task: Some("task \"Wait for stack-1\" (role fragalysis-stack, module kubernetes.core.k8s_info) failed on localhost: stack-1 never became ready".into()),
            stdout_tail: Some("fatal: [localhost]: FAILED!".into()),
        }),
        "deploy.completed" => Event::DeployCompleted(DeployCompleted {
            environment: env,
            image: image(),
            revision: Some("stack-7c9d".into()),
            operation: Some(operation()),
            sha: None,
            verified: false,
        }),
        "deploy.failed" => Event::DeployFailed(DeployFailed {
            environment: env,
            stage: Stage::Rollout,
            reason: "stack-1: ImagePullBackOff".into(),
            operation: None,
        }),
        "rollout.started" => Event::RolloutStarted(RolloutStarted {
            environment: env,
            namespace: "fragalysis-staging".into(),
            statefulset: "stack".into(),
            from_revision: Some("stack-5b8f".into()),
            to_revision: "stack-7c9d".into(),
            replicas: 3,
        }),
        "rollout.progress" => Event::RolloutProgress(RolloutProgress {
            environment: env,
            pod: "stack-2".into(),
            ordinal: 2,
            step: PodStep::Ready,
            revision: Some("stack-7c9d".into()),
            at,
            updated: 1,
            ready: 3,
            replicas: 3,
        }),
        "rollout.completed" => Event::RolloutCompleted(RolloutCompleted {
            environment: env,
            revision: "stack-7c9d".into(),
            replicas: 3,
            pods: vec![PodTiming {
                pod: "stack-2".into(),
                started: Some(at),
                ready: Some(at),
            }],
            duration_ms: 1500,
            last_ready_at: Some(at),
        }),
        "rollout.stalled" => Event::RolloutStalled(RolloutStalled {
            environment: env,
            pod: "stack-2".into(),
            container: Some("stack".into()),
            reason: "CrashLoopBackOff".into(),
            message: Some("back-off 40s restarting failed container".into()),
            restarts: 4,
            hint: Some("revert the image, then delete pod stack-2".into()),
        }),
        "rollout.failed" => Event::RolloutFailed(RolloutFailed {
            environment: env,
            reason: "stack-2: CrashLoopBackOff".into(),
        }),
        other => panic!("no sample for {other}"),
    };
    assert_eq!(
        event.name(),
        name,
        "sample for {name} has the wrong variant"
    );
    event
}

fn fixed_envelope(event: Event) -> Envelope {
    let id = derive_id(&format!("golden:{}", event.name()));
    Envelope {
        id: id.clone(),
        source: "conveyor/test".into(),
        time: datetime!(2026-11-27 12:00:01.5 UTC),
        subject: Some("xchem/fragalysis-stack".into()),
        correlation_id: id,
        causation_id: Some("0193c2a0-0000-7000-8000-00000000cafe".into()),
        event,
    }
}

#[test]
fn every_event_round_trips_and_matches_its_golden_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for name in Event::NAMES {
        let env = fixed_envelope(sample(name));
        let bytes = env.to_json();
        let back = Envelope::from_json(&bytes).expect("decodes");
        assert_eq!(back, env, "{name} does not round-trip");

        let pretty = serde_json::to_string_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap()
            + "\n";
        let path = dir.join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &pretty).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing golden file {path:?}; run with UPDATE_GOLDEN=1"));
        assert_eq!(pretty, golden, "{name} differs from its golden file");
        // And the golden file itself decodes to the same event.
        assert_eq!(Envelope::from_json(golden.as_bytes()).unwrap(), env);
    }
}

#[test]
fn type_and_routing_key_follow_the_naming_rules() {
    let env = fixed_envelope(sample("deploy.requested"));
    assert_eq!(env.type_name(), "conveyor.deploy.requested.v2");
    assert_eq!(env.routing_key(), "deploy.requested.staging");
    let env = fixed_envelope(sample("scm.push"));
    assert_eq!(env.routing_key(), "scm.push");
    assert_eq!(env.type_name(), "conveyor.scm.push.v1");
}

#[test]
fn hostile_qualifiers_stay_one_segment() {
    for raw in [
        "prod.eu",
        "#",
        "*",
        "a b",
        "Ünïcødé",
        "",
        "..",
        "x.#.*",
        "staging\n",
        "日本",
    ] {
        let mut event = sample("deploy.failed");
        if let Event::DeployFailed(d) = &mut event {
            d.environment = raw.into();
        }
        let key = event.routing_key();
        let segments: Vec<&str> = key.split('.').collect();
        assert_eq!(segments.len(), 3, "{raw:?} produced {key:?}");
        assert!(
            segments[2]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
            "{raw:?} produced {key:?}"
        );
        assert!(!segments[2].is_empty());
    }
    assert_eq!(sanitize_qualifier("Prod-EU_1"), "prod-eu_1");
    assert_eq!(sanitize_qualifier(&"x".repeat(500)).len(), 64);
}

#[test]
fn unknown_fields_are_ignored() {
    let env = fixed_envelope(sample("deploy.failed"));
    let mut v: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    v["data"]["added_in_a_later_minor"] = serde_json::json!({"x": 1});
    v["someextension"] = serde_json::json!("y");
    let back = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(back, env);
}

#[test]
fn a_v1_deployment_request_still_decodes_as_a_push() {
    let v1 = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1/deploy.requested.json"),
    )
    .unwrap();
    let e = Envelope::from_json(&v1).unwrap();
    let Event::DeployRequested(r) = &e.event else {
        panic!("{e:?}")
    };
    assert_eq!(r.operation, Operation::default());
    assert!(r.operation.is_push());
    assert_eq!(r.operation.describe(), None);
    // Written again, it is v2.
    assert_eq!(e.type_name(), "conveyor.deploy.requested.v2");
    let v3 = String::from_utf8(v1)
        .unwrap()
        .replace("deploy.requested.v1", "deploy.requested.v3");
    assert!(matches!(
        Envelope::from_json(v3.as_bytes()),
        Err(DecodeError::UnsupportedVersion {
            version: 3,
            supported: 2,
            ..
        })
    ));
}

#[test]
fn an_operation_says_who_did_what_and_why() {
    assert_eq!(
        operation().describe().as_deref(),
        Some("Rolled back by alice: 500s on /api")
    );
    let forced = Operation {
        trigger: Trigger::Manual,
        forced: true,
        reason: None,
        ..operation()
    };
    assert_eq!(
        forced.describe().as_deref(),
        Some("Deployed by hand by alice (forced)")
    );
    // A trigger from a newer producer decodes instead of dead-lettering the event.
    let t: Trigger = serde_json::from_str("\"promote\"").unwrap();
    assert_eq!(t, Trigger::Unknown);
    let s: Stage = serde_json::from_str("\"verify-later\"").unwrap();
    assert_eq!(s, Stage::Unknown);
}

#[test]
fn unknown_major_version_is_rejected() {
    let env = fixed_envelope(sample("deploy.failed"));
    let mut v: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    v["type"] = serde_json::json!("conveyor.deploy.failed.v2");
    let err = Envelope::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
}

#[test]
fn garbage_and_wrong_shapes_are_rejected_with_a_reason() {
    assert!(matches!(
        Envelope::from_json(b"not json"),
        Err(DecodeError::Malformed(_))
    ));
    let env = fixed_envelope(sample("deploy.failed"));
    let mut v: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    v["data"] = serde_json::json!({"environment": 3});
    assert!(matches!(
        Envelope::from_json(&serde_json::to_vec(&v).unwrap()),
        Err(DecodeError::InvalidData { .. })
    ));
    v["type"] = serde_json::json!("com.example.other");
    assert!(matches!(
        Envelope::from_json(&serde_json::to_vec(&v).unwrap()),
        Err(DecodeError::UnknownType(_))
    ));
    v["specversion"] = serde_json::json!("0.3");
    assert!(matches!(
        Envelope::from_json(&serde_json::to_vec(&v).unwrap()),
        Err(DecodeError::SpecVersion(_))
    ));
}

#[test]
fn caused_events_carry_the_chain() {
    let parent = Envelope::new("conveyor/ingest", sample("build.succeeded"));
    assert_eq!(parent.correlation_id, parent.id);
    let child = Envelope::caused_by(
        &parent,
        "conveyor/build-trigger",
        sample("deploy.requested"),
    );
    assert_eq!(child.correlation_id, parent.correlation_id);
    assert_eq!(child.causation_id.as_deref(), Some(parent.id.as_str()));
    assert_ne!(child.id, parent.id);

    let a = Envelope::new("x", sample("scm.push")).with_derived_id("delivery-1");
    let b = Envelope::new("x", sample("scm.push")).with_derived_id("delivery-1");
    assert_eq!(a.id, b.id);
    assert_eq!(a.correlation_id, a.id);
}

#[test]
fn git_refs_parse() {
    assert_eq!(
        GitRef::parse_full("refs/heads/feature/x"),
        Some(GitRef::branch("feature/x"))
    );
    assert_eq!(
        GitRef::parse_full("refs/tags/1.2.3"),
        Some(GitRef::tag("1.2.3"))
    );
    assert_eq!(GitRef::parse_full("refs/pull/1/head"), None);
    assert_eq!(GitRef::tag("1.2.3").full(), "refs/tags/1.2.3");
    assert_eq!(
        image().reference(),
        "xchem/fragalysis-stack@sha256:0123abcd"
    );
}

#[test]
fn image_references_parse_or_say_why_not() {
    let d = format!("sha256:{}", "ab".repeat(32));
    let ok = |r: &str| ImageRef::parse(r).unwrap();
    assert_eq!(
        ok("xchem/fragalysis-stack:1.0.3"),
        ImageRef {
            repository: "xchem/fragalysis-stack".into(),
            tag: Some("1.0.3".into()),
            digest: None
        }
    );
    let by_digest = ok(&format!("registry.example:5000/xchem/stack@{d}"));
    assert_eq!(by_digest.repository, "registry.example:5000/xchem/stack");
    assert_eq!(
        (by_digest.tag, by_digest.digest.as_deref()),
        (None, Some(d.as_str()))
    );
    let both = ok(&format!("xchem/stack:latest@{d}"));
    assert_eq!(both.tag.as_deref(), Some("latest"));
    assert_eq!(both.reference(), format!("xchem/stack@{d}"));
    for bad in [
        "",
        "xchem/stack",
        "xchem/stack:",
        "Xchem/Stack:1",
        "xchem/stack@sha256:abc",
        "xchem/stack:1.0 3",
        "/stack:1",
        "xchem//stack:1",
        "xchem/stack:-x",
    ] {
        let e = ImageRef::parse(bad).unwrap_err();
        assert!(e.contains("is not an image reference"), "{bad}: {e}");
    }
}
