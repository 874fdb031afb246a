//! Long-term credentials (RFC 8489 §9.2) and the TURN REST API (draft-uberti-behave-turn-rest-00).
//!
//! TURN servers authenticate allocations with the STUN *long-term credential mechanism*
//! (RFC 8489 §9.2): the client proves it knows a password by keying MESSAGE-INTEGRITY with
//! `key = MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2, the MD5 password algorithm).
//! The server therefore never needs the plaintext password, only this 16-byte key, which is why
//! static users may be configured with either ([`UserSecret`]).
//!
//! RFC 8489 adds a second password algorithm, SHA-256 (`key = SHA-256(username ":" realm ":"
//! password)`, [`long_term_key_sha256`]), negotiated with PASSWORD-ALGORITHMS, and USERHASH
//! (`SHA-256(username ":" realm)`, [`userhash`]) in place of USERNAME. A static user given a
//! password, or both keys ([`UserSecret::Keys`]), gets both; one given only the MD5 key cannot use SHA-256
//! ([`AuthError::UnsupportedAlgorithm`]). REST API users get both (their password is derived),
//! but cannot be found by USERHASH: the server knows a REST user only by deriving its password
//! from the name, which a hash hides.
//!
//! WebRTC deployments rarely have fixed users. Instead they use the *TURN REST API*
//! (draft-uberti-behave-turn-rest-00, "ephemeral credentials", coturn's `use-auth-secret`):
//! the application server and the TURN server share a secret; the application hands a client
//! the username `<unix-expiry>:<user-id>` and the password
//! `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the password from the
//! username alone, so it needs no user database and no per-user state, and the credential
//! stops working on its own once the expiry passes. Several secrets may be configured at once
//! so an operator can rotate the secret without a flag day: every secret is tried in turn.
//!
//! The expiry is read from one documented place ([`RestUsernameOrder`]): first by default, as
//! the draft and coturn have it, last only when the operator says so. Reading both would let a
//! numeric user id stand in for an expiry (`12345678901:1700000000` read user-first is a
//! credential valid for four thousand years). And an expiry further ahead than
//! [`RestPolicy::max_ttl`] is refused, so a backend bug cannot mint a credential that outlives
//! every secret rotation.
//!
//! This module is part of the sans-IO core: it reads no clock (the caller passes `unix_now`),
//! does no I/O, never panics on network input, and reports failures as a small `Copy` enum.
//!
//! # String preparation
//!
//! RFC 8489 §9.2.2 says the username, realm and password are processed with the
//! OpaqueString profile of PRECIS (RFC 8265; SASLprep in RFC 5389) before hashing. We use them
//! as the exact UTF-8 bytes given instead. Every credential that matters in practice (REST API
//! usernames are ASCII digits, a colon and an application-chosen id; passwords are base64) is
//! already in normal form, where the preparation is the identity; implementing PRECIS would
//! need Unicode tables that are out of proportion for that. An operator with non-ASCII static
//! passwords can configure the precomputed key ([`UserSecret::Key`]) computed over the
//! prepared strings.

use std::collections::HashMap;
use std::fmt;

use super::revocation::Revocations;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// The long-term credential key of the MD5 password algorithm:
/// MD5(username ":" realm ":" password) (RFC 8489 §9.2.2), the only one RFC 5389 knew.
///
/// It keys MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) — and MESSAGE-INTEGRITY-SHA256 when an
/// RFC 8489 client picks MD5. It is what the server actually needs to verify a request, so it
/// is what a static user may be configured with instead of a password ([`UserSecret::Key`]).
pub type Md5Key = [u8; 16];

/// Computes the long-term credential key `MD5(username ":" realm ":" password)`
/// (RFC 8489 §9.2.2).
///
/// The strings are hashed as given, without SASLprep/OpaqueString processing (see the module
/// documentation for why).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Md5Key {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// The SHA-256 long-term credential key: SHA-256(username ":" realm ":" password)
/// (RFC 8489 §9.2.2, SHA-256 algorithm).
pub type Sha256Key = [u8; 32];

/// Computes `SHA-256(username ":" realm ":" password)` (RFC 8489 §9.2.2), hashed as given like
/// [`long_term_key`].
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> Sha256Key {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// USERHASH: `SHA-256(username ":" realm)` (RFC 8489 §14.4), which an RFC 8489 client sends
/// instead of USERNAME when the server's nonce cookie has the "Username anonymity" bit.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

/// The password algorithms of RFC 8489 §18.5, as numbered in PASSWORD-ALGORITHM(S).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    /// 0x0001: key = MD5(username ":" realm ":" password), 16 bytes.
    Md5,
    /// 0x0002: key = SHA-256(username ":" realm ":" password), 32 bytes.
    Sha256,
}

