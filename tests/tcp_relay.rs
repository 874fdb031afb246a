//! RFC 6062 TCP relay allocations against an in-process server (two workers, so a data
//! connection often lands on the worker that does not hold the allocation), with a raw client
//! on plain `TcpStream`s and TCP peers on loopback: Connect to an echo peer then
//! ConnectionBind on a new connection and bytes both ways; a peer connecting in, announced by
//! ConnectionAttempt; the bound on parked peer connections; a peer without permission; 447 for
//! a closed port; data connections closed with their control connection. Every wait is
//! bounded.

mod common;
mod raw;

/// Bandwidth caps and per-allocation statistics on spliced data (`tests/tcp_relay/caps.rs`).
#[path = "tcp_relay/caps.rs"]
mod caps;

use common::readings::{metrics_text, sample};
use raw::stream::*;
use raw::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use turnd::config::ConfigArgs;

/// How long anything the server must do may take to be seen.
const WAIT: Duration = Duration::from_secs(5);
/// Bytes sent each way through a splice: several KB, in uneven writes.
const PAYLOAD: usize = 64 * 1024 + 123;

fn server() -> TestServer {
    TestServer::start(ConfigArgs {
        // The peers listen on 127.0.0.1, the relay's own address: named exactly.
        allow_peer: vec!["127.0.0.0/8".into(), "127.0.0.1".into()],
        workers: Some("2".into()),
        ..base_args()
    })
}

fn payload(seed: u8) -> Vec<u8> {
    (0..PAYLOAD)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Echoes every connection it accepts (each on its own thread, for at most 30 s) and reports
/// each connection's remote address.
struct EchoPeer {
    addr: SocketAddr,
    accepted: mpsc::Receiver<SocketAddr>,
}

impl EchoPeer {
    fn spawn() -> EchoPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = mpsc::channel();
        thread::spawn(move || {
            // Bounded: a test makes a handful of connections; the thread ends with the process.
            for _ in 0..16 {
                let Ok((mut s, from)) = listener.accept() else {
                    return;
                };
                let _ = tx.send(from);
                thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoPeer { addr, accepted }
    }
}

/// Writes `data` in uneven chunks from a thread while reading the same number of bytes back.
fn round_trip(stream: &TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = stream.try_clone().unwrap();
    let out = data.to_vec();
    let writer = thread::spawn(move || {
        for chunk in out.chunks(7_777) {
            w.write_all(chunk).unwrap();
        }
    });
    let got = read_exactly(stream, data.len());
    writer.join().unwrap();
    got
}

#[test]
fn connect_then_bind_relays_bytes_both_ways() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    // Several peers, each on its own data connection: with two workers, some of the data
    // connections land on the worker that does not hold the allocation.
    let peers: Vec<EchoPeer> = (0..4).map(|_| EchoPeer::spawn()).collect();
    control.permit(peers[0].addr);
    let mut data = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let cid = control.connect_peer(p.addr);
        // RFC 6062 §5.2: the connection to the peer comes from the relayed address.
        let from = p.accepted.recv_timeout(WAIT).expect("peer connected");
        assert_eq!(from, relayed, "peer {i} connected from elsewhere");
        let stream = StreamClient::connect(server.tcp_addr).bind(cid);
        data.push(stream);
    }
    for (i, stream) in data.iter().enumerate() {
        let sent = payload(i as u8);
        let got = round_trip(stream, &sent);
        assert!(got == sent, "data connection {i}: bytes differ");
    }
    // A second Connect to a connected peer: 446.
    let r = control.request(CONNECT, &[peer(peers[0].addr)]);
    assert_error(&r, CONNECT, 446);
    // Spliced bytes count as relayed bytes of the data connections' transport, live.
    let total = (PAYLOAD * peers.len()) as f64;
    expect_metrics(
        server.metrics_addr(),
        &[
            (
                "turnd_relayed_bytes_total{direction=\"client_to_peer\",transport=\"tcp\"}",
                total,
            ),
            (
                "turnd_relayed_bytes_total{direction=\"peer_to_client\",transport=\"tcp\"}",
                total,
            ),
            (
                "turnd_requests_total{method=\"connect\",result=\"success\"}",
                4.0,
            ),
            (
                "turnd_requests_total{method=\"connect\",result=\"446\"}",
                1.0,
            ),
            (
                "turnd_requests_total{method=\"connection_bind\",result=\"success\"}",
                4.0,
            ),
        ],
    );
}

/// Scrapes `/metrics` until every series has its value (bounded by [`WAIT`]).
#[track_caller]
fn expect_metrics(addr: SocketAddr, expected: &[(&str, f64)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics_text(addr);
        let value = |series: &str| sample(&text, series);
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, v)| value(k) != Some(*v))
            .map(|(k, v)| format!("{k}: expected {v}, got {:?}", value(k)))
            .collect();
        if wrong.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{}\n{text}", wrong.join("\n"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn peer_connecting_in_is_announced_and_bound() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    control.permit("127.0.0.1:1".parse().unwrap());
    let mut peer_conn = TcpStream::connect_timeout(&relayed, WAIT).expect("peer connects");
    // Sent before the client binds: the server must keep it.
    peer_conn.write_all(b"early bytes").unwrap();
    let ind = control.recv_for(WAIT).expect("ConnectionAttempt");
    assert_eq!(
        (ind.method(), ind.class()),
        (CONNECTION_ATTEMPT, INDICATION)
    );
    assert_eq!(
        ind.xor_address(A_XOR_PEER_ADDRESS),
        Some(peer_conn.local_addr().unwrap())
    );
    let cid = ind.u32_attr(A_CONNECTION_ID).expect("CONNECTION-ID");
    let (data, mut early) = StreamClient::connect(server.tcp_addr).bind_keeping_early_bytes(cid);
    assert!(early.len() <= 11, "more than the early bytes: {early:?}");
    early.extend(read_exactly(&data, 11 - early.len()));
    assert_eq!(early, b"early bytes");
    // Both ways, several KB.
    let sent = payload(9);
    let writer = {
        let mut d = data.try_clone().unwrap();
        let sent = sent.clone();
        thread::spawn(move || d.write_all(&sent).unwrap())
    };
    let got = read_exactly(&peer_conn, sent.len());
    writer.join().unwrap();
    assert!(got == sent, "client to peer bytes differ");
    let back = payload(3);
    let writer = {
        let mut p = peer_conn.try_clone().unwrap();
        let back = back.clone();
        thread::spawn(move || p.write_all(&back).unwrap())
    };
    let got = read_exactly(&data, back.len());
    writer.join().unwrap();
    assert!(got == back, "peer to client bytes differ");
    // The peer closes: the data connection closes.
    drop(peer_conn);
    assert!(closed_within(&data, WAIT));
}

