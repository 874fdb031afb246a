//! A TURN client session over one [`Conn`]: the library's sans-IO [`crate::client::Client`]
//! (transactions and retransmission, RFC 8489 §6.2.1; the long-term credential dance, 401
//! challenge and 438 stale nonce, §9.2) driven with blocking I/O, one request at a time.

use super::transport::{Conn, Recv};
use crate::client::{self, data, Client, CommandError, Config, Event, RequestId, Timing};
use crate::stun::{Class, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::client::{Credentials, Reply, Via};

/// SOFTWARE sent in every request. It also pads the first, unauthenticated Allocate past the
/// size of a 401, so a server that refuses to amplify still answers it.
pub const SOFTWARE: &str = concat!("turnd-probe/", env!("CARGO_PKG_VERSION"));

/// Why a transaction did not give a usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxError {
    /// No answer: after `sent` transmissions over UDP, or within the timeout over a stream.
    NoAnswer {
        sent: u32,
    },
    /// UDP: ICMP port unreachable.
    Unreachable,
    /// TCP/TLS: the server closed the connection.
    Closed,
    /// An error response. `authenticated`: the request carried MESSAGE-INTEGRITY.
    Error {
        code: u16,
        reason: String,
        authenticated: bool,
    },
    /// A 401 to a request keyed with the user's credentials.
    Rejected {
        realm: String,
    },
    /// The server asks for credentials and none were given.
    NeedCredentials,
    /// The response did not carry what it must (e.g. no XOR-RELAYED-ADDRESS).
    Malformed(String),
    Io(String),
}

impl From<client::Failure> for TxError {
    fn from(f: client::Failure) -> TxError {
        match f {
            client::Failure::TimedOut { sent } => TxError::NoAnswer { sent },
            client::Failure::Error {
                code,
                reason,
                authenticated,
            } => TxError::Error {
                code,
                reason,
                authenticated,
            },
            client::Failure::Rejected { realm } => TxError::Rejected { realm },
            client::Failure::NeedCredentials => TxError::NeedCredentials,
            client::Failure::Malformed(m) => TxError::Malformed(m),
        }
    }
}

impl From<CommandError> for TxError {
    fn from(e: CommandError) -> TxError {
        TxError::Malformed(e.to_string())
    }
}

/// The client settings of the probe: `timeout` bounds each transaction (retransmitting from
/// 500 ms, doubling, over UDP; waiting over a stream); SOFTWARE and FINGERPRINT in every
/// request.
pub fn config(stream: bool, timeout: Duration) -> Config {
    Config {
        transport: if stream {
            client::Transport::Stream
        } else {
            client::Transport::Udp
        },
        timing: Timing::for_at_most(timeout),
        software: Some(SOFTWARE.to_string()),
        fingerprint: true,
    }
}

/// One client: a connection and the sans-IO client speaking over it.
pub struct Session {
    pub conn: Conn,
    client: Client,
    /// The realm the server announced.
    pub realm: Option<String>,
    /// Relayed frames that arrived while waiting for a response.
    pending: Vec<Vec<u8>>,
    /// The last SOFTWARE the server sent.
    pub software: Option<String>,
}

impl Session {
    pub fn new(conn: Conn, creds: Option<Credentials>, timeout: Duration) -> Session {
        let client = Client::new(config(conn.is_stream(), timeout), creds, rand::random());
        Session {
            conn,
            client,
            realm: None,
            pending: Vec::new(),
            software: None,
        }
    }

