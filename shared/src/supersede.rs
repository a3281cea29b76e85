//! The newest-request-wins rule of executors: of several deployment requests for one
//! environment, only the newest is carried out; the others are reported `deploy.superseded`.

use std::collections::HashMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::events::{DeploySuperseded, Envelope, Event};

/// The newest request seen per environment (in process: executors consume their requests on a
/// single active consumer, so one process sees them all).
#[derive(Debug, Default)]
pub struct NewestRequests {
    newest: Mutex<HashMap<String, (OffsetDateTime, String)>>,
}

impl NewestRequests {
    /// Note `request` (a `deploy.requested` for `environment`) and, when a newer request for the
    /// environment has been seen, return the `deploy.superseded` to publish instead of acting.
    pub fn supersede(
        &self,
        request: &Envelope,
        environment: &str,
        source: &str,
    ) -> Option<Envelope> {
        let newer = {
            let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            let slot = newest
                .entry(environment.to_owned())
                .or_insert_with(|| (request.time, request.correlation_id.clone()));
            if request.time > slot.0 {
                *slot = (request.time, request.correlation_id.clone());
            }
            (slot.0 > request.time).then(|| slot.1.clone())
        }?;
        tracing::info!(deployment = %request.correlation_id, superseded_by = %newer, environment, "superseded");
        Some(
            Envelope::caused_by(
                request,
                source,
                Event::DeploySuperseded(DeploySuperseded {
                    environment: environment.to_owned(),
                    superseded_by: newer,
                }),
            )
            .with_derived_id(&crate::events::deployment_end_key(
                &request.correlation_id,
                environment,
            )),
        )
    }
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
                stage: "x".into(),
                reason: "x".into(),
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
}
