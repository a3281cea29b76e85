//! Configured secrets kept out of everything that leaves the process: each is registered once,
//! with the forms it may come back in, and every text from outside passes [`scrub`] first.
//!
//! A receiver's error page may quote the request URL (Express: `Cannot POST /hook?token=…`), a
//! proxy may echo the headers (`Authorization: Basic dXNlcjpwYXNz`), an API may put the
//! credential in its error JSON. [`crate::config::secret`] registers every secret it reads, so
//! no client has to remember to: the log writer ([`Scrubbing`]), the bus (events and
//! dead-letter reasons) and the clients' error excerpts ([`excerpt`]) scrub with what is
//! registered.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::RwLock;

use base64::Engine;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Forms shorter than this are not scrubbed: they would mask ordinary words (the demo's AMQP
/// password is `guest`), and no real credential is that short.
pub const MIN_LEN: usize = 8;

/// A URL path segment at least this long is taken for a credential (a Slack webhook's last
/// segment); shorter ones are route names (`/hook`, `/services`).
const SECRET_SEGMENT_LEN: usize = 16;

/// Every registered form, longest first (so a form is replaced before any form inside it).
static FORMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Register `secret` and the forms it may come back in: as given, percent-encoded, base64
/// (standard and URL-safe), and — when it is a URL — its password, `user:password` and that
/// in base64 (HTTP Basic), each query value, and each long path segment.
pub fn register(secret: &str) {
    let mut found = Vec::new();
    add_with_encodings(&mut found, secret);
    // A list of URLs (a broker cluster's nodes, comma-separated) is each of them too.
    let parts: Vec<&str> = if secret.contains("://") {
        secret.split(',').map(str::trim).collect()
    } else {
        vec![secret]
    };
    for part in parts {
        let Ok(url) = url::Url::parse(part) else {
            continue;
        };
        if !url.has_host() {
            continue;
        }
        userinfo(&mut found, &url);
        for (_, value) in url.query_pairs() {
            add_with_encodings(&mut found, &value);
        }
        for segment in url.path_segments().into_iter().flatten() {
            if segment.len() >= SECRET_SEGMENT_LEN {
                add_with_encodings(&mut found, segment);
            }
        }
    }
    keep(found);
}

/// Register only the credentials in `url` (its password, and `user:password` as HTTP Basic
/// sends it), for a URL that is not itself a secret (`AWX_URL`).
pub fn register_url_credentials(url: &str) {
    let mut found = Vec::new();
    if let Ok(url) = url::Url::parse(url) {
        userinfo(&mut found, &url);
    }
    keep(found);
}

fn userinfo(found: &mut Vec<String>, url: &url::Url) {
    let Some(password) = url.password() else {
        return;
    };
    let user = url.username();
    add_with_encodings(found, password);
    add_with_encodings(found, &format!("{user}:{password}"));
    let (user, password) = (decode(user), decode(password));
    add_with_encodings(found, &password);
    add_with_encodings(found, &format!("{user}:{password}"));
}

fn keep(found: Vec<String>) {
    let mut forms = FORMS.write().unwrap_or_else(|e| e.into_inner());
    for form in found {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
}

fn decode(part: &str) -> String {
    percent_decode(part).unwrap_or_else(|| part.to_owned())
}

fn percent_decode(part: &str) -> Option<String> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={part}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

fn add_with_encodings(found: &mut Vec<String>, value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let standard = base64::engine::general_purpose::STANDARD.encode(value);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
    for form in [value.to_owned(), encoded, standard, url_safe] {
        if !found.contains(&form) {
            found.push(form);
        }
    }
}

/// `text` with every registered secret form replaced by [`MASK`] (borrowed when none occurs).
pub fn scrub(text: &str) -> Cow<'_, str> {
    let forms = FORMS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for form in forms.iter() {
        if out.contains(form.as_str()) {
            out = Cow::Owned(out.replace(form.as_str(), MASK));
        }
    }
    out
}

/// At most `max` characters of `text` from outside (an error body), scrubbed first — so a
/// secret cut in two by the truncation is not left half-shown — with `…` when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    crate::text::truncate_chars(&scrub(text.trim()), max)
}

