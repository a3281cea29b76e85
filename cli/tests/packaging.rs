//! docker-compose.yml and deploy/Dockerfile cannot be run here (no Docker engine), so check what
//! can be checked: the YAML parses, every command names a binary the workspace builds and the
//! image contains, every service gets the variables it refuses to start without, and every
//! simulator URL points at a port the simulators listen on.

use std::path::Path;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    serde_saphyr::from_str(&text).expect("docker-compose.yml is valid YAML")
}

/// Environment of a service, with the `<<: *env` merge resolved.
fn env(service: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(Value::Object(m)) = service.get("environment") {
        for (k, v) in m {
            if k == "<<" {
                if let Value::Object(base) = v {
                    out.extend(base.clone());
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[test]
fn compose_services_run_binaries_the_image_holds_with_the_settings_they_need() {
    let c = compose();
    let services = c["services"].as_object().expect("services");
    for name in [
        "rabbitmq",
        "simulators",
        "ingest",
        "build-trigger",
        "awx-launcher",
        "rollout-watcher",
        "notifier",
        "ledger",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let cargo_bins: Vec<String> = [
        "services/ingest",
        "services/build-trigger",
        "services/awx-launcher",
        "services/rollout-watcher",
        "services/notifier",
        "services/ledger",
        "sim",
        "cli",
    ]
    .iter()
    .flat_map(|dir| {
        let toml = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
        toml.lines().skip_while(|l| *l != "[[bin]]").find_map(|l| {
            l.strip_prefix("name = \"")
                .map(|n| n.trim_end_matches('"').to_owned())
        })
    })
    .collect();
    let required: &[(&str, &[&str])] = &[
        (
            "ingest",
            &["AMQP_URL", "GITHUB_WEBHOOK_SECRET", "INGEST_LISTEN"],
        ),
        (
            "build-trigger",
            &["AMQP_URL", "GITHUB_TOKEN", "GITHUB_API_URL"],
        ),
        ("awx-launcher", &["AMQP_URL", "AWX_URL", "AWX_TOKEN"]),
        ("rollout-watcher", &["AMQP_URL", "CONVEYOR_KUBE_API_URL"]),
        ("notifier", &["AMQP_URL", "GITHUB_TOKEN", "GITHUB_API_URL"]),
        (
            "ledger",
            &["AMQP_URL", "LEDGER_DATABASE_URL", "LEDGER_LISTEN"],
        ),
        (
            "simulators",
            &[
                "GITHUB_TOKEN",
                "GITHUB_WEBHOOK_SECRET",
                "AWX_TOKEN",
                "REGISTRY_WEBHOOK_TOKEN",
            ],
        ),
    ];
    let sim_args: Vec<String> = services["simulators"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for (name, vars) in required {
        let s = &services[*name];
        let command = s["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no command"));
        assert!(
            cargo_bins.iter().any(|b| b == command),
            "{name} runs {command}, not a workspace binary ({cargo_bins:?})"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{command}")),
            "the image does not hold {command}"
        );
        let e = env(s);
        for v in *vars {
            assert!(e.contains_key(*v), "{name} lacks {v}");
        }
        for url in e
            .values()
            .filter_map(Value::as_str)
            .filter(|v| v.starts_with("http://simulators:"))
        {
            let port = url.rsplit(':').next().unwrap();
            assert!(
                sim_args.iter().any(|a| a == &format!("0.0.0.0:{port}")),
                "{name} calls {url}, where the simulators do not listen"
            );
        }
    }
    // The simulators deliver webhooks where ingest listens.
    let ingest_listen = env(&services["ingest"])["INGEST_LISTEN"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = ingest_listen.rsplit(':').next().unwrap();
    assert!(
        sim_args.contains(&format!("http://ingest:{port}")),
        "{sim_args:?}"
    );
}