impl PasswordAlgorithm {
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }

    pub fn from_number(n: u16) -> Option<PasswordAlgorithm> {
        match n {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// The long-term credential key (RFC 8489 §9.2.2) with the password algorithm that derived
/// it: `MD5(username ":" realm ":" password)` or `SHA-256(username ":" realm ":" password)`.
/// Password-equivalent for its realm, so its `Debug` shows only the algorithm.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LongTermKey {
    Md5(Md5Key),
    Sha256(Sha256Key),
}

impl LongTermKey {
    /// Derives the key of `algorithm` from the credentials (hashed as given, see the module
    /// documentation).
    pub fn derive(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> LongTermKey {
        match algorithm {
            PasswordAlgorithm::Md5 => LongTermKey::Md5(long_term_key(username, realm, password)),
            PasswordAlgorithm::Sha256 => {
                LongTermKey::Sha256(long_term_key_sha256(username, realm, password))
            }
        }
    }

    pub fn algorithm(&self) -> PasswordAlgorithm {
        match self {
            LongTermKey::Md5(_) => PasswordAlgorithm::Md5,
            LongTermKey::Sha256(_) => PasswordAlgorithm::Sha256,
        }
    }

    /// The HMAC key: 16 bytes (MD5) or 32 (SHA-256).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(k) => k,
            LongTermKey::Sha256(k) => k,
        }
    }
}

impl fmt::Debug for LongTermKey {
    /// Redacted: the key is password-equivalent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LongTermKey::{:?}(<redacted>)", self.algorithm())
    }
}

/// The key an authenticated request proved, and how every response to it is signed.
///
/// RFC 8489 §9.2.4: responses carry MESSAGE-INTEGRITY-SHA256 unless the request was processed
/// "as though PASSWORD-ALGORITHM were MD5" because it carried neither PASSWORD-ALGORITHMS nor
/// PASSWORD-ALGORITHM (an RFC 5389 client): then MESSAGE-INTEGRITY, exactly as before. The
/// two are independent: an RFC 8489 client that picks MD5 signs with MESSAGE-INTEGRITY-SHA256
/// keyed with the MD5 key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionKey {
    pub key: LongTermKey,
    /// Sign responses with MESSAGE-INTEGRITY-SHA256 rather than MESSAGE-INTEGRITY.
    pub sha256_integrity: bool,
}

impl SessionKey {
    /// A legacy (RFC 5389) session: MD5 key, MESSAGE-INTEGRITY.
    pub fn md5(key: Md5Key) -> SessionKey {
        SessionKey::new(LongTermKey::Md5(key), false)
    }

    /// `key`, signing with MESSAGE-INTEGRITY-SHA256 when `sha256_integrity`.
    pub fn new(key: LongTermKey, sha256_integrity: bool) -> SessionKey {
        SessionKey {
            key,
            sha256_integrity,
        }
    }

    /// The HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        self.key.as_bytes()
    }
}

/// Who a request says it is: USERNAME, or USERHASH (RFC 8489 §14.3, §14.4).
#[derive(Clone, Copy, Debug)]
pub enum UserRef<'a> {
    Name(&'a str),
    Hash(&'a [u8; 32]),
}

/// How a static user's secret is stored: plaintext password, or the precomputed key (so
/// plaintext need not be stored in the config).
///
/// Both give the same [`Md5Key`] once the realm is known: a `Password` is turned into
/// `long_term_key(username, realm, password)` by [`Credentials::new`]. Storing the key
/// (e.g. as produced by `turnadmin -k`) keeps the plaintext password out of the config file:
/// RFC 8489 §9.2.2 only ever uses the password through this key, so the server loses nothing by
/// not knowing it. Note the key is still password-equivalent for this realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSecret {
    /// The plaintext password.
    Password(String),
    /// The precomputed `MD5(username ":" realm ":" password)`.
    Key(Md5Key),
    /// Both precomputed keys, MD5 and `SHA-256(username ":" realm ":" password)`
    /// ([`long_term_key_sha256`]): what the fleet store keeps for a user added with a password,
    /// so the user can pick either algorithm without the store holding the plaintext.
    Keys { md5: Md5Key, sha256: Sha256Key },
}

impl UserSecret {
    /// Parses a precomputed key written as 32 hex digits (case-insensitive, optional `0x`/`0X`
    /// prefix), the form coturn's `turnadmin -k` prints. `None` for anything else.
    pub fn parse_key_hex(hex: &str) -> Option<Md5Key> {
        parse_hex(hex)
    }

    /// Parses a precomputed SHA-256 key written as 64 hex digits, with the same rules as
    /// [`UserSecret::parse_key_hex`].
    pub fn parse_sha256_key_hex(hex: &str) -> Option<Sha256Key> {
        parse_hex(hex)
    }
}

/// `N` bytes written as `2 N` hex digits (case-insensitive, optional `0x`/`0X` prefix).
fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex)
        .as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut key = [0u8; N];
    for (byte, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(key)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Length of a base64-encoded HMAC-SHA1 (20 bytes → 28 chars with padding).
const REST_PASSWORD_LEN: usize = 28;

/// Computes `base64(HMAC-SHA1(secret, username))` into a stack buffer, so that trying every
/// secret in [`Credentials::authenticate`] does not allocate.
fn rest_api_password_into<'a>(
    secret: &[u8],
    username: &str,
    out: &'a mut [u8; REST_PASSWORD_LEN],
) -> &'a str {
    // HMAC accepts keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let tag = mac.finalize().into_bytes();
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(tag, &mut out[..])
        .expect("28 bytes hold base64 of 20");
    let out: &'a [u8] = &out[..n];
    std::str::from_utf8(out).expect("base64 is ASCII")
}

