//! Conformance: the real kubectl drives the Kubernetes simulator, one step per contract of
//! docs/simulators.md (Kubernetes) it depends on. A simulator a real client cannot use is
//! kinder than reality, so each step fails the test, naming what regressed.
//!
//! Needs `kubectl` on the PATH (`scripts/ensure-kubectl`, run by `scripts/test`).

use std::time::Duration;

use conveyor_sim::kube::{Behavior, KubeSim};
use serde_json::Value;

const NS: &str = "conformance";

struct Kubectl {
    server: String,
    config: tempfile::TempDir,
}

/// What one kubectl run printed.
struct Ran {
    ok: bool,
    out: String,
    err: String,
}

impl Kubectl {
    /// Run `kubectl <args>` against the simulator; `contract` names what the step checks.
    async fn run(&self, contract: &str, args: &[&str]) -> Ran {
        self.run_with(contract, args, None).await
    }

    async fn run_with(&self, contract: &str, args: &[&str], stdin: Option<&str>) -> Ran {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--server")
            .arg(&self.server)
            .arg("--namespace")
            .arg(NS)
            .args(args)
            // Nothing of the user's clusters: an empty kubeconfig and its own cache.
            .env("KUBECONFIG", self.config.path().join("config"))
            .env("KUBECACHEDIR", self.config.path().join("cache"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{contract}: cannot run kubectl ({e}); scripts/ensure-kubectl installs it")
        });
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        drop(child.stdin.take());
        let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{contract}: kubectl {args:?} did not finish in 90 s"))
            .unwrap();
        Ran {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run it and require success and `expected` in what it printed.
    async fn expect(&self, contract: &str, args: &[&str], expected: &[&str]) -> String {
        let ran = self.run(contract, args).await;
        assert!(
            ran.ok,
            "{contract}: kubectl {args:?} failed\nstdout: {}\nstderr: {}",
            ran.out, ran.err
        );
        for e in expected {
            assert!(
                ran.out.contains(e),
                "{contract}: kubectl {args:?} did not print {e:?}\nstdout: {}\nstderr: {}",
                ran.out,
                ran.err
            );
        }
        ran.out
    }
}

async fn served() -> (KubeSim, Kubectl) {
    let sim = KubeSim::new();
    sim.set_default_behavior(Behavior::ReadyAfter(Duration::from_millis(50)));
    sim.set_grace(Duration::from_millis(50));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener, std::future::pending()).await });
    sim.create_statefulset(NS, "web", "app", "registry.example/web:1", 2);
    tokio::time::timeout(Duration::from_secs(20), sim.wait_settled(NS, "web"))
        .await
        .expect("the StatefulSet settles");
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config"),
        "apiVersion: v1\nkind: Config\n",
    )
    .unwrap();
    (sim, Kubectl { server, config })
}

