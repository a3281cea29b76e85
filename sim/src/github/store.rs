//! The simulated repositories' store: runs created by dispatches, and the REST
//! representations of repositories, workflows and runs.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;

impl State_ {
    pub(super) fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos
            .iter()
            .find(|r| r.full_name.eq_ignore_ascii_case(name))
    }

    pub(super) fn repo_mut(&mut self, name: &str) -> Option<&mut Repo> {
        self.repos
            .iter_mut()
            .find(|r| r.full_name.eq_ignore_ascii_case(name))
    }

    pub(super) fn create_run(
        &mut self,
        repo: &str,
        workflow_id: u64,
        event: &str,
        head: &str,
        sha: &str,
        inputs: BTreeMap<String, String>,
    ) -> u64 {
        let id = next_id(self);
        let run_number = self
            .runs
            .iter()
            .filter(|r| r.workflow_id == workflow_id)
            .count() as u64
            + 1;
        let now = OffsetDateTime::now_utc();
        self.runs.push(Run {
            id,
            repository: repo.to_owned(),
            workflow_id,
            event: event.to_owned(),
            head_branch: head.to_owned(),
            head_sha: sha.to_owned(),
            status: RunStatus::Queued,
            conclusion: None,
            inputs,
            run_number,
            created_at: now,
            updated_at: now,
            run_started_at: None,
        });
        id
    }

    /// A repository inside another answer (`minimal-repository`).
    pub(super) fn repo_json(&self, r: &Repo) -> Value {
        super::shapes::minimal_repository(&self.base_url, &r.full_name, r.id)
    }

    /// `GET /repos/{owner}/{repo}` (`full-repository`).
    pub(super) fn full_repo_json(&self, r: &Repo) -> Value {
        super::shapes::full_repository(&self.base_url, &r.full_name, r.id, "main")
    }

    pub(super) fn workflow_json(&self, r: &Repo, w: &Workflow) -> Value {
        let file = w.spec.path.rsplit('/').next().unwrap_or(&w.spec.path);
        json!({
            "id": w.id,
            "node_id": format!("W_{}", w.id),
            "name": w.spec.name,
            "path": w.spec.path,
            "state": "active",
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "url": format!("{}/repos/{}/actions/workflows/{}", self.base_url, r.full_name, w.id),
            "html_url": format!("https://github.com/{}/blob/main/{}", r.full_name, w.spec.path),
            "badge_url": format!("https://github.com/{}/workflows/{file}/badge.svg", r.full_name),
        })
    }

    pub(super) fn run_json(&self, run: &Run) -> Value {
        let repo = self.repo(&run.repository);
        let wf = repo.and_then(|r| r.workflows.iter().find(|w| w.id == run.workflow_id));
        let name = wf.map(|w| w.spec.name.clone()).unwrap_or_default();
        let path = wf.map(|w| w.spec.path.clone()).unwrap_or_default();
        let url = format!(
            "{}/repos/{}/actions/runs/{}",
            self.base_url, run.repository, run.id
        );
        let repo_json = repo.map(|r| self.repo_json(r)).unwrap_or(Value::Null);
        json!({
            "id": run.id,
            "name": name,
            "node_id": format!("WFR_{}", run.id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": path,
            "display_title": name,
            "run_number": run.run_number,
            "event": run.event,
            "status": run.status.as_str(),
            "conclusion": run.conclusion,
            "workflow_id": run.workflow_id,
            "url": url,
            "html_url": format!("https://github.com/{}/actions/runs/{}", run.repository, run.id),
            "pull_requests": [],
            "created_at": ts(run.created_at),
            "updated_at": ts(run.updated_at),
            "actor": super::shapes::token_owner(&self.base_url),
            "triggering_actor": super::shapes::token_owner(&self.base_url),
            "run_attempt": 1,
            "referenced_workflows": [],
            // Set when the run is created; a queued run has it too.
            "run_started_at": ts(run.run_started_at.unwrap_or(run.created_at)),
            "check_suite_id": run.id + 1,
            "check_suite_node_id": format!("CS_kwDO{:08}", run.id + 1),
            "jobs_url": format!("{url}/jobs"),
            "logs_url": format!("{url}/logs"),
            "check_suite_url": format!("{}/repos/{}/check-suites/{}", self.base_url, run.repository, run.id + 1),
            "artifacts_url": format!("{url}/artifacts"),
            "cancel_url": format!("{url}/cancel"),
            "rerun_url": format!("{url}/rerun"),
            "previous_attempt_url": null,
            "workflow_url": format!("{}/repos/{}/actions/workflows/{}", self.base_url, run.repository, run.workflow_id),
            "head_commit": super::shapes::commit(&run.head_sha, "simulated commit", &ts(run.created_at)),
            "repository": repo_json.clone(),
            "head_repository": repo_json,
        })
    }

    pub(super) fn find_workflow(&self, repo: &Repo, key: &str) -> Option<Workflow> {
        repo.workflows
            .iter()
            .find(|w| {
                w.id.to_string() == key
                    || w.spec.path.rsplit('/').next() == Some(key)
                    || w.spec.path == key
            })
            .cloned()
    }
}
