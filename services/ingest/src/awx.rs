//! AWX notification webhooks → `awx.job.started` / `awx.job.finished`, so awx-launcher learns
//! of a job's end without waiting for its next poll.
//!
//! AWX's default webhook body is the job's `notification_data()`: `id`, `name` (the template),
//! `url`, `status`, `started`, `finished`, … ; only those first four matter here.

use serde::Deserialize;

use conveyor::events::{AwxJobNotification, Event, JobStatus};

use crate::{BadPayload, Parsed};

#[derive(Deserialize)]
struct Notification {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    status: String,
}

/// Parse one AWX notification.
pub fn parse(body: &[u8]) -> Result<Parsed, BadPayload> {
    let n: Notification = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            BadPayload(format!("malformed JSON: {e}"))
        } else {
            BadPayload(format!("invalid AWX notification: {e}"))
        }
    })?;
    let data = AwxJobNotification {
        job_id: n.id,
        template: n.name,
        status: JobStatus::from(n.status.as_str()),
        url: n.url,
    };
    // AWX notifies `started` (pending, waiting, running) and the terminal statuses; `stuck` is
    // Conveyor's own word, not AWX's.
    let event = match data.status {
        JobStatus::Pending | JobStatus::Waiting | JobStatus::Running => Event::AwxJobStarted(data),
        s if s.is_terminal() && s != JobStatus::Stuck => Event::AwxJobFinished(data),
        _ => {
            return Err(BadPayload(format!("unknown AWX job status {:?}", n.status)));
        }
    };
    Ok(Parsed::Events(vec![event]))
}
