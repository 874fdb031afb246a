//! What one worker's core counts: datagrams declined by reason, relayed traffic, requests by
//! method and result, authentication failures by reason, and the permissions and channels it
//! holds.
//!
//! Plain integers owned by one worker, incremented on the relay path without a lock or an
//! atomic; the shell copies them out after each batch and the metrics endpoint sums every
//! worker's copy when scraped. The core counts; it knows nothing of Prometheus. Every counter
//! that is split by a label is an array indexed by an enum ([`ByKey`]), and the label values
//! come from that enum ([`CounterKey::label`]), so a new variant cannot be counted without a
//! label, nor a label be listed without a slot.

use super::auth::AuthError;
use super::five_tuple::Transport;
use super::request::RequestMethod;
use crate::stun::{Class, ErrorCode, Message};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// An enum whose values index a counter array and name its metric label.
pub trait CounterKey: Copy + 'static {
    /// Every value, in the order of the array (and of the exposition).
    const ALL: &'static [Self];
    /// Its slot: its position in [`CounterKey::ALL`].
    fn index(self) -> usize;
    /// Its metric label value.
    fn label(self) -> &'static str;
}

/// One `T` per value of `K`: a counter split by a label. `N` is `K::ALL.len()` (the aliases
/// below write it so; a stable `[T; K::ALL.len()]` in a generic is not possible yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByKey<K, T, const N: usize> {
    values: [T; N],
    key: PhantomData<K>,
}

impl<K: CounterKey, T: Default, const N: usize> Default for ByKey<K, T, N> {
    fn default() -> Self {
        debug_assert_eq!(K::ALL.len(), N, "one slot per key");
        ByKey {
            values: std::array::from_fn(|_| T::default()),
            key: PhantomData,
        }
    }
}

impl<K: CounterKey, T, const N: usize> ByKey<K, T, N> {
    /// Each key with its value, in the order of [`CounterKey::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        K::ALL.iter().copied().zip(&self.values)
    }

    /// The values, in the order of [`CounterKey::ALL`].
    pub fn values(&self) -> &[T; N] {
        &self.values
    }

    pub fn values_mut(&mut self) -> &mut [T; N] {
        &mut self.values
    }
}

impl<K: CounterKey, T, const N: usize> Index<K> for ByKey<K, T, N> {
    type Output = T;
    #[inline]
    fn index(&self, k: K) -> &T {
        &self.values[k.index()]
    }
}

impl<K: CounterKey, T, const N: usize> IndexMut<K> for ByKey<K, T, N> {
    #[inline]
    fn index_mut(&mut self, k: K) -> &mut T {
        &mut self.values[k.index()]
    }
}

/// Relayed datagrams and payload bytes, per direction: of one client transport in
/// [`Counters::relayed`], of one allocation in its `stats` (and its end-of-life log line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl Relayed {
    /// One datagram of `bytes` payload relayed towards the peer.
    #[inline]
    pub fn count_to_peer(&mut self, bytes: usize) {
        self.to_peer_packets += 1;
        self.to_peer_bytes += bytes as u64;
    }

    /// One datagram of `bytes` payload relayed towards the client.
    #[inline]
    pub fn count_to_client(&mut self, bytes: usize) {
        self.to_client_packets += 1;
        self.to_client_bytes += bytes as u64;
    }

    pub fn add(&mut self, other: &Relayed) {
        self.to_peer_packets += other.to_peer_packets;
        self.to_peer_bytes += other.to_peer_bytes;
        self.to_client_packets += other.to_client_packets;
        self.to_client_bytes += other.to_client_bytes;
    }
}

impl CounterKey for Transport {
    const ALL: &'static [Transport] = &[Transport::Udp, Transport::Tcp, Transport::Tls];
    #[inline]
    fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }
    fn label(self) -> &'static str {
        self.as_str()
    }
}

/// The method a response is counted under: one of the request methods, or `None` ("other").
pub type ResponseMethod = Option<RequestMethod>;

