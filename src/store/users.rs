//! Static users kept in the store: the hash `turnd:users` (`docs/cluster.md`, Data model).
//!
//! Each field is a user name, each value `key:<32 hex digits>` (MD5(name:realm:password), as a
//! TOML user's `key`), `key:<32 hex>;sha256:<64 hex>` (both keys, the second
//! SHA-256(name:realm:password) for RFC 8489's SHA-256 password algorithm: what
//! `turnd users add --password` writes) or `password:<the password>`. What comes out is the same `(name, secret)`
//! list the TOML's users give `Credentials::new`, so store users and file users are one thing to
//! the core.
//!
//! Whoever can write to Redis is trusted no further than the TOML's author: the hash is read in
//! pages (`HSCAN`), at most [`MAX_USERS`] users are kept, and an entry that is not a valid user
//! is skipped and counted, never an error that would leave a node without users.

use crate::config::User;
use crate::core::auth::UserSecret;
use redis::aio::ConnectionLike;
use std::collections::HashMap;

/// The hash of static users.
pub const USERS_KEY: &str = "turnd:users";
/// At most this many users are kept from the store; the rest are left out and counted.
pub const MAX_USERS: usize = 100_000;
/// The longest value read: `password:` and a password no client would type, or a key.
pub const MAX_VALUE_BYTES: usize = 600;
/// Entries asked for per `HSCAN` page (a hint: Redis may return more or fewer).
const PAGE: usize = 1_000;

/// One `HSCAN` answer: the next cursor (0 at the end) and field/value pairs as raw bytes.
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// What one read of `turnd:users` found.
#[derive(Debug, Default)]
pub struct StoreUsers {
    /// The valid users, by name (one entry per name).
    pub users: HashMap<String, UserSecret>,
    /// Entries left out: a bad name or value.
    pub invalid: usize,
    /// Whether the hash held more than [`MAX_USERS`] users, the rest being left out.
    pub truncated: bool,
}

impl StoreUsers {
    /// The users as `Credentials::new` takes them.
    pub fn into_credentials_users(self) -> impl Iterator<Item = (String, UserSecret)> {
        self.users.into_iter()
    }
}

/// Reads `turnd:users` page by page. An error is Redis's (unreachable, timed out, the key of
/// another type); the caller keeps the users it had.
pub async fn read_users(conn: &mut impl ConnectionLike) -> redis::RedisResult<StoreUsers> {
    read_users_bounded(conn, MAX_USERS).await
}

/// [`read_users`] keeping at most `max` users.
pub async fn read_users_bounded(
    conn: &mut impl ConnectionLike,
    max: usize,
) -> redis::RedisResult<StoreUsers> {
    let mut found = StoreUsers::default();
    let mut cursor: u64 = 0;
    // A full HSCAN ends in about (entries / PAGE) calls; Redis guarantees that it ends, this
    // cap makes sure of it whatever answers: a hash big enough to need more is over `max`.
    let max_calls = 4 * (max / PAGE + 1) + 16;
    for _ in 0..max_calls {
        let (next, page): ScanPage = redis::cmd("HSCAN")
            .arg(USERS_KEY)
            .arg(cursor)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        for (name, value) in page {
            match parse_user(&name, &value) {
                Some(user) if found.users.len() < max || found.users.contains_key(&user.name) => {
                    found.users.insert(user.name, user.secret);
                }
                Some(_) => found.truncated = true,
                None => found.invalid += 1,
            }
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
    found.truncated = true;
    Ok(found)
}

/// One entry of `turnd:users`, or `None` when it is not a valid user: a name that is empty, not
/// UTF-8, longer than RFC 8489 allows or holding control characters; a value over
/// [`MAX_VALUE_BYTES`], or none of `key:<32 hex>`, `key:<32 hex>;sha256:<64 hex>` and a
/// non-empty `password:…`.
pub fn parse_user(name: &[u8], value: &[u8]) -> Option<User> {
    let name = std::str::from_utf8(name).ok()?;
    if name.is_empty() || name.len() > User::MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return None;
    }
    if value.len() > MAX_VALUE_BYTES {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    if let Some(keys) = value.strip_prefix("key:") {
        let secret = match keys.split_once(";sha256:") {
            Some((md5, sha256)) => UserSecret::Keys {
                md5: UserSecret::parse_key_hex(md5)?,
                sha256: UserSecret::parse_sha256_key_hex(sha256)?,
            },
            None => UserSecret::Key(UserSecret::parse_key_hex(keys)?),
        };
        return Some(User {
            name: name.to_string(),
            secret,
        });
    }
    match value.strip_prefix("password:") {
        Some(password) if !password.is_empty() => Some(User::with_password(name, password)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_passwords_parse_like_toml_users() {
        let key = "0123456789abcdef0123456789ABCDEF";
        let user = parse_user(b"alice", format!("key:{key}").as_bytes()).unwrap();
        assert_eq!(
            user.secret,
            UserSecret::Key(UserSecret::parse_key_hex(key).unwrap())
        );
        let user = parse_user(b"bob", b"password:pw:with:colons").unwrap();
        assert_eq!(user, User::with_password("bob", "pw:with:colons"));
    }

    #[test]
    fn both_keys_parse_into_keys() {
        let md5 = "0123456789abcdef0123456789ABCDEF";
        let sha = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let user = parse_user(b"alice", format!("key:{md5};sha256:{sha}").as_bytes()).unwrap();
        assert_eq!(
            user.secret,
            UserSecret::Keys {
                md5: UserSecret::parse_key_hex(md5).unwrap(),
                sha256: UserSecret::parse_sha256_key_hex(sha).unwrap(),
            }
        );
        for bad in [
            format!("key:{md5};sha256:"),
            format!("key:{md5};sha256:{}", &sha[..62]),
            format!("key:{md5};sha256:{sha}00"),
            format!("key:{md5};sha256:{}zz", &sha[..62]),
            format!("key:{md5};sha1:{sha}"),
            format!("key:{md5} ;sha256:{sha}"),
            format!("key:;sha256:{sha}"),
            format!("sha256:{sha}"),
            format!("key:{md5};sha256:{sha};sha256:{sha}"),
        ] {
            assert_eq!(parse_user(b"alice", bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        let long_name = vec![b'a'; User::MAX_NAME_BYTES + 1];
        let long_value = format!("password:{}", "x".repeat(MAX_VALUE_BYTES));
        for (name, value) in [
            (&b""[..], &b"password:x"[..]),
            (b"a\nb", b"password:x"),
            (b"\xff", b"password:x"),
            (&long_name, b"password:x"),
            (b"alice", b"password:"),
            (b"alice", b"key:0123"),
            (b"alice", b"key:zz23456789abcdef0123456789abcdef"),
            (b"alice", b"alice-password"),
            (b"alice", long_value.as_bytes()),
        ] {
            assert_eq!(parse_user(name, value), None, "{name:?} {value:?}");
        }
        let longest_name = "a".repeat(User::MAX_NAME_BYTES);
        assert!(parse_user(longest_name.as_bytes(), b"password:x").is_some());
    }
}