/// The shell's table of parked peer connections (`ParkedPeers`, shared by the workers) is
/// bounded by the core's `MAX_PEER_CONNECTIONS` (64) per TCP allocation: 64 peers connecting in
/// are announced and parked, the 65th is closed at once and announced to no one, a spliced
/// connection still counts, and a place frees when a connection ends.
#[test]
fn parked_peer_connections_stop_at_the_allocations_bound() {
    const MAX: usize = 64;
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    control.permit("127.0.0.1:1".parse().unwrap());
    let mut peers = Vec::new();
    let mut cids = Vec::new();
    for i in 0..MAX {
        peers.push(TcpStream::connect_timeout(&relayed, WAIT).expect("peer connects"));
        let ind = control
            .recv_for(WAIT)
            .unwrap_or_else(|| panic!("no ConnectionAttempt for peer {i}"));
        assert_eq!(ind.method(), CONNECTION_ATTEMPT);
        cids.push(ind.u32_attr(A_CONNECTION_ID).expect("CONNECTION-ID"));
    }
    let over = TcpStream::connect_timeout(&relayed, WAIT).expect("accepted, then closed");
    assert!(
        closed_within(&over, WAIT),
        "a peer beyond the bound was kept"
    );
    assert!(
        control.recv_for(QUIET).is_none(),
        "a peer beyond the bound was announced"
    );
    // One is bound and spliced: it still holds its place.
    let data = StreamClient::connect(server.tcp_addr).bind(cids[0]);
    let over = TcpStream::connect_timeout(&relayed, WAIT).expect("accepted, then closed");
    assert!(
        closed_within(&over, WAIT),
        "a splice freed its place while it runs"
    );
    // The spliced pair ends (the peer closes, then the client): its place is free again.
    drop(peers.remove(0));
    assert!(closed_within(&data, WAIT));
    drop(data);
    let deadline = Instant::now() + WAIT;
    // Bounded: one peer per round until the deadline (the splice ends asynchronously).
    let _next = loop {
        let next = TcpStream::connect_timeout(&relayed, WAIT).expect("peer connects");
        if let Some(ind) = control.recv_for(QUIET) {
            assert_eq!(ind.method(), CONNECTION_ATTEMPT);
            break next;
        }
        assert!(
            Instant::now() < deadline,
            "the ended splice's place stayed taken"
        );
    };
    // Every parked peer is still open, waiting for its bind.
    for (i, p) in peers.iter().enumerate() {
        p.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = (&*p).read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "parked peer {i}: {r:?}"
        );
    }
}

#[test]
fn peer_without_permission_is_closed() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    let relayed = control.allocate_tcp();
    let peer_conn = TcpStream::connect_timeout(&relayed, WAIT).expect("accepted, then closed");
    assert!(closed_within(&peer_conn, WAIT));
    assert!(
        control.recv_for(QUIET).is_none(),
        "no ConnectionAttempt without a permission"
    );
}

#[test]
fn connect_to_a_closed_port_is_447() {
    let server = server();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut control = StreamClient::connect(server.tcp_addr);
    control.allocate_tcp();
    control.permit(closed);
    let r = control.request(CONNECT, &[peer(closed)]);
    assert_error(&r, CONNECT, 447);
}

#[test]
fn connection_bind_with_an_unknown_id_is_400_and_tcp_over_udp_is_400() {
    let server = server();
    let mut data = StreamClient::connect(server.tcp_addr);
    let r = data.request(
        CONNECTION_BIND,
        &[Attr::Raw(A_CONNECTION_ID, 12345u32.to_be_bytes().to_vec())],
    );
    assert_error(&r, CONNECTION_BIND, 400);
    let mut udp_client = server.client();
    let r = udp_client.allocate_with(&[requested_transport(TCP)]);
    assert_error(&r, ALLOCATE, 400);
}

#[test]
fn closing_the_control_connection_closes_data_connections() {
    let server = server();
    let mut control = StreamClient::connect(server.tcp_addr);
    control.allocate_tcp();
    let echo = EchoPeer::spawn();
    control.permit(echo.addr);
    let cid = control.connect_peer(echo.addr);
    let data = StreamClient::connect(server.tcp_addr).bind(cid);
    let sent = payload(1);
    assert!(round_trip(&data, &sent) == sent);
    // A second, pending connection (connected, never bound) goes too.
    let echo2 = EchoPeer::spawn();
    let _pending = control.connect_peer(echo2.addr);
    drop(control);
    assert!(
        closed_within(&data, WAIT),
        "data connection outlived its allocation"
    );
}
