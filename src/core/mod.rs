//! The sans-IO TURN server.
//!
//! [`Server`] is a deterministic state machine in the style of quinn-proto and str0m: it owns
//! no sockets, spawns no tasks and never reads the clock. The shell feeds it datagrams
//! (`handle_client_datagram`, `handle_peer_datagram`), relay-socket results
//! (`handle_relay_opened`) and the time (`handle_timeout`), and executes what it returns:
//! a [`Forward`] or [`ToClient`] on the relay path (no allocation, no copy), and everything
//! else — responses, relay sockets to open or close, lifecycle events — through
//! [`Server::poll_output`].
//!
//! State that every worker needs (credentials, the nonce key, the peer filter, the relay
//! port pool) lives in [`Shared`], which is read on requests but never on the relay path.

pub mod allocation;
pub mod auth;
pub mod bandwidth;
pub mod channel;
pub mod counters;
pub mod credential_layers;
pub mod embedded_ipv4;
pub mod fast_path;
pub mod five_tuple;
mod handlers;
pub mod ids;
pub mod nat_discovery;
pub mod nonce;
pub mod own_host;
pub mod peer_filter;
pub mod permission;
pub mod ports;
pub mod quota;
pub mod rate_limit;
pub mod reloadable;
mod reply;
pub mod request;
pub mod revocation;
mod server;
pub mod tcp_relay;
pub mod timer;
mod transactions;

pub use allocation::{Allocation, AllocationKind};
pub use counters::{AuthFailure, CounterKey, Counters, DropReason, Relayed, ResponseResult};
pub use five_tuple::{FiveTuple, Transport};
pub use ids::{AllocationId, ConnectionId, ReservationToken};
pub use request::RequestMethod;
pub use server::{Server, PEER_HEADROOM, PEER_TAILROOM};

use crate::stun::AddressFamily;
use auth::Credentials;
use dashmap::DashMap;
use nonce::NonceKey;
use peer_filter::PeerFilter;
use ports::PortPool;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One relay address: where relay sockets are bound, and what clients are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayAddr {
    pub bind: IpAddr,
    /// The address put in XOR-RELAYED-ADDRESS: the public IP when behind NAT or Docker.
    pub advertised: IpAddr,
}

/// Protocol settings of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub software: Option<String>,
    /// RFC 8656 §7.2: 600 s.
    pub default_lifetime: Duration,
    /// RFC 8656 recommends at most 3600 s.
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub relays: Vec<RelayAddr>,
    /// Most allocations one user may hold across all workers; 0 = no limit.
    pub user_quota: u32,
    /// Most allocations across all workers; 0 = no limit.
    pub total_quota: u32,
    /// Drop an unauthenticated request rather than answer it with an error response larger
    /// than itself (see [`Server::transmit_unauthenticated`]).
    pub refuse_amplification: bool,
    /// RFC 5780 address pairs (at most one per family); empty = NAT behaviour discovery off,
    /// and CHANGE-REQUEST, PADDING and RESPONSE-PORT are unknown attributes (420).
    pub nat_discovery: Vec<nat_discovery::NatPair>,
    /// Other TURN servers an Allocate is redirected to (300 Try Alternate, RFC 8489 §10)
    /// when this one is draining or full; empty = refuse with 486/508 instead.
    pub alternate_servers: Vec<SocketAddr>,
    /// Relayed payload bytes per second one allocation may carry, both directions together
    /// (a token bucket; beyond it datagrams are dropped); 0 = no cap.
    pub allocation_bandwidth: u64,
    /// The same across all of one user's allocations, on every worker; 0 = no cap.
    pub user_bandwidth: u64,
    /// Set the "Username anonymity" bit in our nonces (RFC 8489 §9.2): RFC 8489 clients then
    /// send USERHASH instead of USERNAME, which only static users can use.
    pub userhash: bool,
    /// Most permissions one allocation holds (508 beyond), at most
    /// [`permission::MAX_PERMISSIONS`]; 0 means that ceiling. Read it through
    /// [`CoreConfig::permission_limit`].
    pub max_permissions: u32,
    /// Most channel bindings one allocation holds (508 beyond), at most
    /// [`channel::MAX_CHANNELS`]; 0 means that ceiling. Read it through
    /// [`CoreConfig::channel_limit`].
    pub max_channels: u32,
    /// Per-source rate of error answers to unauthenticated requests.
    pub unauthenticated_rate: rate_limit::Rate,
    /// Per-source rate of Binding answers.
    pub binding_rate: rate_limit::Rate,
    /// The shell relays established channels in the kernel (XDP, docs/xdp.md): emit
    /// [`Output::FastPath`] for them. False: never.
    pub fast_path: bool,
    /// How long a channel binding lasts unless refreshed: RFC 8656 §12's 10 minutes
    /// ([`channel::CHANNEL_LIFETIME`]). Not a config key; only a test hook of debug builds
    /// shortens it (`config::CHANNEL_LIFETIME_ENV`), so a namespace test can watch a channel
    /// expire in the kernel path end to end.
    pub channel_lifetime: Duration,
}

