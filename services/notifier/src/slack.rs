//! The Slack channel: a Block Kit message when a deployment starts and one when it ends
//! (incoming webhooks cannot edit a message), with the environment, repository, commit link,
//! image, stage durations and, on failure, the cause and the AWX job link.

use std::sync::Mutex;
use std::time::Duration;

use conveyor::bounded::BoundedMap;
use conveyor::config::{NotifyLevel, Secret};
use conveyor::events::Trigger;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::report::{self, Report, Step};
use crate::{Delivered, NotifyError, check_answer};

/// Deployments remembered in process.
const REMEMBERED: usize = 1024;

/// What the channel learned about a deployment from its events, for the end message.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Repository deployed.
    pub repository: Option<String>,
    /// Commit deployed.
    pub sha: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// When it was requested.
    pub requested: Option<OffsetDateTime>,
    /// When it was handed to its executor.
    pub launched: Option<OffsetDateTime>,
    /// When the AWX job ended.
    pub job_finished: Option<OffsetDateTime>,
    /// The executor's page (AWX job).
    pub executor_url: Option<String>,
    /// What the executor is doing.
    pub executor: Option<String>,
}

impl Facts {
    /// Learn what `report` says.
    pub fn learn(&mut self, report: &Report<'_>) {
        let at = report.envelope.time;
        match report.step {
            Step::Requested(r) => {
                self.repository = Some(r.repository.clone());
                self.sha = Some(r.sha.clone());
                self.image = Some(r.image.reference());
                self.requested = Some(at);
            }
            Step::Launched(l) => {
                self.launched = Some(at);
                self.executor_url = report::executor_url(l).map(str::to_owned);
                self.executor = Some(report::executor_summary(l));
                self.image.get_or_insert_with(|| l.image.reference());
            }
            Step::JobFinished(_) => self.job_finished = Some(at),
            Step::Completed(c) => {
                self.image.get_or_insert_with(|| c.image.reference());
            }
            _ => {}
        }
    }
}

/// The channel.
pub struct SlackChannel {
    http: reqwest::Client,
    url: Secret,
    facts: Mutex<BoundedMap<String, Facts>>,
    sent: Mutex<BoundedMap<String, ()>>,
}

/// `&`, `<` and `>` are control characters in Slack's mrkdwn.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A duration as people read it: `850 ms`, `42 s`, `3 min 5 s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{} min {} s", s / 60, s % 60)
    }
}

fn between(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<Duration> {
    let d = b? - a?;
    d.try_into().ok()
}

/// The Block Kit message for `report`, or `None` when the step is not one Slack hears about
/// (only starts and ends are posted).
pub fn message(report: &Report<'_>, facts: &Facts) -> Option<Value> {
    let env = report.environment;
    let now = report.envelope.time;
    let image = facts.image.clone().unwrap_or_else(|| "?".into());
    let operation = report.operation();
    let (title, detail) = match report.step {
        Step::Requested(r) if r.operation.trigger == Trigger::Rollback => {
            (format!(":rewind: Rolling back {env}"), None)
        }
        Step::Requested(_) => (format!(":rocket: Deploying to {env}"), None),
        Step::Completed(_) => (format!(":white_check_mark: {env} is ready"), None),
        Step::Failed(f) => (
            format!(":x: Deployment to {env} FAILED"),
            Some(format!("*Cause*\n{}", escape(&report::cause(f)))),
        ),
        Step::AwaitingApproval(a) => (
            format!(":hourglass: {env} waits for approval"),
            Some(format!(
                "*Approvers*: {}\nApprove with `conveyor approve {}` or on the dashboard; it expires {}",
                escape(&a.approvers.join(", ")),
                escape(&report.deployment_id()),
                a.expires_at.date()
            )),
        ),
        Step::Superseded(s) => (
            format!(":fast_forward: Deployment to {env} superseded"),
            Some(format!(
                "Replaced by `{}` before it ran",
                escape(&s.superseded_by)
            )),
        ),
        _ => return None,
    };
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Environment*\n{}", escape(env))}),
        json!({"type": "mrkdwn", "text": format!("*Image*\n`{}`", escape(&image))}),
    ];
    if let Some(who) = operation.and_then(|o| o.describe()) {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Triggered*\n{}", escape(&who))}));
    }
    if let (Some(repo), Some(sha)) = (
        &facts.repository,
        facts.sha.as_ref().filter(|s| !s.is_empty()),
    ) {
        let short = &sha[..sha.len().min(7)];
        fields.push(json!({"type": "mrkdwn", "text": format!(
            "*Commit*\n<https://github.com/{repo}/commit/{sha}|{}@{short}>", escape(repo)
        )}));
    }
    if let Some(url) = &facts.executor_url {
        let name = facts.executor.clone().unwrap_or_else(|| "job".into());
        fields.push(
            json!({"type": "mrkdwn", "text": format!("*Executor*\n<{url}|{}>", escape(&name))}),
        );
    }
    let stages = [
        ("Queued", between(facts.requested, facts.launched)),
        ("AWX job", between(facts.launched, facts.job_finished)),
        (
            "Rollout",
            between(facts.job_finished.or(facts.launched), Some(now))
                .filter(|_| !matches!(report.step, Step::Requested(_))),
        ),
        (
            "Total",
            between(facts.requested, Some(now))
                .filter(|_| !matches!(report.step, Step::Requested(_))),
        ),
    ];
    let durations: Vec<String> = stages
        .iter()
        .filter_map(|(name, d)| d.map(|d| format!("{name}: {}", human(d))))
        .collect();
    if !durations.is_empty() {
        fields
            .push(json!({"type": "mrkdwn", "text": format!("*Stages*\n{}", durations.join("\n"))}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": conveyor::text::truncate_chars(&title, 150), "emoji": true}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(d) = detail {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": conveyor::text::truncate_chars(&d, 3000)}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("Conveyor deployment `{}`", escape(report.correlation_id()))}
    ]}));
    Some(json!({
        // The notification text (and what clients without blocks show).
        "text": format!("{title}: {image}"),
        "blocks": blocks,
    }))
}

