//! TURN over TCP against an in-process server, with a raw client on a plain `TcpStream`:
//! stream framing (a request split byte by byte, two requests in one write), ChannelData
//! padding on the stream, the allocation's life tied to its control connection, and the
//! connection hygiene limits (`unauthenticated_timeout`, `max_connections`,
//! `max_connections_per_source`, garbage, `max_frame_size`), and a long frame arriving in
//! pieces. Every wait is bounded.

mod common;
mod raw;

use common::readings::{metric, open_fds, rss_kib, wait_metric};
use raw::stream::*;
use raw::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use turnd::config::ConfigArgs;

/// How long a close the server must make may take to be seen.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn loopback_server(extra: impl FnOnce(&mut ConfigArgs)) -> TestServer {
    let mut args = ConfigArgs {
        // The peers listen on 127.0.0.1, the relay's own address: named exactly.
        allow_peer: vec!["127.0.0.0/8".into(), "127.0.0.1".into()],
        ..base_args()
    };
    extra(&mut args);
    TestServer::start(args)
}

#[test]
fn tcp_listens_on_the_udp_port() {
    let server = loopback_server(|_| {});
    assert_eq!(server.tcp_addr, server.addr);
    // Port 0 with several workers: TCP gets the port UDP was given.
    let s = TestServer::start(ConfigArgs {
        listen: vec!["127.0.0.1:0".into()],
        workers: Some("3".into()),
        ..base_args()
    });
    assert_ne!(s.addr.port(), 0);
    assert_eq!(s.tcp_addr, s.addr);
    let mut c = StreamClient::connect(s.tcp_addr);
    assert_eq!(c.binding(), c.local());
}

