use super::*;

fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../conveyor.toml")).unwrap()
}

fn problems(text: &str) -> Vec<Problem> {
    Pipeline::parse(text)
        .expect_err("should be invalid")
        .problems
}

fn has(problems: &[Problem], key: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|p| p.key == key && p.message.contains(needle))
}

#[test]
fn the_shipped_pipeline_loads_and_means_fragalysis() {
    let p = Pipeline::parse(&shipped()).expect("shipped conveyor.toml is valid");
    assert_eq!(p.repositories.len(), 3);
    let staging = p.environment("staging").unwrap();
    let production = p.environment("production").unwrap();
    assert!(staging.accepts(&GitRef::branch("master")));
    assert!(!staging.accepts(&GitRef::branch("staging")));
    assert!(production.accepts(&GitRef::tag("1.0.3")));
    assert!(!production.accepts(&GitRef::tag("v1.2")));
    assert!(!production.accepts(&GitRef::branch("1.0.3")));
    assert!(production.is_production() && !staging.is_production());
    assert_eq!(staging.notify.slack, NotifyLevel::Failures);
    assert_eq!(staging.notify.github, NotifyLevel::All);
    assert_eq!(production.notify.slack, NotifyLevel::All);
    assert!(production.url.as_deref().unwrap().starts_with("https://"));
    let fe = p.repository("xchem/fragalysis-frontend").unwrap();
    assert!(fe.watches(&GitRef::branch("staging")));
    assert!(!fe.watches(&GitRef::branch("feature/x")));
    assert!(fe.watches(&GitRef::tag("2.0.0")));
    assert_eq!(fe.downstream, ["xchem/fragalysis-stack"]);
    match &staging.executor {
        Executor::Awx(a) => assert_eq!(a.image_var, "stack_image_tag"),
        other => panic!("unexpected executor {other:?}"),
    }
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[[repository]]
name = "o/a"
build_workflow = "build"
downstream = ["o/missing", "o/a"]
tags = "(["
dispatch_inputs = { x = "{upstream.nope}" }

[[repository]]
name = "o/a"
build_workflow = ""

[[environment]]
name = "Prod.EU"
repository = "o/none"
on = { tag = "*" }
executor = { awx = { template = "", image_var = "v" } }
statefulset = { namespace = "Bad_NS", name = "stack" }
url = "fragalysis.example"
notify = { github = "failures" }
"#;
    let ps = problems(text);
    assert!(
        has(
            &ps,
            "repository[0].downstream[0]",
            "not a declared repository"
        ),
        "{ps:#?}"
    );
    assert!(
        has(&ps, "repository[0].downstream[1]", "own downstream"),
        "{ps:#?}"
    );
    assert!(has(&ps, "repository[0].tags", "invalid regex"), "{ps:#?}");
    assert!(
        has(
            &ps,
            "repository[0].dispatch_inputs.x",
            "unknown placeholder"
        ),
        "{ps:#?}"
    );
    assert!(has(&ps, "repository[1].name", "declared twice"), "{ps:#?}");
    assert!(
        has(&ps, "repository[1].build_workflow", "must name"),
        "{ps:#?}"
    );
    assert!(has(&ps, "environment[0].name", "[a-z0-9_-]+"), "{ps:#?}");
    assert!(
        has(&ps, "environment[0].repository", "not a declared"),
        "{ps:#?}"
    );
    assert!(
        has(&ps, "environment[0].on.tag", "invalid regex"),
        "{ps:#?}"
    );
    assert!(
        has(&ps, "environment[0].executor.awx.template", "job template"),
        "{ps:#?}"
    );
    assert!(
        has(&ps, "environment[0].statefulset.namespace", "namespace"),
        "{ps:#?}"
    );
    assert!(has(&ps, "environment[0].url", "http(s)"), "{ps:#?}");
    assert!(
        has(&ps, "environment[0].notify.github", "\"all\" or \"none\""),
        "{ps:#?}"
    );
    let shown = ConfigError { problems: ps }.to_string();
    assert!(shown.contains("environment[0].on.tag"));
}