impl CounterKey for ResponseMethod {
    const ALL: &'static [Option<RequestMethod>] = &[
        Some(RequestMethod::Binding),
        Some(RequestMethod::Allocate),
        Some(RequestMethod::Refresh),
        Some(RequestMethod::CreatePermission),
        Some(RequestMethod::ChannelBind),
        Some(RequestMethod::Connect),
        Some(RequestMethod::ConnectionBind),
        None,
    ];
    fn index(self) -> usize {
        match self {
            Some(m) => m as usize,
            None => RequestMethod::ALL.len(),
        }
    }
    fn label(self) -> &'static str {
        self.map_or("other", RequestMethod::label)
    }
}

/// What a response said: success, one of our error codes, or another code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseResult {
    Success,
    Error(ErrorCode),
    /// An error code that is not an [`ErrorCode`] (never sent today).
    Other,
}

impl CounterKey for ResponseResult {
    /// 300 (Try Alternate) came last, after the 4xx and 5xx codes, so the exposition keeps the
    /// order it has always had.
    const ALL: &'static [ResponseResult] = &[
        ResponseResult::Success,
        ResponseResult::Error(ErrorCode::BadRequest),
        ResponseResult::Error(ErrorCode::Unauthenticated),
        ResponseResult::Error(ErrorCode::Forbidden),
        ResponseResult::Error(ErrorCode::UnknownAttribute),
        ResponseResult::Error(ErrorCode::AllocationMismatch),
        ResponseResult::Error(ErrorCode::StaleNonce),
        ResponseResult::Error(ErrorCode::AddressFamilyNotSupported),
        ResponseResult::Error(ErrorCode::WrongCredentials),
        ResponseResult::Error(ErrorCode::UnsupportedTransportProtocol),
        ResponseResult::Error(ErrorCode::PeerAddressFamilyMismatch),
        ResponseResult::Error(ErrorCode::ConnectionAlreadyExists),
        ResponseResult::Error(ErrorCode::ConnectionTimeoutOrFailure),
        ResponseResult::Error(ErrorCode::AllocationQuotaReached),
        ResponseResult::Error(ErrorCode::ServerError),
        ResponseResult::Error(ErrorCode::InsufficientCapacity),
        ResponseResult::Error(ErrorCode::TryAlternate),
        ResponseResult::Other,
    ];
    fn index(self) -> usize {
        match self {
            ResponseResult::Success => 0,
            // `ErrorCode` is declared in numeric order, 300 first: every other code keeps
            // its place, and 300 goes after the last one.
            ResponseResult::Error(ErrorCode::TryAlternate) => ErrorCode::ALL.len(),
            ResponseResult::Error(c) => c as usize,
            ResponseResult::Other => ErrorCode::ALL.len() + 1,
        }
    }
    fn label(self) -> &'static str {
        match self {
            ResponseResult::Success => "success",
            ResponseResult::Error(c) => c.label(),
            ResponseResult::Other => "other",
        }
    }
}

/// Why a request failed authentication (the `reason` of `turnd_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE (400).
    BadRequest,
    /// A nonce that is stale or not ours (438).
    StaleNonce,
    UnknownUser,
    /// A TURN REST API username past its expiry.
    Expired,
    BadIntegrity,
    /// PASSWORD-ALGORITHMS/PASSWORD-ALGORITHM missing one of the pair, or not what we
    /// offered (RFC 8489 §9.2.4 bid-down check, 400).
    BidDown,
    /// SHA-256 asked for a user configured with only an MD5 key (401).
    UnsupportedAlgorithm,
    /// A TURN REST API username whose expiry lies further ahead than `rest_max_ttl` (401).
    ExpiryTooFar,
    /// A revoked user or REST user id (401, `turnd revoke`).
    Revoked,
}

impl CounterKey for AuthFailure {
    const ALL: &'static [AuthFailure] = &[
        AuthFailure::BadRequest,
        AuthFailure::StaleNonce,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::BadIntegrity,
        AuthFailure::BidDown,
        AuthFailure::UnsupportedAlgorithm,
        AuthFailure::ExpiryTooFar,
        AuthFailure::Revoked,
    ];
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            AuthFailure::BadRequest => "bad_request",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::BidDown => "bid_down",
            AuthFailure::UnknownUser => AuthError::UnknownUser.as_str(),
            AuthFailure::Expired => AuthError::Expired.as_str(),
            AuthFailure::BadIntegrity => AuthError::BadIntegrity.as_str(),
            AuthFailure::UnsupportedAlgorithm => AuthError::UnsupportedAlgorithm.as_str(),
            AuthFailure::ExpiryTooFar => AuthError::ExpiryTooFar.as_str(),
            AuthFailure::Revoked => AuthError::Revoked.as_str(),
        }
    }
}

