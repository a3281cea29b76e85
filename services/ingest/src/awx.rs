//! AWX notification webhooks → `awx.job.started` / `awx.job.finished`, so awx-launcher learns
//! of a job's end without waiting for its next poll.
//!
//! AWX's default webhook body is the job's `notification_data()`: `id`, `name` (the template),
//! `url`, `status`, `started`, `finished`, … ; only those first four matter here.

use serde::Deserialize;

use conveyor::events::{AwxJobNotification, Event};

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
        status: n.status.clone(),
        url: n.url,
    };
    let event = match n.status.as_str() {
        "pending" | "waiting" | "running" => Event::AwxJobStarted(data),
        "successful" | "failed" | "error" | "canceled" => Event::AwxJobFinished(data),
        other => return Err(BadPayload(format!("unknown AWX job status {other:?}"))),
    };
    Ok(Parsed::Events(vec![event]))
}
