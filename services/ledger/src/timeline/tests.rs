use super::Stage;
use super::*;
use conveyor::events::*;
use time::macros::datetime;

const STACK: &str = "xchem/fragalysis-stack";
const FRONTEND: &str = "xchem/fragalysis-frontend";

fn at(secs: i64) -> OffsetDateTime {
    datetime!(2026-11-27 12:00:00 UTC) + time::Duration::seconds(secs)
}

fn ms(secs: i64) -> Millis {
    millis(at(secs))
}

fn build(repo: &str, run_id: u64, sha: char, status: &str) -> BuildRun {
    BuildRun {
        repository: repo.into(),
        workflow_name: "build main".into(),
        workflow_path: None,
        run_id,
        run_number: None,
        run_attempt: None,
        trigger: None,
        head_branch: Some("staging".into()),
        head_sha: sha.to_string().repeat(40),
        status: status.into(),
        conclusion: (status == "completed").then(|| "success".into()),
        display_title: None,
        html_url: None,
        head_repository: None,
        created_at: Some(at(-60)),
        updated_at: None,
    }
}

struct Script {
    events: Vec<Envelope>,
    chain: String,
}

impl Script {
    fn push(&mut self, secs: i64, event: Event) -> Envelope {
        let mut e = Envelope::new("conveyor/test", event).with_correlation_id(&self.chain);
        e.time = at(secs);
        self.events.push(e.clone());
        e
    }
}

fn image() -> ImageRef {
    ImageRef {
        repository: STACK.into(),
        tag: Some("latest".into()),
        digest: None,
    }
}

/// The Fragalysis staging chain: frontend push and build, stack dispatch and build, request,
/// AWX job, three pods, completion. Returns the script and the events outside the chain.
fn staging_chain(outcome: &str) -> Script {
    let mut s = Script {
        events: Vec::new(),
        chain: "chain-1".into(),
    };
    // The frontend push (its own chain, as ingest publishes it).
    let mut push = Envelope::new(
        "conveyor/ingest",
        Event::ScmPush(ScmPush {
            repository: FRONTEND.into(),
            git_ref: GitRef::branch("staging"),
            before: "0".repeat(40),
            after: "f".repeat(40),
            created: false,
            deleted: false,
            forced: false,
            pusher: None,
            head_commit: Some(CommitInfo {
                sha: "f".repeat(40),
                timestamp: Some(at(-120)),
                message: None,
            }),
            commit_count: 1,
        }),
    );
    push.time = at(-100);
    s.events.push(push);
    s.push(
        0,
        Event::BuildSucceeded(build(FRONTEND, 1, 'f', "completed")),
    );
    s.push(
        1,
        Event::BuildRequested(BuildRequested {
            repository: STACK.into(),
            workflow: "build main".into(),
            git_ref: "master".into(),
            inputs: Default::default(),
            run_id: Some(2),
            upstream_repository: FRONTEND.into(),
            upstream_sha: "f".repeat(40),
            coalesced: 1,
            coalesced_into: None,
        }),
    );
    // The stack's run: its own chains, found by run id and causation.
    let mut started = Envelope::new(
        "conveyor/ingest",
        Event::BuildStarted(build(STACK, 2, 'a', "in_progress")),
    );
    started.time = at(5);
    s.events.push(started);
    let mut stack_ok = Envelope::new(
        "conveyor/ingest",
        Event::BuildSucceeded(build(STACK, 2, 'a', "completed")),
    );
    stack_ok.time = at(100);
    s.events.push(stack_ok.clone());
    let mut request = Envelope::caused_by(
        &stack_ok,
        "conveyor/build-trigger",
        Event::DeployRequested(DeployRequested {
            environment: "staging".into(),
            repository: STACK.into(),
            sha: "a".repeat(40),
            git_ref: GitRef::branch("master"),
            image: image(),
            upstream: vec![UpstreamCommit {
                repository: FRONTEND.into(),
                sha: "f".repeat(40),
            }],
            origin_time: None,
            operation: Default::default(),
        }),
    )
    .with_correlation_id("chain-1");
    request.time = at(101);
    s.events.push(request);
    s.push(
        102,
        Event::DeployLaunched(DeployLaunched {
            environment: "staging".into(),
            executor: ExecutorRun::Awx {
                job_id: 968,
                url: "https://awx/#/jobs/playbook/968".into(),
                template: "Staging".into(),
            },
            image: image(),
            namespace: "fragalysis-staging".into(),
            statefulset: "stack".into(),
            operation: None,
            sha: None,
        }),
    );
    s.push(
        110,
        Event::RolloutStarted(RolloutStarted {
            environment: "staging".into(),
            namespace: "fragalysis-staging".into(),
            statefulset: "stack".into(),
            from_revision: Some("r1".into()),
            to_revision: "r2".into(),
            replicas: 3,
        }),
    );
    let pod = |name: &str, ordinal: u32, step: PodStep, secs: i64| {
        Event::RolloutProgress(RolloutProgress {
            environment: "staging".into(),
            pod: name.into(),
            ordinal,
            step,
            revision: Some("r2".into()),
            at: at(secs),
            updated: 0,
            ready: 0,
            replicas: 3,
        })
    };
    s.push(111, pod("stack-2", 2, PodStep::Deleted, 111));
    s.push(112, pod("stack-2", 2, PodStep::Created, 112));
    s.push(150, pod("stack-2", 2, PodStep::Ready, 150));
    s.push(151, pod("stack-1", 1, PodStep::Deleted, 151));
    if outcome == "failed" {
        s.push(
            160,
            Event::RolloutStalled(RolloutStalled {
                environment: "staging".into(),
                pod: "stack-1".into(),
                container: Some("stack".into()),
                reason: "ImagePullBackOff".into(),
                message: None,
                restarts: 0,
                hint: None,
            }),
        );
        s.push(
            300,
            Event::DeployFailed(DeployFailed {
                environment: "staging".into(),
                stage: conveyor::events::Stage::Rollout,
                reason: "stack-1: ImagePullBackOff".into(),
                operation: None,
            }),
        );
        return s;
    }
    s.push(152, pod("stack-1", 1, PodStep::Created, 152));
    s.push(190, pod("stack-1", 1, PodStep::Ready, 190));
    s.push(191, pod("stack-0", 0, PodStep::Deleted, 191));
    s.push(192, pod("stack-0", 0, PodStep::Created, 192));
    s.push(230, pod("stack-0", 0, PodStep::Ready, 230));
    s.push(
        231,
        Event::DeployJobFinished(DeployJobFinished {
            environment: "staging".into(),
            job_id: 968,
            status: "successful".into(),
            failed: false,
            elapsed_seconds: 129.0,
            explanation: None,
            failed_task: None,
            stdout_tail: None,
        }),
    );
    let mut done = Event::RolloutCompleted(RolloutCompleted {
        environment: "staging".into(),
        revision: "r2".into(),
        replicas: 3,
        pods: vec![],
        duration_ms: 120_000,
        last_ready_at: Some(at(230)),
    });
    if let Event::RolloutCompleted(r) = &mut done {
        r.last_ready_at = Some(at(230));
    }
    s.push(230, done);
    s.push(
        230,
        Event::DeployCompleted(DeployCompleted {
            environment: "staging".into(),
            image: image(),
            revision: Some("r2".into()),
            operation: None,
            sha: None,
            verified: false,
        }),
    );
    s
}

