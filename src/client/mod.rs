//! A sans-IO TURN client (RFC 8656, RFC 8489, RFC 6062), in the style of the core: it owns
//! no socket and never reads the clock.
//!
//! The caller gives it commands (`allocate`, `create_permission`, `channel_bind` …, each
//! returning a [`RequestId`]), feeds it what the server sent ([`Client::handle_input`], one
//! datagram or one stream frame) and the time ([`Client::handle_timeout`]), and carries out
//! what it returns: bytes to send ([`Client::poll_transmit`]), when to wake it
//! ([`Client::poll_timeout`]), and what happened ([`Client::poll_event`]: allocated, permission
//! installed, channel bound, error code, timed out …). Relayed data comes back from
//! `handle_input` as a slice of the datagram, and goes out through [`data`]'s encoders into the
//! caller's buffer, so the data path allocates nothing.
//!
//! Inside: a small table of transactions, each retransmitted on its [`Timing`] over UDP and
//! sent once over a stream (RFC 8489 §6.2); the long-term credential dance (§9.2): a request
//! goes out without credentials until a 401 has taught REALM and NONCE, then is signed; a 438
//! (stale nonce) is answered by signing again with the new nonce. MESSAGE-INTEGRITY on a
//! response, when present, is checked, and a response that fails the check is dropped as the
//! RFC says (§9.2.5): a forged answer cannot end a transaction.
//!
//! Used by `turnd probe`, `turnd-bench` and the core tests; `tests/raw` keeps its own client
//! on purpose, so that the server is also checked against code that shares nothing with it.

pub mod attr;
pub mod credentials;
pub mod data;
pub mod event;
pub mod transaction;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_core;

pub use attr::{Attr, PROTOCOL_TCP, PROTOCOL_UDP};
pub use credentials::{Auth, Credentials, Key};
pub use data::{Relayed, Via};
pub use event::{Event, Failure, Outcome, Reply, RequestId};
pub use transaction::Timing;

use crate::stun::message::looks_like_stun;
use crate::stun::{BuildError, Class, Message, Method, TransactionId};
use attr::{encode_request, Trailer};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;
use transaction::Schedule;

/// Requests in flight at once. A TURN client has a handful (an Allocate, a few
/// permissions and channels); the bound keeps a caller's bug from growing the table.
pub const MAX_TRANSACTIONS: usize = 64;
/// Events kept for the caller. Answers to requests are bounded by [`MAX_TRANSACTIONS`]; what
/// the server sends on its own (ConnectionAttempt) is dropped past this bound.
pub const MAX_EVENTS: usize = 128;
/// 438 (stale nonce) answers a request may get and still be sent again.
pub const MAX_STALE_NONCE_RETRIES: u32 = 2;

/// How the client talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: requests are retransmitted, ChannelData is not padded.
    Udp,
    /// TCP or TLS: requests are sent once, ChannelData is padded to 4 (RFC 8656 §12.5).
    Stream,
}

/// What a client is.
#[derive(Clone, Debug)]
pub struct Config {
    pub transport: Transport,
    pub timing: Timing,
    /// SOFTWARE in every request (RFC 8489 §14.14).
    pub software: Option<String>,
    /// FINGERPRINT on every request (RFC 8489 §14.7).
    pub fingerprint: bool,
}

impl Config {
    pub fn new(transport: Transport) -> Config {
        Config {
            transport,
            timing: Timing::RFC8489,
            software: None,
            fingerprint: false,
        }
    }
}

/// Why a command was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// [`MAX_TRANSACTIONS`] requests are already in flight.
    TooManyTransactions,
    /// The request does not fit a datagram (absurdly long credentials).
    Build(BuildError),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::TooManyTransactions => f.write_str("too many requests in flight"),
            CommandError::Build(e) => write!(f, "cannot build the request: {e}"),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<BuildError> for CommandError {
    fn from(e: BuildError) -> CommandError {
        CommandError::Build(e)
    }
}

/// One request in flight.
#[derive(Debug)]
struct Transaction {
    request: RequestId,
    method: Method,
    attrs: Vec<Attr>,
    txid: TransactionId,
    /// Sent with MESSAGE-INTEGRITY, keyed with `key`.
    signed: Option<Key>,
    bytes: Vec<u8>,
    schedule: Schedule,
    stale_retries: u32,
}

/// A TURN client for one server: see the module documentation.
pub struct Client {
    config: Config,
    creds: Option<Credentials>,
    auth: Option<Auth>,
    rng: StdRng,
    next_request: u64,
    transactions: Vec<Transaction>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
}