impl CoreConfig {
    /// The most permissions one allocation may hold: `max_permissions`, where 0 and anything
    /// above the ceiling mean the ceiling, so every allocation's list has a bound whatever an
    /// embedder passes.
    pub fn permission_limit(&self) -> usize {
        per_allocation(self.max_permissions, permission::MAX_PERMISSIONS)
    }

    /// The most channel bindings one allocation may hold; see [`CoreConfig::permission_limit`].
    pub fn channel_limit(&self) -> usize {
        per_allocation(self.max_channels, channel::MAX_CHANNELS)
    }
}

/// A per-allocation limit: the configured one, with 0 (no limit of the operator's own) meaning
/// the built-in ceiling.
fn per_allocation(configured: u32, ceiling: u32) -> usize {
    match configured {
        0 => ceiling as usize,
        n => n.min(ceiling) as usize,
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            software: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            relays: Vec::new(),
            user_quota: 0,
            total_quota: 0,
            refuse_amplification: false,
            nat_discovery: Vec::new(),
            alternate_servers: Vec::new(),
            allocation_bandwidth: 0,
            user_bandwidth: 0,
            userhash: false,
            max_permissions: 0,
            max_channels: 0,
            unauthenticated_rate: rate_limit::Rate::UNLIMITED,
            binding_rate: rate_limit::Rate::UNLIMITED,
            fast_path: false,
            channel_lifetime: channel::CHANNEL_LIFETIME,
        }
    }
}

/// A port set aside by EVEN-PORT with the R bit, claimed by a later Allocate that quotes
/// its RESERVATION-TOKEN (possibly arriving on another worker, hence shared).
///
/// A reservation holds a port and one unit of its user's `user_quota` and of `total_quota`,
/// like an allocation, so that cycling EVEN-PORT Allocates cannot hold more than the quota
/// allows. It ends at the first of: its 30 s deadline, the end of the allocation whose
/// Allocate made it, or its redemption — then its quota unit passes to the allocation that
/// quoted the token (it is not counted twice).
#[derive(Clone, Debug)]
pub struct Reservation {
    pub relay: SocketAddr,
    pub expires: Instant,
    /// Who obtained the token: only this user may redeem it (anyone else is told, as for an
    /// unknown token, that there is none), and the quota unit is counted against them.
    pub username: Box<str>,
    /// The account the quota unit is counted under (a static user's name, a REST username's
    /// user id: [`crate::core::auth::Credentials::account_of`]), fixed when it was counted so
    /// a reload that changes how REST usernames read gives back the unit it took.
    pub account: Box<str>,
    /// The core (its [`Server`] tag) and allocation whose Allocate made it: it is freed when
    /// that allocation ends.
    pub owner: u64,
    pub alloc: AllocationId,
}

