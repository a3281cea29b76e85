//! HMAC-SHA256 body signatures in the `sha256=<hex>` form GitHub sends (`X-Hub-Signature-256`)
//! and Conveyor's webhooks send (`X-Conveyor-Signature-256`), and constant-time token checks.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(key, body).finalize().into_bytes())
    )
}

/// Whether `header` (`sha256=<hex>`, surrounding whitespace allowed) is the signature of `body`
/// under `key`, compared in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    mac(key, body).verify_slice(&sig).is_ok()
}

/// Whether `presented` is `expected`, compared in constant time.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_official_test_vector() {
        let key = b"It's a Secret to Everybody";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(key, b"Hello, World!"), expected);
        assert!(verify(key, b"Hello, World!", expected));
        assert!(verify(key, b"Hello, World!", &format!(" {expected}\n")));
        assert!(!verify(key, b"Hello, World?", expected));
        assert!(!verify(key, b"Hello, World!", "sha1=757107"));
        assert!(!verify(key, b"Hello, World!", "sha256=not-hex"));
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "abcd"));
    }
}
