//! Long-term credentials as a TURN client holds them (RFC 8489 §9.2), and the state the
//! 401 challenge teaches it: the server's REALM and NONCE and the key derived from them.

use crate::core::auth::{long_term_key, rest_api_password, RestUsernameOrder};
use std::time::Duration;

/// The MD5 long-term key, MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub type Key = [u8; 16];

/// A username and password, static or minted for the TURN REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// When set, the key is computed with this realm whatever the server announces — what a
    /// client configured with a realm does (the probe's `--realm` checks exactly that). REALM
    /// in requests is still the server's, as RFC 8489 §9.2.3 asks.
    pub realm: Option<String>,
}

impl Credentials {
    /// Static credentials (`[[users]]` on a turnd server, `user=` in coturn).
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
        }
    }

    /// TURN REST API credentials (draft-uberti-behave-turn-rest-00): the username carries its
    /// expiry, `unix_now + ttl`, and the password is base64(HMAC-SHA1(secret, username)) —
    /// what an application server hands a browser. The clock reading is the caller's.
    pub fn rest(
        secret: &str,
        user: &str,
        ttl: Duration,
        unix_now: u64,
        order: RestUsernameOrder,
    ) -> Credentials {
        let username = order.username(unix_now.saturating_add(ttl.as_secs()), user);
        let password = rest_api_password(secret.as_bytes(), &username);
        Credentials {
            username,
            password,
            realm: None,
        }
    }

    /// The same credentials, keyed with `realm` whatever the server says.
    pub fn with_realm(mut self, realm: &str) -> Credentials {
        self.realm = Some(realm.to_string());
        self
    }

    /// The key for a server announcing `server_realm`.
    pub fn key(&self, server_realm: &str) -> Key {
        let realm = self.realm.as_deref().unwrap_or(server_realm);
        long_term_key(&self.username, realm, &self.password)
    }
}

/// What a 401 taught: the realm and nonce to send back, and the key to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub realm: String,
    pub nonce: Vec<u8>,
    pub key: Key,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_are_what_the_server_recomputes() {
        let c = Credentials::rest(
            "s3cret",
            "alice",
            Duration::from_secs(3600),
            1_700_000_000,
            RestUsernameOrder::ExpiryFirst,
        );
        assert_eq!(c.username, "1700003600:alice");
        assert_eq!(c.password, rest_api_password(b"s3cret", "1700003600:alice"));
        let m = crate::credentials::mint(
            "s3cret",
            "alice",
            Duration::from_secs(3600),
            1_700_000_000,
            RestUsernameOrder::ExpiryFirst,
        );
        assert_eq!((c.username, c.password), (m.username, m.password));
    }

    #[test]
    fn a_configured_realm_overrides_the_servers_for_the_key() {
        let c = Credentials::new("u", "p");
        assert_eq!(c.key("a"), long_term_key("u", "a", "p"));
        let c = c.with_realm("b");
        assert_eq!(c.key("a"), long_term_key("u", "b", "p"));
    }
}
