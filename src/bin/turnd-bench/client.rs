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
    for _ in 0..TRIES {
        sock.send(req)?;
        if let Some(n) = wait_answer(sock, id, resp)? {
            return Ok(n);
        }
    }
    bail!("no answer from the server after {TRIES} tries")
}

/// Waits up to [`WAIT`] for the response with transaction id `id`; `None` on timeout.
fn wait_answer(sock: &UdpSocket, id: TransactionId, resp: &mut [u8]) -> Result<Option<usize>> {
    sock.set_read_timeout(Some(WAIT))?;
    // Datagrams that are not our answer (a late duplicate, relayed data) are skipped; the
    // count bounds this loop.
    for _ in 0..64 {
        match sock.recv(resp) {
            Ok(n) => {
                if let Ok(m) = Message::parse(&resp[..n]) {
                    if m.transaction_id() == id {
                        return Ok(Some(n));
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
    Ok(None)
}

/// A request ready to send: its bytes and transaction id.
struct Built {
    bytes: Vec<u8>,
    id: TransactionId,
}

/// One request on each socket, all sent before any answer is awaited, so the server sees
/// them together (as it does a burst of clients); each answer is then awaited in turn, and a
/// request whose answer does not come is retransmitted on its own by [`transact`].
fn exchange(socks: &[&UdpSocket], reqs: &[Built]) -> Result<Vec<Vec<u8>>> {
    for (s, r) in socks.iter().zip(reqs) {
        s.send(&r.bytes)?;
    }
    let mut resp = [0u8; 1500];
    let mut out = Vec::with_capacity(reqs.len());
    for (s, r) in socks.iter().zip(reqs) {
        let n = match wait_answer(s, r.id, &mut resp)? {
            Some(n) => n,
            None => transact(s, &r.bytes, r.id, &mut resp)?,
        };
        out.push(resp[..n].to_vec());
    }
    Ok(out)
}

/// The first Allocate, without credentials: it draws the 401 that carries realm and nonce.
fn unauthenticated_allocate() -> Result<Built> {
    let mut buf = [0u8; 1500];
    let id = txid();
    let mut b = MessageBuilder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        id,
    )?;
    allocate_attrs(&mut b)?;
    let n = b.finish();
    Ok(Built {
        bytes: buf[..n].to_vec(),
        id,
    })
}

/// The attribute an Allocate for a UDP relay carries besides credentials.
fn allocate_attrs(b: &mut MessageBuilder) -> Result<(), turnd::stun::BuildError> {
    b.add_u32(AttrType::REQUESTED_TRANSPORT, 17 << 24)
}

/// What an answer to an authenticated request said.
enum Answer {
    Success(Vec<u8>),
    /// 438: the nonce went stale; the new one is stored, send again.
    StaleNonce,
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
        let mut resp = [0u8; 1500];
        let first = unauthenticated_allocate()?;
        let r = transact(&sock, &first.bytes, first.id, &mut resp)?;
        let mut c = Client::challenged(sock, creds, &resp[..r])?;
        let ok = c.request(Method::ALLOCATE, allocate_attrs)?;
        c.allocated(&ok)?;
        Ok(c)
    }

    /// `k` allocations with a permission for `peer` each, set up side by side: every step
    /// (Allocate, authenticated Allocate, CreatePermission) is sent for all `k` clients before
    /// any answer is awaited — a burst of clients arriving together, where a server can batch.
    pub fn allocate_many(
        server: SocketAddr,
        local: IpAddr,
        creds: &Creds,
        k: usize,
        peer: SocketAddr,
    ) -> Result<Vec<Client>> {
        let mut socks = Vec::with_capacity(k);
        for _ in 0..k {
            let s = UdpSocket::bind(SocketAddr::new(local, 0))?;
            s.connect(server)?;
            socks.push(s);
        }
        let firsts = (0..k)
            .map(|_| unauthenticated_allocate())
            .collect::<Result<Vec<_>>>()?;
        let answers = exchange(&socks.iter().collect::<Vec<_>>(), &firsts)?;
        let mut clients = socks
            .into_iter()
            .zip(&answers)
            .map(|(s, a)| Client::challenged(s, creds, a))
            .collect::<Result<Vec<_>>>()?;
        let oks = Client::request_many(&mut clients, Method::ALLOCATE, allocate_attrs)?;
        for (c, ok) in clients.iter_mut().zip(&oks) {
            c.allocated(ok)?;
        }
        Client::request_many(&mut clients, Method::CREATE_PERMISSION, |b| {
            b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)
        })
        .context("CreatePermission")?;
        Ok(clients)
    }

    /// A client from the 401 that answered its first Allocate.
    fn challenged(sock: UdpSocket, creds: &Creds, challenge: &[u8]) -> Result<Client> {
        let m = Message::parse(challenge).map_err(|e| anyhow!("bad response: {e:?}"))?;
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
        let relay = sock.peer_addr()?;
        Ok(Client {
            sock,
            relay,
            key,
            realm,
            nonce,
            user: creds.user.clone(),
        })
    }

    /// Takes the relayed address from an Allocate success response.
    fn allocated(&mut self, ok: &[u8]) -> Result<()> {
        let m = Message::parse(ok).map_err(|e| anyhow!("{e:?}"))?;
        self.relay = match m.xor_relayed_address() {
            Some(Ok(a)) => a,
            _ => bail!("Allocate success without XOR-RELAYED-ADDRESS"),
        };
        Ok(())
    }

    /// An authenticated request, built and not sent.
    fn build(
        &self,
        method: Method,
        attrs: &impl Fn(&mut MessageBuilder) -> Result<(), turnd::stun::BuildError>,
    ) -> Result<Built> {
        let mut buf = [0u8; 1500];
        let id = txid();
        let mut b = MessageBuilder::new(&mut buf, MessageType::new(method, Class::Request), id)?;
        attrs(&mut b)?;
        b.add(AttrType::USERNAME, self.user.as_bytes())?;
        b.add(AttrType::REALM, self.realm.as_bytes())?;
        b.add(AttrType::NONCE, &self.nonce)?;
        b.add_message_integrity(&self.key)?;
        b.add_fingerprint()?;
        let n = b.finish();
        Ok(Built {
            bytes: buf[..n].to_vec(),
            id,
        })
    }

    /// Reads the answer to an authenticated `method` request.
    fn accept(&mut self, method: Method, resp: &[u8]) -> Result<Answer> {
        let m = Message::parse(resp).map_err(|e| anyhow!("bad response: {e:?}"))?;
        match m.class() {
            Class::SuccessResponse => Ok(Answer::Success(resp.to_vec())),
            Class::ErrorResponse => {
                if let (Some(Ok((438, _))), Some(Ok(nonce))) = (m.error_code(), m.nonce()) {
                    self.nonce = nonce.to_vec();
                    return Ok(Answer::StaleNonce);
                }
                bail!("{} refused: {}", method.name(), error_of(&m))
            }
            _ => bail!("unexpected answer to {}", method.name()),
        }
    }

    /// An authenticated request; `attrs` adds the method's own attributes. Retries once on
    /// 438 (stale nonce). Returns the success response.
    fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageBuilder) -> Result<(), turnd::stun::BuildError>,
    ) -> Result<Vec<u8>> {
        let mut resp = [0u8; 1500];
        for _ in 0..2 {
            let req = self.build(method, &attrs)?;
            let r = transact(&self.sock, &req.bytes, req.id, &mut resp)?;
            if let Answer::Success(ok) = self.accept(method, &resp[..r])? {
                return Ok(ok);
            }
        }
        bail!("{}: stale nonce twice", method.name())
    }

    /// The same authenticated request from every client, side by side (see [`exchange`]); a
    /// client whose nonce went stale repeats its request on its own. Success responses come
    /// back in the clients' order.
    fn request_many(
        clients: &mut [Client],
        method: Method,
        attrs: impl Fn(&mut MessageBuilder) -> Result<(), turnd::stun::BuildError>,
    ) -> Result<Vec<Vec<u8>>> {
        let reqs = clients
            .iter()
            .map(|c| c.build(method, &attrs))
            .collect::<Result<Vec<_>>>()?;
        let socks: Vec<&UdpSocket> = clients.iter().map(|c| &c.sock).collect();
        let answers = exchange(&socks, &reqs)?;
        let mut out = Vec::with_capacity(clients.len());
        for (c, a) in clients.iter_mut().zip(&answers) {
            out.push(match c.accept(method, a)? {
                Answer::Success(ok) => ok,
                Answer::StaleNonce => c.request(method, &attrs)?,
            });
        }
        Ok(out)
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
