//! The CloudEvents 1.0 envelope and the typed catalogue of every event Conveyor publishes.
//!
//! On the wire an event is structured-mode CloudEvents JSON:
//! `{"specversion":"1.0","id":…,"source":"conveyor/<service>","type":"conveyor.deploy.requested.v1",
//! "time":…,"subject":…,"correlationid":…,"causationid":…,"datacontenttype":"application/json","data":{…}}`.
//! The `type` carries the event's schema major version (`v1` unless the catalogue says
//! otherwise); a consumer decodes every version up to its own and rejects a newer one
//! permanently, while unknown fields inside `data` are ignored so that producers can add fields
//! without breaking older consumers.

mod payloads;
mod status;

pub use payloads::*;
pub use status::{JobStatus, RunConclusion, RunStatus};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// Prefix of every Conveyor CloudEvents `type`.
const TYPE_PREFIX: &str = "conveyor.";
/// The schema major version of an event whose catalogue line names none.
pub const SCHEMA_VERSION: u32 = 1;
/// The CloudEvents content type of a structured-mode event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Namespace for deterministic (UUIDv5) event ids derived from an external key.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0c_3c52_8b1f_4c5e_9a47_21d6_0b7e_c0de);

/// Why bytes could not be turned into an [`Envelope`]. Every variant is permanent: the same
/// bytes will never decode, so a consumer dead-letters them instead of retrying.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not JSON or not a CloudEvents envelope.
    #[error("not a CloudEvents envelope: {0}")]
    Malformed(String),
    /// The envelope's `specversion` is not 1.0.
    #[error("unsupported CloudEvents specversion {0:?}")]
    SpecVersion(String),
    /// The `type` is not one of Conveyor's.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The `type` names a schema major version this build does not understand.
    #[error(
        "event type {name:?} has schema version v{version}, this build reads up to v{supported}"
    )]
    UnsupportedVersion {
        /// The event name, e.g. `deploy.requested`.
        name: String,
        /// The version found.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The `data` does not match the schema of its type.
    #[error("invalid data for {name}: {reason}")]
    InvalidData {
        /// The event name.
        name: String,
        /// What serde said.
        reason: String,
    },
}

/// One event as it travels between services: CloudEvents attributes plus typed data.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id (UUIDv7, or UUIDv5 when derived from an external idempotency key).
    pub id: String,
    /// `conveyor/<service>`.
    pub source: String,
    /// When the fact happened (producer clock).
    pub time: OffsetDateTime,
    /// What the event is about (repository, environment), for humans and filters.
    pub subject: Option<String>,
    /// The chain (pipeline run / deployment) this event belongs to, carried end to end.
    pub correlation_id: String,
    /// The id of the event that caused this one.
    pub causation_id: Option<String>,
    /// The typed payload; it also determines the `type` and the routing key.
    pub event: Event,
}

impl Envelope {
    /// A new event that starts a chain: its correlation id is its own id.
    pub fn new(source: impl Into<String>, event: Event) -> Self {
        let id = Uuid::now_v7().to_string();
        Self {
            correlation_id: id.clone(),
            id,
            source: source.into(),
            time: OffsetDateTime::now_utc(),
            subject: event.default_subject(),
            causation_id: None,
            event,
        }
    }

    /// A new event caused by `parent`: same correlation id, causation = parent's id.
    pub fn caused_by(parent: &Envelope, source: impl Into<String>, event: Event) -> Self {
        let mut env = Self::new(source, event);
        env.correlation_id = parent.correlation_id.clone();
        env.causation_id = Some(parent.id.clone());
        env
    }

    /// Replace the random id with one derived from `key`, so that the same external fact (a
    /// GitHub delivery id, a parent event plus a discriminator) always yields the same event id
    /// and downstream consumers can recognise duplicates that arrived through different replicas.
    pub fn with_derived_id(mut self, key: &str) -> Self {
        let id = derive_id(key);
        if self.correlation_id == self.id {
            self.correlation_id = id.clone();
        }
        self.id = id;
        self
    }

