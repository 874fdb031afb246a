//! The batching itself, over loopback sockets: every datagram of a burst arrives, in order;
//! GSO runs split at the right boundaries; the fallback without GSO sends the same.

use super::{RecvBatch, SendBatch, RING};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    s.set_nonblocking(true).expect("non-blocking");
    s
}

/// Receives on `rx` until `n` datagrams arrived or 5 s passed.
fn recv_all(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 70_000];
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < n && Instant::now() < deadline {
        match rx.recv_from(&mut buf) {
            Ok((len, _)) => out.push(buf[..len].to_vec()),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    out
}

/// Reads everything `sender` sent to `relay` through a [`RecvBatch`] (bounded rounds).
fn recv_batch(ring: &mut RecvBatch, relay: &UdpSocket, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ring.recv(relay.as_raw_fd()) {
            Ok(got) if got >= n.min(RING) => return got,
            Ok(_) | Err(_) if Instant::now() > deadline => return ring.len(),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn datagram(i: usize, len: usize) -> Vec<u8> {
    let mut d = vec![i as u8; len];
    d[0] = i as u8;
    d
}

/// A burst: `sizes[i]`-byte datagrams from a sender to the relay socket, read with one
/// `recvmmsg`, each forwarded (payload range in its slot) to `to` in one flush.
fn relay_burst(gso: bool, sizes: &[usize]) -> (Vec<Vec<u8>>, SendBatch) {
    let (sender, relay, sink) = (socket(), socket(), socket());
    for (i, &len) in sizes.iter().enumerate() {
        sender
            .send_to(&datagram(i, len), relay.local_addr().unwrap())
            .unwrap();
    }
    // The whole burst is queued before the read, so one recvmmsg takes it.
    std::thread::sleep(Duration::from_millis(50));
    let mut ring = RecvBatch::new();
    let got = recv_batch(&mut ring, &relay, sizes.len());
    assert_eq!(got, sizes.len(), "one recvmmsg takes the whole burst");
    let mut tx = SendBatch::new(gso);
    let to = sink.local_addr().unwrap();
    for i in 0..got {
        let (from, _slot, payload) = ring.get_mut(i).expect("datagram held");
        assert_eq!(from, sender.local_addr().unwrap());
        assert!(tx.push(relay.as_raw_fd(), to, i, payload));
    }
    assert_eq!(tx.flush(&ring), 0, "nothing refused");
    (recv_all(&sink, sizes.len()), tx)
}

#[test]
fn a_burst_arrives_whole_and_in_order() {
    let sizes = [160; 40];
    let (got, tx) = relay_burst(super::gso_supported(), &sizes);
    assert_eq!(got.len(), sizes.len());
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d, &datagram(i, 160), "datagram {i} in order and intact");
    }
    assert_eq!(tx.stats().calls, 1, "one sendmmsg for the burst");
}

#[test]
fn gso_segments_at_the_datagram_boundaries() {
    if !super::gso_supported() {
        panic!("this kernel lacks UDP GSO (Linux 4.18+); the test needs it");
    }
    // Equal sizes, then a shorter last one (allowed in a GSO run), then a longer one (starts
    // a new run), then equal again.
    let sizes = [200, 200, 200, 120, 300, 300, 300, 7];
    let (got, tx) = relay_burst(true, &sizes);
    let lens: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(lens, sizes, "the receiver sees the original datagrams");
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d, &datagram(i, sizes[i]));
    }
    let s = tx.stats();
    assert_eq!(s.gso_messages, 2, "two GSO runs: 200×3+120, 300×3+7");
    assert_eq!(s.gso_datagrams, 8);
}

#[test]
fn without_gso_the_same_datagrams_go_out_one_message_each() {
    let sizes = [200, 200, 200, 120, 300, 300];
    let (got, tx) = relay_burst(false, &sizes);
    let lens: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(lens, sizes);
    let s = tx.stats();
    assert_eq!(s.gso_messages, 0);
    assert_eq!(s.calls, 1, "still one sendmmsg");
}

#[test]
fn a_run_longer_than_gso_allows_is_split() {
    if !super::gso_supported() {
        panic!("this kernel lacks UDP GSO (Linux 4.18+); the test needs it");
    }
    // 64 datagrams of 1,200 bytes: 76,800 bytes, more than one GSO message may carry.
    let sizes = [1200; RING];
    let (got, tx) = relay_burst(true, &sizes);
    assert_eq!(got.len(), RING);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d, &datagram(i, 1200));
    }
    assert_eq!(tx.stats().gso_messages, 2, "54 + 10 segments");
}

#[test]
fn each_destination_keeps_its_order_when_interleaved() {
    let (sender, relay, a, b) = (socket(), socket(), socket(), socket());
    for i in 0..20 {
        sender
            .send_to(&datagram(i, 100), relay.local_addr().unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut ring = RecvBatch::new();
    assert_eq!(recv_batch(&mut ring, &relay, 20), 20);
    let mut tx = SendBatch::new(super::gso_supported());
    for i in 0..20 {
        let (_, _, payload) = ring.get_mut(i).unwrap();
        let to = if i % 2 == 0 { &a } else { &b };
        tx.push(relay.as_raw_fd(), to.local_addr().unwrap(), i, payload);
    }
    assert_eq!(tx.flush(&ring), 0);
    let (ga, gb) = (recv_all(&a, 10), recv_all(&b, 10));
    let firsts = |v: &[Vec<u8>]| v.iter().map(|d| d[0]).collect::<Vec<u8>>();
    assert_eq!(firsts(&ga), (0..20).step_by(2).collect::<Vec<u8>>());
    assert_eq!(firsts(&gb), (1..20).step_by(2).collect::<Vec<u8>>());
}

#[test]
fn a_refused_destination_counts_as_lost_and_the_rest_go_out() {
    let (sender, relay, sink) = (socket(), socket(), socket());
    for i in 0..3 {
        sender
            .send_to(&datagram(i, 50), relay.local_addr().unwrap())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut ring = RecvBatch::new();
    assert_eq!(recv_batch(&mut ring, &relay, 3), 3);
    let mut tx = SendBatch::new(false);
    // Port 0 is not a destination the kernel sends to (EINVAL).
    let bad = "127.0.0.1:0".parse().unwrap();
    for i in 0..3 {
        let (_, _, payload) = ring.get_mut(i).unwrap();
        let to = if i == 1 {
            bad
        } else {
            sink.local_addr().unwrap()
        };
        tx.push(relay.as_raw_fd(), to, i, payload);
    }
    assert_eq!(tx.flush(&ring), 1, "one datagram lost");
    assert_eq!(recv_all(&sink, 2).len(), 2);
}

#[test]
fn socket_buffers_are_applied_and_read_back() {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    let opts = super::Options {
        recv_buffer: 65_536,
        send_buffer: 98_304,
        gso: false,
        coalesce: None,
    };
    super::super::socket::set_buffers(&s, &opts).expect("set");
    // Linux reports twice what it granted; both sizes are below any rmem_max/wmem_max.
    assert_eq!(s.recv_buffer_size().unwrap(), 2 * 65_536);
    assert_eq!(s.send_buffer_size().unwrap(), 2 * 98_304);
    // 0 leaves the kernel's default alone.
    let d = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    let before = d.recv_buffer_size().unwrap();
    super::super::socket::set_buffers(&d, &super::Options::default()).unwrap();
    assert_eq!(d.recv_buffer_size().unwrap(), before);
}
