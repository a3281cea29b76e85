//! Simulators of the systems Conveyor drives — GitHub, AWX and the Kubernetes API — faithful to
//! `docs/simulators.md`, including their unpleasant parts. Tests use them as a library; the
//! demo runs them as `conveyor-sim <system>`.

pub mod awx;
pub mod github;
pub mod kube;
pub mod world;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use conveyor::config::Pipeline;

/// Largest request body a simulator reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Middleware: a request received in full is carried out even if its client goes away, as
/// Django (AWX) and Rails (GitHub) do — only the answer is lost. axum alone would drop the
/// handler with the connection, which would hide the race a dead client's write leaves behind.
pub async fn finish_what_was_received(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::BAD_REQUEST, "incomplete request body").into_response();
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
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