#[test]
fn unknown_keys_and_bad_types_name_the_line() {
    let ps =
        problems("[[repository]]\nname = \"o/a\"\nbuild_workflow = \"b\"\nbranchs = [\"x\"]\n");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].key, "line 4");
    assert!(ps[0].message.contains("branchs"), "{ps:?}");
    let ps = problems("[[environment]]\nname = 3\n");
    assert!(ps[0].key.starts_with("line "), "{ps:?}");
}

#[test]
fn downstream_cycles_are_rejected() {
    let text = r#"
[[repository]]
name = "o/a"
build_workflow = "b"
downstream = ["o/b"]
[[repository]]
name = "o/b"
build_workflow = "b"
downstream = ["o/a"]
"#;
    let ps = problems(text);
    assert!(ps.iter().any(|p| p.message.contains("cycle")), "{ps:?}");
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("hunter2-very-secret");
    assert_eq!(format!("{s}"), "***");
    assert!(!format!("{s:?}").contains("hunter2"));
    let env: BTreeMap<&str, &str> = [("AMQP_URL", "amqp://u:hunter2-very-secret@h/%2f")].into();
    let w = Wiring::from_env(&env, None).unwrap();
    assert!(!format!("{w:?}").contains("hunter2"));
    assert_eq!(w.amqp_url.expose(), "amqp://u:hunter2-very-secret@h/%2f");
}

#[test]
fn secrets_come_from_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "from-file\n").unwrap();
    let path = path.to_str().unwrap();
    let env: BTreeMap<&str, &str> = [("GITHUB_TOKEN_FILE", path)].into();
    assert_eq!(
        secret(&env, "GITHUB_TOKEN").unwrap().unwrap().expose(),
        "from-file"
    );
    let env: BTreeMap<&str, &str> = [("GITHUB_TOKEN_FILE", path), ("GITHUB_TOKEN", "x")].into();
    assert!(secret(&env, "GITHUB_TOKEN").is_err());
    let env: BTreeMap<&str, &str> = [("GITHUB_TOKEN_FILE", "/nonexistent/t")].into();
    let err = secret(&env, "GITHUB_TOKEN").unwrap_err();
    assert_eq!(err.problems[0].key, "GITHUB_TOKEN_FILE");
    let env: BTreeMap<&str, &str> = BTreeMap::new();
    assert!(secret(&env, "GITHUB_TOKEN").unwrap().is_none());
}

#[test]
fn wiring_defaults_and_errors() {
    let env: BTreeMap<&str, &str> = BTreeMap::new();
    let w = Wiring::from_env(&env, None).unwrap();
    assert_eq!(w.exchange, "conveyor");
    assert_eq!(w.admin_listen.port(), 9090);
    assert_eq!(w.amqp_url.expose(), DEFAULT_AMQP_URL);
    let env: BTreeMap<&str, &str> = [
        ("AMQP_URL", "http://x"),
        ("CONVEYOR_ADMIN_LISTEN", "nope"),
        ("CONVEYOR_EXCHANGE", "a b"),
    ]
    .into();
    let e = Wiring::from_env(&env, None).unwrap_err();
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["AMQP_URL", "CONVEYOR_EXCHANGE", "CONVEYOR_ADMIN_LISTEN"]
    );
    let env: BTreeMap<&str, &str> = [("CONVEYOR_CONFIG", "/etc/c.toml")].into();
    assert_eq!(
        Wiring::from_env(&env, Some(Path::new("/x.toml")))
            .unwrap()
            .config_path,
        PathBuf::from("/x.toml")
    );
}

#[test]
fn placeholders_are_found() {
    assert_eq!(
        placeholders("{upstream.tag}-{upstream.sha}"),
        ["upstream.tag", "upstream.sha"]
    );
    assert!(placeholders("plain").is_empty());
}

#[test]
fn notify_levels_admit_by_weight() {
    use NotifyKind::*;
    let admitted = |l: NotifyLevel| {
        [Progress, Finished, Failure]
            .into_iter()
            .filter(|k| l.admits(*k))
            .count()
    };
    assert_eq!(admitted(NotifyLevel::All), 3);
    assert!(!NotifyLevel::Finished.admits(Progress) && NotifyLevel::Finished.admits(Finished));
    assert!(NotifyLevel::Failures.admits(Failure) && !NotifyLevel::Failures.admits(Finished));
    assert_eq!(admitted(NotifyLevel::None), 0);
}