/// TURN REST API password: base64(HMAC-SHA1(secret, username)) (standard base64 with padding).
///
/// This is the password the application server hands out alongside a REST username
/// (draft-uberti-behave-turn-rest-00); the TURN server recomputes it from the username
/// and the shared secret instead of looking it up. It is the same value coturn computes for
/// `use-auth-secret`.
pub fn rest_api_password(secret: &[u8], username: &str) -> String {
    let mut buf = [0u8; REST_PASSWORD_LEN];
    rest_api_password_into(secret, username, &mut buf).to_owned()
}

/// Why authentication failed — used for 401 and for metrics later.
///
/// All three are answered with 401 (Unauthenticated) and a fresh NONCE and REALM
/// (RFC 8489 §9.2.4); the distinction is for logs and metrics, not for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No static user has this name, and it is not a usable TURN REST API username (not of the
    /// REST form, or no REST secret is configured).
    UnknownUser,
    /// A TURN REST API username whose expiry timestamp is in the past.
    Expired,
    /// A TURN REST API username whose expiry lies further ahead than `rest_max_ttl`: refused
    /// like an expired one (401), counted apart so an operator can tell a backend minting
    /// too-long credentials from clients holding stale ones.
    ExpiryTooFar,
    /// A key exists for the name, but the MESSAGE-INTEGRITY check failed with every candidate
    /// key (wrong password, or wrong/rotated-out REST secret).
    BadIntegrity,
    /// The request asked for the SHA-256 password algorithm, but the user is configured with
    /// only a precomputed MD5 `key`: the SHA-256 key cannot be derived from it. Answered with
    /// 401 like a wrong password (§9.2.4: the integrity "does not match"); the client must not
    /// retry with the same credentials (§9.2.5), so it fails at once rather than timing out.
    UnsupportedAlgorithm,
    /// The user (or a REST username's user id) is revoked (`turnd revoke`,
    /// [`Revocations`](super::revocation::Revocations)): answered with 401 like an unknown
    /// user, counted apart so an operator sees the revocation work.
    Revoked,
}

impl AuthError {
    /// A short, stable, lowercase label (for metrics and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::UnknownUser => "unknown_user",
            AuthError::Expired => "expired",
            AuthError::ExpiryTooFar => "expiry_too_far",
            AuthError::BadIntegrity => "bad_integrity",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for AuthError {}

/// Where a TURN REST API username carries its expiry (config key `rest_username_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestUsernameOrder {
    /// `<unix-expiry>:<user-id>`, as draft-uberti-behave-turn-rest-00 specifies and coturn
    /// reads it (the user id may itself contain colons). The default.
    #[default]
    ExpiryFirst,
    /// `<user-id>:<unix-expiry>`, for applications that mint it that way (the expiry is after
    /// the last colon).
    UserFirst,
}

impl RestUsernameOrder {
    /// The config value: `expiry-first` or `user-first`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestUsernameOrder::ExpiryFirst => "expiry-first",
            RestUsernameOrder::UserFirst => "user-first",
        }
    }

    pub fn parse(s: &str) -> Option<RestUsernameOrder> {
        match s {
            "expiry-first" => Some(RestUsernameOrder::ExpiryFirst),
            "user-first" => Some(RestUsernameOrder::UserFirst),
            _ => None,
        }
    }

    /// The username for `user` valid until `expiry`, in this order.
    pub fn username(self, expiry: u64, user: &str) -> String {
        match self {
            RestUsernameOrder::ExpiryFirst => format!("{expiry}:{user}"),
            RestUsernameOrder::UserFirst => format!("{user}:{expiry}"),
        }
    }
}

/// Default [`RestPolicy::max_ttl`]: 7 days.
pub const DEFAULT_REST_MAX_TTL: u64 = 7 * 86_400;

/// How TURN REST API usernames are read (config keys `rest_username_order`, `rest_max_ttl`).
/// Part of the credentials: replaced with them on reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestPolicy {
    pub order: RestUsernameOrder,
    /// The furthest ahead of now, in seconds, an expiry may lie; further is refused like an
    /// expired credential ([`AuthError::ExpiryTooFar`]). 0 = no cap.
    pub max_ttl: u64,
}

impl Default for RestPolicy {
    fn default() -> Self {
        RestPolicy {
            order: RestUsernameOrder::ExpiryFirst,
            max_ttl: DEFAULT_REST_MAX_TTL,
        }
    }
}

/// Extracts the expiry from a TURN REST API username written in `order`.
///
/// draft-uberti-behave-turn-rest-00 specifies `<unix-expiry>:<user-id>` (the id is
/// optional, so a bare `<unix-expiry>` is valid too, in either order). Only the configured
/// position is read: a username with its number elsewhere is not a REST username. The expiry
/// must be plain ASCII decimal digits fitting a `u64` (no sign, no spaces).
fn rest_expiry(username: &str, order: RestUsernameOrder) -> Option<u64> {
    if let Some(t) = parse_timestamp(username) {
        return Some(t);
    }
    match order {
        RestUsernameOrder::ExpiryFirst => parse_timestamp(username.split_once(':')?.0),
        RestUsernameOrder::UserFirst => parse_timestamp(username.rsplit_once(':')?.1),
    }
}

