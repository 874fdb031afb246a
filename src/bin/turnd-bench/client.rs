//! The control side of one benchmark client: Allocate (answering the 401 challenge), a
//! permission or a channel for its peer, and a Refresh with lifetime 0 at the end — over one
//! blocking UDP socket, with bounded retransmissions, speaking only through `turnd::stun`.

use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;
use turnd::core::auth::long_term_key;
use turnd::stun::{AttrType, Class, Message, MessageBuilder, MessageType, Method, TransactionId};

/// The first channel number (RFC 8656 §12: 0x4000–0x4FFF).
pub const FIRST_CHANNEL: u16 = 0x4000;

/// Credentials as given on the command line; the realm may be learned from the first 401.
#[derive(Clone, Debug)]
pub struct Creds {
    pub user: String,
    pub password: String,
    pub realm: Option<String>,
}

/// One client allocation: its socket (connected to the server), the relayed address, and
/// what authenticates further requests.
pub struct Client {
    pub sock: UdpSocket,
    pub relay: SocketAddr,
    key: [u8; 16],
    realm: String,
    nonce: Vec<u8>,
    user: String,
}

/// Tries per request, and how long each waits for its answer.
const TRIES: u32 = 4;
const WAIT: Duration = Duration::from_millis(1500);

fn txid() -> TransactionId {
    TransactionId(rand::random())
}

/// Sends `req` and waits for the response with the same transaction id, retransmitting
/// (bounded). Returns the length of the response in `resp`.
fn transact(sock: &UdpSocket, req: &[u8], id: TransactionId, resp: &mut [u8]) -> Result<usize> {
    sock.set_read_timeout(Some(WAIT))?;
    for _ in 0..TRIES {
        sock.send(req)?;
        // Datagrams that are not our answer (a late duplicate, relayed data) are skipped; the
        // count bounds this inner loop too.
        for _ in 0..64 {
            match sock.recv(resp) {
                Ok(n) => {
                    if let Ok(m) = Message::parse(&resp[..n]) {
                        if m.transaction_id() == id {
                            return Ok(n);
                        }
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!("no answer from the server after {TRIES} tries")
}

/// The error code of an error response, for messages.
fn error_of(m: &Message) -> String {
    match m.error_code() {
        Some(Ok((code, reason))) => format!("{code} {reason}"),
        _ => "error response without ERROR-CODE".into(),
    }
}

impl Client {
    /// Opens a socket on `local` (an ephemeral port) and allocates a UDP relay on `server`.
    pub fn allocate(server: SocketAddr, local: IpAddr, creds: &Creds) -> Result<Client> {
        let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
        sock.connect(server)?;
        let mut buf = [0u8; 1500];
        let mut resp = [0u8; 1500];

        // First Allocate without credentials: the 401 carries the realm and a nonce.
        let id = txid();
        let mut b = MessageBuilder::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Request),
            id,
        )?;
        b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24)?;
        let n = b.finish();
        let r = transact(&sock, &buf[..n], id, &mut resp)?;
        let m = Message::parse(&resp[..r]).map_err(|e| anyhow!("bad response: {e:?}"))?;
        let realm = match (&creds.realm, m.realm()) {
            (Some(r), _) => r.clone(),
            (None, Some(Ok(r))) => r.to_string(),
            _ => bail!("the server sent no REALM and none was given"),
        };
        let nonce = match m.nonce() {
            Some(Ok(n)) => n.to_vec(),
            _ => bail!("the server sent no NONCE ({})", error_of(&m)),
        };
        let key = long_term_key(&creds.user, &realm, &creds.password);
        let mut c = Client {
            sock,
            relay: server,
            key,
            realm,
            nonce,
            user: creds.user.clone(),
        };
        let relay = c.request(Method::ALLOCATE, |b| {
            b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24)
        })?;
        let m = Message::parse(&relay).map_err(|e| anyhow!("{e:?}"))?;
        c.relay = match m.xor_relayed_address() {
            Some(Ok(a)) => a,
            _ => bail!("Allocate success without XOR-RELAYED-ADDRESS"),
        };
        Ok(c)
    }

    /// An authenticated request; `attrs` adds the method's own attributes. Retries once on
    /// 438 (stale nonce). Returns the success response.
    fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageBuilder) -> Result<(), turnd::stun::BuildError>,
    ) -> Result<Vec<u8>> {
        let mut buf = [0u8; 1500];
        let mut resp = [0u8; 1500];
        for _ in 0..2 {
            let id = txid();
            let mut b =
                MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), id)?;
            attrs(&mut b)?;
            b.add(AttrType::USERNAME, self.user.as_bytes())?;
            b.add(AttrType::REALM, self.realm.as_bytes())?;
            b.add(AttrType::NONCE, &self.nonce)?;
            b.add_message_integrity(&self.key)?;
            b.add_fingerprint()?;
            let n = b.finish();
            let r = transact(&self.sock, &buf[..n], id, &mut resp)?;
            let m = Message::parse(&resp[..r]).map_err(|e| anyhow!("bad response: {e:?}"))?;
            match m.class() {
                Class::SuccessResponse => return Ok(resp[..r].to_vec()),
                Class::ErrorResponse => {
                    if let (Some(Ok((438, _))), Some(Ok(nonce))) = (m.error_code(), m.nonce()) {
                        self.nonce = nonce.to_vec();
                        continue;
                    }
                    bail!("{} refused: {}", method.name(), error_of(&m))
                }
                _ => bail!("unexpected answer to {}", method.name()),
            }
        }
        bail!("{}: stale nonce twice", method.name())
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<()> {
        self.request(Method::CREATE_PERMISSION, |b| {
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
        })
        .context("CreatePermission")?;
        Ok(())
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<()> {
        self.request(Method::CHANNEL_BIND, |b| {
            b.add_u32(AttrType::CHANNEL_NUMBER, u32::from(channel) << 16)?;
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
        })
        .context("ChannelBind")?;
        Ok(())
    }

    /// Refreshes the allocation for `lifetime` seconds: succeeds only while it is alive.
    pub fn refresh(&mut self, lifetime: u32) -> Result<()> {
        self.request(Method::REFRESH, |b| b.add_u32(AttrType::LIFETIME, lifetime))
            .context("Refresh")?;
        Ok(())
    }

    /// Ends the allocation (Refresh, LIFETIME 0), so repetitions do not pile up allocations.
    pub fn release(&mut self) -> Result<()> {
        self.request(Method::REFRESH, |b| b.add_u32(AttrType::LIFETIME, 0))
            .context("Refresh 0")?;
        Ok(())
    }
}
