//! Webhook deliveries: signed `workflow_run` events as the runs move, GitHub's delivery log,
//! and redelivery of the failed ones.

use std::time::Duration;

use serde_json::json;

use super::*;

impl GitHubSim {
    pub(super) async fn deliver(&self, id: u64, action: &str) {
        let body = {
            let s = self.lock();
            if s.webhook.is_none() {
                return;
            }
            let Some(run) = s.runs.iter().find(|r| r.id == id) else {
                return;
            };
            let Some(repo) = s.repo(&run.repository) else {
                return;
            };
            let Some(wf) = repo.workflows.iter().find(|w| w.id == run.workflow_id) else {
                return;
            };
            let body = json!({
                "action": action,
                "workflow_run": s.run_json(run),
                "workflow": s.workflow_json(repo, wf),
                "repository": s.repo_json(repo),
                "sender": {"login": "conveyor-sim", "id": 1, "type": "User"},
            });
            serde_json::to_vec(&body).unwrap_or_default()
        };
        let delivery = Delivery {
            guid: uuid::Uuid::now_v7().to_string(),
            action: action.to_owned(),
            body,
        };
        self.send(delivery).await;
    }

    /// Send one delivery; a delivery that gets no 2xx is kept for [`GitHubSim::redeliver_failed`].
    pub(super) async fn send(&self, delivery: Delivery) -> u16 {
        let Some(target) = self.lock().webhook.clone() else {
            return 0;
        };
        let signature = conveyor::signature::sign(target.secret.as_bytes(), &delivery.body);
        let answer = self
            .http
            .post(&target.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/conveyor-sim")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", &delivery.guid)
            .header("x-github-hook-id", "1")
            .header("x-hub-signature-256", signature)
            .body(delivery.body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let status = match answer {
            Ok(r) => r.status().as_u16(),
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery failed");
                0
            }
        };
        let mut s = self.lock();
        s.deliveries.push((delivery.action.clone(), status));
        if !(200..300).contains(&status) {
            s.failed_deliveries.push(delivery);
        }
        status
    }

    /// Deliveries that got no 2xx so far (GitHub's "failed" list), not yet redelivered.
    pub fn failed_deliveries(&self) -> usize {
        self.lock().failed_deliveries.len()
    }

    /// Redeliver every failed delivery once, with its original GUID and body, as an operator
    /// does from the webhook's "Recent Deliveries" page (GitHub never redelivers by itself).
    /// Returns how many got a 2xx this time; the others stay failed.
    pub async fn redeliver_failed(&self) -> usize {
        let failed = std::mem::take(&mut self.lock().failed_deliveries);
        let mut ok = 0;
        for delivery in failed {
            if (200..300).contains(&self.send(delivery).await) {
                ok += 1;
            }
        }
        ok
    }

    pub(super) fn schedule(&self, id: u64) {
        let Pace::Auto { queued, running } = self.lock().pace else {
            return;
        };
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(queued).await;
            sim.start_run(id).await;
            tokio::time::sleep(running).await;
            sim.complete_run(id, "success").await;
        });
    }
}