impl SlackChannel {
    /// A channel posting to the incoming-webhook `url`.
    pub fn new(url: Secret) -> Self {
        Self {
            http: conveyor::http::client(
                &conveyor::http::user_agent("notifier"),
                Duration::from_secs(10),
            ),
            url,
            facts: Mutex::new(BoundedMap::new(REMEMBERED)),
            sent: Mutex::new(BoundedMap::new(REMEMBERED * 2)),
        }
    }

    /// Learn from every event; post the starts and ends `level` admits, once each.
    pub async fn handle(
        &self,
        report: &Report<'_>,
        level: NotifyLevel,
    ) -> Result<Delivered, NotifyError> {
        let correlation = report.deployment_id();
        let facts = {
            let mut all = conveyor::sync::lock(&self.facts);
            let mut facts = all.get(&correlation).cloned().unwrap_or_default();
            facts.learn(report);
            all.insert(correlation.clone(), facts.clone());
            facts
        };
        if !level.admits(report.kind()) {
            return Ok(Delivered::Nothing);
        }
        let Some(body) = message(report, &facts) else {
            return Ok(Delivered::Nothing);
        };
        let phase = match report.step {
            Step::Requested(_) => "start",
            Step::AwaitingApproval(_) => "approval",
            _ => "end",
        };
        let key = format!("{correlation} {phase}");
        if self.sent_lock().contains_key(&key) {
            return Ok(Delivered::Nothing);
        }
        let answer = self
            .http
            .post(self.url.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| NotifyError::Unavailable {
                channel: "slack",
                // Without the URL: it is the credential.
                message: e.without_url().to_string(),
            })?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let text = answer.text().await.unwrap_or_default();
        check_answer("slack", status, &headers, &text)?;
        self.sent_lock().insert(key, ());
        Ok(Delivered::Sent)
    }

    fn sent_lock(&self) -> std::sync::MutexGuard<'_, BoundedMap<String, ()>> {
        conveyor::sync::lock(&self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor::events::{DeployFailed, DeployRequested, GitRef, ImageRef};
    use conveyor::{Envelope, Event};

    fn request() -> Envelope {
        Envelope::new(
            "conveyor/build-trigger",
            Event::DeployRequested(DeployRequested {
                environment: "staging".into(),
                repository: "xchem/fragalysis-stack".into(),
                sha: "0123456789abcdef0123456789abcdef01234567".into(),
                git_ref: GitRef::branch("master"),
                image: ImageRef {
                    repository: "xchem/fragalysis-stack".into(),
                    tag: Some("latest".into()),
                    digest: None,
                },
                upstream: vec![],
                origin_time: None,
                operation: Default::default(),
            }),
        )
    }

    #[test]
    fn a_failure_names_its_cause_and_escapes_it() {
        let req = request();
        let mut facts = Facts::default();
        facts.learn(&Report::of(&req).unwrap());
        let mut failed = Envelope::caused_by(
            &req,
            "conveyor/rollout-watcher",
            Event::DeployFailed(DeployFailed {
                environment: "staging".into(),
                stage: conveyor::events::Stage::Rollout,
                reason: "stack-1: CrashLoopBackOff <exit 1>".into(),
                operation: None,
            }),
        );
        failed.time = req.time + time::Duration::seconds(200);
        let msg = message(&Report::of(&failed).unwrap(), &facts).unwrap();
        let text = msg.to_string();
        assert!(text.contains("FAILED"), "{text}");
        assert!(
            text.contains("stack-1: CrashLoopBackOff &lt;exit 1&gt;"),
            "{text}"
        );
        assert!(text.contains("Total: 3 min 20 s"), "{text}");
        assert!(text.contains("fragalysis-stack@0123456"), "{text}");
        assert_eq!(msg["blocks"][0]["type"], "header");
    }

    #[test]
    fn progress_steps_have_no_message() {
        let req = request();
        let job = Envelope::caused_by(
            &req,
            "conveyor/awx-launcher",
            Event::DeployJobFinished(conveyor::events::DeployJobFinished {
                environment: "staging".into(),
                job_id: 1,
                status: "successful".into(),
                failed: false,
                elapsed_seconds: 1.0,
                explanation: None,
                failed_task: None,
                stdout_tail: None,
            }),
        );
        assert!(message(&Report::of(&job).unwrap(), &Facts::default()).is_none());
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_secs(42)), "42.0 s");
    }
}
