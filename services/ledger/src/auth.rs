//! Who is asking: operators authenticated by a bearer token (named, with roles, listed by the
//! SHA-256 of the token in `CONVEYOR_OPERATOR_TOKENS_FILE`), or — only when explicitly enabled —
//! by the identity header of an auth proxy in front (oauth2-proxy's `X-Auth-Request-User`,
//! `X-Forwarded-User`). Tokens are compared in constant time and never logged; the file is read
//! again when it changes, so a token is rotated without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use conveyor::events::Actor;

/// The role that may pause, resume, deploy, redeploy and roll back.
pub const OPERATOR: &str = "operator";
/// The role that may read when reads need a token.
pub const VIEWER: &str = "viewer";

/// One entry of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Who: shown in the record ("Rolled back by alice").
    name: String,
    /// What they may do: `operator`, `viewer`, and any name approvals refer to.
    #[serde(default)]
    roles: Vec<String>,
    /// Lowercase hex SHA-256 of the token (absent for a user who only comes through the proxy).
    #[serde(default)]
    sha256: Option<String>,
    /// After this the token is refused.
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires: Option<OffsetDateTime>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default, rename = "operator")]
    operators: Vec<Entry>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The operator's name.
    pub name: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// `token` or `proxy`.
    pub via: &'static str,
    /// The client address.
    pub from: Option<String>,
}

impl Caller {
    /// Whether the caller has `role`.
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The caller as the actor of an event.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.name.clone(),
            via: self.via.to_owned(),
            from: self.from.clone(),
        }
    }
}

/// Why a request is not authenticated (401) or not allowed (403). The texts never contain
/// the presented token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, or none that match.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but without the role.
    #[error("{0}")]
    Forbidden(String),
}

/// The authentication settings and the tokens file, read again when it changes.
#[derive(Debug)]
pub struct Operators {
    file: Option<PathBuf>,
    trust_proxy: bool,
    loaded: Mutex<(Option<SystemTime>, Vec<Entry>)>,
}

/// Lowercase hex SHA-256 of `token`: what the tokens file lists.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse(text: &str, path: &Path) -> Result<Vec<Entry>, String> {
    let file: TokensFile =
        toml::from_str(text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    for (i, e) in file.operators.iter().enumerate() {
        if e.name.trim().is_empty() {
            return Err(format!("{}: operator[{i}] has no name", path.display()));
        }
        if let Some(h) = &e.sha256
            && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "{}: operator[{i}] ({}): sha256 must be 64 hex digits (`conveyor token hash` prints it)",
                path.display(),
                e.name
            ));
        }
    }
    Ok(file.operators)
}

impl Operators {
    /// Read `file` (if any) now, so a broken file stops the service at start.
    pub fn new(file: Option<PathBuf>, trust_proxy: bool) -> Result<Self, String> {
        let this = Self {
            file,
            trust_proxy,
            loaded: Mutex::new((None, Vec::new())),
        };
        this.reload()?;
        Ok(this)
    }

    /// Whether the auth proxy's identity (and forwarded address) headers are trusted.
    pub fn trusts_proxy(&self) -> bool {
        self.trust_proxy
    }

    /// No way to authenticate anyone is configured.
    pub fn is_disabled(&self) -> bool {
        self.file.is_none() && !self.trust_proxy
    }

    fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut loaded = conveyor::sync::lock(&self.loaded);
        if loaded.0 == Some(modified) {
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        *loaded = (Some(modified), parse(&text, path)?);
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        if let Err(e) = self.reload() {
            // Keep the tokens that were good; say why the new file is not taken.
            tracing::warn!(error = %e, "the operator tokens file could not be read again");
        }
        conveyor::sync::lock(&self.loaded).1.clone()
    }

