//! notifier: reports every deployment where people and tools already look — GitHub Deployments
//! and commit statuses, Slack, and CloudEvents webhooks.
//!
//! Each channel consumes its own queue (`notifier.github`, `notifier.slack`,
//! `notifier.webhook`), so a channel that is down delays only itself, never the pipeline or the
//! other channels. Each queue has one active consumer, so a deployment's reports keep their
//! order. Which environments a channel hears, and how much, is declared per environment in
//! `conveyor.toml` (`notify = { github = "all", slack = "failures" }`); a channel without its
//! secret in the environment is off and acknowledges what it receives.

pub mod github;
pub mod report;
pub mod slack;
pub mod webhook;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use conveyor::bus::queues;
use conveyor::config::{ConfigError, Env, NotifyLevel, NotifyRouting, Pipeline, Secret, secret};
use conveyor::github::GitHubError;
use conveyor::retry::{Classify, Transience};
use conveyor::{Bus, BusError, ConsumerOptions, Incoming, Outcome};
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use report::Report;

/// The event source name (the notifier publishes nothing; it is its connection name).
pub const SOURCE: &str = "conveyor/notifier";

/// Settings from the environment. Every channel is optional; its secret switches it on.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `GITHUB_TOKEN` (+ `GITHUB_API_URL`): a token with `repo_deployment` and `repo:status`.
    pub github: Option<conveyor::github::Settings>,
    /// `SLACK_WEBHOOK_URL`: a Slack incoming-webhook URL (it is the credential).
    pub slack: Option<Secret>,
    /// `NOTIFIER_WEBHOOK_URL`: where CloudEvents are POSTed (may carry a token).
    pub webhook: Option<Secret>,
    /// `NOTIFIER_WEBHOOK_SECRET`: the HMAC key receivers verify our signature with.
    pub webhook_secret: Option<Secret>,
    /// `CONVEYOR_LEDGER_URL`: the ledger's public address; deployment links point there.
    pub ledger_url: Option<String>,
}

impl Settings {
    /// Read the settings; each value may also come from a `<NAME>_FILE`.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let slack = secret(env, "SLACK_WEBHOOK_URL")?;
        let webhook = secret(env, "NOTIFIER_WEBHOOK_URL")?;
        let webhook_secret = secret(env, "NOTIFIER_WEBHOOK_SECRET")?;
        if webhook_secret.is_some() && webhook.is_none() {
            return Err(ConfigError::one(
                "NOTIFIER_WEBHOOK_SECRET",
                "is set but NOTIFIER_WEBHOOK_URL is not",
            ));
        }
        for (key, value) in [
            ("SLACK_WEBHOOK_URL", &slack),
            ("NOTIFIER_WEBHOOK_URL", &webhook),
        ] {
            if let Some(v) = value
                && !(v.expose().starts_with("https://") || v.expose().starts_with("http://"))
            {
                // The value itself is a credential: say what is wrong without repeating it.
                return Err(ConfigError::one(key, "must be an http(s) URL"));
            }
        }
        let ledger_url = env
            .var("CONVEYOR_LEDGER_URL")
            .map(|u| u.trim_end_matches('/').to_owned());
        Ok(Self {
            github: conveyor::github::Settings::from_env(env)?,
            slack,
            webhook,
            webhook_secret,
            ledger_url,
        })
    }
}

/// `<ledger>/deployments/<correlation>.<environment>`: the ledger's id of a deployment.
pub fn ledger_page(
    ledger: Option<&str>,
    correlation_id: &str,
    environment: &str,
) -> Option<String> {
    ledger.map(|base| {
        format!(
            "{base}/deployments/{}",
            conveyor::events::deployment_id(correlation_id, environment)
        )
    })
}

