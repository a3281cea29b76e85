//! The whole Conveyor pipeline in one process against the simulated world — ingest, build-trigger,
//! awx-launcher, rollout-watcher, the ledger and the notifier — as `conveyor demo` and the
//! orchestration benchmark run it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conveyor::Bus;
use conveyor::config::{Pipeline, Secret};
use conveyor_sim::world::{Credentials, Options as WorldOptions, World};
use tokio_util::sync::CancellationToken;

const GITHUB_TOKEN: &str = "stack-github-token";
const HOOK_SECRET: &str = "stack-webhook-secret";
const HOOK_TOKEN: &str = "stack-hook-token";
/// The simulated AWX's token (the demo prints it, for the awx CLI).
pub const AWX_TOKEN: &str = "stack-awx-token";
/// The demo's operator, and the token the control API knows them by.
pub const OPERATOR_NAME: &str = "demo-operator";
/// See [`OPERATOR_NAME`].
pub const OPERATOR_TOKEN: &str = "stack-operator-token";
/// The demo's release manager (a viewer who approves), and their token.
pub const APPROVER_NAME: &str = "demo-release-manager";
/// See [`APPROVER_NAME`].
pub const APPROVER_TOKEN: &str = "stack-approver-token";

/// A pipeline in which one successful build of `repository` on master deploys `environments`
/// environments at once (`env-0`, `env-1`, …; AWX template `Deploy env-N`, StatefulSet
/// `ns-N/stack`): the fan-out the scale benchmark and its regression test use.
pub fn fan_out_pipeline(repository: &str, environments: usize) -> Pipeline {
    let mut text = format!(
        "[[repository]]\nname = \"{repository}\"\nbuild_workflow = \"build main\"\nbranches = [\"master\"]\n"
    );
    for i in 0..environments {
        text.push_str(&format!(
            "\n[[environment]]\nname = \"env-{i}\"\nrepository = \"{repository}\"\non = {{ branch = \"master\" }}\nexecutor = {{ awx = {{ template = \"Deploy env-{i}\", image_var = \"stack_image_tag\" }} }}\nstatefulset = {{ namespace = \"ns-{i}\", name = \"stack\" }}\n"
        ));
    }
    Pipeline::parse(&text).expect("a generated fan-out pipeline is valid")
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Seconds a simulated "3-minute" pod start takes; builds and jobs scale with it.
    pub pod_seconds: f64,
    /// Pods whose image contains this crash-loop.
    pub crash_image: Option<String>,
    /// Replicas of each worker (build-trigger, awx-launcher, rollout-watcher), spread over the
    /// buses given to [`Stack::start`].
    pub replicas: usize,
    /// Where the ledger's dashboard listens (a free port when taken or `None`).
    pub dashboard: Option<SocketAddr>,
    /// Run the notifier (GitHub channel, against the simulated GitHub).
    pub notifier: bool,
    /// Pods of each simulated StatefulSet.
    pub pods_per_set: i64,
    /// How long the simulated AWX and Kubernetes take to answer each request: a range, or at
    /// once when `None`.
    pub api_latency: Option<(Duration, Duration)>,
}

impl Default for StackOptions {
    /// A fast world (pods Ready in 0.3 s, three per set, answers at once), one replica each,
    /// no notifier, a free dashboard port.
    fn default() -> Self {
        Self {
            pod_seconds: 0.3,
            crash_image: None,
            replicas: 1,
            dashboard: None,
            notifier: false,
            pods_per_set: 3,
            api_latency: None,
        }
    }
}

/// The running pipeline.
pub struct Stack {
    /// The simulators.
    pub world: World,
    /// The simulated GitHub's address.
    pub github_url: String,
    /// The simulated AWX's address (token [`AWX_TOKEN`]).
    pub awx_url: String,
    /// The simulated Kubernetes API's address.
    pub kube_url: String,
    /// The ledger.
    pub ledger: Arc<conveyor_ledger::Ledger>,
    /// The ledger's dashboard address (`http://…`).
    pub dashboard: String,
    _ledger_dir: tempfile::TempDir,
}

