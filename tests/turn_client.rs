//! The `turn` crate's client (webrtc-rs) against the server under test (turnd; coturn itself
//! with `TURN_TEST_SERVER=coturn`).
//!
//! Two clients allocate; each relay sends to the other's relayed address, so data crosses the
//! server twice per message (client A → A's relay → B's relay → client B). The crate creates the
//! permission on the first `send_to` to a peer and binds a channel in the background, so the
//! first messages travel as Send/Data indications and later ones as ChannelData: both paths are
//! exercised. Until both permissions exist a message can be dropped, so opening the path is a
//! bounded retry; after that every message must arrive, intact and in order.

mod common;

use common::{TurnServer, PASSWORD, REALM, USER};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

/// Sends tried before the path between two relays must be open.
const OPEN_ATTEMPTS: usize = 40;
/// Wait per open attempt.
const OPEN_WAIT: Duration = Duration::from_millis(250);
/// Wait for one expected message once the path is open.
const RECV_WAIT: Duration = Duration::from_secs(3);
/// Stop-and-wait round trips (A → B, then B → A), then a burst each way.
const ROUNDS: usize = 100;
const BURST: usize = 64;
/// Messages that are not the one expected (late "open" probes) skipped per receive, at most.
const MAX_SKIPPED: usize = 2 * OPEN_ATTEMPTS;

struct TurnPeer {
    name: &'static str,
    client: Client,
    relay: Arc<dyn Conn + Send + Sync>,
    relayed: SocketAddr,
}

impl TurnPeer {
    async fn allocate(name: &'static str, server: SocketAddr) -> TurnPeer {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind client socket");
        let client = Client::new(ClientConfig {
            stun_serv_addr: server.to_string(),
            turn_serv_addr: server.to_string(),
            username: USER.to_string(),
            password: PASSWORD.to_string(),
            realm: REALM.to_string(),
            software: "turnd-itest".to_string(),
            rto_in_ms: 0,
            conn: Arc::new(sock),
            vnet: None,
        })
        .await
        .expect("turn Client::new");
        client.listen().await.expect("turn client listen");
        let relay = timeout(Duration::from_secs(10), client.allocate())
            .await
            .unwrap_or_else(|_| panic!("{name}: Allocate timed out"))
            .unwrap_or_else(|e| panic!("{name}: Allocate failed: {e}"));
        let relayed = relay.local_addr().expect("relayed address");
        TurnPeer {
            name,
            client,
            relay: Arc::new(relay),
            relayed,
        }
    }

    async fn send(&self, to: &TurnPeer, msg: &[u8]) {
        let n = timeout(RECV_WAIT, self.relay.send_to(msg, to.relayed))
            .await
            .unwrap_or_else(|_| panic!("{}: send_to {} timed out", self.name, to.relayed))
            .unwrap_or_else(|e| panic!("{}: send_to {} failed: {e}", self.name, to.relayed));
        // The crate reports the bytes it wrote to the server (Send indication or ChannelData
        // framing included), not the payload length.
        assert!(
            n >= msg.len(),
            "{}: short send ({n} < {})",
            self.name,
            msg.len()
        );
    }

    /// Receives the next message that is not an "open" probe; asserts it came from `from`'s relay.
    async fn recv_from(&self, from: &TurnPeer) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..MAX_SKIPPED {
            let (n, src) = match timeout(RECV_WAIT, self.relay.recv_from(&mut buf)).await {
                Err(_) => return None,
                Ok(r) => r.unwrap_or_else(|e| panic!("{}: recv_from failed: {e}", self.name)),
            };
            assert_eq!(
                src, from.relayed,
                "{}: message from an unexpected address",
                self.name
            );
            if !buf[..n].starts_with(b"open ") {
                return Some(buf[..n].to_vec());
            }
        }
        panic!("{}: more than {MAX_SKIPPED} stale probes", self.name);
    }
}

/// Sends probes from `from` to `to` until one arrives (bounded). Both sides must already have
/// sent to each other once so each allocation has a permission for the other relay.
async fn open_path(from: &TurnPeer, to: &TurnPeer) {
    let mut buf = vec![0u8; 2048];
    for attempt in 0..OPEN_ATTEMPTS {
        from.send(to, format!("open {} {attempt}", from.name).as_bytes())
            .await;
        if let Ok(r) = timeout(OPEN_WAIT, to.relay.recv_from(&mut buf)).await {
            let (n, src) = r.unwrap_or_else(|e| panic!("{}: recv_from failed: {e}", to.name));
            assert_eq!(
                src, from.relayed,
                "{}: probe from an unexpected address",
                to.name
            );
            let expected = format!("open {} ", from.name);
            assert!(
                buf[..n].starts_with(expected.as_bytes()),
                "{}: unexpected first message {:?}",
                to.name,
                String::from_utf8_lossy(&buf[..n])
            );
            return;
        }
    }
    panic!(
        "no data from {} ({}) reached {} ({}) through the relays after {OPEN_ATTEMPTS} attempts",
        from.name, from.relayed, to.name, to.relayed
    );
}

