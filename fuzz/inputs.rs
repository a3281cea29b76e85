//! What each fuzz target does with its input, shared with the regression test that replays the
//! kept corpus and crashes (`services/ingest/tests/fuzz_regressions.rs`): a parser may refuse
//! any input, but never panic, and whatever it accepts must hold together.

/// The GitHub events ingest distinguishes, and one it does not know.
const GITHUB_EVENTS: [&str; 8] = [
    "workflow_run",
    "push",
    "ping",
    "create",
    "delete",
    "release",
    "registry_package",
    "no_such_event",
];

/// First byte: the `X-GitHub-Event` header; the rest: the body.
pub fn github_webhook(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let event = GITHUB_EVENTS[usize::from(*first) % GITHUB_EVENTS.len()];
    accepted(conveyor_ingest::github::parse(event, body));
}

/// First byte: the registry kind (`/webhooks/registry/{kind}`); the rest: the body.
pub fn registry_webhook(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let kinds = conveyor_ingest::registry::KINDS;
    let kind = kinds[usize::from(*first) % kinds.len()];
    accepted(conveyor_ingest::registry::parse(kind, body));
}

/// The whole input: an AWX notification body.
pub fn awx_notification(data: &[u8]) {
    accepted(conveyor_ingest::awx::parse(data));
}

/// The whole input: a message body off the bus. Whatever decodes re-encodes to the same event.
pub fn event_envelope(data: &[u8]) {
    if let Ok(e) = conveyor::Envelope::from_json(data) {
        let again = conveyor::Envelope::from_json(&e.to_json())
            .expect("an event we decoded re-encodes to something we decode");
        assert_eq!(again.to_json(), e.to_json(), "encoding is stable");
        let _ = e.routing_key();
    }
}

/// Events a parser accepted must be publishable: each has a routing key made of safe words.
fn accepted(parsed: Result<conveyor_ingest::Parsed, conveyor_ingest::BadPayload>) {
    if let Ok(conveyor_ingest::Parsed::Events(events)) = parsed {
        for event in events {
            let e = conveyor::Envelope::new("conveyor/fuzz", event);
            let key = e.routing_key();
            assert!(
                key.split('.').all(|w| !w.is_empty()
                    && w.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'_'
                        || b == b'-')),
                "routing key {key:?}"
            );
            assert!(conveyor::Envelope::from_json(&e.to_json()).is_ok());
        }
    }
}