fn stage<'a>(d: &'a Deployment, name: &str) -> &'a Stage {
    d.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}: {:#?}", d.stages))
}

#[test]
fn an_in_order_chain_gives_every_stage_pod_and_commit() {
    let s = staging_chain("completed");
    let ds = assemble("chain-1", &s.events);
    assert_eq!(ds.len(), 1);
    let d = &ds[0];
    assert_eq!(d.id, "chain-1.staging");
    assert_eq!(d.status, Status::Completed);
    assert_eq!(d.requested_at, ms(101));
    assert_eq!(d.duration_ms(), Some(129_000));
    assert_eq!(stage(d, "upstream build").start, millis(at(-60)));
    assert_eq!(stage(d, "dispatch downstream build").end, Some(ms(1)));
    let b = stage(d, "build");
    assert_eq!((b.start, b.end), (ms(1), Some(ms(100))));
    assert_eq!(stage(d, "request deployment").owner, Owner::Conveyor);
    assert_eq!(stage(d, "AWX job").end, Some(ms(231)));
    assert_eq!(stage(d, "rollout").end, Some(ms(230)));
    assert_eq!(stage(d, "completion noticed").end, Some(ms(230)));
    // Conveyor's share: 1 s dispatch + 1 s request + 1 s launch + 0 completion.
    assert_eq!(d.overhead_ms, 3_000);
    let pods: Vec<&str> = d.pods.iter().map(|p| p.pod.as_str()).collect();
    assert_eq!(pods, ["stack-2", "stack-1", "stack-0"]);
    assert_eq!(d.pods[0].ready, Some(ms(150)));
    // The frontend commit's time comes from its push; the stack commit's from its build.
    assert_eq!(d.commits.len(), 2);
    assert_eq!(d.commits[1].committed_at, Some(ms(-120)));
    assert_eq!(d.commit_at(), Some(ms(-120)));
    assert_eq!(d.executor.as_ref().unwrap().job_id, Some(968));
}

