//! The Kubernetes manifests, validated offline: every document deserialises into its
//! k8s-openapi type without losing a field (an unknown or misspelt field fails), kustomizations
//! reference files that exist, and the policies docs/operations.md promises hold.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes")).to_path_buf()
}

fn yaml_files(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

fn documents(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap();
    text.split("\n---\n")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Every path of `original` must survive a round trip through the typed object.
fn lost_fields(original: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost_fields(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_fields(v, w, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, name: &str) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut lost = Vec::new();
    lost_fields(doc, &serde_json::to_value(&typed).unwrap(), "", &mut lost);
    assert!(lost.is_empty(), "{name}: unknown fields {lost:?}");
    typed
}

#[test]
fn every_manifest_is_schema_valid_and_follows_the_policy() {
    let mut files = Vec::new();
    yaml_files(&dir(), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    let mut deployments = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        for doc in documents(f) {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no kind"))
                .to_owned();
            match kind.as_str() {
                "Kustomization" => {
                    let base = f.parent().unwrap();
                    for r in doc["resources"].as_array().into_iter().flatten() {
                        let p = base.join(r.as_str().unwrap());
                        assert!(
                            p.exists(),
                            "{name}: resource {} does not exist",
                            p.display()
                        );
                    }
                    for g in doc["configMapGenerator"].as_array().into_iter().flatten() {
                        for file in g["files"].as_array().into_iter().flatten() {
                            assert!(
                                base.join(file.as_str().unwrap()).exists(),
                                "{name}: {file} missing"
                            );
                        }
                    }
                }
                "Deployment" => deployments.push(round_trip::<Deployment>(&doc, &name)),
                "Service" => drop(round_trip::<Service>(&doc, &name)),
                "Ingress" => drop(round_trip::<Ingress>(&doc, &name)),
                "ServiceAccount" => drop(round_trip::<ServiceAccount>(&doc, &name)),
                "Role" => {
                    let role = round_trip::<Role>(&doc, &name);
                    for rule in role.rules.unwrap_or_default() {
                        for verb in &rule.verbs {
                            assert!(
                                ["get", "list", "watch", "patch", "delete"]
                                    .contains(&verb.as_str()),
                                "{name}: verb {verb}"
                            );
                        }
                        let resources = rule.resources.unwrap_or_default();
                        assert!(
                            resources
                                .iter()
                                .all(|r| r == "statefulsets" || r == "pods" || r == "events"),
                            "{name}: {resources:?}"
                        );
                        if resources.contains(&"events".to_string()) {
                            assert!(
                                rule.verbs.iter().all(|v| v == "get" || v == "list"),
                                "{name}: events are only read"
                            );
                        } else if resources.contains(&"pods".to_string()) {
                            assert!(
                                !rule.verbs.contains(&"patch".to_string()),
                                "{name}: pods are never patched"
                            );
                            // Pods may be deleted exactly where an environment unsticks.
                            let namespace = role.metadata.namespace.clone().unwrap_or_default();
                            assert_eq!(
                                rule.verbs.contains(&"delete".to_string()),
                                unsticks(&namespace),
                                "{name}: pods: delete must match unstick = true for {namespace}"
                            );
                        } else {
                            assert!(
                                !rule.verbs.contains(&"delete".to_string()),
                                "{name}: only pods are ever deleted"
                            );
                        }
                    }
                }
                "RoleBinding" => drop(round_trip::<RoleBinding>(&doc, &name)),
                "PrometheusRule" => alerting_rules(&doc, &name),
                other => panic!("{name}: unexpected kind {other} (no ClusterRole, no surprises)"),
            }
        }
    }
    let mut names: Vec<String> = deployments
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "awx-launcher",
            "build-trigger",
            "ingest",
            "ledger",
            "notifier",
            "rollout-watcher"
        ]
    );
    for d in &deployments {
        let name = d.metadata.name.clone().unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true),
            "{name}"
        );
        let c = &pod.containers[0];
        let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(probe(&c.liveness_probe).as_deref(), Some("/live"), "{name}");
        assert_eq!(
            probe(&c.readiness_probe).as_deref(),
            Some("/ready"),
            "{name}"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert!(c.resources.as_ref().unwrap().limits.is_some(), "{name}");
        assert_eq!(
            c.command.as_ref().unwrap()[0],
            name,
            "{name} runs its own binary"
        );
        // Secrets only by reference (a `*_FILE` names a mounted file: a path, no secret).
        for e in c.env.iter().flatten() {
            let secretish = ["TOKEN", "SECRET", "PASSWORD", "AMQP_URL"]
                .iter()
                .any(|s| e.name.contains(s))
                && !e.name.ends_with("_FILE");
            if secretish {
                assert!(
                    e.value.is_none() && e.value_from.is_some(),
                    "{name}: {} must come from a Secret",
                    e.name
                );
            }
        }
    }
}

/// The example alerting rules: the Prometheus Operator's shape, every alert complete, and every
/// metric they read one that Conveyor exports (as docs/metrics.md lists them).
fn alerting_rules(doc: &Value, name: &str) {
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{name}");
    let documented =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
            .unwrap();
    let groups = doc["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty(), "{name}: no groups");
    for group in groups {
        for rule in group["rules"].as_array().expect("rules") {
            let alert = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a rule without alert"));
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no expr"));
            assert!(
                rule["labels"]["severity"].is_string(),
                "{alert}: no severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{alert}: no summary"
            );
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert}: reads no Conveyor metric");
            for m in names {
                let base = m.trim_end_matches("_total");
                assert!(
                    documented.contains(&format!("`{m}"))
                        || documented.contains(&format!("`{base}")),
                    "{alert}: {m} is not a metric Conveyor exports"
                );
            }
        }
    }
}

/// The metric names an expression reads (Conveyor's prefixes only).
fn metric_names(expr: &str) -> Vec<String> {
    const PREFIXES: [&str; 7] = [
        "ingest_",
        "conveyor_",
        "ledger_",
        "notifier_",
        "awx_launcher_",
        "rollout_watcher_",
        "build_trigger_",
    ];
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| PREFIXES.iter().any(|p| w.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// Whether an environment of the shipped pipeline file deploys to `namespace` with
/// `unstick = true` (which needs `pods: delete` there, and nowhere else).
fn unsticks(namespace: &str) -> bool {
    let text = std::fs::read_to_string(dir().join("base/conveyor.toml")).unwrap();
    let pipeline = conveyor::config::Pipeline::parse(&text).expect("the shipped pipeline file");
    pipeline
        .environments
        .iter()
        .any(|e| e.unstick && e.statefulset.namespace == namespace)
}
