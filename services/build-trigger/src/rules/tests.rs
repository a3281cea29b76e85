use super::*;
use conveyor::events::BuildRun;

fn fragalysis() -> Pipeline {
    Pipeline::parse(include_str!("../../../../conveyor.toml")).expect("the shipped pipeline parses")
}

fn run(repo: &str, head: &str) -> BuildRun {
    BuildRun {
        repository: repo.into(),
        workflow_name: "build main".into(),
        workflow_path: Some(".github/workflows/build-main.yaml".into()),
        run_id: 100,
        run_number: Some(1),
        run_attempt: Some(1),
        trigger: Some("push".into()),
        head_branch: Some(head.into()),
        head_sha: "f".repeat(40),
        status: "completed".into(),
        conclusion: Some("success".into()),
        display_title: None,
        html_url: None,
        head_repository: None,
        created_at: None,
        updated_at: None,
    }
}

fn plan_of(p: &Pipeline, r: &BuildRun) -> Result<Plan, Ignored> {
    let (repo, git_ref) = classify_run(p, r)?;
    Ok(plan_success(p, repo, git_ref, r))
}

#[test]
fn frontend_staging_success_dispatches_the_stack_with_its_own_input_only() {
    let p = fragalysis();
    let plan = plan_of(&p, &run("xchem/fragalysis-frontend", "staging")).unwrap();
    assert_eq!(plan.dispatches.len(), 1);
    let d = &plan.dispatches[0];
    assert_eq!(d.repository, "xchem/fragalysis-stack");
    assert_eq!(d.workflow, "build main");
    assert_eq!(d.git_ref, "master");
    assert_eq!(
        d.inputs,
        [("fe_image_tag".to_string(), "latest".to_string())].into()
    );
    assert!(
        plan.deploys.is_empty(),
        "the frontend deploys nothing itself"
    );
}

#[test]
fn backend_tag_passes_the_tag_as_be_image_tag() {
    let p = fragalysis();
    let plan = plan_of(&p, &run("xchem/fragalysis-backend", "2.3.4")).unwrap();
    assert_eq!(plan.upstream.git_ref, GitRef::tag("2.3.4"));
    assert_eq!(
        plan.dispatches[0].inputs,
        [("be_image_tag".to_string(), "2.3.4".to_string())].into()
    );
}

#[test]
fn stack_master_success_requests_staging_only() {
    let p = fragalysis();
    let created = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let finished = created + time::Duration::minutes(12);
    let plan = plan_of(
        &p,
        &BuildRun {
            created_at: Some(created),
            updated_at: Some(finished),
            ..run("xchem/fragalysis-stack", "master")
        },
    )
    .unwrap();
    assert!(plan.dispatches.is_empty());
    assert_eq!(plan.deploys.len(), 1);
    let d = &plan.deploys[0];
    assert_eq!(d.environment, "staging");
    assert_eq!(d.git_ref, GitRef::branch("master"));
    assert_eq!(d.image.reference(), "xchem/fragalysis-stack:latest");
    assert_eq!(d.sha, "f".repeat(40));
    assert_eq!(
        d.origin_time,
        Some(created),
        "ordered by the run's creation, not its end"
    );
}

#[test]
fn stack_semver_tag_requests_production_and_v_prefixed_tag_nothing() {
    let p = fragalysis();
    let plan = plan_of(&p, &run("xchem/fragalysis-stack", "1.2.3")).unwrap();
    assert_eq!(plan.deploys.len(), 1);
    assert_eq!(plan.deploys[0].environment, "production");
    assert_eq!(plan.deploys[0].git_ref, GitRef::tag("1.2.3"));
    assert_eq!(plan.deploys[0].image.tag.as_deref(), Some("1.2.3"));

    assert_eq!(
        plan_of(&p, &run("xchem/fragalysis-stack", "v1.2")),
        Err(Ignored::UnwatchedRef)
    );
}

#[test]
fn runs_that_must_not_act_are_ignored_with_a_reason() {
    let p = fragalysis();
    let mut fork = run("xchem/fragalysis-frontend", "staging");
    fork.head_repository = Some("someone/fragalysis-frontend".into());
    assert_eq!(plan_of(&p, &fork), Err(Ignored::Fork));

    let mut pr = run("xchem/fragalysis-frontend", "staging");
    pr.trigger = Some("pull_request".into());
    assert_eq!(plan_of(&p, &pr), Err(Ignored::PullRequest));

    let mut lint = run("xchem/fragalysis-frontend", "staging");
    lint.workflow_name = "lint".into();
    lint.workflow_path = Some(".github/workflows/lint.yaml".into());
    assert_eq!(plan_of(&p, &lint), Err(Ignored::OtherWorkflow));

    assert_eq!(
        plan_of(&p, &run("xchem/fragalysis-frontend", "feature/x")),
        Err(Ignored::UnwatchedRef)
    );
    assert_eq!(
        plan_of(&p, &run("someone/else", "main")),
        Err(Ignored::UnknownRepository)
    );
}