    /// Starts a request with `start` and carries it out: sends what the client says, feeds
    /// it what arrives and the time, until the request's event. Bounded: the client gives
    /// every transaction up at its deadline, and every wait ends at the next one.
    pub fn perform(
        &mut self,
        start: impl FnOnce(&mut Client, Instant) -> Result<RequestId, CommandError>,
    ) -> Result<Reply, TxError> {
        let id = start(&mut self.client, Instant::now())?;
        loop {
            while let Some(bytes) = self.client.poll_transmit() {
                self.conn
                    .send(&bytes)
                    .map_err(|e| TxError::Io(e.to_string()))?;
            }
            while let Some(e) = self.client.poll_event() {
                if e.request() == Some(id) {
                    return self.finish(e);
                }
            }
            let Some(deadline) = self.client.poll_timeout() else {
                return Err(TxError::Malformed(
                    "the request ended without an answer".into(),
                ));
            };
            match self.conn.recv(deadline) {
                Ok(Recv::Frame(f)) => {
                    self.note_software(&f);
                    if self.client.handle_input(Instant::now(), &f).is_some() {
                        self.pending.push(f);
                    }
                }
                Ok(Recv::Timeout) => self.client.handle_timeout(Instant::now()),
                Ok(Recv::Unreachable) => return Err(TxError::Unreachable),
                Ok(Recv::Closed) => return Err(TxError::Closed),
                Err(e) => return Err(TxError::Io(e.to_string())),
            }
        }
    }

    /// Keeps SOFTWARE from every response, a 401 challenge's included: the report names the
    /// server even when the step after the challenge fails.
    fn note_software(&mut self, frame: &[u8]) {
        if let Ok(m) = Message::parse(frame) {
            if matches!(m.class(), Class::SuccessResponse | Class::ErrorResponse) {
                if let Some(Ok(s)) = m.software() {
                    self.software = Some(s.to_string());
                }
            }
        }
    }

    fn finish(&mut self, e: Event) -> Result<Reply, TxError> {
        if let Some(r) = self.client.realm() {
            self.realm = Some(r.to_string());
        }
        Ok(e.into_result()?)
    }

    /// A Binding request (never signed): the reflexive address.
    pub fn binding(&mut self) -> Result<Reply, TxError> {
        self.perform(|c, now| c.binding(now, Vec::new()))
    }

    /// A UDP allocation; the reply carries XOR-RELAYED-ADDRESS (the client checks it).
    pub fn allocate(&mut self) -> Result<Reply, TxError> {
        self.perform(|c, now| c.allocate(now, Vec::new()))
    }

    /// A Send indication (RFC 8656 §11.1): no answer, no integrity.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), TxError> {
        let mut buf = vec![0u8; 128 + data.len()];
        let n = self
            .client
            .send_indication(&mut buf, peer, data)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
        self.conn
            .send(&buf[..n])
            .map_err(|e| TxError::Io(e.to_string()))
    }

    /// ChannelData, padded to 4 over a stream (RFC 8656 §12.5).
    pub fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), TxError> {
        let mut buf = vec![0u8; 8 + data.len()];
        let n = self
            .client
            .channel_data(&mut buf, channel, data)
            .map_err(|e| TxError::Malformed(e.to_string()))?;
        self.conn
            .send(&buf[..n])
            .map_err(|e| TxError::Io(e.to_string()))
    }

    /// The next relayed payload before `deadline`: a Data indication or ChannelData.
    pub fn recv_data(&mut self, deadline: Instant) -> Result<Option<Relayed>, TxError> {
        // Bounded: each pass consumes one pending frame or one `recv` that waits at most until
        // the deadline.
        loop {
            let frame = if self.pending.is_empty() {
                match self.conn.recv(deadline) {
                    Ok(Recv::Frame(f)) => f,
                    Ok(Recv::Timeout) => return Ok(None),
                    Ok(Recv::Unreachable) => return Err(TxError::Unreachable),
                    Ok(Recv::Closed) => return Err(TxError::Closed),
                    Err(e) => return Err(TxError::Io(e.to_string())),
                }
            } else {
                self.pending.remove(0)
            };
            if let Some(r) = data::decode(&frame) {
                return Ok(Some(Relayed {
                    via: r.via,
                    data: r.data.to_vec(),
                }));
            }
        }
    }
}

/// A relayed payload, copied out of its frame.
#[derive(Clone, Debug)]
pub struct Relayed {
    pub via: Via,
    pub data: Vec<u8>,
}
