//! Revocations kept in the store: the sorted set `turnd:revoked` (`docs/cluster.md`,
//! Revocation). Each member is a static user name or a REST user id, its score the unix time
//! the revocation ends (`+inf`: until removed). Nodes read only the members not yet ended;
//! the end itself is checked by each node's clock ([`Revocations`]), so a revocation ends on
//! time even while Redis is down.

use crate::config::User;
use crate::core::revocation::{Revocations, FOREVER};
use redis::aio::ConnectionLike;

/// The sorted set of revocations.
pub const REVOKED_KEY: &str = "turnd:revoked";

/// What one read of `turnd:revoked` found.
#[derive(Debug, Default)]
pub struct StoreRevoked {
    pub revoked: Revocations,
    /// Members left out: a bad name, or over the bound.
    pub skipped: usize,
}

/// A name fit to revoke: what a user name may be (non-empty UTF-8, no control characters, at
/// most 512 bytes).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > User::MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(format!(
            "a user name is 1 to {} bytes without control characters",
            User::MAX_NAME_BYTES
        ));
    }
    Ok(())
}

/// The score's end time: `+inf` (or beyond `u64`) is until removed.
pub fn until_of_score(score: f64) -> u64 {
    if score.is_nan() || score <= 0.0 {
        0
    } else if score >= u64::MAX as f64 {
        FOREVER
    } else {
        score as u64
    }
}

/// The score written for an end time.
pub fn score_of_until(until: u64) -> String {
    if until == FOREVER {
        "+inf".into()
    } else {
        until.to_string()
    }
}

/// Reads the revocations not ended at `unix_now`, at most `max` (one `ZRANGEBYSCORE`).
pub async fn read_revoked(
    conn: &mut impl ConnectionLike,
    unix_now: u64,
    max: usize,
) -> redis::RedisResult<StoreRevoked> {
    let page: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(REVOKED_KEY)
        .arg(format!("({unix_now}"))
        .arg("+inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(max.saturating_add(1))
        .query_async(conn)
        .await?;
    let mut skipped = 0;
    let mut kept = Vec::new();
    for (name, score) in page {
        match String::from_utf8(name) {
            Ok(n) if check_name(&n).is_ok() && kept.len() < max => {
                kept.push((n, until_of_score(score)))
            }
            _ => skipped += 1,
        }
    }
    Ok(StoreRevoked {
        revoked: Revocations::new(kept),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_end_times_round_trip() {
        assert_eq!(until_of_score(f64::INFINITY), FOREVER);
        assert_eq!(until_of_score(1.7e9), 1_700_000_000);
        assert_eq!(until_of_score(f64::NAN), 0);
        assert_eq!(score_of_until(FOREVER), "+inf");
        assert_eq!(score_of_until(5), "5");
        assert!(check_name("alice").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"a".repeat(User::MAX_NAME_BYTES + 1)).is_err());
    }
}