impl From<AuthError> for AuthFailure {
    fn from(e: AuthError) -> AuthFailure {
        match e {
            AuthError::UnknownUser => AuthFailure::UnknownUser,
            AuthError::Expired => AuthFailure::Expired,
            AuthError::ExpiryTooFar => AuthFailure::ExpiryTooFar,
            AuthError::BadIntegrity => AuthFailure::BadIntegrity,
            AuthError::UnsupportedAlgorithm => AuthFailure::UnsupportedAlgorithm,
            AuthError::Revoked => AuthFailure::Revoked,
        }
    }
}

/// Why the core dropped a datagram, or did not answer a request as asked (the `reason` of
/// `turnd_datagrams_dropped_total`; the shell adds `send_error` and `write_queue_full`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not well-formed STUN or ChannelData, or a request of a method the server does not
    /// serve (RFC 8489 §6.3: silently discarded).
    Malformed,
    /// Relay-path traffic on a 5-tuple or relay socket with no (live) allocation.
    NoAllocation,
    /// Relay-path traffic to or from a peer without a permission.
    NoPermission,
    /// ChannelData on a channel number that is not bound.
    NoChannel,
    /// An Allocate refused by `user_quota`/`total_quota` (486).
    Quota,
    /// Over `allocation_bandwidth` or `user_bandwidth`.
    Bandwidth,
    /// A CreatePermission/ChannelBind refused by `max_permissions` (508).
    PermissionQuota,
    /// A ChannelBind refused by `max_channels` (508).
    ChannelQuota,
    /// A request not answered: its source is over its pre-authentication rate
    /// (`unauthenticated_rate`, `binding_rate`).
    RateLimited,
    /// An unauthenticated request not answered because the answer would be larger than the
    /// request (`amplification = "refuse"`).
    Amplification,
}

impl CounterKey for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::Malformed,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::NoChannel,
        DropReason::Quota,
        DropReason::Bandwidth,
        DropReason::PermissionQuota,
        DropReason::ChannelQuota,
        DropReason::RateLimited,
        DropReason::Amplification,
    ];
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Quota => "quota",
            DropReason::Bandwidth => "bandwidth",
            DropReason::PermissionQuota => "permission_quota",
            DropReason::ChannelQuota => "channel_quota",
            DropReason::RateLimited => "rate_limited",
            DropReason::Amplification => "amplification",
        }
    }
}

/// Datagrams dropped (and requests not answered as asked) by reason.
pub type Drops = ByKey<DropReason, u64, { DropReason::ALL.len() }>;
/// Relayed traffic by the client's transport.
pub type RelayedByTransport = ByKey<Transport, Relayed, { Transport::ALL.len() }>;
/// Responses by result.
pub type ByResult = ByKey<ResponseResult, u64, { ResponseResult::ALL.len() }>;
/// Responses by method, then result.
pub type Responses = ByKey<ResponseMethod, ByResult, { ResponseMethod::ALL.len() }>;
/// Authentication failures by reason.
pub type AuthFailures = ByKey<AuthFailure, u64, { AuthFailure::ALL.len() }>;

/// One worker core's counters (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams dropped, and requests not answered as asked, by reason.
    pub dropped: Drops,
    /// Requests received (every supported method, before any check).
    pub requests: u64,
    /// Failed authentications, all reasons ([`Counters::auth_failure_reasons`] splits them).
    pub auth_failures: u64,
    pub peers_denied: u64,
    /// Times a TCP relay splice waited for the `allocation_bandwidth` or `user_bandwidth`
    /// cap before passing bytes on (a stream is paced, never dropped).
    pub tcp_relay_throttled: u64,
    /// Relayed traffic, by the client's transport.
    pub relayed: RelayedByTransport,
    /// Responses sent, by method and result.
    pub responses: Responses,
    /// Failed authentications by reason.
    pub auth_failure_reasons: AuthFailures,
    /// Permissions currently installed (expired ones until their sweep runs).
    pub permissions: u64,
    pub permissions_created: u64,
    /// Channel bindings currently held (including those in their 5-minute cool-down).
    pub channels: u64,
    pub channels_created: u64,
}

