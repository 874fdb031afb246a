//! Revoked users (issue 17, `docs/cluster.md#revocation`): names refused until a time, checked
//! by [`Credentials`](super::auth::Credentials) before any key.
//!
//! A revocation names a static user or the *user id* part of a TURN REST API username
//! (`<expiry>:<user-id>`, or `<user-id>:<expiry>` with `rest_username_order = "user-first"`),
//! since a REST username changes with every credential minted while the user id stays. Each
//! entry ends at a unix time the caller's clock is compared with, so a revocation for a while
//! ends by itself on every node, whatever happens to the store meanwhile.
//!
//! Sans-IO: the time comes in as an argument. A lookup does not allocate.

use super::auth::RestUsernameOrder;
use std::collections::HashMap;

/// The end of a revocation without one: until removed.
pub const FOREVER: u64 = u64::MAX;

/// Names refused, each until a unix time (exclusive: refused while `now < until`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    until: HashMap<String, u64>,
}

impl Revocations {
    /// From `(name, until)` pairs; a name listed twice keeps the later end.
    pub fn new(entries: impl IntoIterator<Item = (String, u64)>) -> Revocations {
        let mut until: HashMap<String, u64> = HashMap::new();
        for (name, end) in entries {
            let e = until.entry(name).or_insert(end);
            *e = (*e).max(end);
        }
        Revocations { until }
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Each revoked name and when its revocation ends ([`FOREVER`]: until removed).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.until.iter().map(|(n, u)| (n.as_str(), *u))
    }

    /// Whether `name` itself is revoked at `unix_now`.
    fn names(&self, name: &str, unix_now: u64) -> bool {
        self.until.get(name).is_some_and(|&end| unix_now < end)
    }

    /// Whether a request under `username` is refused at `unix_now`: the username is revoked,
    /// or it is a REST username (read in `order`) whose user id is.
    pub fn refuses(&self, username: &str, order: RestUsernameOrder, unix_now: u64) -> bool {
        if self.until.is_empty() {
            return false;
        }
        self.names(username, unix_now)
            || rest_user_id(username, order).is_some_and(|id| self.names(id, unix_now))
    }
}

/// The user id of a REST username written in `order`: what follows the expiry's colon
/// (`<expiry>:<user-id>`), or precedes it (`<user-id>:<expiry>`). `None` when the expiry is not
/// where `order` puts it, or there is no user id.
pub fn rest_user_id(username: &str, order: RestUsernameOrder) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (expiry, id) = match order {
        RestUsernameOrder::ExpiryFirst => {
            let (e, id) = username.split_once(':')?;
            (e, id)
        }
        RestUsernameOrder::UserFirst => {
            let (id, e) = username.rsplit_once(':')?;
            (e, id)
        }
    };
    (digits(expiry) && !id.is_empty()).then_some(id)
}

/// Whether an allocation held under `username` belongs to `user` (a static user name or a REST
/// user id): what ending a revoked user's allocations matches on.
pub fn belongs_to(username: &str, user: &str, order: RestUsernameOrder) -> bool {
    username == user || rest_user_id(username, order) == Some(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestUsernameOrder::{ExpiryFirst, UserFirst};

    #[test]
    fn rest_user_ids_are_read_in_the_configured_order_only() {
        assert_eq!(rest_user_id("1700000000:alice", ExpiryFirst), Some("alice"));
        assert_eq!(rest_user_id("1700000000:a:b", ExpiryFirst), Some("a:b"));
        assert_eq!(rest_user_id("alice:1700000000", ExpiryFirst), None);
        assert_eq!(rest_user_id("alice:1700000000", UserFirst), Some("alice"));
        assert_eq!(rest_user_id("a:b:1700000000", UserFirst), Some("a:b"));
        assert_eq!(rest_user_id("1700000000:alice", UserFirst), None);
        for bare in ["1700000000", "1700000000:", "alice", ""] {
            assert_eq!(rest_user_id(bare, ExpiryFirst), None, "{bare}");
            assert_eq!(rest_user_id(bare, UserFirst), None, "{bare}");
        }
    }

    #[test]
    fn a_revocation_refuses_the_name_and_rest_ids_until_it_ends() {
        let r = Revocations::new([("alice".to_string(), 1_000), ("bob".to_string(), FOREVER)]);
        assert!(r.refuses("alice", ExpiryFirst, 999));
        assert!(!r.refuses("alice", ExpiryFirst, 1_000), "ends at its time");
        assert!(r.refuses("1700000000:alice", ExpiryFirst, 999));
        assert!(!r.refuses("alice:1700000000", ExpiryFirst, 999));
        assert!(r.refuses("alice:1700000000", UserFirst, 999));
        assert!(r.refuses("bob", ExpiryFirst, u64::MAX - 1));
        assert!(!r.refuses("carol", ExpiryFirst, 0));
        assert!(!r.refuses("1700000000:alicex", ExpiryFirst, 0));
        assert!(!Revocations::default().refuses("alice", ExpiryFirst, 0));
    }

    #[test]
    fn a_name_listed_twice_keeps_the_later_end() {
        let r = Revocations::new([("a".to_string(), 5), ("a".to_string(), 9), ("a".into(), 7)]);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![("a", 9)]);
    }

    #[test]
    fn allocations_belong_to_their_user_or_rest_id() {
        assert!(belongs_to("alice", "alice", ExpiryFirst));
        assert!(belongs_to("1700000000:alice", "alice", ExpiryFirst));
        assert!(!belongs_to("1700000000:alice", "alice", UserFirst));
        assert!(!belongs_to("alice2", "alice", ExpiryFirst));
    }
}