fn parse_timestamp(s: &str) -> Option<u64> {
    // `str::parse::<u64>` alone would also accept a leading '+'.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The server's credential store: one realm, static users, and TURN REST API secrets.
///
/// Holds only derived keys for static users (never plaintext passwords), so it is cheap to
/// clone into each worker and safe to keep for the process lifetime.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, StaticUser>,
    /// USERHASH → user name, for every static user, precomputed when the store is built (at
    /// start-up and on each reload). TURN REST usernames cannot be found by their hash: the
    /// server knows them only by deriving their password from the name.
    userhashes: HashMap<[u8; 32], String>,
    secrets: Vec<Vec<u8>>,
    rest: RestPolicy,
    /// Users refused whatever their key (the fleet store's `turnd:revoked`); shared, since it
    /// changes apart from the users.
    revoked: std::sync::Arc<Revocations>,
}

/// A static user's keys: MD5 always; SHA-256 only when the plaintext password or the SHA-256
/// key was configured.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StaticUser {
    md5: Md5Key,
    sha256: Option<Sha256Key>,
}

impl fmt::Debug for Credentials {
    /// Redacts keys and secrets: they are password-equivalent and must not end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .field("rest", &self.rest)
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

impl Credentials {
    /// Builds the store. Passwords are turned into keys right away with `realm` (RFC 8489
    /// §9.2.2), so the realm a key was derived for is always the realm we announce.
    /// `secrets` are the TURN REST API shared secrets, all valid at once (for rotation); their
    /// UTF-8 bytes are the HMAC key, as in coturn's `static-auth-secret`.
    /// A user listed twice keeps the last entry.
    pub fn new(
        realm: &str,
        users: impl IntoIterator<Item = (String, UserSecret)>,
        secrets: impl IntoIterator<Item = String>,
    ) -> Credentials {
        let users: HashMap<String, StaticUser> = users
            .into_iter()
            .map(|(name, secret)| {
                let user = match secret {
                    UserSecret::Password(password) => StaticUser {
                        md5: long_term_key(&name, realm, &password),
                        sha256: Some(long_term_key_sha256(&name, realm, &password)),
                    },
                    UserSecret::Key(key) => StaticUser {
                        md5: key,
                        sha256: None,
                    },
                    UserSecret::Keys { md5, sha256 } => StaticUser {
                        md5,
                        sha256: Some(sha256),
                    },
                };
                (name, user)
            })
            .collect();
        let userhashes = users
            .keys()
            .map(|name| (userhash(name, realm), name.clone()))
            .collect();
        Credentials {
            realm: realm.to_owned(),
            users,
            userhashes,
            secrets: secrets.into_iter().map(String::into_bytes).collect(),
            rest: RestPolicy::default(),
            revoked: Default::default(),
        }
    }

    /// These credentials with more users and secrets (the fleet store's): a user whose name is
    /// already here keeps its key (the TOML wins on a clash, so a node can always be reached
    /// with its local users); the secrets are tried after these. Passwords are turned into
    /// keys with this realm, as in [`Credentials::new`].
    pub fn extended<'a>(
        &self,
        users: impl IntoIterator<Item = (&'a String, &'a UserSecret)>,
        secrets: impl IntoIterator<Item = &'a String>,
    ) -> Credentials {
        let mut out = self.clone();
        let extra = Credentials::new(
            &self.realm,
            users
                .into_iter()
                .filter(|(name, _)| !self.users.contains_key(*name))
                .map(|(name, secret)| (name.clone(), secret.clone())),
            [],
        );
        out.users.extend(extra.users);
        out.userhashes.extend(extra.userhashes);
        out.secrets
            .extend(secrets.into_iter().map(|s| s.clone().into_bytes()));
        out
    }

    /// The same credentials refusing `revoked`.
    pub fn with_revocations(mut self, revoked: std::sync::Arc<Revocations>) -> Credentials {
        self.revoked = revoked;
        self
    }

    /// The users refused whatever their key.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// Static users held.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The same store reading REST usernames by `policy` (the default is
    /// [`RestPolicy::default`]: expiry first, at most 7 days ahead).
    pub fn with_rest_policy(mut self, policy: RestPolicy) -> Credentials {
        self.rest = policy;
        self
    }

    pub fn rest_policy(&self) -> RestPolicy {
        self.rest
    }

