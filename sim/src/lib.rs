//! Simulators of the systems Conveyor drives — GitHub, AWX and the Kubernetes API — faithful to
//! `docs/simulators.md`, including their unpleasant parts. Tests use them as a library; the
//! demo runs them as `conveyor-sim <system>`.

pub mod awx;
pub mod github;
pub mod kube;
pub mod plumbing;
pub mod world;

use conveyor::config::Pipeline;

/// A Kubernetes simulator with each environment's StatefulSet (`replicas` pods of its
/// repository's branch image), settled, its pods Ready 50 ms after they start until the
/// caller sets another behaviour.
pub async fn kube_for(pipeline: &Pipeline, replicas: i64) -> kube::KubeSim {
    let sim = kube::KubeSim::new();
    sim.set_default_behavior(kube::Behavior::ReadyAfter(
        std::time::Duration::from_millis(50),
    ));
    for e in &pipeline.environments {
        let container = match &e.executor {
            conveyor::config::Executor::Kubernetes(k) => k.container.clone(),
            conveyor::config::Executor::Awx(_) => e.statefulset.name.clone(),
        };
        let image = pipeline
            .repository(&e.repository)
            .map(|r| format!("{}:{}", r.image(), r.branch_image_tag))
            .unwrap_or_default();
        sim.create_statefulset(
            &e.statefulset.namespace,
            &e.statefulset.name,
            &container,
            &image,
            replicas,
        );
        sim.wait_settled(&e.statefulset.namespace, &e.statefulset.name)
            .await;
    }
    sim
}

/// A GitHub simulator seeded from the pipeline: every repository with its watched branches,
/// its dispatch ref, and its build workflow accepting exactly the inputs the pipeline sends.
pub fn github_for(pipeline: &Pipeline, token: &str) -> github::GitHubSim {
    let sim = github::GitHubSim::new(token);
    for repo in &pipeline.repositories {
        sim.add_repo(&repo.name);
        let mut branches: Vec<&str> = repo.branches.iter().map(String::as_str).collect();
        branches.extend(repo.dispatch_ref.as_deref());
        for b in branches {
            sim.set_branch(&repo.name, b, &github::fake_sha(&repo.name, b));
        }
        let mut inputs: Vec<String> = repo.dispatch_inputs.keys().cloned().collect();
        for up in pipeline.repositories.iter().filter(|u| {
            u.downstream
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&repo.name))
        }) {
            inputs.extend(up.downstream_inputs.keys().cloned());
        }
        inputs.sort();
        inputs.dedup();
        let file: String = repo
            .build_workflow
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        sim.add_workflow(
            &repo.name,
            github::WorkflowSpec {
                name: repo.build_workflow.clone(),
                path: format!(".github/workflows/{file}.yaml"),
                dispatch_inputs: Some(inputs),
            },
        );
    }
    sim
}