    /// Who is asking, from the request's headers.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        from: Option<String>,
    ) -> Result<Caller, Denied> {
        if self.is_disabled() {
            return Err(Denied::Unauthenticated(
                "no operators are configured: set CONVEYOR_OPERATOR_TOKENS_FILE (or enable CONVEYOR_AUTH_PROXY)".into(),
            ));
        }
        let entries = self.entries();
        if let Some(value) = headers.get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| {
                    Denied::Unauthenticated("Authorization must be `Bearer <token>`".into())
                })?;
            let presented = token_hash(token);
            // Every entry is compared, whatever matches first: the time taken says nothing
            // about which token is close.
            let mut found: Option<&Entry> = None;
            for e in &entries {
                if let Some(h) = &e.sha256 {
                    let same = h
                        .to_ascii_lowercase()
                        .as_bytes()
                        .ct_eq(presented.as_bytes());
                    if bool::from(same) {
                        found = Some(e);
                    }
                }
            }
            let entry = found.ok_or_else(|| Denied::Unauthenticated("unknown token".into()))?;
            if entry
                .expires
                .is_some_and(|at| at <= OffsetDateTime::now_utc())
            {
                return Err(Denied::Unauthenticated(format!(
                    "the token of {} has expired",
                    entry.name
                )));
            }
            return Ok(Caller {
                name: entry.name.clone(),
                roles: entry.roles.clone(),
                via: "token",
                from,
            });
        }
        if self.trust_proxy {
            let user = ["x-auth-request-user", "x-forwarded-user"]
                .iter()
                .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
                .map(str::trim)
                .filter(|u| !u.is_empty());
            if let Some(user) = user {
                let entry = entries.iter().find(|e| e.name == user).ok_or_else(|| {
                    Denied::Forbidden(format!("{user} is not listed in the operator tokens file"))
                })?;
                return Ok(Caller {
                    name: entry.name.clone(),
                    roles: entry.roles.clone(),
                    via: "proxy",
                    from,
                });
            }
        }
        Err(Denied::Unauthenticated(
            "authentication required: send Authorization: Bearer <token>".into(),
        ))
    }

    /// Who is asking, who must have `role`.
    pub fn require(
        &self,
        headers: &HeaderMap,
        from: Option<String>,
        role: &str,
    ) -> Result<Caller, Denied> {
        let caller = self.authenticate(headers, from)?;
        if caller.has(role) {
            Ok(caller)
        } else {
            Err(Denied::Forbidden(format!(
                "{} does not have the {role} role",
                caller.name
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operators(text: &str, proxy: bool) -> (Operators, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        (
            Operators::new(Some(file.path().to_owned()), proxy).unwrap(),
            file,
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_known_by_their_hash_and_carry_their_roles() {
        let text = format!(
            "[[operator]]\nname = \"alice\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"bob\"\nroles = [\"viewer\"]\nsha256 = \"{}\"\n\n[[operator]]\nname = \"old\"\nroles = [\"operator\"]\nsha256 = \"{}\"\nexpires = \"2020-01-01T00:00:00Z\"\n",
            token_hash("alice-token"),
            token_hash("bob-token"),
            token_hash("old-token"),
        );
        let (ops, _f) = operators(&text, false);
        let alice = ops.require(&bearer("alice-token"), None, OPERATOR).unwrap();
        assert_eq!((alice.name.as_str(), alice.via), ("alice", "token"));
        assert_eq!(
            ops.require(&bearer("bob-token"), None, OPERATOR),
            Err(Denied::Forbidden(
                "bob does not have the operator role".into()
            ))
        );
        for (headers, why) in [
            (bearer("nope"), "unknown token"),
            (bearer("old-token"), "the token of old has expired"),
            (HeaderMap::new(), "authentication required"),
        ] {
            match ops.authenticate(&headers, None) {
                Err(Denied::Unauthenticated(m)) => assert!(m.starts_with(why), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        // The proxy's header is not trusted unless enabled.
        let mut h = HeaderMap::new();
        h.insert("x-auth-request-user", "alice".parse().unwrap());
        assert!(matches!(
            ops.authenticate(&h, None),
            Err(Denied::Unauthenticated(_))
        ));
        // No denial ever repeats the token.
        let m = ops.authenticate(&bearer("s3cret-value"), None).unwrap_err();
        assert!(!m.to_string().contains("s3cret-value"));
    }

    #[test]
    fn a_trusted_proxy_names_the_user_and_the_file_gives_the_roles() {
        let (ops, _f) = operators(
            "[[operator]]\nname = \"carol@example.org\"\nroles = [\"operator\"]\n",
            true,
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", "carol@example.org".parse().unwrap());
        let c = ops.require(&h, Some("10.0.0.9".into()), OPERATOR).unwrap();
        assert_eq!((c.via, c.from.as_deref()), ("proxy", Some("10.0.0.9")));
        let mut h = HeaderMap::new();
        h.insert("x-auth-request-user", "mallory".parse().unwrap());
        assert!(matches!(
            ops.authenticate(&h, None),
            Err(Denied::Forbidden(_))
        ));
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_is_refused_at_start() {
        let (ops, f) = operators("", false);
        assert!(ops.authenticate(&bearer("t1"), None).is_err());
        // A different size and a later time: seen as changed on any file system.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            f.path(),
            format!(
                "[[operator]]\nname = \"dave\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n",
                token_hash("t1")
            ),
        )
        .unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(ops.authenticate(&bearer("t1"), None).unwrap().name, "dave");
        let broken = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            broken.path(),
            "[[operator]]\nname = \"x\"\nsha256 = \"abc\"\n",
        )
        .unwrap();
        let e = Operators::new(Some(broken.path().to_owned()), false).unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(Operators::new(None, false).unwrap().is_disabled());
    }
}