    /// Set the correlation id explicitly (e.g. a chain continuing from a remembered request).
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }

    /// The AMQP routing key: `<domain>.<event>[.<qualifier>]`.
    pub fn routing_key(&self) -> String {
        self.event.routing_key()
    }

    /// The CloudEvents `type`, e.g. `conveyor.deploy.requested.v1`.
    pub fn type_name(&self) -> String {
        format!(
            "{TYPE_PREFIX}{}.v{}",
            self.event.name(),
            self.event.version()
        )
    }

    /// Serialise to structured-mode CloudEvents JSON.
    ///
    /// Every configured secret is scrubbed from it ([`crate::redact`]): a failure's reason may
    /// quote an outside answer, and no event may carry a credential.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = WireEnvelope {
            specversion: "1.0".into(),
            id: self.id.clone(),
            source: self.source.clone(),
            type_: self.type_name(),
            datacontenttype: Some("application/json".into()),
            time: Some(self.time),
            subject: self.subject.clone(),
            correlationid: Some(self.correlation_id.clone()),
            causationid: self.causation_id.clone(),
            data: self.event.data_json(),
        };
        let json = serde_json::to_string(&wire).expect("an envelope always serialises");
        crate::redact::scrub(&json).into_owned().into_bytes()
    }

    /// Parse structured-mode CloudEvents JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireEnvelope =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if wire.specversion != "1.0" {
            return Err(DecodeError::SpecVersion(wire.specversion));
        }
        let (name, version) = parse_type(&wire.type_)?;
        let supported =
            Event::version_of(name).ok_or_else(|| DecodeError::UnknownType(wire.type_.clone()))?;
        if version == 0 || version > supported {
            return Err(DecodeError::UnsupportedVersion {
                name: name.to_owned(),
                version,
                supported,
            });
        }
        let event = Event::from_data(name, wire.data)?;
        Ok(Self {
            correlation_id: wire.correlationid.unwrap_or_else(|| wire.id.clone()),
            id: wire.id,
            source: wire.source,
            time: wire.time.unwrap_or_else(OffsetDateTime::now_utc),
            subject: wire.subject,
            causation_id: wire.causationid,
            event,
        })
    }
}

/// The id of one deployment: environment `environment` of chain `correlation_id`. One chain can
/// deploy several environments (one build deploying staging and dev), so anything kept per
/// deployment is keyed by both, never by the correlation id alone.
pub fn deployment_id(correlation_id: &str, environment: &str) -> String {
    format!("{correlation_id}.{environment}")
}

/// The derivation key of a deployment's end — completed, failed or superseded alike: one
/// deployment has one terminal event id, so a second decision about an ended deployment (a
/// redelivery on another replica, a follow resumed late) can only republish an id every
/// consumer has already taken, never add a contradicting end.
pub fn deployment_end_key(correlation_id: &str, environment: &str) -> String {
    format!(
        "{}:deploy-ended",
        deployment_id(correlation_id, environment)
    )
}

/// A deterministic event id (UUIDv5) for an idempotency key.
pub fn derive_id(key: &str) -> String {
    Uuid::new_v5(&ID_NAMESPACE, key.as_bytes()).to_string()
}

fn parse_type(type_: &str) -> Result<(&str, u32), DecodeError> {
    let unknown = || DecodeError::UnknownType(type_.to_owned());
    let rest = type_.strip_prefix(TYPE_PREFIX).ok_or_else(unknown)?;
    let (name, version) = rest.rsplit_once(".v").ok_or_else(unknown)?;
    let version = version.parse::<u32>().map_err(|_| unknown())?;
    Ok((name, version))
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    time: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causationid: Option<String>,
    #[serde(default)]
    data: Value,
}