/// Wait until the controller has made pod `name` again.
async fn recreated(sim: &KubeSim, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sim
        .pods(NS)
        .iter()
        .any(|p| p["metadata"]["name"] == name && p["metadata"]["deletionTimestamp"].is_null())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {name} was not created again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn image(sim: &KubeSim, name: &str) -> String {
    sim.get_statefulset(NS, name).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

const APPLIED: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: applied
spec:
  replicas: 1
  serviceName: applied
  selector:
    matchLabels: {app: applied}
  template:
    metadata:
      labels: {app: applied}
    spec:
      containers:
      - name: app
        image: registry.example/applied:IMAGE
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_simulated_cluster() {
    let (_sim, k) = served().await;
    let version = k
        .expect(
            "discovery: /version",
            &["version", "-o", "json"],
            &["serverVersion"],
        )
        .await;
    let v: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1", "{v}");
    k.expect(
        "discovery: /api, /apis and the resource lists",
        &["api-resources"],
        &[
            "statefulsets",
            "sts",
            "controllerrevisions",
            "pods",
            "events",
            "namespaces",
        ],
    )
    .await;
    k.expect(
        "a list of every namespace, as a Table",
        &["get", "statefulsets", "--all-namespaces"],
        &["NAMESPACE", NS, "web", "2/2"],
    )
    .await;
    k.expect(
        "the pods' Table: ready containers, status, node",
        &["get", "pods", "-o", "wide"],
        &["web-0", "web-1", "1/1", "Running", "sim-node-1"],
    )
    .await;
    k.expect(
        "a cluster-scoped kind",
        &["get", "namespaces"],
        &[NS, "Active"],
    )
    .await;
    k.expect(
        "Events of the controller and the kubelet",
        &["get", "events"],
        &["SuccessfulCreate", "statefulset/web", "Started"],
    )
    .await;
    k.expect(
        "describe: the set, its pods and its Events by field selector",
        &["describe", "statefulset", "web"],
        &["registry.example/web:1", "SuccessfulCreate"],
    )
    .await;
    k.expect(
        "the pods/log subresource",
        &["logs", "web-0"],
        &["registry.example/web:1"],
    )
    .await;
    let watched = k
        .run(
            "a watch of the set's Table",
            &[
                "get",
                "statefulset",
                "web",
                "--watch",
                "--request-timeout=2s",
            ],
        )
        .await;
    assert!(
        watched.out.contains("web"),
        "a watch of the set's Table: {}{}",
        watched.out,
        watched.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rolls_out_scales_and_rolls_back() {
    let (sim, k) = served().await;
    k.expect(
        "kubectl set image: a strategic merge patch with $setElementOrder",
        &[
            "set",
            "image",
            "statefulset/web",
            "app=registry.example/web:2",
        ],
        &["image updated"],
    )
    .await;
    let template = sim.get_statefulset(NS, "web").unwrap()["spec"]["template"].to_string();
    assert!(
        !template.contains('$'),
        "the patch's directives are consumed, not stored: {template}"
    );
    assert_eq!(image(&sim, "web"), "registry.example/web:2");
    k.expect(
        "kubectl's completion rule over the controller's status",
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
        &["roll out complete"],
    )
    .await;
    k.expect(
        "ControllerRevisions: one per template",
        &["rollout", "history", "statefulset/web"],
        &["1 ", "2 "],
    )
    .await;
    k.expect(
        "rollout undo: the previous revision's data as a strategic merge patch ($patch: replace)",
        &["rollout", "undo", "statefulset/web"],
        &["rolled back"],
    )
    .await;
    assert_eq!(image(&sim, "web"), "registry.example/web:1");
    let history = k
        .expect(
            "a rollback renumbers the revision it returns to",
            &["rollout", "history", "statefulset/web"],
            &["3 "],
        )
        .await;
    assert!(!history.contains("\n1 "), "revision 1 became 3: {history}");
    k.expect(
        "rollout status after the undo",
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
        &["roll out complete"],
    )
    .await;
    k.expect(
        "rollout restart: the restartedAt annotation, field manager kubectl-rollout",
        &["rollout", "restart", "statefulset/web"],
        &["restarted"],
    )
    .await;
    assert!(
        sim.get_statefulset(NS, "web").unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    k.expect(
        "the scale subresource",
        &["scale", "statefulset/web", "--replicas=3"],
        &["scaled"],
    )
    .await;
    assert_eq!(
        sim.get_statefulset(NS, "web").unwrap()["spec"]["replicas"],
        3
    );
    k.expect(
        "a JSON patch (RFC 6902)",
        &[
            "patch",
            "statefulset",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
        ],
        &["patched"],
    )
    .await;
    assert_eq!(
        sim.get_statefulset(NS, "web").unwrap()["spec"]["replicas"],
        2
    );
    let dry = k
        .expect(
            "dryRun=All: answered as if written, nothing stored",
            &[
                "patch",
                "statefulset",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"replicas":7}}"#,
                "--dry-run=server",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            &["7"],
        )
        .await;
    assert_eq!(dry.trim(), "7");
    assert_eq!(
        sim.get_statefulset(NS, "web").unwrap()["spec"]["replicas"],
        2,
        "a dry run persisted its change"
    );
    let refused = k
        .run(
            "immutable spec fields are refused (422)",
            &[
                "patch",
                "statefulset",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"serviceName":"other"}}"#,
            ],
        )
        .await;
    assert!(
        !refused.ok && refused.err.contains("Forbidden"),
        "immutable spec fields are refused (422): {}",
        refused.err
    );
    k.expect(
        "a pod deleted gracefully and awaited",
        &["delete", "pod", "web-0", "--timeout=30s"],
        &["deleted"],
    )
    .await;
    recreated(&sim, "web-0").await;
    k.expect(
        "the controller recreates it; kubectl wait reads its Ready condition",
        &[
            "wait",
            "--for=condition=Ready",
            "pod/web-0",
            "--timeout=30s",
        ],
        &["condition met"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_on_the_client_and_on_the_server() {
    let (sim, k) = served().await;
    let config = |image: &str| APPLIED.replace("IMAGE", image);
    let ran = k
        .run_with(
            "server-side apply creates",
            &[
                "apply",
                "--server-side",
                "--field-manager=ansible",
                "-f",
                "-",
            ],
            Some(&config("1")),
        )
        .await;
    assert!(ran.ok, "server-side apply creates: {}", ran.err);
    assert_eq!(image(&sim, "applied"), "registry.example/applied:1");
    let conflict = k
        .run_with(
            "server-side apply: another manager's field is a 409 conflict",
            &["apply", "--server-side", "-f", "-"],
            Some(&config("2")),
        )
        .await;
    assert!(
        !conflict.ok && conflict.err.contains("conflict with \"ansible\""),
        "server-side apply: another manager's field is a 409 conflict: {}{}",
        conflict.out,
        conflict.err
    );
    assert_eq!(image(&sim, "applied"), "registry.example/applied:1");
    let forced = k
        .run_with(
            "server-side apply --force-conflicts takes the field",
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&config("2")),
        )
        .await;
    assert!(forced.ok, "--force-conflicts: {}", forced.err);
    assert_eq!(image(&sim, "applied"), "registry.example/applied:2");
    let managed = k
        .expect(
            "managedFields name both managers",
            &[
                "get",
                "statefulset",
                "applied",
                "-o",
                "yaml",
                "--show-managed-fields",
            ],
            &[
                "manager: ansible",
                "manager: kubectl",
                "operation: Apply",
                "f:image",
            ],
        )
        .await;
    assert!(managed.contains("kube-controller-manager"), "{managed}");

    let client = config("3").replace("name: applied", "name: client");
    let client = client.replace("app: applied", "app: client");
    let created = k
        .run_with(
            "client-side apply: create, then a three-way strategic merge patch",
            &["apply", "-f", "-"],
            Some(&client),
        )
        .await;
    assert!(created.ok, "{}", created.err);
    let changed = k
        .run_with(
            "client-side apply: the change as a patch",
            &["apply", "-f", "-"],
            Some(&client.replace("applied:3", "applied:4")),
        )
        .await;
    assert!(
        changed.ok && changed.out.contains("configured"),
        "{}{}",
        changed.out,
        changed.err
    );
    assert_eq!(image(&sim, "client"), "registry.example/applied:4");
    k.expect(
        "a StatefulSet deleted with its pods",
        &["delete", "statefulset", "client"],
        &["deleted"],
    )
    .await;
    assert!(sim.get_statefulset(NS, "client").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_be_created_is_told_by_an_event() {
    let (sim, k) = served().await;
    sim.refuse_pods(
        NS,
        "web",
        "pods \"web-1\" is forbidden: exceeded quota: compute, requested: limits.cpu=2, used: limits.cpu=8, limited: limits.cpu=8",
    );
    k.expect(
        "a deleted pod is to be recreated",
        &["delete", "pod", "web-1", "--timeout=30s"],
        &["deleted"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ran = k
            .run(
                "the controller's FailedCreate Event",
                &["get", "events", "--field-selector", "reason=FailedCreate"],
            )
            .await;
        if ran.out.contains("exceeded quota") {
            assert!(ran.out.contains("Warning"), "{}", ran.out);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller's FailedCreate Event never came: {}{}",
            ran.out,
            ran.err
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !sim.pods(NS)
            .iter()
            .any(|p| p["metadata"]["name"] == "web-1"),
        "no pod while the creation is refused"
    );
    sim.allow_pods(NS, "web");
    recreated(&sim, "web-1").await;
    k.expect(
        "once allowed, the pod is created",
        &[
            "wait",
            "--for=condition=Ready",
            "pod/web-1",
            "--timeout=30s",
        ],
        &["condition met"],
    )
    .await;
}
