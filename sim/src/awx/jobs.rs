//! The job lifecycle: the task manager moving pending jobs to running and to their end, and
//! the notifications AWX sends when they start and finish.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;

impl AwxSim {
    /// Move pending jobs that nothing blocks to running; explain the ones that wait.
    pub(super) async fn task_manager(&self) {
        let (schedule, pace, explain_after) = {
            let mut s = self.lock();
            (s.schedule(), s.pace.clone(), s.explain_after)
        };
        let explanations = schedule
            .blocked
            .into_iter()
            .map(|(id, blocker)| (id, format!("waiting for job-{blocker} to finish")))
            .chain(schedule.no_capacity.into_iter().map(|id| {
                (
                    id,
                    "This job is not ready to start because there is not enough available capacity."
                        .to_owned(),
                )
            }));
        for (id, explanation) in explanations {
            self.explain_later(id, explanation, explain_after);
        }
        for id in schedule.started {
            self.notify(id).await;
            if let Pace::Auto { run_for, playbook } = &pace {
                self.play(id, *run_for, playbook.clone());
            }
        }
    }

    /// A waiting job's explanation appears only after it has waited a while, as AWX's does.
    fn explain_later(&self, id: u64, explanation: String, after: Duration) {
        let sim = self.clone();
        tokio::spawn(async move {
            let since = sim
                .lock()
                .jobs
                .iter()
                .find(|j| j.id == id)
                .map(|j| j.pending_since);
            if let Some(since) = since {
                tokio::time::sleep_until(since + after).await;
            }
            let mut s = sim.lock();
            if let Some(j) = s
                .jobs
                .iter_mut()
                .find(|j| j.id == id && j.status == "pending")
            {
                j.job_explanation = explanation;
            }
        });
    }

    /// Run a started job's playbook (or just wait `run_for`), then finish it.
    fn play(&self, id: u64, run_for: Duration, playbook: Option<Playbook>) {
        let ctx = {
            let s = self.lock();
            s.jobs.iter().find(|j| j.id == id).map(|j| JobContext {
                job_id: id,
                template: s
                    .templates
                    .iter()
                    .find(|t| t.id == j.template_id)
                    .map(|t| t.spec.name.clone())
                    .unwrap_or_default(),
                extra_vars: j.extra_vars.clone(),
            })
        };
        let Some(ctx) = ctx else { return };
        let sim = self.clone();
        tokio::spawn(async move {
            let result = match playbook {
                Some(p) => p(ctx).await,
                None => {
                    tokio::time::sleep(run_for).await;
                    PlaybookResult::successful()
                }
            };
            sim.finish_job(id, result).await;
        });
    }

    pub(super) async fn notify(&self, id: u64) {
        let (target, body) = {
            let s = self.lock();
            let Some(target) = s.notify.clone() else {
                return;
            };
            let Some(job) = s.jobs.iter().find(|j| j.id == id) else {
                return;
            };
            let name = s
                .templates
                .iter()
                .find(|t| t.id == job.template_id)
                .map(|t| t.spec.name.clone());
            // AWX's notification_data(): the fields its default webhook body carries.
            let body = json!({
                "id": job.id,
                "name": name,
                "url": format!("https://awx.example{}/jobs/{}/", s.prefix, job.id),
                "status": job.status,
                "started": job.started.map(ts),
                "finished": job.finished.map(ts),
                "created_by": s.username,
                "extra_vars": Value::String(Value::Object(job.extra_vars.clone()).to_string()),
            });
            (target, body)
        };
        let _ = self
            .http
            .post(&target.0)
            .header("x-conveyor-token", target.1)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }
}

/// One pass of the task manager.
#[derive(Default)]
pub(super) struct Schedule {
    /// Moved to running.
    started: Vec<u64>,
    /// Waiting for another job of the same template (this job, the blocker).
    blocked: Vec<(u64, u64)>,
    /// Waiting for capacity.
    no_capacity: Vec<u64>,
}

impl Inner {
    /// Start every pending job nothing blocks: not another running job of its template (unless
    /// it allows simultaneous runs), not a full instance group.
    fn schedule(&mut self) -> Schedule {
        let mut out = Schedule::default();
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|j| j.status == "pending")
            .map(|j| j.id)
            .collect();
        let active = |status: &str| matches!(status, "waiting" | "running");
        for id in ids {
            let Some(job) = self.jobs.iter().find(|j| j.id == id).cloned() else {
                continue;
            };
            let simultaneous = self
                .templates
                .iter()
                .find(|t| t.id == job.template_id)
                .is_some_and(|t| t.spec.allow_simultaneous);
            let blocker = self
                .jobs
                .iter()
                .find(|o| o.template_id == job.template_id && o.id != id && active(&o.status))
                .map(|o| o.id);
            let running = self.jobs.iter().filter(|o| active(&o.status)).count();
            if self.capacity.is_some_and(|c| running >= c) {
                out.no_capacity.push(id);
                continue;
            }
            match blocker {
                Some(b) if !simultaneous => out.blocked.push((id, b)),
                _ => {
                    if let Some(j) = self.jobs.iter_mut().find(|j| j.id == id) {
                        j.status = "running".into();
                        j.started = Some(OffsetDateTime::now_utc());
                        j.job_explanation.clear();
                    }
                    out.started.push(id);
                }
            }
        }
        out
    }
}