/// A message whose length and bytes depend on `dir` and `i`, so truncation, corruption and
/// reordering are all visible.
fn payload(dir: u8, i: usize, max_len: usize) -> Vec<u8> {
    let len = 8 + (i * 37) % (max_len - 8);
    let mut v = Vec::with_capacity(len);
    v.push(dir);
    v.extend_from_slice(&(i as u32).to_be_bytes());
    v.extend((v.len()..len).map(|j| (j * 31 + i * 7 + usize::from(dir)) as u8));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_relay_data_both_ways() {
    let server = TurnServer::spawn(&[]);
    let a = TurnPeer::allocate("A", server.addr()).await;
    let b = TurnPeer::allocate("B", server.addr()).await;

    for p in [&a, &b] {
        assert_eq!(
            p.relayed.ip().to_string(),
            "127.0.0.1",
            "{}: relay IP must be --relay-ip",
            p.name
        );
        assert_ne!(
            p.relayed.port(),
            server.port(),
            "{}: relay port is the listener",
            p.name
        );
    }
    assert_ne!(
        a.relayed, b.relayed,
        "two allocations got the same relayed address"
    );

    // B's first send creates B's permission for A's relay IP (the message itself is dropped by
    // A's allocation, which has no permission yet); then A → B and B → A must get through.
    b.send(&a, b"open B knock").await;
    open_path(&a, &b).await;
    open_path(&b, &a).await;

    // Stop-and-wait: every message must arrive intact, from the right relay, in order.
    for i in 0..ROUNDS {
        let msg = payload(b'a', i, 1200);
        a.send(&b, &msg).await;
        let got = b
            .recv_from(&a)
            .await
            .unwrap_or_else(|| panic!("B: message {i} from A lost"));
        assert_eq!(got, msg, "B: message {i} from A differs");

        let reply = payload(b'b', i, 1200);
        b.send(&a, &reply).await;
        let got = a
            .recv_from(&b)
            .await
            .unwrap_or_else(|| panic!("A: reply {i} from B lost"));
        assert_eq!(got, reply, "A: reply {i} from B differs");
    }

    // A burst each way, received concurrently (by then the channels are bound: ChannelData).
    for (from, to, dir) in [(&a, &b, b'A'), (&b, &a, b'B')] {
        let receiver = async {
            let mut got = Vec::new();
            for i in 0..BURST {
                match to.recv_from(from).await {
                    Some(m) => got.push(m),
                    None => panic!("{}: burst message {i} from {} lost", to.name, from.name),
                }
            }
            got
        };
        let sender = async {
            for i in 0..BURST {
                from.send(to, &payload(dir, i, 400)).await;
            }
        };
        let (got, ()) = tokio::join!(receiver, sender);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(
                m,
                &payload(dir, i, 400),
                "{}: burst message {i} from {}",
                to.name,
                from.name
            );
        }
    }

    // Refresh with lifetime 0 (the crate's close) must be accepted.
    for p in [&a, &b] {
        timeout(Duration::from_secs(5), p.relay.close())
            .await
            .unwrap_or_else(|_| panic!("{}: closing the allocation timed out", p.name))
            .unwrap_or_else(|e| panic!("{}: closing the allocation failed: {e}", p.name));
        p.client.close().await.expect("client close");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_request_returns_client_address() {
    let server = TurnServer::spawn(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind client socket");
    let local = sock.local_addr().expect("local_addr");
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.addr().to_string(),
        turn_serv_addr: server.addr().to_string(),
        username: USER.to_string(),
        password: PASSWORD.to_string(),
        realm: REALM.to_string(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    })
    .await
    .expect("turn Client::new");
    client.listen().await.expect("turn client listen");
    let mapped = timeout(Duration::from_secs(10), client.send_binding_request())
        .await
        .expect("Binding request timed out")
        .expect("Binding request failed");
    assert_eq!(
        mapped, local,
        "XOR-MAPPED-ADDRESS must be the client's own address on loopback"
    );
    client.close().await.expect("client close");
}