/// Serve `router` on a free loopback port; its base URL.
pub async fn serve(router: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

impl Stack {
    /// Build the world for `pipeline` and start every service until `stop`; replica `i` of a
    /// worker uses `buses[i % buses.len()]` (one connection per replica, as separate processes
    /// would have).
    pub async fn start(
        buses: &[Bus],
        pipeline: Arc<Pipeline>,
        options: &StackOptions,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let bus = buses
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no bus"))?;
        let ingest = serve(conveyor_ingest::router(
            bus.clone(),
            conveyor_ingest::Settings {
                github_secrets: vec![Secret::new(HOOK_SECRET)],
                webhook_token: Some(Secret::new(HOOK_TOKEN)),
                ..conveyor_ingest::Settings::default()
            },
        ))
        .await?;
        let world = World::build(
            &pipeline,
            &Credentials {
                github_token: GITHUB_TOKEN.into(),
                webhook_secret: HOOK_SECRET.into(),
                awx_token: AWX_TOKEN.into(),
                hook_token: HOOK_TOKEN.into(),
            },
            &WorldOptions {
                pod_seconds: options.pod_seconds,
                crash_image: options.crash_image.clone(),
                ingest_url: ingest,
                replicas: options.pods_per_set,
            },
        )
        .await;
        if let Some((min, max)) = options.api_latency {
            world.kube.set_latency(min, max);
            world.awx.set_latency(min, max);
        }
        let kube_url = serve(world.kube.router()).await?;
        let awx_url = serve(world.awx.router()).await?;
        let github_url = serve(world.github.router()).await?;

        start_workers(
            buses,
            &pipeline,
            options.replicas,
            &github_url,
            &awx_url,
            &kube_url,
            &stop,
        )?;
        let (ledger, dashboard, ledger_dir) =
            start_ledger(&bus, &pipeline, options.dashboard, &stop).await?;

        if options.notifier {
            let notifier = Arc::new(conveyor_notifier::Notifier::new(
                pipeline.clone(),
                &conveyor_notifier::Settings {
                    github: Some(conveyor::github::Settings {
                        api_url: github_url.clone(),
                        token: Secret::new(GITHUB_TOKEN),
                    }),
                    ledger_url: Some(dashboard.clone()),
                    ..conveyor_notifier::Settings::default()
                },
                conveyor_notifier::Metrics::default(),
            ));
            tokio::spawn(conveyor_notifier::run(bus.clone(), notifier, stop.clone()));
        }
        Ok(Self {
            world,
            github_url,
            awx_url,
            kube_url,
            ledger,
            dashboard,
            _ledger_dir: ledger_dir,
        })
    }
}

/// build-trigger, awx-launcher and rollout-watcher, `replicas` of each, replica `i` on
/// `buses[i % buses.len()]`.
fn start_workers(
    buses: &[Bus],
    pipeline: &Arc<Pipeline>,
    replicas: usize,
    github_url: &str,
    awx_url: &str,
    kube_url: &str,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for replica in 0..replicas.max(1) {
        let bus = buses[replica % buses.len()].clone();
        let trigger = Arc::new(conveyor_build_trigger::BuildTrigger::new(
            pipeline.clone(),
            &conveyor_build_trigger::Settings {
                api_url: github_url.to_owned(),
                token: Secret::new(GITHUB_TOKEN),
            },
            conveyor_build_trigger::Metrics::default(),
        ));
        tokio::spawn(conveyor_build_trigger::run(
            bus.clone(),
            trigger,
            stop.clone(),
        ));
        let launcher = Arc::new(conveyor_awx_launcher::AwxLauncher::new(
            pipeline.clone(),
            &conveyor_awx_launcher::Settings {
                url: awx_url.to_owned(),
                credentials: conveyor_awx_launcher::awx::Credentials::Token(Secret::new(AWX_TOKEN)),
            },
            bus.clone(),
            conveyor_awx_launcher::Metrics::default(),
        ));
        tokio::spawn(conveyor_awx_launcher::run(
            bus.clone(),
            launcher,
            stop.clone(),
        ));
        let client = kube::Client::try_from(kube::Config::new(kube_url.parse()?))?;
        let watcher = Arc::new(conveyor_rollout_watcher::RolloutWatcher::new(
            pipeline.clone(),
            conveyor_rollout_watcher::Clients::single(client),
            bus.clone(),
            conveyor_rollout_watcher::Metrics::default(),
            stop.clone(),
        ));
        tokio::spawn(conveyor_rollout_watcher::run(
            bus.clone(),
            watcher,
            stop.clone(),
        ));
    }
    Ok(())
}

/// The ledger on a SQLite file of its own, with its dashboard and control API (the demo's
/// operator and release manager) on `address` (any port when taken or not given).
async fn start_ledger(
    bus: &Bus,
    pipeline: &Arc<Pipeline>,
    address: Option<SocketAddr>,
    stop: &CancellationToken,
) -> anyhow::Result<(Arc<conveyor_ledger::Ledger>, String, tempfile::TempDir)> {
    // The ledger, on a SQLite file of its own.
    let ledger_dir = tempfile::tempdir()?;
    let ledger_db = format!(
        "sqlite://{}?mode=rwc",
        ledger_dir.path().join("ledger.db").display()
    );
    let ledger = Arc::new(conveyor_ledger::Ledger::new(
        conveyor_ledger::store::Store::open(&ledger_db).await?,
        conveyor_ledger::Metrics::default(),
        30,
    ));
    let address = address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let dashboard = format!("http://{}", listener.local_addr()?);
    // The control API, with the demo's operator and release manager.
    let tokens = ledger_dir.path().join("operators.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[operator]]\nname = \"{OPERATOR_NAME}\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"{APPROVER_NAME}\"\nroles = [\"viewer\", \"release-manager\"]\nsha256 = \"{}\"\n",
            conveyor_ledger::auth::token_hash(OPERATOR_TOKEN),
            conveyor_ledger::auth::token_hash(APPROVER_TOKEN)
        ),
    )?;
    let control = Arc::new(conveyor_ledger::control::Control {
        bus: bus.clone(),
        pipeline: pipeline.clone(),
        operators: conveyor_ledger::auth::Operators::new(Some(tokens), false)
            .map_err(anyhow::Error::msg)?,
    });
    let s = stop.clone();
    tokio::spawn(conveyor_ledger::serve(
        listener,
        ledger.clone(),
        Some(control),
        async move { s.cancelled().await },
    ));
    tokio::spawn(conveyor_ledger::run(
        bus.clone(),
        ledger.clone(),
        0,
        stop.clone(),
    ));
    Ok((ledger, dashboard, ledger_dir))
}