/// A notification that did not go out, classified for the broker's retry.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// GitHub refused, throttled or failed.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// A receiver refused, and will refuse again (Slack 400/403/404/410, a webhook 4xx).
    #[error("{channel} answered {status}: {message}")]
    Rejected {
        /// `slack` or `webhook`.
        channel: &'static str,
        /// HTTP status.
        status: u16,
        /// The receiver's answer (never the URL: it is a credential).
        message: String,
    },
    /// A receiver asked us to slow down.
    #[error("{channel} asked to retry in {wait:?}")]
    Throttled {
        /// Which channel.
        channel: &'static str,
        /// How long.
        wait: Duration,
    },
    /// A receiver is down or slow (5xx, timeout, network).
    #[error("{channel} unavailable: {message}")]
    Unavailable {
        /// Which channel.
        channel: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The GitHub deployment this event updates does not exist yet (its request is still
    /// queued or being retried).
    #[error("no GitHub deployment yet for {correlation_id} in {environment}")]
    NoDeployment {
        /// The chain.
        correlation_id: String,
        /// The environment.
        environment: String,
    },
}

impl Classify for NotifyError {
    fn transience(&self) -> Transience {
        match self {
            NotifyError::GitHub(e) => e.transience(),
            NotifyError::Rejected { .. } => Transience::Permanent,
            NotifyError::Throttled { wait, .. } => Transience::Transient(Some(*wait)),
            NotifyError::Unavailable { .. } | NotifyError::NoDeployment { .. } => {
                Transience::Transient(None)
            }
        }
    }
}

/// Classify a receiver's (Slack's, a webhook's) answer: 2xx is delivered; 429 waits for its
/// `Retry-After`; 408 and 5xx are transient; any other status is final.
pub fn check_answer(
    channel: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> Result<(), NotifyError> {
    if status.is_success() {
        return Ok(());
    }
    let message = conveyor::redact::excerpt(body, 200);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| conveyor::retry::parse_retry_after(v, time::OffsetDateTime::now_utc()))
            .unwrap_or(Duration::from_secs(30));
        return Err(NotifyError::Throttled { channel, wait });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(NotifyError::Unavailable {
            channel,
            message: format!("{status}: {message}"),
        });
    }
    Err(NotifyError::Rejected {
        channel,
        status: status.as_u16(),
        message,
    })
}

/// What a channel did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// It sent something.
    Sent,
    /// Nothing to send for this step (already sent, or a step this channel does not report).
    Nothing,
    /// Not yet: look again after this long (a write a lost worker sent may still land).
    Later(Duration),
}

conveyor::decisions! {
    /// What a channel did with one delivery.
    pub enum Delivery {
        Sent = "sent": "reported",
        Nothing = "nothing": "already reported, or a step the channel does not report",
        Deferred = "deferred": "waiting for a write a lost worker may still land",
        Filtered = "filtered": "routed away by the environment's level",
        Off = "off": "the channel is not configured",
        Retried = "retried": "failed; will retry",
        DeadLettered = "dead_lettered": "refused for good",
    }
}

/// What the notifier did on one channel (`notifier_decisions_total{decision}`, decisions
/// `<channel>_<delivery>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision(pub Channel, pub Delivery);

impl conveyor::telemetry::Decision for Decision {
    // Every channel with every delivery.
    const ALL: &'static [Self] = &{
        const DELIVERIES: &[Delivery] = <Delivery as conveyor::telemetry::Decision>::ALL;
        let mut all =
            [Decision(Channel::GitHub, Delivery::Sent); Channel::ALL.len() * DELIVERIES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = Decision(
                Channel::ALL[i / DELIVERIES.len()],
                DELIVERIES[i % DELIVERIES.len()],
            );
            i += 1;
        }
        all
    };

    fn name(self) -> Cow<'static, str> {
        let delivery = conveyor::telemetry::Decision::name(self.1);
        Cow::Owned(format!("{}_{delivery}", self.0.name()))
    }

    fn meaning(self) -> &'static str {
        conveyor::telemetry::Decision::meaning(self.1)
    }
}

/// notifier metrics: `notifier_decisions_total{decision}`.
pub type Metrics = conveyor::telemetry::Decisions<Decision>;

/// Register this service's decision counter.
pub fn register_metrics(registry: &mut Registry) -> Metrics {
    Metrics::register(
        registry,
        "notifier_decisions",
        "What the notifier did with each event, per channel",
    )
}

/// The channels, each optional.
pub struct Notifier {
    pipeline: Arc<Pipeline>,
    github: Option<github::GitHubChannel>,
    slack: Option<slack::SlackChannel>,
    webhook: Option<webhook::WebhookChannel>,
    metrics: Metrics,
}

/// A channel's name and its level per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// GitHub Deployments and commit statuses.
    GitHub,
    /// Slack.
    Slack,
    /// CloudEvents webhook.
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::GitHub, Channel::Slack, Channel::Webhook];

    fn name(self) -> &'static str {
        match self {
            Channel::GitHub => "github",
            Channel::Slack => "slack",
            Channel::Webhook => "webhook",
        }
    }

    fn queue(self) -> &'static str {
        match self {
            Channel::GitHub => queues::NOTIFIER_GITHUB,
            Channel::Slack => queues::NOTIFIER_SLACK,
            Channel::Webhook => queues::NOTIFIER_WEBHOOK,
        }
    }

    fn level(self, routing: &NotifyRouting) -> NotifyLevel {
        match self {
            Channel::GitHub => routing.github,
            Channel::Slack => routing.slack,
            Channel::Webhook => routing.webhook,
        }
    }
}