#[test]
fn workflow_may_be_named_by_file() {
    let p = Pipeline::parse(
        r#"
[[repository]]
name = "o/app"
build_workflow = "build.yaml"
branches = ["main"]
"#,
    )
    .unwrap();
    let mut r = run("o/app", "main");
    r.workflow_name = "Build and push".into();
    r.workflow_path = Some(".github/workflows/build.yaml".into());
    assert!(classify_run(&p, &r).is_ok());
}

#[test]
fn placeholders_render_from_the_upstream() {
    let u = Upstream {
        repository: "o/fe".into(),
        git_ref: GitRef::branch("staging"),
        sha: "0123456789abcdef".into(),
        tag: "latest".into(),
        run_id: 42,
    };
    assert_eq!(
        u.render("{upstream.repository}@{upstream.short_sha} on {upstream.branch} ({upstream.ref}) run {upstream.run_id} tag {upstream.tag}"),
        "o/fe@0123456 on staging (refs/heads/staging) run 42 tag latest"
    );
}

#[test]
fn image_pushes_deploy_only_environments_that_deploy_on_images() {
    let text = include_str!("../../../../conveyor.toml").replace(
        "on = { tag = '^\\d+\\.\\d+\\.\\d+$' }",
        "on = { tag = '^\\d+\\.\\d+\\.\\d+$' }\ndeploy_on = \"image\"",
    );
    let p = Pipeline::parse(&text).unwrap();
    let pushed = |tag: &str| ImagePushed {
        registry: "dockerhub".into(),
        image: ImageRef {
            repository: "xchem/fragalysis-stack".into(),
            tag: Some(tag.into()),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        },
        pusher: None,
        source_repository: None,
        revision: None,
    };
    let deploys = plan_image(&p, &pushed("1.2.3")).unwrap();
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0].environment, "production");
    assert!(deploys[0].image.digest.is_some());
    // A registry that does not say which commit the image holds leaves the commit unknown…
    assert_eq!(deploys[0].sha, "");
    assert_eq!(deploys[0].git_ref, GitRef::tag("1.2.3"));
    // …and one that does (GHCR's revision label) names it.
    let labelled = ImagePushed {
        revision: Some("c".repeat(40)),
        ..pushed("1.2.3")
    };
    assert_eq!(plan_image(&p, &labelled).unwrap()[0].sha, "c".repeat(40));
    assert!(
        !deploys[0].operation.untracked,
        "a tag names its commit on GitHub"
    );
    // staging deploys on builds, so the `latest` push requests nothing.
    assert_eq!(
        plan_image(&p, &pushed("latest")),
        Err(Ignored::UnknownImage)
    );
    // and the production build no longer requests production: never both.
    let plan = plan_of(&p, &run("xchem/fragalysis-stack", "1.2.3")).unwrap();
    assert!(plan.deploys.is_empty());
}

#[test]
fn a_branch_image_without_its_commit_is_deployed_but_untracked() {
    let text = include_str!("../../../../conveyor.toml").replace(
        "on = { branch = \"master\" }",
        "on = { branch = \"master\" }\ndeploy_on = \"image\"",
    );
    let p = Pipeline::parse(&text).unwrap();
    let pushed = ImagePushed {
        registry: "quay".into(),
        image: ImageRef {
            repository: "xchem/fragalysis-stack".into(),
            tag: Some("latest".into()),
            digest: Some(format!("sha256:{}", "d".repeat(64))),
        },
        pusher: None,
        source_repository: None,
        revision: None,
    };
    let deploys = plan_image(&p, &pushed).unwrap();
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0].environment, "staging");
    assert_eq!(deploys[0].git_ref, GitRef::branch("master"));
    assert!(deploys[0].operation.untracked);
    // Carried to every later event, so no step tries to report on a commit.
    assert!(deploys[0].operation.carried().is_some_and(|o| o.untracked));
    let named = ImagePushed {
        revision: Some("e".repeat(40)),
        ..pushed
    };
    assert!(!plan_image(&p, &named).unwrap()[0].operation.untracked);
}
