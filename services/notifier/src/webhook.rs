//! The generic webhook channel: each admitted event POSTed as a CloudEvent (HTTP binding,
//! structured mode), signed with HMAC-SHA256 when a secret is set so receivers can verify us.
//!
//! Receivers deduplicate on the CloudEvents `id`, which is the event's own id: a redelivery
//! sends the same id again, never a new event.

use std::time::Duration;

use conveyor::config::Secret;

use crate::report::Report;
use crate::{Delivered, NotifyError, check_answer};

/// The header carrying our signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-conveyor-signature-256";

/// The content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// `sha256=<hex>` for `body` under `secret`.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    conveyor::signature::sign(secret.expose().as_bytes(), body)
}

/// Whether `header` is a valid signature of `body` under `secret` (constant-time compare):
/// what a receiver written in Rust does with our requests.
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    conveyor::signature::verify(secret.expose().as_bytes(), body, header)
}

/// The channel.
pub struct WebhookChannel {
    http: reqwest::Client,
    url: Secret,
    secret: Option<Secret>,
}

impl WebhookChannel {
    /// A channel POSTing to `url`, signing with `secret` when given.
    pub fn new(url: Secret, secret: Option<Secret>) -> Self {
        Self {
            http: conveyor::http::client(
                &conveyor::http::user_agent("notifier"),
                Duration::from_secs(10),
            ),
            url,
            secret,
        }
    }

    /// POST the event.
    pub async fn handle(&self, report: &Report<'_>) -> Result<Delivered, NotifyError> {
        let body = report.envelope.to_json();
        let mut request = self
            .http
            .post(self.url.expose())
            .header("content-type", CONTENT_TYPE)
            .header(
                "user-agent",
                concat!("conveyor-notifier/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, sign(secret, &body));
        }
        let answer = request
            .body(body)
            .send()
            .await
            .map_err(|e| NotifyError::Unavailable {
                channel: "webhook",
                message: e.without_url().to_string(),
            })?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let text = answer.text().await.unwrap_or_default();
        check_answer("webhook", status, &headers, &text)?;
        Ok(Delivered::Sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_same_secret_and_body() {
        let secret = Secret::new("s3cr3t");
        let sig = sign(&secret, b"{\"a\":1}");
        assert!(verify(&secret, b"{\"a\":1}", &sig));
        assert!(!verify(&secret, b"{\"a\":2}", &sig));
        assert!(!verify(&Secret::new("other"), b"{\"a\":1}", &sig));
        assert!(!verify(&secret, b"{\"a\":1}", "sha1=00"));
    }
}