impl Notifier {
    /// A notifier for `pipeline` with the channels `settings` switch on.
    pub fn new(pipeline: Arc<Pipeline>, settings: &Settings, metrics: Metrics) -> Self {
        Self {
            github: settings
                .github
                .as_ref()
                .map(|g| github::GitHubChannel::new(pipeline.clone(), g, settings)),
            slack: settings.slack.clone().map(slack::SlackChannel::new),
            webhook: settings
                .webhook
                .clone()
                .map(|url| webhook::WebhookChannel::new(url, settings.webhook_secret.clone())),
            pipeline,
            metrics,
        }
    }

    /// Which channels are on.
    pub fn channels(&self) -> Vec<Channel> {
        let mut on = Vec::new();
        if self.github.is_some() {
            on.push(Channel::GitHub);
        }
        if self.slack.is_some() {
            on.push(Channel::Slack);
        }
        if self.webhook.is_some() {
            on.push(Channel::Webhook);
        }
        on
    }

    /// Handle one delivery on `channel`'s queue: route, send, and decide the delivery's fate.
    pub async fn handle(&self, channel: Channel, incoming: Incoming) -> Outcome {
        let name = channel.name();
        let Some(report) = Report::of(&incoming.envelope) else {
            self.metrics.count(Decision(channel, Delivery::Nothing));
            return Outcome::ack();
        };
        // An environment this pipeline does not declare has no routing: report nothing.
        let level = self
            .pipeline
            .environment(report.environment)
            .map(|e| channel.level(&e.notify))
            .unwrap_or(NotifyLevel::None);
        let sent = match channel {
            Channel::GitHub => match &self.github {
                // A GitHub deployment is a lifecycle: its channel filters only by on/off.
                Some(g) if level != NotifyLevel::None => {
                    Some(g.handle(&report, incoming.redelivered).await)
                }
                Some(_) => None,
                None => return self.off(channel),
            },
            Channel::Slack => match &self.slack {
                Some(s) => Some(s.handle(&report, level).await),
                None => return self.off(channel),
            },
            Channel::Webhook => match &self.webhook {
                Some(w) if level.admits(report.kind()) => Some(w.handle(&report).await),
                Some(_) => None,
                None => return self.off(channel),
            },
        };
        match sent {
            None => {
                self.metrics.count(Decision(channel, Delivery::Filtered));
                Outcome::ack()
            }
            Some(Ok(Delivered::Sent)) => {
                self.metrics.count(Decision(channel, Delivery::Sent));
                Outcome::ack()
            }
            Some(Ok(Delivered::Nothing)) => {
                self.metrics.count(Decision(channel, Delivery::Nothing));
                Outcome::ack()
            }
            Some(Ok(Delivered::Later(wait))) => {
                self.metrics.count(Decision(channel, Delivery::Deferred));
                Outcome::defer(
                    wait,
                    format!("{name}: a write the lost worker sent may still land"),
                )
            }
            Some(Err(e)) => self.failed(channel, &incoming, &e),
        }
    }

    fn off(&self, channel: Channel) -> Outcome {
        self.metrics.count(Decision(channel, Delivery::Off));
        Outcome::ack()
    }

    fn failed(&self, channel: Channel, incoming: &Incoming, e: &NotifyError) -> Outcome {
        let name = channel.name();
        let outcome = Outcome::failure(e, incoming.attempt).context(name);
        if outcome.is_dead_letter() {
            self.metrics
                .count(Decision(channel, Delivery::DeadLettered));
            tracing::error!(channel = name, error = %e, "notification refused");
        } else {
            self.metrics.count(Decision(channel, Delivery::Retried));
            tracing::warn!(channel = name, error = %e, attempt = incoming.attempt, "notification failed; will retry");
        }
        outcome
    }
}

/// Consume every channel's queue until `shutdown`. Channels that are off still consume, so
/// their queues do not grow; they acknowledge without sending.
pub async fn run(
    bus: Bus,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let options = ConsumerOptions {
        // One at a time per channel: a deployment's statuses must arrive in order.
        prefetch: 1,
        max_attempts: 10,
        ..ConsumerOptions::default()
    };
    let consumers = Channel::ALL.map(|channel| {
        let (bus, notifier, shutdown) = (bus.clone(), notifier.clone(), shutdown.clone());
        async move {
            let queue = bus.topology().queue(channel.queue());
            bus.consume(
                &queue,
                options,
                move |incoming| {
                    let notifier = notifier.clone();
                    async move { notifier.handle(channel, incoming).await }
                },
                shutdown,
            )
            .await
        }
    });
    let [a, b, c] = consumers;
    let (a, b, c) = tokio::join!(a, b, c);
    a.and(b).and(c)
}