#[test]
fn the_binary_prints_a_tcp_listening_line_on_the_udp_port() {
    // turnd itself whatever TURN_TEST_SERVER says: the line is turnd's.
    let server = common::TurnServer::spawn_turnd(&[]);
    let want = format!("turnd listening tcp 127.0.0.1:{}", server.port());
    // The line follows the UDP one; the reader thread may not have it yet.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !server.output().lines().any(|l| l == want) {
        assert!(
            Instant::now() < deadline,
            "no `{want}` line:\n{}",
            server.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut c = StreamClient::connect(server.addr());
    assert_eq!(c.binding(), c.local());
}

#[test]
fn a_request_split_byte_by_byte_is_answered() {
    let server = loopback_server(|_| {});
    let mut c = StreamClient::connect(server.tcp_addr);
    let txid = new_txid();
    let req = encode(msg_type(BINDING, REQUEST), txid, &[], None, true);
    for b in &req {
        c.send(std::slice::from_ref(b));
        thread::sleep(Duration::from_millis(2));
    }
    let r = c.response_to(txid);
    assert_success(&r, BINDING);
    assert_eq!(r.xor_address(A_XOR_MAPPED_ADDRESS), Some(c.local()));
    assert!(r.verify_fingerprint());
}

#[test]
fn two_requests_in_one_write_are_both_answered() {
    let server = loopback_server(|_| {});
    let mut c = StreamClient::connect(server.tcp_addr);
    let (t1, t2) = (new_txid(), new_txid());
    let mut both = encode(msg_type(BINDING, REQUEST), t1, &[], None, false);
    both.extend(encode(msg_type(BINDING, REQUEST), t2, &[], None, true));
    c.send(&both);
    let first = Parsed::parse(&c.recv_frame()).expect("STUN");
    let second = Parsed::parse(&c.recv_frame()).expect("STUN");
    assert_eq!((first.txid, second.txid), (t1, t2), "answered in order");
    assert_success(&first, BINDING);
    assert_success(&second, BINDING);
}

#[test]
fn channel_data_over_tcp_is_padded_both_ways() {
    let server = loopback_server(|_| {});
    let peer = Peer::v4();
    let mut c = StreamClient::connect(server.tcp_addr);
    let relayed = c.allocate();
    c.bind_channel(0x4001, peer.addr());

    // Client → peer: a padded frame; the peer gets the 5 bytes only. Two frames in one write
    // and a frame split across writes arrive whole.
    let mut two = channel_data(0x4001, b"hello", true);
    assert_eq!(two.len(), 12);
    two.extend(channel_data(0x4001, b"world!", true));
    c.send(&two);
    let split = channel_data(0x4001, b"split", true);
    c.send(&split[..3]);
    thread::sleep(Duration::from_millis(20));
    c.send(&split[3..]);
    for want in [&b"hello"[..], b"world!", b"split"] {
        let (got, from) = peer.recv().expect("relayed to the peer");
        assert_eq!((got.as_slice(), from), (want, relayed));
    }

    // Peer → client: ChannelData padded to a multiple of 4 on the stream.
    for len in [1usize, 5, 8, 1000] {
        let payload = pseudo_random(len as u64, len);
        peer.send_to(relayed, &payload);
        let frame = c.recv_frame();
        assert_eq!(
            frame.len() % 4,
            0,
            "unpadded frame of {} bytes",
            frame.len()
        );
        assert_eq!(frame.len(), 4 + len.div_ceil(4) * 4);
        let (channel, data) = parse_channel_data(&frame[..4 + len]);
        assert_eq!((channel, data), (0x4001, payload));
    }
}

#[test]
fn send_and_data_indications_over_tcp() {
    let server = loopback_server(|_| {});
    let peer = Peer::v4();
    let mut c = StreamClient::connect(server.tcp_addr);
    let relayed = c.allocate();
    assert_success(
        &c.request(CREATE_PERMISSION, &[raw::peer(peer.addr())]),
        CREATE_PERMISSION,
    );
    let ind = encode(
        msg_type(SEND, INDICATION),
        new_txid(),
        &[raw::peer(peer.addr()), data(b"via send")],
        None,
        false,
    );
    c.send(&ind);
    assert_eq!(peer.recv().expect("relayed").0, b"via send");
    peer.send_to(relayed, b"back");
    let p = Parsed::parse(&c.recv_frame()).expect("Data indication");
    assert_eq!((p.method(), p.class()), (DATA, INDICATION));
    assert_eq!(p.get(A_DATA), Some(&b"back"[..]));
}

#[test]
fn closing_the_control_connection_frees_the_allocation() {
    // One relay port: only one allocation at a time.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (port, _) = free_ports(ip, 1);
    let server = loopback_server(|a| a.relay_ports = Some(format!("{port}-{port}")));
    let peer = Peer::v4();
    let mut c = StreamClient::connect(server.tcp_addr);
    let relayed = c.allocate();
    assert_eq!(relayed.port(), port);
    assert_success(
        &c.request(CREATE_PERMISSION, &[raw::peer(peer.addr())]),
        CREATE_PERMISSION,
    );

    // While it holds the port, nobody else gets one.
    let mut other = server.client();
    assert_error(&other.allocate_with(&[udp()]), ALLOCATE, 508);

    drop(c);
    // The server notices the close, ends the allocation and frees the port.
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let again = loop {
        let r = other.allocate_with(&[udp()]);
        if r.class() == SUCCESS {
            break r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the port was not freed: {}",
            describe(&r)
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(again.port(), port);
    // The peer's data no longer reaches anyone over the old relay: it is the new allocation's
    // now, which has no permission for the peer.
    peer.send_to(relayed, b"late");
    other.expect_silence("data for the closed allocation");
}

#[test]
fn a_connection_without_an_allocation_is_closed_after_the_timeout() {
    let server = loopback_server(|a| a.unauthenticated_timeout = Some("1".into()));
    // Taken before the idle connection exists, so the server's 1 s (which starts when it
    // accepts) lies wholly inside `waited`: setting up the other connections on a busy
    // machine can only make `waited` longer, and a close before the timeout shows as less
    // than 1 s whatever the load.
    let started = Instant::now();
    let mut idle = StreamClient::connect(server.tcp_addr);
    let mut talker = StreamClient::connect(server.tcp_addr);
    let mut allocated = StreamClient::connect(server.tcp_addr);
    allocated.allocate();
    // Binding requests do not count as using the connection.
    talker.binding();
    assert!(
        idle.closed_within(CLOSE_TIMEOUT),
        "idle connection left open"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "closed before the 1 s unauthenticated_timeout: {waited:?}"
    );
    assert!(
        talker.closed_within(CLOSE_TIMEOUT),
        "binding-only connection left open"
    );
    // The connection with an allocation lives on.
    assert_success(&allocated.request(REFRESH, &[]), REFRESH);

    // Once its allocation is deleted, the timeout applies again.
    let r = allocated.request(REFRESH, &[lifetime(0)]);
    assert_success(&r, REFRESH);
    assert!(
        allocated.closed_within(CLOSE_TIMEOUT),
        "left open after its allocation ended"
    );
}

#[test]
fn max_connections_is_enforced() {
    let server = loopback_server(|a| a.max_connections = Some("2".into()));
    let mut a = StreamClient::connect(server.tcp_addr);
    let mut b = StreamClient::connect(server.tcp_addr);
    a.binding();
    b.binding();
    // The kernel completes the handshake, then the server closes the third at accept.
    let third = StreamClient::connect(server.tcp_addr);
    closed_at_accept(
        &server,
        third,
        "max_connections",
        "third connection accepted",
    );
    // The first two are unaffected; when one closes, its slot is free again.
    a.binding();
    drop(b);
    served_again(
        || StreamClient::connect(server.tcp_addr),
        "the closed connection's slot was not freed",
    );
}

/// `third`, a connection over a limit, is closed at accept (its request never answered) and
/// counted under `reason` just after the close the client saw (a bounded wait).
#[track_caller]
fn closed_at_accept(server: &TestServer, mut third: StreamClient, reason: &str, what: &str) {
    let _ = third.stream.write_all(&plain_request(BINDING, &[]));
    assert!(third.closed_within(CLOSE_TIMEOUT), "{what}");
    let refused = format!("turnd_connections_refused_total{{reason=\"{reason}\"}}");
    wait_metric(server.metrics_addr(), &refused, 1.0, CLOSE_TIMEOUT);
}

/// A new connection from `connect` is served again within [`CLOSE_TIMEOUT`]: the place a
/// closed one held is free.
#[track_caller]
fn served_again(connect: impl Fn() -> StreamClient, what: &str) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    // Bounded: one connection per round, each waiting at most 500 ms, until the deadline.
    loop {
        let mut next = connect();
        let _ = next.stream.write_all(&plain_request(BINDING, &[]));
        if next.recv_frame_for(Duration::from_millis(500)).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
    }
}

/// A client whose connection comes from source address `from` (another loopback address: the
/// whole 127/8 reaches a server on 127.0.0.1).
fn client_from(from: &str, server: SocketAddr) -> StreamClient {
    StreamClient::connect_from(from.parse().unwrap(), server)
}

#[test]
fn max_connections_per_source_refuses_one_source_and_serves_the_others() {
    let server = loopback_server(|a| a.max_connections_per_source = Some("2".into()));
    let mut a = client_from("127.0.0.1", server.tcp_addr);
    let mut b = client_from("127.0.0.1", server.tcp_addr);
    a.binding();
    b.binding();
    // The source's third is closed at accept, and counted.
    let third = client_from("127.0.0.1", server.tcp_addr);
    closed_at_accept(
        &server,
        third,
        "per_source",
        "a third connection from one source was served",
    );
    assert_eq!(
        metric(
            server.metrics_addr(),
            r#"turnd_connections_refused_total{reason="max_connections"}"#
        ),
        0.0
    );
    // Other sources are not affected: two more, from two other addresses.
    for other in ["127.0.0.2", "127.0.0.3"] {
        let mut c = client_from(other, server.tcp_addr);
        assert_eq!(c.binding().ip().to_string(), other);
    }
    // A closed connection gives its source's place back.
    a.binding();
    drop(b);
    served_again(
        || client_from("127.0.0.1", server.tcp_addr),
        "the closed connection's place was not given back",
    );
}

/// The read buffer grows as a long frame's bytes arrive (never to the announced length at
/// once) and back after it: a 60,000-byte ChannelData frame sent in 1,000-byte pieces is
/// relayed whole, and the short frames after it too.
#[test]
fn a_long_frame_arriving_in_pieces_is_relayed_whole() {
    let server = loopback_server(|_| {});
    let peer = Peer::v4();
    let mut c = StreamClient::connect(server.tcp_addr);
    let relayed = c.allocate();
    c.bind_channel(0x4005, peer.addr());
    let long = pseudo_random(7, 60_000);
    let frame = channel_data(0x4005, &long, true);
    for piece in frame.chunks(1000) {
        c.send(piece);
        // Separate reads on the server, most of the time: the buffer grows step by step.
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(peer.recv(), Some((long, relayed)));
    for i in 0..3u8 {
        c.send(&channel_data(0x4005, &[i; 5], true));
        assert_eq!(peer.recv(), Some((vec![i; 5], relayed)));
    }
}

#[test]
fn garbage_closes_only_its_own_connection() {
    let server = loopback_server(|_| {});
    let peer = Peer::v4();
    let mut good = StreamClient::connect(server.tcp_addr);
    let relayed = good.allocate();
    assert_success(
        &good.request(CREATE_PERMISSION, &[raw::peer(peer.addr())]),
        CREATE_PERMISSION,
    );
    let udp_client = server.client();

    // 0b10 / 0b11 in the first two bits: neither STUN nor ChannelData.
    for first in [0x80u8, 0xFF] {
        let mut bad = StreamClient::connect(server.tcp_addr);
        let mut junk = pseudo_random(first as u64, 64);
        junk[0] = first;
        bad.send(&junk);
        assert!(
            bad.closed_within(CLOSE_TIMEOUT),
            "garbage {first:#x} left open"
        );
    }
    // Valid start, then garbage at the next frame boundary.
    let mut bad = StreamClient::connect(server.tcp_addr);
    let mut bytes = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, false);
    bytes.extend([0xC0, 0, 0, 0]);
    bad.send(&bytes);
    assert!(
        bad.closed_within(CLOSE_TIMEOUT),
        "garbage after a request left open"
    );

    // Everyone else is fine.
    assert_success(&good.request(REFRESH, &[]), REFRESH);
    peer.send_to(relayed, b"still here");
    let p = Parsed::parse(&good.recv_frame()).expect("Data indication");
    assert_eq!(p.get(A_DATA), Some(&b"still here"[..]));
    assert_eq!(udp_client.binding(), udp_client.local());
}

#[test]
fn a_frame_over_max_frame_size_closes_the_connection() {
    let server = loopback_server(|a| a.max_frame_size = Some("512".into()));
    let mut c = StreamClient::connect(server.tcp_addr);
    c.binding();
    // A ChannelData header announcing 1000 bytes: over the limit before any data is sent.
    c.send(&[0x40, 0x00, 0x03, 0xE8]);
    assert!(c.closed_within(CLOSE_TIMEOUT), "oversize frame accepted");
    let mut ok = StreamClient::connect(server.tcp_addr);
    ok.binding();
}

#[test]
fn many_idle_and_half_sent_connections_are_closed_on_time() {
    let server = loopback_server(|a| a.unauthenticated_timeout = Some("1".into()));
    let started = Instant::now();
    let mut clients: Vec<StreamClient> = (0..100)
        .map(|_| StreamClient::connect(server.tcp_addr))
        .collect();
    // Slowloris: half of them send the start of a request and never finish it.
    let req = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, false);
    for c in clients.iter_mut().step_by(2) {
        c.send(&req[..10]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let left = (started + CLOSE_TIMEOUT).saturating_duration_since(Instant::now());
        assert!(c.closed_within(left), "connection {i} still open");
    }
    // And the server still serves new clients.
    StreamClient::connect(server.tcp_addr).binding();
}

#[test]
fn a_client_that_stops_reading_gets_whole_frames_and_never_stalls_the_server() {
    let server = loopback_server(|_| {});
    let peer = Peer::v4();
    let mut slow = StreamClient::connect(server.tcp_addr);
    let relayed = slow.allocate();
    slow.bind_channel(0x4002, peer.addr());

    // Far more than the socket buffers hold, while the client reads nothing.
    const SENT: usize = 6000;
    for i in 0..SENT {
        let len = 900 + i % 7;
        peer.send_to(relayed, &pseudo_random(i as u64, len));
        if i % 500 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    // Meanwhile other clients are served.
    StreamClient::connect(server.tcp_addr).binding();
    server.client().binding();

    // Every frame the client then reads is whole and well-formed: a partly written frame was
    // always completed, only whole frames were dropped.
    let mut frames = 0;
    while let Some(frame) = slow.recv_frame_for(Duration::from_millis(500)) {
        let (channel, data) =
            parse_channel_data(&frame[..4 + u16::from_be_bytes([frame[2], frame[3]]) as usize]);
        assert_eq!(channel, 0x4002);
        assert!(
            (900..907).contains(&data.len()),
            "frame {frames}: {} bytes",
            data.len()
        );
        frames += 1;
        assert!(frames <= SENT);
    }
    assert!(frames > 0, "nothing arrived");
    // The connection still works.
    assert_success(&slow.request(REFRESH, &[]), REFRESH);
}

#[test]
fn tcp_over_ipv6_loopback() {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["::1/128".into()],
        ..base_args_v6()
    });
    assert_eq!(server.tcp_addr, server.addr);
    let peer = Peer::v6();
    let mut c = StreamClient::connect(server.tcp_addr);
    assert_eq!(c.binding(), c.local());
    let r = c.request(ALLOCATE, &[udp(), address_family(FAMILY_V6)]);
    assert_success(&r, ALLOCATE);
    let relayed = r.xor_address(A_XOR_RELAYED_ADDRESS).expect("relayed");
    assert!(relayed.is_ipv6());
    c.bind_channel(0x4003, peer.addr());
    c.send(&channel_data(0x4003, b"v6!", true));
    assert_eq!(peer.recv().expect("relayed"), (b"v6!".to_vec(), relayed));
    peer.send_to(relayed, b"back6");
    let frame = c.recv_frame();
    assert_eq!(frame.len(), 12);
    assert_eq!(parse_channel_data(&frame[..9]), (0x4003, b"back6".to_vec()));
}

/// Waits until process `pid` holds at least `n` descriptors (bounded: 10 s).
#[track_caller]
fn wait_for_fds(pid: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded: one look per 10 ms until the deadline.
    loop {
        let fds = open_fds(pid);
        if fds >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {fds} descriptors after 10 s, not the {n} of a whole wave"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Opens `n` connections to `addr`, half of them sending the first 10 bytes of a request
/// and stopping there (slowloris).
fn open_slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let req = encode(msg_type(BINDING, REQUEST), new_txid(), &[], None, false);
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, CLOSE_TIMEOUT).expect("connect");
            if i % 2 == 0 {
                s.write_all(&req[..10]).expect("half a request");
            }
            s
        })
        .collect()
}

