//! REST shared secrets kept in the store: the hash `turnd:secrets` (`docs/cluster.md`, Data
//! model). Each field is a secret's name (so listing or removing one never shows a secret),
//! each value the secret, used like an `auth_secrets` entry.
//!
//! Bounded like the users: read in `HSCAN` pages, at most [`MAX_SECRETS`] kept (every secret
//! is one more HMAC per REST authentication that fails the others), a bad entry skipped.

use crate::config::User;
use redis::aio::ConnectionLike;
use std::collections::BTreeMap;

/// The hash of REST secrets.
pub const SECRETS_KEY: &str = "turnd:secrets";
/// At most this many secrets are kept: each costs an HMAC for a REST username the others do
/// not match, so the bound is also a bound on the work one request can cause.
pub const MAX_SECRETS: usize = 64;
/// The longest secret kept.
pub const MAX_SECRET_BYTES: usize = 512;

/// One `HSCAN` answer: the next cursor (0 at the end) and field/value pairs as raw bytes.
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// What one read of `turnd:secrets` found.
#[derive(Debug, Default)]
pub struct StoreSecrets {
    /// Secret by name.
    pub secrets: BTreeMap<String, String>,
    /// Entries left out: a bad name or value, or over [`MAX_SECRETS`].
    pub skipped: usize,
}

/// Reads `turnd:secrets`. An error is Redis's; the caller keeps the secrets it had.
pub async fn read_secrets(conn: &mut impl ConnectionLike) -> redis::RedisResult<StoreSecrets> {
    let mut found = StoreSecrets::default();
    let mut cursor: u64 = 0;
    // Redis ends a scan; the cap makes sure of it. 64 secrets fit a handful of pages.
    for _ in 0..64 {
        let (next, page): ScanPage = redis::cmd("HSCAN")
            .arg(SECRETS_KEY)
            .arg(cursor)
            .arg("COUNT")
            .arg(MAX_SECRETS)
            .query_async(conn)
            .await?;
        for (name, value) in page {
            match parse_secret(&name, &value) {
                Some((n, v)) if found.secrets.len() < MAX_SECRETS => {
                    found.secrets.insert(n, v);
                }
                _ => found.skipped += 1,
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(found)
}

/// One entry: a name as a user name must be (UTF-8, no control characters, at most 512
/// bytes) and a non-empty UTF-8 secret of at most [`MAX_SECRET_BYTES`].
pub fn parse_secret(name: &[u8], value: &[u8]) -> Option<(String, String)> {
    let name = std::str::from_utf8(name).ok()?;
    if name.is_empty() || name.len() > User::MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return None;
    }
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return None;
    }
    Some((
        name.to_string(),
        std::str::from_utf8(value).ok()?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_need_a_name_and_a_bounded_value() {
        assert_eq!(
            parse_secret(b"2026-12", b"s3cret"),
            Some(("2026-12".into(), "s3cret".into()))
        );
        let long = vec![b'x'; MAX_SECRET_BYTES + 1];
        for (name, value) in [
            (&b""[..], &b"s"[..]),
            (b"a\tb", b"s"),
            (b"a", b""),
            (b"a", &long),
            (b"a", b"\xff"),
        ] {
            assert_eq!(parse_secret(name, value), None, "{name:?}");
        }
        assert!(parse_secret(b"a", &long[1..]).is_some());
    }
}