    /// The REALM this server announces and all keys are derived with.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The account an allocation's `username` is counted under in a fleet's usage accounting
    /// (docs/cluster.md): a static user's name; for a TURN REST username the user id part
    /// (`<expiry>:<user-id>` or `<user-id>:<expiry>` as the policy's order says), so one user's
    /// credentials of different expiries add up; a bare `<expiry>` stays as it is.
    pub fn account_of<'n>(&self, username: &'n str) -> &'n str {
        if self.users.contains_key(username) || parse_timestamp(username).is_some() {
            return username;
        }
        let split = match self.rest.order {
            RestUsernameOrder::ExpiryFirst => username
                .split_once(':')
                .filter(|(t, _)| parse_timestamp(t).is_some())
                .map(|(_, id)| id),
            RestUsernameOrder::UserFirst => username
                .rsplit_once(':')
                .filter(|(_, t)| parse_timestamp(t).is_some())
                .map(|(id, _)| id),
        };
        split.unwrap_or(username)
    }

    /// Finds the key for `username` and checks it with `verify` (the caller's MESSAGE-INTEGRITY
    /// check).
    ///
    /// The store never sees the message: `verify` receives each candidate key and says whether
    /// the request's MESSAGE-INTEGRITY matches it. That keeps this module independent of the
    /// codec and lets REST secret rotation try several keys against one message.
    ///
    /// Static users are tried first; a static user is authoritative for its name (if `verify`
    /// rejects its key the result is `Err(BadIntegrity)`, REST derivation is not tried).
    /// Otherwise, if REST secrets are configured and the username is a REST username —
    /// `<unix-expiry>`, or `<unix-expiry>:<user-id>` (`<user-id>:<unix-expiry>` instead when
    /// the policy's order says so) — the expiry is checked against `unix_now`
    /// (`expiry < unix_now` → `Err(Expired)`, `expiry > unix_now + max_ttl` →
    /// `Err(ExpiryTooFar)`, both checked before trying any key, so such a credential costs no
    /// HMAC) and the key
    /// `long_term_key(username, realm, rest_api_password(secret, username))` is derived from
    /// each secret in turn until `verify` accepts one.
    ///
    /// Returns the accepted key (to sign the response with), `Err(UnknownUser)` if nothing
    /// matches the name, `Err(BadIntegrity)` if a key exists but `verify` rejects all.
    /// Does not allocate.
    pub fn authenticate(
        &self,
        username: &str,
        unix_now: u64,
        mut verify: impl FnMut(&Md5Key) -> bool,
    ) -> Result<Md5Key, AuthError> {
        let md5 = |k: &[u8]| -> bool { <&Md5Key>::try_from(k).is_ok_and(&mut verify) };
        match self.authenticate_with(
            UserRef::Name(username),
            PasswordAlgorithm::Md5,
            unix_now,
            md5,
        ) {
            // Asked for MD5, so the key is the MD5 one.
            Ok((_, key)) => <Md5Key>::try_from(key.as_bytes()).map_err(|_| AuthError::BadIntegrity),
            Err(e) => Err(e),
        }
    }

    /// [`Credentials::authenticate`] for any password algorithm and for USERHASH
    /// (RFC 8489 §9.2.4).
    ///
    /// `verify` receives each candidate key (16 bytes for MD5, 32 for SHA-256). A USERHASH is
    /// looked up among static users only (REST usernames have no hash table); an unknown hash is
    /// `UnknownUser`. Returns the user's name (borrowed from the request, or — for a USERHASH
    /// — the configured name, the one allocations and quotas are kept under) and the key as a
    /// [`SessionKey`] that signs with MESSAGE-INTEGRITY (the caller sets `sha256_integrity`).
    pub fn authenticate_with<'n>(
        &self,
        user: UserRef<'n>,
        algorithm: PasswordAlgorithm,
        unix_now: u64,
        mut verify: impl FnMut(&[u8]) -> bool,
    ) -> Result<(std::borrow::Cow<'n, str>, SessionKey), AuthError> {
        use std::borrow::Cow;
        let (name, user) = match user {
            UserRef::Name(name) => (Cow::Borrowed(name), self.users.get(name)),
            UserRef::Hash(hash) => {
                let name = self.userhashes.get(hash).ok_or(AuthError::UnknownUser)?;
                (Cow::Owned(name.clone()), self.users.get(name))
            }
        };
        // Before any key: a revoked user costs no HMAC and learns nothing from the answer.
        if self.revoked.refuses(&name, self.rest.order, unix_now) {
            return Err(AuthError::Revoked);
        }
        if let Some(user) = user {
            let key = match algorithm {
                PasswordAlgorithm::Md5 => LongTermKey::Md5(user.md5),
                PasswordAlgorithm::Sha256 => match user.sha256 {
                    Some(k) => LongTermKey::Sha256(k),
                    None => return Err(AuthError::UnsupportedAlgorithm),
                },
            };
            let key = SessionKey::new(key, false);
            return if verify(key.as_bytes()) {
                Ok((name, key))
            } else {
                Err(AuthError::BadIntegrity)
            };
        }
        if self.secrets.is_empty() {
            return Err(AuthError::UnknownUser);
        }
        let expiry = rest_expiry(&name, self.rest.order).ok_or(AuthError::UnknownUser)?;
        if expiry < unix_now {
            return Err(AuthError::Expired);
        }
        if self.rest.max_ttl != 0 && expiry - unix_now > self.rest.max_ttl {
            return Err(AuthError::ExpiryTooFar);
        }
        let mut buf = [0u8; REST_PASSWORD_LEN];
        for secret in &self.secrets {
            let password = rest_api_password_into(secret, &name, &mut buf);
            let key = LongTermKey::derive(algorithm, &name, &self.realm, password);
            let key = SessionKey::new(key, false);
            if verify(key.as_bytes()) {
                return Ok((name, key));
            }
        }
        Err(AuthError::BadIntegrity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn long_term_key_names_its_algorithm_and_hides_its_bytes() {
        let md5 = LongTermKey::derive(PasswordAlgorithm::Md5, "user", "realm", "pass");
        assert_eq!(
            md5,
            LongTermKey::Md5(long_term_key("user", "realm", "pass"))
        );
        assert_eq!(md5.algorithm(), PasswordAlgorithm::Md5);
        assert_eq!(md5.as_bytes().len(), 16);
        let sha = LongTermKey::derive(PasswordAlgorithm::Sha256, "user", "realm", "pass");
        assert_eq!(
            sha.as_bytes(),
            &long_term_key_sha256("user", "realm", "pass")[..]
        );
        assert_eq!(sha.algorithm(), PasswordAlgorithm::Sha256);
        // The key is password-equivalent: Debug (and so any log of an allocation) hides it.
        assert_eq!(format!("{md5:?}"), "LongTermKey::Md5(<redacted>)");
        let session = format!("{:?}", SessionKey::new(sha, true));
        assert!(session.contains("Sha256(<redacted>)"), "{session}");
        assert_eq!(
            SessionKey::md5(*b"0123456789abcdef").as_bytes(),
            b"0123456789abcdef"
        );
    }

    fn hex(key: &Md5Key) -> String {
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn rest(secrets: &[&str]) -> Credentials {
        Credentials::new(
            "example.org",
            Vec::new(),
            secrets.iter().map(|s| s.to_string()),
        )
    }

    /// A `verify` that accepts exactly the key a client holding `password` would use.
    fn client(username: &str, password: &str) -> impl FnMut(&Md5Key) -> bool {
        let want = long_term_key(username, "example.org", password);
        move |k| *k == want
    }

    #[test]
    fn long_term_key_rfc5769_known_answer() {
        // RFC 5769 §2.4 credentials after SASLprep. Expected value from
        // `printf '%s' 'マトリックス:example.org:TheMatrIX' | md5sum`.
        let key = long_term_key(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "example.org",
            "TheMatrIX",
        );
        assert_eq!(hex(&key), "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    #[test]
    fn rest_api_password_known_answers() {
        // From `printf '%s' USER | openssl dgst -sha1 -hmac SECRET -binary | base64`.
        assert_eq!(
            rest_api_password(b"my_secret", "1433895918506:my_user_name"),
            "1Dj9XZ5fwvKS6YoQZOoORcFnXaI="
        );
        assert_eq!(
            rest_api_password(b"north", "turnserver"),
            "TPRn5K9M1KF0y5xMeauQ5pt4w4I="
        );
    }

    #[test]
    fn parse_key_hex_forms() {
        let want = Some(long_term_key(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "example.org",
            "TheMatrIX",
        ));
        assert_eq!(
            UserSecret::parse_key_hex("e8ca7ad59d5eb0518e312911d2dab2a9"),
            want
        );
        assert_eq!(
            UserSecret::parse_key_hex("E8CA7AD59D5EB0518E312911D2DAB2A9"),
            want
        );
        assert_eq!(
            UserSecret::parse_key_hex("0xe8ca7ad59d5eb0518e312911d2dab2a9"),
            want
        );
        assert_eq!(
            UserSecret::parse_key_hex("0Xe8CA7ad59d5eb0518e312911d2dab2a9"),
            want
        );
        for bad in [
            "",
            "0x",
            "e8ca7ad59d5eb0518e312911d2dab2a",
            "e8ca7ad59d5eb0518e312911d2dab2a9a",
            "e8ca7ad59d5eb0518e312911d2dab2ag",
            "+8ca7ad59d5eb0518e312911d2dab2a9",
            " e8ca7ad59d5eb0518e312911d2dab2a",
            "0x0xe8ca7ad59d5eb0518e312911d2da",
            "é8ca7ad59d5eb0518e312911d2dab2a",
        ] {
            assert_eq!(UserSecret::parse_key_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn static_user_password_and_key_agree() {
        let key = long_term_key("alice", "example.org", "s3cret");
        let by_password = Credentials::new(
            "example.org",
            [("alice".to_string(), UserSecret::Password("s3cret".into()))],
            Vec::new(),
        );
        let by_key = Credentials::new(
            "example.org",
            [("alice".to_string(), UserSecret::Key(key))],
            Vec::new(),
        );
        assert_eq!(by_password.realm(), "example.org");
        assert_eq!(by_password.users["alice"].md5, by_key.users["alice"].md5);
        for creds in [&by_password, &by_key] {
            assert_eq!(
                creds.authenticate("alice", NOW, client("alice", "s3cret")),
                Ok(key)
            );
            assert_eq!(
                creds.authenticate("alice", NOW, client("alice", "wrong")),
                Err(AuthError::BadIntegrity)
            );
            assert_eq!(
                creds.authenticate("bob", NOW, |_| true),
                Err(AuthError::UnknownUser)
            );
        }
    }

    #[test]
    fn both_keys_give_a_key_user_sha256_as_a_password_does() {
        let (md5, sha) = (
            long_term_key("alice", "example.org", "s3cret"),
            long_term_key_sha256("alice", "example.org", "s3cret"),
        );
        let creds = |secret| Credentials::new("example.org", [("alice".into(), secret)], []);
        let keys = creds(UserSecret::Keys { md5, sha256: sha });
        let password = creds(UserSecret::Password("s3cret".into()));
        let md5_only = creds(UserSecret::Key(md5));
        let sha256 = |c: &Credentials| {
            c.authenticate_with(
                UserRef::Name("alice"),
                PasswordAlgorithm::Sha256,
                NOW,
                |k| k == &sha[..],
            )
            .map(|(_, key)| key.as_bytes().to_vec())
        };
        assert_eq!(sha256(&keys), Ok(sha.to_vec()));
        assert_eq!(sha256(&password), Ok(sha.to_vec()));
        assert_eq!(sha256(&md5_only), Err(AuthError::UnsupportedAlgorithm));
        let md5_auth =
            keys.authenticate_with(UserRef::Name("alice"), PasswordAlgorithm::Md5, NOW, |k| {
                k == &md5[..]
            });
        assert!(md5_auth.is_ok());
        let wrong = keys.authenticate_with(
            UserRef::Name("alice"),
            PasswordAlgorithm::Sha256,
            NOW,
            |k| k == &md5[..],
        );
        assert_eq!(wrong.err(), Some(AuthError::BadIntegrity));
    }

    #[test]
    fn static_user_takes_precedence_over_rest() {
        let name = format!("{}", NOW + 100);
        let creds = Credentials::new(
            "example.org",
            [(name.clone(), UserSecret::Password("pw".into()))],
            ["secret".to_string()],
        );
        assert!(creds.authenticate(&name, NOW, client(&name, "pw")).is_ok());
        let rest_pw = rest_api_password(b"secret", &name);
        assert_eq!(
            creds.authenticate(&name, NOW, client(&name, &rest_pw)),
            Err(AuthError::BadIntegrity)
        );
    }

    fn user_first(creds: Credentials, max_ttl: u64) -> Credentials {
        creds.with_rest_policy(RestPolicy {
            order: RestUsernameOrder::UserFirst,
            max_ttl,
        })
    }

    /// Whether `name`, minted with `secret`, authenticates against `creds` at `NOW`.
    fn rest_result(creds: &Credentials, name: &str) -> Result<Md5Key, AuthError> {
        let pw = rest_api_password(b"north", name);
        creds.authenticate(name, NOW, client(name, &pw))
    }

    #[test]
    fn rest_valid_in_the_default_order_only() {
        let creds = rest(&["north"]);
        assert_eq!(creds.rest_policy(), RestPolicy::default());
        let exp = NOW + 3600;
        for name in [
            format!("{exp}"),
            format!("{exp}:alice"),
            format!("{exp}:alice:with:colons"),
            format!("{exp}:12345"),
            format!("{NOW}:edge"), // expiry == now is still valid
        ] {
            let pw = rest_api_password(b"north", &name);
            let got = creds.authenticate(&name, NOW, client(&name, &pw));
            assert_eq!(got, Ok(long_term_key(&name, "example.org", &pw)), "{name}");
        }
        // The other order is not read: its expiry is where a user id would be.
        for name in [format!("alice:{exp}"), format!("alice:with:colons:{exp}")] {
            assert_eq!(
                rest_result(&creds, &name),
                Err(AuthError::UnknownUser),
                "{name}"
            );
        }
        // A numeric user id first is read as the expiry it stands in the place of: a
        // credential of 1970, not one of the year 40 000.
        let numeric = format!("12345:{exp}");
        assert_eq!(rest_result(&creds, &numeric), Err(AuthError::Expired));
    }

    #[test]
    fn rest_user_first_when_configured() {
        let creds = user_first(rest(&["north"]), DEFAULT_REST_MAX_TTL);
        let exp = NOW + 3600;
        for name in [
            format!("{exp}"),
            format!("alice:{exp}"),
            format!("alice:with:colons:{exp}"),
            format!("12345:{exp}"),
        ] {
            assert!(rest_result(&creds, &name).is_ok(), "{name}");
        }
        assert_eq!(
            rest_result(&creds, &format!("{exp}:alice")),
            Err(AuthError::UnknownUser)
        );
        // A numeric user id last is read as an expiry, never skipped for the one before it.
        assert_eq!(
            rest_result(&creds, &format!("{exp}:12345")),
            Err(AuthError::Expired)
        );
        assert_eq!(
            rest_result(&creds, &format!("alice:{}", NOW - 1)),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn rest_max_ttl_caps_how_far_ahead_an_expiry_may_lie() {
        let cap = 600;
        for order in [RestUsernameOrder::ExpiryFirst, RestUsernameOrder::UserFirst] {
            let creds = rest(&["north"]).with_rest_policy(RestPolicy {
                order,
                max_ttl: cap,
            });
            let at_cap = order.username(NOW + cap, "alice");
            assert!(rest_result(&creds, &at_cap).is_ok(), "{at_cap}");
            for name in [
                order.username(NOW + cap + 1, "alice"),
                order.username(u64::MAX, "alice"),
                format!("{}", u64::MAX),
            ] {
                let mut calls = 0;
                let got = creds.authenticate(&name, NOW, |_| {
                    calls += 1;
                    true
                });
                assert_eq!(got, Err(AuthError::ExpiryTooFar), "{name}");
                assert_eq!(calls, 0, "refused before any HMAC: {name}");
            }
        }
        // The default cap is 7 days.
        let creds = rest(&["north"]);
        let week = format!("{}:alice", NOW + DEFAULT_REST_MAX_TTL);
        assert!(rest_result(&creds, &week).is_ok());
        let more = format!("{}:alice", NOW + DEFAULT_REST_MAX_TTL + 1);
        assert_eq!(rest_result(&creds, &more), Err(AuthError::ExpiryTooFar));
        // 0: no cap, up to u64::MAX.
        let uncapped = rest(&["north"]).with_rest_policy(RestPolicy {
            order: RestUsernameOrder::ExpiryFirst,
            max_ttl: 0,
        });
        for name in [format!("{}:alice", u64::MAX), format!("{}", u64::MAX)] {
            assert!(rest_result(&uncapped, &name).is_ok(), "{name}");
        }
        assert_eq!(AuthError::ExpiryTooFar.as_str(), "expiry_too_far");
    }

    #[test]
    fn rest_order_names() {
        for order in [RestUsernameOrder::ExpiryFirst, RestUsernameOrder::UserFirst] {
            assert_eq!(RestUsernameOrder::parse(order.as_str()), Some(order));
        }
        assert_eq!(RestUsernameOrder::parse("expiry_first"), None);
        assert_eq!(RestUsernameOrder::ExpiryFirst.username(7, "a:b"), "7:a:b");
        assert_eq!(RestUsernameOrder::UserFirst.username(7, "a:b"), "a:b:7");
    }

    #[test]
    fn accounts_are_static_names_or_rest_user_ids() {
        let creds = Credentials::new(
            "example.org",
            vec![("1700000000:x".to_string(), UserSecret::Password("p".into()))],
            ["north".to_string()],
        );
        assert_eq!(creds.account_of("1700000000:alice"), "alice");
        assert_eq!(creds.account_of("1700000000:a:b"), "a:b");
        assert_eq!(creds.account_of("1700000000"), "1700000000");
        assert_eq!(creds.account_of("bob"), "bob");
        assert_eq!(
            creds.account_of("1700000000:x"),
            "1700000000:x",
            "a static user"
        );
        assert_eq!(creds.account_of("alice:1700000000"), "alice:1700000000");
        let late = user_first(rest(&["north"]), 0);
        assert_eq!(late.account_of("a:b:1700000000"), "a:b");
        assert_eq!(late.account_of("1700000000:alice"), "1700000000:alice");
    }

    #[test]
    fn rest_expired_checked_before_keys() {
        let creds = rest(&["north"]);
        let late = user_first(rest(&["north"]), DEFAULT_REST_MAX_TTL);
        for (creds, name) in [
            (&creds, format!("{}:alice", NOW - 1)),
            (&late, format!("alice:{}", NOW - 1)),
        ] {
            let mut calls = 0;
            let got = creds.authenticate(&name, NOW, |_| {
                calls += 1;
                true
            });
            assert_eq!(got, Err(AuthError::Expired), "{name}");
            assert_eq!(calls, 0);
        }
        assert_eq!(
            creds.authenticate("0", NOW, |_| true),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn rest_rotation_second_secret_works() {
        let creds = rest(&["new-secret", "old-secret"]);
        let name = format!("{}:alice", NOW + 60);
        let pw = rest_api_password(b"old-secret", &name);
        let mut calls = 0;
        let mut verify = client(&name, &pw);
        let got = creds.authenticate(&name, NOW, |k| {
            calls += 1;
            verify(k)
        });
        assert_eq!(got, Ok(long_term_key(&name, "example.org", &pw)));
        assert_eq!(calls, 2);
    }

    #[test]
    fn rest_wrong_secret_is_bad_integrity() {
        let creds = rest(&["north", "south"]);
        let name = format!("{}:alice", NOW + 60);
        let pw = rest_api_password(b"east", &name);
        assert_eq!(
            creds.authenticate(&name, NOW, client(&name, &pw)),
            Err(AuthError::BadIntegrity)
        );
    }

    #[test]
    fn non_rest_names_are_unknown() {
        let creds = rest(&["north"]);
        for name in [
            "",
            "alice",
            "alice:bob",
            ":",
            "+1800000000",
            "-1",
            " 1800000000",
            "1800000000 ",
            "18446744073709551616:alice", // overflows u64
            "alice:",
            ":alice",
        ] {
            assert_eq!(
                creds.authenticate(name, NOW, |_| true),
                Err(AuthError::UnknownUser),
                "{name:?}"
            );
        }
        // u64::MAX parses as an expiry (and is then too far ahead for the default cap).
        assert_eq!(
            creds.authenticate("18446744073709551615:a", NOW, |_| true),
            Err(AuthError::ExpiryTooFar)
        );
    }

    #[test]
    fn rest_username_without_secrets_is_unknown() {
        let creds = rest(&[]);
        let name = format!("{}:alice", NOW + 60);
        assert_eq!(
            creds.authenticate(&name, NOW, |_| true),
            Err(AuthError::UnknownUser)
        );
        let expired = format!("{}:alice", NOW - 60);
        assert_eq!(
            creds.authenticate(&expired, NOW, |_| true),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn debug_redacts_and_errors_display() {
        let creds = Credentials::new(
            "r",
            [("u".to_string(), UserSecret::Password("pw".into()))],
            ["topsecret".to_string()],
        );
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert_eq!(AuthError::Expired.to_string(), "expired");
        assert_eq!(AuthError::UnknownUser.as_str(), "unknown_user");
        assert_eq!(AuthError::BadIntegrity.as_str(), "bad_integrity");
    }
}
