//! The one way a Conveyor service builds an outbound HTTP client.

use std::time::Duration;

/// A client builder with Conveyor's defaults: `user_agent` (GitHub refuses requests without
/// one, and every API's logs should say who called), a whole-request `timeout`, and redirects
/// not followed — a redirect would replay a write elsewhere, body and credentials included.
/// A caller that only reads may allow a few with [`reqwest::ClientBuilder::redirect`].
pub fn builder(user_agent: &str, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
}

/// [`builder`], built.
pub fn client(user_agent: &str, timeout: Duration) -> reqwest::Client {
    build(builder(user_agent, timeout))
}

/// Build `builder`; only a missing TLS backend can fail, and one is always compiled in.
pub fn build(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder.build().expect("a TLS backend is compiled in")
}

/// `conveyor-<service>/<version>`, the user agent every service sends.
pub fn user_agent(service: &str) -> String {
    format!("conveyor-{service}/{}", env!("CARGO_PKG_VERSION"))
}