/// Waits (bounded) until the server has closed every stream in `conns`.
fn all_closed_within(conns: Vec<TcpStream>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for (i, mut s) in conns.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connection {i} still open after {timeout:?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) | Err(_) if Instant::now() < deadline => {}
            r => panic!("connection {i} not closed in time: {r:?}"),
        }
    }
}

/// Slowloris against the real binary: thousands of idle and half-sent connections cost a
/// bounded amount of memory each, are all closed after `unauthenticated_timeout`, and a
/// second wave does not grow the server's memory beyond the first (nothing is kept per
/// closed connection).
#[test]
fn thousands_of_idle_connections_cost_bounded_memory_and_are_all_closed() {
    const N: usize = 2_000;
    // The test holds N sockets and the server N more; both may need the soft limit raised.
    turnd::shell::raise_nofile_limit().expect("raise the open-file limit");
    let server = common::TurnServer::spawn_turnd(&[
        // Long enough for the whole wave to be accepted, and counted, before the first
        // connections of it time out.
        "--unauthenticated-timeout",
        "4",
        "--max-connections",
        "10000",
        // All from 127.0.0.1: this test is about idle connections, not the per-source cap
        // (tests/abuse_connections.rs).
        "--max-connections-per-source",
        "0",
    ]);
    let addr = server.addr();
    let pid = server.pid();
    let start = rss_kib(pid);
    // The idle server's descriptors (listeners, epoll, …), counted before any connection:
    // later, a connection the server has just closed may still hold one for a moment.
    let idle_fds = open_fds(pid);
    let mut peaks = Vec::new();
    for wave in 0..2 {
        let conns = open_slowloris(addr, N);
        // Memory is read once the server holds the whole wave: one descriptor per accepted
        // connection, counted, not waited for with a fixed sleep.
        wait_for_fds(pid, idle_fds + N);
        let held = rss_kib(pid);
        peaks.push(held);
        eprintln!(
            "wave {wave}: {N} idle connections held, server RSS {start} KiB -> {held} KiB \
             ({:.1} KiB per connection)",
            held.saturating_sub(start) as f64 / N as f64
        );
        all_closed_within(conns, Duration::from_secs(4) + CLOSE_TIMEOUT * 2);
    }
    let per_conn = peaks[0].saturating_sub(start) / N as u64;
    assert!(
        per_conn <= 32,
        "{per_conn} KiB per idle connection (RSS {start} -> {} KiB)",
        peaks[0]
    );
    assert!(
        peaks[1] <= peaks[0] + peaks[0] / 10 + 2048,
        "memory grew from the first wave to the second: {peaks:?} KiB"
    );
    // And the server still serves.
    StreamClient::connect(addr).binding();
}