impl Client {
    /// A client with `creds` (none: only Binding will work); transaction ids come from a
    /// CSPRNG seeded with `seed` (the caller's randomness, so tests can fix it).
    pub fn new(config: Config, creds: Option<Credentials>, seed: [u8; 32]) -> Client {
        Client {
            config,
            creds,
            auth: None,
            rng: StdRng::from_seed(seed),
            next_request: 0,
            transactions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // --- getters -------------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// The realm, nonce and key learnt from the server, once a 401 has been answered.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The realm the server announced.
    pub fn realm(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.realm.as_str())
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.transactions.len()
    }

    /// Whether something waits in [`Client::poll_transmit`] or [`Client::poll_event`].
    pub fn has_output(&self) -> bool {
        !self.transmits.is_empty() || !self.events.is_empty()
    }

    /// Sets the nonce (and realm and key) as a 401 would: for a caller that learnt them
    /// elsewhere, or a test that wants a stale one.
    pub fn set_auth(&mut self, auth: Option<Auth>) {
        self.auth = auth;
    }

    /// A fresh transaction id from the client's CSPRNG.
    pub fn transaction_id(&mut self) -> TransactionId {
        let mut t = TransactionId::default();
        self.rng.fill_bytes(&mut t.0);
        t
    }

    // --- commands ------------------------------------------------------------------------

    /// Binding (RFC 8489 §3): the reflexive address. Never signed.
    pub fn binding(&mut self, now: Instant, attrs: Vec<Attr>) -> Result<RequestId, CommandError> {
        self.request(now, Method::BINDING, attrs)
    }

    /// Allocate a relay (RFC 8656 §7.1) with `extra` attributes (LIFETIME,
    /// REQUESTED-ADDRESS-FAMILY, EVEN-PORT …): UDP unless `extra` asks for another transport
    /// (`Attr::RequestedTransport(PROTOCOL_TCP)`, RFC 6062).
    pub fn allocate(&mut self, now: Instant, extra: Vec<Attr>) -> Result<RequestId, CommandError> {
        let mut attrs = Vec::with_capacity(extra.len() + 1);
        if !extra
            .iter()
            .any(|a| matches!(a, Attr::RequestedTransport(_)))
        {
            attrs.push(Attr::RequestedTransport(PROTOCOL_UDP));
        }
        attrs.extend(extra);
        self.request(now, Method::ALLOCATE, attrs)
    }

    /// Refresh (RFC 8656 §8): `Some(0)` frees the allocation, `None` asks for the default.
    pub fn refresh(
        &mut self,
        now: Instant,
        lifetime: Option<u32>,
    ) -> Result<RequestId, CommandError> {
        let attrs = lifetime.map(Attr::Lifetime).into_iter().collect();
        self.request(now, Method::REFRESH, attrs)
    }

    /// CreatePermission for every peer in `peers` (RFC 8656 §9).
    pub fn create_permission(
        &mut self,
        now: Instant,
        peers: &[SocketAddr],
    ) -> Result<RequestId, CommandError> {
        let attrs = peers.iter().map(|p| Attr::XorPeerAddress(*p)).collect();
        self.request(now, Method::CREATE_PERMISSION, attrs)
    }

    /// ChannelBind `channel` to `peer` (RFC 8656 §12.2).
    pub fn channel_bind(
        &mut self,
        now: Instant,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<RequestId, CommandError> {
        let attrs = vec![Attr::ChannelNumber(channel), Attr::XorPeerAddress(peer)];
        self.request(now, Method::CHANNEL_BIND, attrs)
    }

    /// Connect to `peer` from a TCP allocation (RFC 6062 §4.3).
    pub fn connect(&mut self, now: Instant, peer: SocketAddr) -> Result<RequestId, CommandError> {
        self.request(now, Method::CONNECT, vec![Attr::XorPeerAddress(peer)])
    }

    /// ConnectionBind, on a new data connection (RFC 6062 §4.3, §4.4). After its success the
    /// connection carries the peer's bytes and is no longer fed to a client.
    pub fn connection_bind(
        &mut self,
        now: Instant,
        connection_id: u32,
    ) -> Result<RequestId, CommandError> {
        self.request(
            now,
            Method::CONNECTION_BIND,
            vec![Attr::ConnectionId(connection_id)],
        )
    }

    /// Any request: signed with the long-term credentials once they are known, except a
    /// Binding (RFC 8656 §5: TURN methods are authenticated, STUN's Binding is not).
    pub fn request(
        &mut self,
        now: Instant,
        method: Method,
        attrs: Vec<Attr>,
    ) -> Result<RequestId, CommandError> {
        if self.transactions.len() >= MAX_TRANSACTIONS {
            return Err(CommandError::TooManyTransactions);
        }
        let request = RequestId(self.next_request);
        let mut t = Transaction {
            request,
            method,
            attrs,
            txid: TransactionId::default(),
            signed: None,
            bytes: Vec::new(),
            schedule: Schedule::start(&self.config.timing, self.is_stream(), now),
            stale_retries: 0,
        };
        self.encode(&mut t)?;
        self.next_request += 1;
        self.transmits.push_back(t.bytes.clone());
        self.transactions.push(t);
        Ok(request)
    }

    /// Encodes a Send indication to `peer` into `buf` (RFC 8656 §11.1); returns its length.
    pub fn send_indication(
        &mut self,
        buf: &mut [u8],
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<usize, BuildError> {
        let txid = self.transaction_id();
        data::encode_send(buf, txid, peer, payload)
    }

    /// Encodes ChannelData on `channel` into `buf`, padded over a stream; returns its length.
    pub fn channel_data(
        &self,
        buf: &mut [u8],
        channel: u16,
        payload: &[u8],
    ) -> Result<usize, BuildError> {
        data::encode_channel_data(buf, channel, payload, self.is_stream())
    }

    // --- input ---------------------------------------------------------------------------

    /// One datagram (or one stream frame) from the server. Relayed data comes back as a slice
    /// of it; responses and indications become events. Anything else is ignored: it is
    /// network input, never a reason to fail.
    pub fn handle_input<'a>(&mut self, now: Instant, datagram: &'a [u8]) -> Option<Relayed<'a>> {
        if !looks_like_stun(datagram) {
            return data::decode(datagram);
        }
        let m = Message::parse(datagram).ok()?;
        match m.class() {
            Class::Indication if m.method() == Method::DATA => data::decode_data_indication(&m),
            Class::Indication if m.method() == Method::CONNECTION_ATTEMPT => {
                let id = m.get(crate::stun::AttrType::CONNECTION_ID)?;
                let connection_id = u32::from_be_bytes(id.try_into().ok()?);
                let peer = m.xor_peer_address()?.ok()?;
                if self.events.len() < MAX_EVENTS {
                    self.events.push_back(Event::ConnectionAttempt {
                        connection_id,
                        peer,
                    });
                }
                None
            }
            Class::SuccessResponse | Class::ErrorResponse => {
                self.handle_response(now, &m);
                None
            }
            _ => None,
        }
    }

    /// Sends what is due and fails what has waited too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timing = self.config.timing;
        let mut i = 0;
        while i < self.transactions.len() {
            let t = &mut self.transactions[i];
            if now >= t.schedule.deadline {
                let t = self.transactions.remove(i);
                let sent = t.schedule.sent;
                self.fail(&t, Failure::TimedOut { sent }, None);
                continue;
            }
            if t.schedule.next_send.is_some_and(|n| n <= now) {
                t.schedule.retransmitted(&timing, now);
                self.transmits.push_back(t.bytes.clone());
            }
            i += 1;
        }
    }