impl Counters {
    /// Adds `other` into `self` (summing workers).
    pub fn add(&mut self, other: &Counters) {
        for (reason, n) in other.dropped.iter() {
            self.dropped[reason] += n;
        }
        self.requests += other.requests;
        self.auth_failures += other.auth_failures;
        self.peers_denied += other.peers_denied;
        self.tcp_relay_throttled += other.tcp_relay_throttled;
        for (t, r) in other.relayed.iter() {
            self.relayed[t].add(r);
        }
        for (m, row) in other.responses.iter() {
            for (result, n) in row.iter() {
                self.responses[m][result] += n;
            }
        }
        for (reason, n) in other.auth_failure_reasons.iter() {
            self.auth_failure_reasons[reason] += n;
        }
        self.permissions += other.permissions;
        self.permissions_created += other.permissions_created;
        self.channels += other.channels;
        self.channels_created += other.channels_created;
    }

    pub(crate) fn auth_failure(&mut self, reason: AuthFailure) {
        self.auth_failures += 1;
        self.auth_failure_reasons[reason] += 1;
    }

    /// Counts a response by the method and result it carries (a response we built, so it
    /// parses; anything else is ignored).
    pub(crate) fn response(&mut self, payload: &[u8]) {
        let Ok(msg) = Message::parse(payload) else {
            return;
        };
        let result = match msg.class() {
            Class::SuccessResponse => ResponseResult::Success,
            Class::ErrorResponse => match msg.error_code() {
                Some(Ok((code, _))) => {
                    ErrorCode::from_code(code).map_or(ResponseResult::Other, ResponseResult::Error)
                }
                _ => ResponseResult::Other,
            },
            // Data indications built on the control path are not responses.
            _ => return,
        };
        self.responses[RequestMethod::of(msg.method())][result] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots_match<K: CounterKey + PartialEq + std::fmt::Debug>() {
        for (i, k) in K::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }

    #[test]
    fn every_key_indexes_its_own_slot() {
        slots_match::<Transport>();
        slots_match::<Option<RequestMethod>>();
        slots_match::<ResponseResult>();
        slots_match::<AuthFailure>();
        slots_match::<DropReason>();
        assert_eq!(Drops::default().values().len(), DropReason::ALL.len());
        assert_eq!(
            RelayedByTransport::default().values().len(),
            Transport::ALL.len()
        );
        assert_eq!(Responses::default().values().len(), 8);
        assert_eq!(
            ByResult::default().values().len(),
            ResponseResult::ALL.len()
        );
        assert_eq!(
            AuthFailures::default().values().len(),
            AuthFailure::ALL.len()
        );
    }

    #[test]
    fn labels_are_the_published_ones() {
        let labels = |all: &[&str]| all.join(",");
        let of = |v: Vec<&'static str>| v.join(",");
        assert_eq!(
            of(Transport::ALL.iter().map(|t| t.label()).collect()),
            labels(&["udp", "tcp", "tls"])
        );
        assert_eq!(
            of(<Option<RequestMethod>>::ALL
                .iter()
                .map(|m| m.label())
                .collect()),
            labels(&[
                "binding",
                "allocate",
                "refresh",
                "create_permission",
                "channel_bind",
                "connect",
                "connection_bind",
                "other",
            ])
        );
        assert_eq!(
            of(ResponseResult::ALL.iter().map(|r| r.label()).collect()),
            labels(&[
                "success", "400", "401", "403", "420", "437", "438", "440", "441", "442", "443",
                "446", "447", "486", "500", "508", "300", "other",
            ])
        );
        assert_eq!(
            of(DropReason::ALL.iter().map(|r| r.label()).collect()),
            labels(&[
                "malformed",
                "no_allocation",
                "no_permission",
                "no_channel",
                "quota",
                "bandwidth",
                "permission_quota",
                "channel_quota",
                "rate_limited",
                "amplification",
            ])
        );
        assert_eq!(
            of(AuthFailure::ALL.iter().map(|r| r.label()).collect()),
            labels(&[
                "bad_request",
                "stale_nonce",
                "unknown_user",
                "expired",
                "bad_integrity",
                "bid_down",
                "unsupported_algorithm",
                "expiry_too_far",
                "revoked",
            ])
        );
    }
}