/// Map user-controlled text (an environment name, a branch) to one routing-key segment:
/// lowercase `[a-z0-9_-]`, everything else becomes `_`, never empty, at most 64 characters.
/// No dot, `#` or `*` can survive, so data can never add a segment or a wildcard.
pub fn sanitize_qualifier(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

macro_rules! catalogue {
    ($( $variant:ident($ty:ty) = $name:literal $(version $version:literal)? $(qualified by $field:ident)? ;)+) => {
        /// Every event Conveyor publishes, with its typed `data`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant($ty),
            )+
        }

        impl Event {
            /// The event name: `<domain>.<event>`, e.g. `deploy.requested`.
            pub fn name(&self) -> &'static str {
                match self { $( Event::$variant(_) => $name, )+ }
            }

            /// Every event name in the catalogue.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The schema major version this build writes for the event, and reads up to.
            pub fn version(&self) -> u32 {
                match self { $( Event::$variant(_) => catalogue!(@version $($version)?), )+ }
            }

            /// The schema major version of the event called `name`, if it is one.
            pub fn version_of(name: &str) -> Option<u32> {
                match name {
                    $( $name => Some(catalogue!(@version $($version)?)), )+
                    _ => None,
                }
            }

            /// The routing-key qualifier (the environment for deployment and rollout events).
            pub fn qualifier(&self) -> Option<&str> {
                match self {
                    $( Event::$variant(_d) => catalogue!(@qual _d $($field)?), )+
                }
            }

            fn data_json(&self) -> Value {
                match self {
                    $( Event::$variant(d) => serde_json::to_value(d).expect("event data serialises"), )+
                }
            }

            fn from_data(name: &str, data: Value) -> Result<Self, DecodeError> {
                let invalid = |e: serde_json::Error| DecodeError::InvalidData {
                    name: name.to_owned(),
                    reason: e.to_string(),
                };
                match name {
                    $( $name => serde_json::from_value(data).map(Event::$variant).map_err(invalid), )+
                    other => Err(DecodeError::UnknownType(format!("{TYPE_PREFIX}{other}.v{SCHEMA_VERSION}"))),
                }
            }
        }
    };
    (@qual $d:ident $field:ident) => { Some($d.$field.as_str()) };
    (@qual $d:ident) => { None };
    (@version $version:literal) => { $version };
    (@version) => { SCHEMA_VERSION };
}

catalogue! {
    ScmPush(ScmPush) = "scm.push";
    BuildStarted(BuildRun) = "build.started";
    BuildSucceeded(BuildRun) = "build.succeeded";
    BuildFailed(BuildRun) = "build.failed";
    BuildRequested(BuildRequested) = "build.requested";
    ImagePushed(ImagePushed) = "image.pushed";
    AwxJobStarted(AwxJobNotification) = "awx.job.started";
    AwxJobFinished(AwxJobNotification) = "awx.job.finished";
    DeployRequested(DeployRequested) = "deploy.requested" version 2 qualified by environment;
    DeployHeld(DeployHeld) = "deploy.held" qualified by environment;
    DeploySuperseded(DeploySuperseded) = "deploy.superseded" qualified by environment;
    DeployLaunched(DeployLaunched) = "deploy.launched" qualified by environment;
    DeployJobFinished(DeployJobFinished) = "deploy.job_finished" qualified by environment;
    DeployVerifying(DeployVerifying) = "deploy.verifying" qualified by environment;
    DeployAwaitingApproval(DeployAwaitingApproval) = "deploy.awaiting_approval" qualified by environment;
    DeployApproved(DeployDecided) = "deploy.approved" qualified by environment;
    DeployRejected(DeployDecided) = "deploy.rejected" qualified by environment;
    DeployCompleted(DeployCompleted) = "deploy.completed" qualified by environment;
    DeployFailed(DeployFailed) = "deploy.failed" qualified by environment;
    RolloutStarted(RolloutStarted) = "rollout.started" qualified by environment;
    RolloutProgress(RolloutProgress) = "rollout.progress" qualified by environment;
    RolloutCompleted(RolloutCompleted) = "rollout.completed" qualified by environment;
    RolloutStalled(RolloutStalled) = "rollout.stalled" qualified by environment;
    RolloutFailed(RolloutFailed) = "rollout.failed" qualified by environment;
    RolloutUnstuck(RolloutUnstuck) = "rollout.unstuck" qualified by environment;
    EnvironmentPaused(EnvironmentPaused) = "control.paused" qualified by environment;
    EnvironmentResumed(EnvironmentResumed) = "control.resumed" qualified by environment;
    UnstickRequested(UnstickRequested) = "control.unstick" qualified by environment;
}

impl Event {
    /// The routing key: `<name>[.<sanitised qualifier>]`.
    pub fn routing_key(&self) -> String {
        match self.qualifier() {
            Some(q) => format!("{}.{}", self.name(), sanitize_qualifier(q)),
            None => self.name().to_owned(),
        }
    }

    fn default_subject(&self) -> Option<String> {
        match self {
            Event::ScmPush(p) => Some(p.repository.clone()),
            Event::BuildStarted(b) | Event::BuildSucceeded(b) | Event::BuildFailed(b) => {
                Some(b.repository.clone())
            }
            Event::BuildRequested(b) => Some(b.repository.clone()),
            Event::ImagePushed(i) => Some(i.image.repository.clone()),
            Event::AwxJobStarted(j) | Event::AwxJobFinished(j) => Some(format!("job/{}", j.job_id)),
            _ => self.qualifier().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests;