    // --- output --------------------------------------------------------------------------

    /// The next datagram (or frame) to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When [`Client::handle_timeout`] is next due; `None` with nothing in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions.iter().map(|t| t.schedule.wake_at()).min()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- inside --------------------------------------------------------------------------

    fn is_stream(&self) -> bool {
        self.config.transport == Transport::Stream
    }

    /// Gives `t` a new transaction id and its bytes, signed when the credentials are known.
    fn encode(&mut self, t: &mut Transaction) -> Result<(), BuildError> {
        t.txid = self.transaction_id();
        let auth = match (&self.creds, &self.auth) {
            (Some(c), Some(a)) if t.method != Method::BINDING => Some((c.username.as_str(), a)),
            _ => None,
        };
        t.signed = auth.map(|(_, a)| a.key);
        t.bytes = encode_request(
            t.method,
            t.txid,
            &t.attrs,
            Trailer {
                software: self.config.software.as_deref(),
                auth,
                fingerprint: self.config.fingerprint,
            },
        )?;
        Ok(())
    }

    fn handle_response(&mut self, now: Instant, m: &Message<'_>) {
        let txid = m.transaction_id();
        let Some(i) = self.transactions.iter().position(|t| t.txid == txid) else {
            // A late answer to a retransmission, or to a request given up: nothing waits.
            return;
        };
        let t = &self.transactions[i];
        if m.method() != t.method {
            return;
        }
        if let Some(key) = &t.signed {
            if m.has_integrity() && !m.verify_integrity(key) {
                // RFC 8489 §9.2.5: as if it never arrived.
                return;
            }
        }
        let t = self.transactions.remove(i);
        let reply = Reply::from_message(m);
        if reply.success {
            return self.succeed(t, reply);
        }
        match reply.error.as_ref().map(|e| e.0) {
            Some(401) if t.signed.is_none() && t.method != Method::BINDING => {
                self.challenged(now, t, reply)
            }
            Some(401) if t.signed.is_some() => {
                let realm = reply
                    .realm
                    .clone()
                    .or_else(|| self.realm().map(str::to_string))
                    .unwrap_or_default();
                self.fail(&t, Failure::Rejected { realm }, Some(reply))
            }
            Some(438) => self.stale_nonce(now, t, reply),
            Some(code) => {
                let reason = reply.error.as_ref().map_or(String::new(), |e| e.1.clone());
                let authenticated = t.signed.is_some();
                let error = Failure::Error {
                    code,
                    reason,
                    authenticated,
                };
                self.fail(&t, error, Some(reply))
            }
            None => {
                let error = Failure::Error {
                    code: 0,
                    reason: "error response without ERROR-CODE".into(),
                    authenticated: t.signed.is_some(),
                };
                self.fail(&t, error, Some(reply))
            }
        }
    }