/// A log writer that scrubs each line before it reaches `W` (for `tracing_subscriber`'s
/// `with_writer`: each event is one write of whole lines).
#[derive(Debug, Clone, Copy)]
pub struct Scrubbing<W>(pub W);

impl<'a, W> tracing_subscriber::fmt::MakeWriter<'a> for Scrubbing<W>
where
    W: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = ScrubbingWriter<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter(self.0.make_writer())
    }
}

/// The writer [`Scrubbing`] makes.
#[derive(Debug)]
pub struct ScrubbingWriter<W>(W);

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(scrub(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_a_url_credential_comes_back_in_is_masked() {
        register("https://hooks.example/hook?token=tok3n-1234567&team=ops");
        register("https://awx-user:p%40ss-w0rd!@awx.example/api/v2/");
        let express = "Cannot POST /hook?token=tok3n-1234567&team=ops";
        assert_eq!(scrub(express), "Cannot POST /hook?token=***&team=ops");
        let basic = base64::engine::general_purpose::STANDARD.encode("awx-user:p@ss-w0rd!");
        let echoed = format!("authorization: Basic {basic}");
        assert_eq!(scrub(&echoed), "authorization: Basic ***");
        assert_eq!(scrub("password=p@ss-w0rd!"), "password=***");
        assert_eq!(scrub("password=p%40ss-w0rd%21"), "password=***");
        assert_eq!(
            scrub("nothing secret in /hook"),
            "nothing secret in /hook",
            "short route names stay"
        );
    }

    #[test]
    fn a_slack_url_is_masked_whole_and_by_its_credential_segment() {
        register("https://hooks.slack.example/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX");
        assert_eq!(
            scrub("no_service: /services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"),
            "no_service: /services/T0000/B0000/***"
        );
        assert_eq!(
            scrub("POST https://hooks.slack.example/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"),
            "POST ***"
        );
    }

    #[test]
    fn an_excerpt_never_shows_half_a_secret() {
        register("0123456789abcdef-excerpt");
        let body = format!("{}0123456789abcdef-excerpt tail", "x".repeat(195));
        let cut = excerpt(&body, 200);
        assert!(!cut.contains("01234"), "{cut}");
        assert!(cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn every_node_of_a_cluster_url_list_is_masked() {
        register(
            "amqp://conveyor:first-node-pw1@rabbit-0:5672/prod,amqp://conveyor:second-node-pw2@rabbit-1:5672/prod",
        );
        let said = scrub(
            "connect to rabbit-1 failed: amqp://conveyor:second-node-pw2@rabbit-1 refused; first-node-pw1",
        );
        assert!(!said.contains("second-node-pw2"), "{said}");
        assert!(!said.contains("first-node-pw1"), "{said}");
        assert!(said.contains("rabbit-1"), "{said}");
    }

    #[test]
    fn a_plain_url_keeps_all_but_its_credentials() {
        register_url_credentials("https://launcher:s3cret-pa55@awx.plain.example/api/v2/");
        register_url_credentials("https://awx.open.example/api/v2/?team=operations-team");
        assert_eq!(
            scrub("GET https://launcher:s3cret-pa55@awx.plain.example/api/v2/ failed"),
            "GET https://***@awx.plain.example/api/v2/ failed"
        );
        assert_eq!(
            scrub("GET https://awx.open.example/api/v2/?team=operations-team"),
            "GET https://awx.open.example/api/v2/?team=operations-team"
        );
    }

    #[test]
    fn no_event_carries_a_secret_on_the_wire() {
        crate::config::Secret::new("ghp_wire0123456789abcdef");
        let failed = crate::events::Envelope::new(
            "conveyor/awx-launcher",
            crate::events::Event::DeployFailed(crate::events::DeployFailed {
                environment: "staging".into(),
                stage: crate::events::Stage::Job,
                reason: "job 7 failed: git clone https://x:ghp_wire0123456789abcdef@github.com"
                    .into(),
                operation: None,
            }),
        );
        let wire = String::from_utf8(failed.to_json()).unwrap();
        assert!(!wire.contains("ghp_wire"), "{wire}");
        assert!(wire.contains("https://x:***@github.com"), "{wire}");
        crate::events::Envelope::from_json(wire.as_bytes()).expect("still a valid event");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("guest");
        assert_eq!(scrub("the guest user"), "the guest user");
    }
}