#[test]
fn order_and_duplicates_do_not_matter() {
    let s = staging_chain("completed");
    let expected = assemble("chain-1", &s.events);
    let mut shuffled = s.events.clone();
    shuffled.reverse();
    shuffled.rotate_left(7);
    shuffled.extend(s.events.iter().take(9).cloned());
    assert_eq!(assemble("chain-1", &shuffled), expected);
    // Progress before started: still placed by its own time.
    let early: Vec<Envelope> = s
        .events
        .iter()
        .filter(|e| !matches!(e.event, Event::DeployRequested(_)))
        .cloned()
        .collect();
    let d = &assemble("chain-1", &early)[0];
    assert_eq!(d.status, Status::Completed);
    assert_eq!(
        d.requested_at,
        ms(102),
        "first seen when the request is missing"
    );
}

#[test]
fn a_failure_mid_rollout_keeps_the_pods_so_far_and_the_cause() {
    let s = staging_chain("failed");
    let d = &assemble("chain-1", &s.events)[0];
    assert_eq!(d.status, Status::Failed);
    assert!(d.stalled);
    assert_eq!(d.reason.as_deref(), Some("stack-1: ImagePullBackOff"));
    assert_eq!(d.finished_at, Some(ms(300)));
    assert_eq!(d.pods.len(), 2);
    assert_eq!(d.pods[1].ready, None);
    assert_eq!(stage(d, "rollout").end, Some(ms(300)));
    assert!(d.stages.iter().all(|s| s.name != "completion noticed"));
}

#[test]
fn a_job_that_fails_after_the_pods_were_replaced_is_shown_beside_the_completed_rollout() {
    let ok = &assemble("chain-1", &staging_chain("completed").events)[0];
    let job = ok.job.as_ref().expect("the job's end is recorded");
    assert!(!job.failed && !job.failed_after_rollout_started);
    assert_eq!((job.id, job.status.as_str()), (968, "successful"));

    let mut s = staging_chain("completed");
    for e in &mut s.events {
        if let Event::DeployJobFinished(j) = &mut e.event {
            j.status = "failed".into();
            j.failed = true;
            j.failed_task = Some("task \"Check the site\" failed on localhost: 502".into());
        }
    }
    let d = &assemble("chain-1", &s.events)[0];
    assert_eq!(d.status, Status::Completed, "the rollout's outcome stands");
    let job = d.job.as_ref().unwrap();
    assert!(job.failed && job.failed_after_rollout_started);
    assert_eq!(
        job.failed_task.as_deref(),
        Some("task \"Check the site\" failed on localhost: 502")
    );
    assert_eq!(job.at, ms(231));
}

#[test]
fn a_superseded_request_ends_without_launch() {
    let mut s = Script {
        events: Vec::new(),
        chain: "chain-2".into(),
    };
    s.push(
        0,
        Event::DeployRequested(DeployRequested {
            environment: "production".into(),
            repository: STACK.into(),
            sha: "b".repeat(40),
            git_ref: GitRef::tag("1.0.3"),
            image: image(),
            upstream: vec![],
            origin_time: None,
            operation: Default::default(),
        }),
    );
    s.push(
        4,
        Event::DeploySuperseded(DeploySuperseded {
            environment: "production".into(),
            superseded_by: "chain-3".into(),
            operation: None,
        }),
    );
    let d = &assemble("chain-2", &s.events)[0];
    assert_eq!(d.status, Status::Superseded);
    assert_eq!(d.reason.as_deref(), Some("superseded by chain-3"));
    assert_eq!(d.git_ref.as_deref(), Some("refs/tags/1.0.3"));
    assert!(d.executor.is_none());
    assert_eq!(d.stages.len(), 0, "{:?}", d.stages);
}

#[test]
fn a_chain_deploying_two_environments_gives_two_deployments() {
    let mut s = staging_chain("completed");
    let mut second = s
        .events
        .iter()
        .find(|e| matches!(e.event, Event::DeployRequested(_)))
        .unwrap()
        .clone();
    if let Event::DeployRequested(r) = &mut second.event {
        r.environment = "dev".into();
    }
    second.id = "another-id".into();
    s.events.push(second);
    let ds = assemble("chain-1", &s.events);
    let envs: Vec<&str> = ds.iter().map(|d| d.environment.as_str()).collect();
    assert_eq!(envs, ["dev", "staging"]);
    assert_eq!(ds[0].status, Status::Requested);
    assert_eq!(ds[1].status, Status::Completed);
}