/// The control plane shared by all workers. Locks here are taken on requests only.
#[derive(Debug)]
pub struct Shared {
    pub config: CoreConfig,
    /// Replaced whole on SIGHUP.
    pub credentials: reloadable::Reloadable<Credentials>,
    pub nonce_key: NonceKey,
    /// Replaced whole on SIGHUP.
    pub peer_filter: reloadable::Reloadable<PeerFilter>,
    pub ports: Mutex<PortPool>,
    pub reservations: DashMap<ReservationToken, Reservation>,
    /// Allocations held per user and in total, for the quotas (486).
    pub quotas: quota::Quotas,
    /// RFC 6062 peer connections by CONNECTION-ID: a ConnectionBind may reach any worker.
    pub tcp_connections: tcp_relay::Connections,
}

impl Shared {
    pub fn advertised(&self, bind: SocketAddr) -> SocketAddr {
        let ip = self
            .config
            .relays
            .iter()
            .find(|r| r.bind == bind.ip())
            .map_or(bind.ip(), |r| r.advertised);
        SocketAddr::new(ip, bind.port())
    }
}

/// Why an allocation ended, for its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Expired,
    Deleted,
    /// The client's stream (TCP/TLS) connection closed: RFC 8656 §3.1 ties an allocation
    /// made over a stream to that connection.
    ConnectionClosed,
    Shutdown,
    /// A reloaded peer filter denies a peer its TCP relay (RFC 6062) is spliced to: a stream
    /// cannot be cut from the core, so the allocation ends.
    PeerDenied,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::ConnectionClosed => "connection closed",
            EndReason::Shutdown => "shutdown",
            EndReason::PeerDenied => "peer denied",
        }
    }
}

/// Lifecycle events for logs (and metrics).
#[derive(Clone, Debug)]
pub enum Event {
    AllocationCreated {
        id: AllocationId,
        five_tuple: FiveTuple,
        username: Box<str>,
        relay: SocketAddr,
        /// The second relayed address of a dual allocation (ADDITIONAL-ADDRESS-FAMILY).
        additional: Option<SocketAddr>,
        lifetime: Duration,
    },
    AllocationEnded {
        id: AllocationId,
        five_tuple: FiveTuple,
        username: Box<str>,
        relay: SocketAddr,
        /// As in `AllocationCreated`, even if that family ended earlier: the allocation is
        /// counted under the families it was created with.
        additional: Option<SocketAddr>,
        reason: EndReason,
        duration: Duration,
        stats: Relayed,
    },
}

/// Work the shell must do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send `payload` to the client of `to` (a response, or a Data indication built on the
    /// control path).
    Transmit {
        to: FiveTuple,
        payload: Vec<u8>,
    },
    /// Bind a UDP relay socket at `bind` for the allocation and report the result with
    /// [`Server::handle_relay_opened`].
    OpenRelay {
        id: AllocationId,
        bind: SocketAddr,
        dont_fragment: bool,
    },
    /// Close the allocation's relay sockets: all of them, or with `family` only that one (a
    /// dual allocation losing one family, RFC 8656 §8.1).
    CloseRelay {
        id: AllocationId,
        family: Option<AddressFamily>,
    },
    /// RFC 6062 TCP relay work (listeners, peer connections, splices).
    TcpRelay(tcp_relay::TcpRelayOutput),
    /// Install or remove a channel's entries in the kernel fast path (only with
    /// [`CoreConfig::fast_path`]).
    FastPath(fast_path::FastPath),
    Event(Event),
}

/// The relay path, client → peer: send `data[payload]` from the allocation's relay socket to
/// `peer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub id: AllocationId,
    pub peer: SocketAddr,
    pub payload: std::ops::Range<usize>,
}

/// The relay path, peer → client: send `buf[range]` (framed in place) to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToClient {
    pub to: FiveTuple,
    pub range: std::ops::Range<usize>,
}

/// Why the shell could not open a relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayOpenError {
    /// Another process holds the port: try another.
    AddrInUse,
    /// Anything else (fds exhausted, address gone): give up with 508.
    Other,
}
#[cfg(test)]
pub(crate) mod tests;
