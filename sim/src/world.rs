//! The three simulators wired as the Fragalysis world: GitHub delivering webhooks to ingest,
//! AWX whose playbook re-applies the simulated StatefulSet as the Ansible role does, and a
//! Kubernetes API with a settled 3-replica StatefulSet per environment. Used by `conveyor demo`
//! and `conveyor-sim all`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conveyor::config::{Executor, Pipeline};
use serde_json::json;
use time::OffsetDateTime;

use crate::awx::{AwxSim, Pace, PlaybookResult, TemplateSpec};
use crate::github::GitHubSim;
use crate::kube::{Behavior, KubeSim};

/// Credentials the world accepts and signs with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The GitHub token it accepts.
    pub github_token: String,
    /// The secret its GitHub webhooks are signed with.
    pub webhook_secret: String,
    /// The AWX token it accepts.
    pub awx_token: String,
    /// The token its AWX notifications carry (ingest's `REGISTRY_WEBHOOK_TOKEN`).
    pub hook_token: String,
}

/// How the world behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds a "3-minute" pod start takes; builds and jobs scale with it.
    pub pod_seconds: f64,
    /// Pods whose image contains this text crash-loop.
    pub crash_image: Option<String>,
    /// Where ingest listens (`http://host:port`): webhooks go to its `/webhooks/…`.
    pub ingest_url: String,
    /// Replicas of each StatefulSet.
    pub replicas: i64,
}

/// The running world.
pub struct World {
    /// GitHub.
    pub github: GitHubSim,
    /// AWX.
    pub awx: AwxSim,
    /// Kubernetes.
    pub kube: KubeSim,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
}

impl World {
    /// Build the world for `pipeline` (the simulators are not served yet: see their routers).
    pub async fn build(pipeline: &Pipeline, credentials: &Credentials, options: &Options) -> Self {
        let unit = options.pod_seconds;
        let kube = crate::kube_for(pipeline, options.replicas).await;
        kube.set_default_behavior(Behavior::ReadyAfter(secs(unit)));
        if let Some(image) = &options.crash_image {
            kube.kubelet_rule(
                image,
                Behavior::CrashLoop {
                    every: secs(unit / 3.0),
                },
            );
        }

        let awx = awx_playing(pipeline, &kube, &credentials.awx_token, unit);
        awx.notify_to(
            format!("{}/webhooks/awx", options.ingest_url),
            &credentials.hook_token,
        );

        let github = crate::github_for(pipeline, &credentials.github_token);
        github.deliver_webhooks_to(
            format!("{}/webhooks/github", options.ingest_url),
            &credentials.webhook_secret,
        );
        github.set_pace(crate::github::Pace::Auto {
            queued: secs(unit / 4.0),
            running: secs(unit * 1.5),
        });
        Self { github, awx, kube }
    }
}

/// An AWX whose job templates play the Ansible role: re-apply the environment's StatefulSet
/// with the image tag from the job's extra vars, then wait for it to settle.
fn awx_playing(pipeline: &Pipeline, kube: &KubeSim, token: &str, unit: f64) -> AwxSim {
    let awx = AwxSim::new(&pipeline.awx.api_prefix, "admin", "sim", token);
    let mut targets = BTreeMap::new();
    for e in &pipeline.environments {
        if let Executor::Awx(a) = &e.executor {
            awx.add_template(TemplateSpec::prompting(&a.template));
            let image = pipeline
                .repository(&e.repository)
                .map(|r| r.image().to_owned())
                .unwrap_or_default();
            targets.insert(
                a.template.clone(),
                (
                    e.statefulset.namespace.clone(),
                    e.statefulset.name.clone(),
                    a.image_var.clone(),
                    image,
                ),
            );
        }
    }
    let targets = Arc::new(targets);
    let playbook_kube = kube.clone();
    let patience = secs(20.0 * unit + 10.0);
    awx.set_pace(Pace::Auto {
        run_for: secs(unit),
        playbook: Some(Arc::new(move |job| {
            let (kube, targets) = (playbook_kube.clone(), targets.clone());
            Box::pin(async move {
                let Some((ns, name, var, image)) = targets.get(&job.template).cloned() else {
                    return PlaybookResult::failed("no StatefulSet for this template");
                };
                let tag = job
                    .extra_vars
                    .get(&var)
                    .and_then(|v| v.as_str())
                    .unwrap_or("latest");
                // The role re-applies the template with the tag and a timestamp.
                let patch = json!({"spec": {"template": {
                    "metadata": {"annotations": {"ansible_date_time_iso8601_micro": OffsetDateTime::now_utc().to_string()}},
                    "spec": {"containers": [{"name": name, "image": format!("{image}:{tag}")}]}}}});
                if !kube.apply_patch(&ns, &name, &patch) {
                    return PlaybookResult::failed("could not apply the StatefulSet");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                match tokio::time::timeout(patience, kube.wait_settled(&ns, &name)).await {
                    Ok(()) => PlaybookResult::successful(),
                    Err(_) => PlaybookResult::failed(&format!("{name}-2 never became ready")),
                }
            })
        })),
    });
    awx
}