    /// A 401 to an unsigned request: learn REALM and NONCE, sign, send again.
    fn challenged(&mut self, now: Instant, t: Transaction, reply: Reply) {
        if self.creds.is_none() {
            return self.fail(&t, Failure::NeedCredentials, Some(reply));
        }
        if !self.learn(&reply) {
            let m = Failure::Malformed("401 without REALM and NONCE".into());
            return self.fail(&t, m, Some(reply));
        }
        self.send_again(now, t);
    }

    /// A 438: the nonce went stale; sign with the new one and send again (bounded).
    fn stale_nonce(&mut self, now: Instant, mut t: Transaction, reply: Reply) {
        if t.stale_retries >= MAX_STALE_NONCE_RETRIES {
            let m = Failure::Malformed(
                "the server keeps asking for a new nonce (438 after 438)".into(),
            );
            return self.fail(&t, m, Some(reply));
        }
        if self.creds.is_none() {
            return self.fail(&t, Failure::NeedCredentials, Some(reply));
        }
        if !self.learn(&reply) {
            let m = Failure::Malformed("438 without REALM and NONCE".into());
            return self.fail(&t, m, Some(reply));
        }
        t.stale_retries += 1;
        self.send_again(now, t);
    }

    /// Takes REALM and NONCE from a 401 or 438 (a 438 may leave REALM out: the old one
    /// stands) and derives the key. False when they are missing.
    fn learn(&mut self, reply: &Reply) -> bool {
        let realm = reply
            .realm
            .clone()
            .or_else(|| self.realm().map(str::to_string));
        let (Some(realm), Some(nonce), Some(c)) = (realm, reply.nonce.clone(), &self.creds) else {
            return false;
        };
        let key = c.key(&realm);
        self.auth = Some(Auth { realm, nonce, key });
        true
    }

    /// `t` as a new transaction, with a new id, signed with what was just learnt.
    fn send_again(&mut self, now: Instant, mut t: Transaction) {
        if let Err(e) = self.encode(&mut t) {
            let m = Failure::Malformed(format!("cannot sign the request: {e}"));
            return self.fail(&t, m, None);
        }
        t.schedule = Schedule::start(&self.config.timing, self.is_stream(), now);
        self.transmits.push_back(t.bytes.clone());
        self.transactions.push(t);
    }

    fn succeed(&mut self, t: Transaction, reply: Reply) {
        match Outcome::of(t.method, &t.attrs, &reply) {
            Ok(outcome) => self.events.push_back(Event::Succeeded {
                request: t.request,
                method: t.method,
                outcome,
                reply,
            }),
            Err(missing) => self.fail(&t, Failure::Malformed(missing.into()), Some(reply)),
        }
    }

    fn fail(&mut self, t: &Transaction, error: Failure, reply: Option<Reply>) {
        self.events.push_back(Event::Failed {
            request: t.request,
            method: t.method,
            error,
            reply,
        });
    }
}
