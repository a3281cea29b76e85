//! Webhook authentication: GitHub's `X-Hub-Signature-256` HMAC and shared tokens, both
//! compared in constant time.

use conveyor::config::Secret;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under any of `secrets`
/// (several during a rotation).
pub fn verify_github(secrets: &[Secret], body: &[u8], header: Option<&str>) -> bool {
    let Some(header) = header else {
        return false;
    };
    secrets
        .iter()
        .any(|secret| conveyor::signature::verify(secret.expose().as_bytes(), body, header))
}

/// `sha256=<hex>` for `body` under `secret` (what GitHub sends; used by simulators and tests).
pub fn sign_github(secret: &str, body: &[u8]) -> String {
    conveyor::signature::sign(secret.as_bytes(), body)
}

/// Constant-time comparison of a presented token with the configured one.
pub fn token_matches(expected: &Secret, presented: &str) -> bool {
    conveyor::signature::token_matches(expected.expose(), presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_official_test_vector() {
        let secrets = [Secret::new("It's a Secret to Everybody")];
        let secret = &secrets[0];
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_github(secret.expose(), b"Hello, World!"), expected);
        assert!(verify_github(&secrets, b"Hello, World!", Some(expected)));
        assert!(!verify_github(&secrets, b"Hello, World?", Some(expected)));
        assert!(!verify_github(&secrets, b"Hello, World!", None));
        assert!(!verify_github(
            &secrets,
            b"Hello, World!",
            Some("sha1=757107")
        ));
        assert!(!verify_github(
            &secrets,
            b"Hello, World!",
            Some("sha256=zz")
        ));
    }

    #[test]
    fn any_rotation_secret_verifies() {
        let old = Secret::new("old");
        let new = Secret::new("new");
        let sig = sign_github("old", b"x");
        assert!(verify_github(&[new.clone(), old], b"x", Some(&sig)));
        assert!(!verify_github(&[new], b"x", Some(&sig)));
    }

    #[test]
    fn tokens() {
        let t = Secret::new("abc");
        assert!(token_matches(&t, "abc"));
        assert!(!token_matches(&t, "abd"));
        assert!(!token_matches(&t, "ab"));
    }
}
