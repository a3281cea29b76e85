//! The newest-request-wins rule of executors: of several deployment requests for one
//! environment, only the newest is carried out; the others are reported `deploy.superseded`.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::events::{DeploySuperseded, Envelope, Event};

/// Where a deployment request stands in newest-wins order: when its change came to be (its
/// `origin_time`, which every copy of the request shares; the envelope's time when absent),
/// then — for changes of the same second, as GitHub's timestamps are — the envelope's time.
/// A copy published again later (a build handled twice) must not pass for newer than a change
/// that came since.
pub type RequestOrder = (OffsetDateTime, OffsetDateTime);

/// The [`RequestOrder`] of `request`.
pub fn request_order(request: &Envelope) -> RequestOrder {
    match &request.event {
        Event::DeployRequested(r) => (r.origin_time.unwrap_or(request.time), request.time),
        _ => (request.time, request.time),
    }
}

/// The newest request seen per environment (in process: executors consume their requests on a
/// single active consumer, so one process sees them all).
#[derive(Debug, Default)]
pub struct NewestRequests {
    newest: Mutex<HashMap<String, (RequestOrder, String)>>,
}

impl NewestRequests {
    /// Note `request` (a `deploy.requested` for `environment`) and return the newest request
    /// for the environment seen so far, if it is newer than this one.
    pub fn newer_than(
        &self,
        request: &Envelope,
        environment: &str,
    ) -> Option<(RequestOrder, String)> {
        let mut newest = crate::sync::lock(&self.newest);
        let at = request_order(request);
        let slot = newest
            .entry(environment.to_owned())
            .or_insert_with(|| (at, request.correlation_id.clone()));
        if at > slot.0 {
            *slot = (at, request.correlation_id.clone());
        }
        (slot.0 > at).then(|| slot.clone())
    }

    /// Note `request` and, when a newer request for the environment has been seen, return the
    /// `deploy.superseded` to publish instead of acting.
    pub fn supersede(
        &self,
        request: &Envelope,
        environment: &str,
        source: &str,
    ) -> Option<Envelope> {
        let (_, newer) = self.newer_than(request, environment)?;
        tracing::info!(deployment = %request.correlation_id, superseded_by = %newer, environment, "superseded");
        Some(superseded(request, environment, source, &newer))
    }
}

/// The `deploy.superseded` ending `request` because the deployment `by` (a correlation id)
/// replaces it, under the deployment's one terminal id.
pub fn superseded(request: &Envelope, environment: &str, source: &str, by: &str) -> Envelope {
    let operation = match &request.event {
        Event::DeployRequested(r) => r.operation.carried(),
        _ => None,
    };
    Envelope::caused_by(
        request,
        source,
        Event::DeploySuperseded(DeploySuperseded {
            environment: environment.to_owned(),
            superseded_by: by.to_owned(),
            operation,
        }),
    )
    .with_derived_id(&crate::events::deployment_end_key(
        &request.correlation_id,
        environment,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DeployFailed;

    fn request(at: i64) -> Envelope {
        let mut e = Envelope::new(
            "t",
            Event::DeployFailed(DeployFailed {
                environment: "staging".into(),
                stage: crate::events::Stage::Rollout,
                reason: "x".into(),
                operation: None,
            }),
        );
        e.time = OffsetDateTime::from_unix_timestamp(at).unwrap();
        e
    }

    #[test]
    fn only_the_newest_request_survives_whatever_the_order_seen() {
        let n = NewestRequests::default();
        let (old, new) = (request(10), request(20));
        assert!(n.supersede(&new, "staging", "t").is_none());
        let s = n
            .supersede(&old, "staging", "t")
            .expect("the older one is superseded");
        match s.event {
            Event::DeploySuperseded(d) => assert_eq!(d.superseded_by, new.correlation_id),
            _ => unreachable!(),
        }
        assert_eq!(s.correlation_id, old.correlation_id);
        assert!(
            n.supersede(&new, "staging", "t").is_none(),
            "the newest is never superseded"
        );
        assert!(
            n.supersede(&old, "production", "t").is_none(),
            "per environment"
        );
    }

    fn deploy(origin: i64, published: i64) -> Envelope {
        let mut e = Envelope::new(
            "t",
            Event::DeployRequested(crate::events::DeployRequested {
                environment: "staging".into(),
                repository: "o/r".into(),
                sha: "a".repeat(40),
                git_ref: crate::events::GitRef::branch("main"),
                image: crate::events::ImageRef {
                    repository: "o/r".into(),
                    tag: Some("latest".into()),
                    digest: None,
                },
                upstream: Vec::new(),
                origin_time: Some(OffsetDateTime::from_unix_timestamp(origin).unwrap()),
                operation: Default::default(),
            }),
        );
        e.time = OffsetDateTime::from_unix_timestamp(published).unwrap();
        e
    }

    #[test]
    fn a_copy_published_again_later_is_still_as_old_as_its_change() {
        let n = NewestRequests::default();
        let older = deploy(10, 11);
        let newer = deploy(20, 21);
        assert!(n.supersede(&newer, "staging", "t").is_none());
        // The older change's request, published again after the newer one.
        let mut again = older.clone();
        again.time = OffsetDateTime::from_unix_timestamp(30).unwrap();
        assert_eq!(request_order(&again).0, request_order(&older).0);
        assert!(n.supersede(&again, "staging", "t").is_some());
        assert!(n.supersede(&newer, "staging", "t").is_none());
    }
}
