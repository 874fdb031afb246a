//! The relay path (RFC 8656 §10–§12): Send indications and ChannelData from the client,
//! peer datagrams framed in place for the client, and the counters on the way.

use super::*;
use crate::stun::CHANNEL_DATA_HEADER_LEN;

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

fn allocated(h: &mut Harness, ft: FiveTuple, extra: &[Attr]) -> (Client, AllocationId) {
    let mut c = Client::alice(ft);
    c.allocate_with(h, extra)
        .assert_success(Method::ALLOCATE, &c.key);
    let id = h.id_of(ft).unwrap();
    (c, id)
}

#[test]
fn send_indication_with_permission_forwards_the_data_range() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    for payload in [&b""[..], b"a", b"abcd", &[0x5A; 1200]] {
        let (fwd, dgram) = c.send_indication(&mut h, peer_a(), payload);
        let f = fwd.clone().unwrap();
        let m = Message::parse(&dgram).unwrap();
        assert_eq!(
            f.payload,
            m.data_range().unwrap(),
            "the DATA value, in place"
        );
        assert_forward(fwd, &dgram, id, peer_a(), payload);
    }
}

#[test]
fn send_indication_without_permission_is_dropped() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    assert!(c.send_indication(&mut h, peer_b(), b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 1);
    assert_eq!(h.alloc(ft()).stats, Relayed::default());
}

#[test]
fn send_indication_to_denied_peer_is_dropped() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    for d in ["10.0.0.1:1", "127.0.0.1:1", "0.0.0.0:1"] {
        assert!(c.send_indication(&mut h, sa(d), b"x").0.is_none(), "{d}");
    }
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 3);
}

#[test]
fn send_indication_without_allocation_or_data_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::alice(ft());
    assert!(c.send_indication(&mut h, peer_a(), b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoAllocation], 1);

    c.allocate(&mut h);
    c.permit(&mut h, &[peer_a()]);
    let txid = c.txid();
    for attrs in [vec![Attr::Peer(peer_a())], vec![data(b"x")]] {
        let ind = build(Method::SEND, Class::Indication, txid, &attrs, None, false);
        assert!(h.input(c.ft, &ind).is_none());
    }
    // Unknown comprehension-required attributes: the indication is discarded.
    let attrs = [
        Attr::Peer(peer_a()),
        data(b"x"),
        Attr::Raw(AttrType(0x7F01), vec![]),
    ];
    let ind = build(Method::SEND, Class::Indication, txid, &attrs, None, false);
    assert!(h.input(c.ft, &ind).is_none());
    assert_eq!(h.server.counters().dropped[DropReason::Malformed], 3);
    h.assert_silent();
}

#[test]
fn send_indication_from_another_five_tuple_is_dropped() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    let mut other = Client::alice(udp("192.0.2.100:40001"));
    assert!(other.send_indication(&mut h, peer_a(), b"x").0.is_none());
    let mut tcp_twin = Client::alice(tcp("192.0.2.100:40000"));
    assert!(tcp_twin.send_indication(&mut h, peer_a(), b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoAllocation], 2);
}

#[test]
fn channel_data_forwards_the_payload_range() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.bind(&mut h, 0x4000, peer_a());
    for payload in [&b""[..], b"a", b"abc", b"abcd", &[7; 1000]] {
        // Padded over UDP (optional): the padding is not relayed.
        let (fwd, msg) = c.channel_data(&mut h, 0x4000, payload);
        assert_eq!(
            fwd.as_ref().unwrap().payload,
            CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + payload.len()
        );
        assert_forward(fwd, &msg, id, peer_a(), payload);
        // And unpadded.
        let msg = channel_data_msg(0x4000, payload, false);
        assert_forward(h.input(c.ft, &msg), &msg, id, peer_a(), payload);
    }
}

#[test]
fn channel_data_on_unknown_channel_is_dropped() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h, ft(), &[]);
    c.bind(&mut h, 0x4000, peer_a());
    assert!(c.channel_data(&mut h, 0x4001, b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoChannel], 1);
}

#[test]
fn malformed_or_unallocated_channel_data_is_dropped() {
    let mut h = Harness::new();
    let mut stranger = Client::alice(ft());
    assert!(stranger.channel_data(&mut h, 0x4000, b"x").0.is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoAllocation], 1);
    let (mut c, _) = allocated(&mut h, ft(), &[]);
    c.bind(&mut h, 0x4000, peer_a());
    // Shorter than its length field, and a truncated header.
    for bad in [vec![0x40, 0x00, 0x00, 0x08, 1, 2], vec![0x40, 0x00, 0x00]] {
        assert!(h.input(c.ft, &bad).is_none());
    }
    assert_eq!(h.server.counters().dropped[DropReason::Malformed], 2);
    h.assert_silent();
}

#[test]
fn peer_datagram_on_a_channel_gets_a_channel_data_header_in_place() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.bind(&mut h, 0x4ABC, peer_a());
    for payload in [&b"abcde"[..], b"", b"wxyz"] {
        let (out, buf) = h.peer_raw(id, peer_a(), payload).unwrap();
        assert_eq!(out.to, c.ft);
        // UDP: no padding after the payload.
        assert_eq!(out.range, PEER_HEADROOM - 4..PEER_HEADROOM + payload.len());
        let len = (payload.len() as u16).to_be_bytes();
        assert_eq!(
            buf[out.range.start..PEER_HEADROOM],
            [0x4A, 0xBC, len[0], len[1]]
        );
        assert_eq!(
            &buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()],
            payload,
            "payload not moved"
        );
        assert!(
            buf[..out.range.start].iter().all(|b| *b == 0xEE),
            "nothing written before the header"
        );
    }
}

#[test]
fn peer_datagram_on_a_channel_over_tcp_is_padded() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, tcp("192.0.2.100:40000"), &[]);
    c.bind(&mut h, 0x4000, peer_a());
    let (out, buf) = h.peer_raw(id, peer_a(), b"abcde").unwrap();
    assert_eq!(out.to, c.ft);
    assert_eq!(out.range, PEER_HEADROOM - 4..PEER_HEADROOM + 8);
    assert_eq!(
        &buf[out.range],
        &[0x40, 0x00, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]
    );
    // Stream framing: ChannelData::stream_frame_len agrees.
    let header: [u8; 4] = buf[PEER_HEADROOM - 4..PEER_HEADROOM].try_into().unwrap();
    assert_eq!(crate::stun::ChannelData::stream_frame_len(header), 12);
}

fn check_data_indication(framed: &[u8], peer: SocketAddr, payload: &[u8]) -> TransactionId {
    let m = Message::parse(framed).expect("Data indication parses");
    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
    assert_eq!(m.xor_peer_address().unwrap().unwrap(), peer);
    assert_eq!(m.data().unwrap(), payload);
    assert!(!m.has_integrity() && !m.has_fingerprint());
    assert_eq!(m.attributes().count(), 2);
    m.transaction_id()
}

#[test]
fn peer_datagram_with_permission_only_becomes_a_data_indication() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    let mut txids = Vec::new();
    for payload in [&b"hello"[..], b"", b"four", &[1; 333]] {
        let (out, buf) = h.peer_raw(id, peer_a(), payload).unwrap();
        assert_eq!(out.to, c.ft);
        assert_eq!(
            out.range.start,
            PEER_HEADROOM - 36,
            "header + XOR-PEER-ADDRESS (v4) + DATA header"
        );
        txids.push(check_data_indication(
            &buf[out.range.clone()],
            peer_a(),
            payload,
        ));
    }
    txids.dedup();
    assert_eq!(
        txids.len(),
        4,
        "each Data indication has its own transaction id"
    );
}

#[test]
fn ipv6_peer_datagram_becomes_a_data_indication() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, udp("[2001:db8:2::100]:40000"), &[family(2)]);
    c.permit(&mut h, &[peer_v6()]);
    let (out, buf) = h.peer_raw(id, peer_v6(), b"six").unwrap();
    assert_eq!(out.range.start, 0, "IPv6 framing uses the whole headroom");
    check_data_indication(&buf[out.range], peer_v6(), b"six");
}

#[test]
fn peer_datagram_without_permission_is_dropped() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    assert!(h.peer(id, peer_a(), b"x").is_none());
    c.permit(&mut h, &[peer_a()]);
    assert!(h.peer(id, peer_b(), b"x").is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoPermission], 2);
    assert_eq!(h.alloc(ft()).stats.to_client_packets, 0);
}

#[test]
fn peer_datagram_with_bad_layout_is_dropped() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.permit(&mut h, &[peer_a()]);
    let mut buf = vec![0u8; 100];
    // Not enough headroom, then not enough tailroom.
    assert!(h
        .server
        .handle_peer_datagram(h.now, id, peer_a(), &mut buf, 10..20)
        .is_none());
    assert!(h
        .server
        .handle_peer_datagram(h.now, id, peer_a(), &mut buf, 48..98)
        .is_none());
    assert_eq!(h.server.counters().dropped[DropReason::Malformed], 2);
    // The exact minimum works.
    assert!(h
        .server
        .handle_peer_datagram(h.now, id, peer_a(), &mut buf, 48..96)
        .is_some());
}

#[test]
fn peer_datagram_for_an_opening_allocation_is_dropped() {
    let mut h = Harness::new();
    h.auto_open = false;
    let mut c = Client::alice(ft());
    assert!(c
        .try_request(&mut h, Method::ALLOCATE, &[transport_udp()])
        .is_none());
    let id = h.pending_open[0];
    assert!(h.peer(id, peer_a(), b"x").is_none());
    assert_eq!(h.server.counters().dropped[DropReason::NoAllocation], 1);
}

#[test]
fn stats_are_reported_when_the_allocation_ends() {
    let mut h = Harness::new();
    let (mut c, id) = allocated(&mut h, ft(), &[]);
    c.bind(&mut h, 0x4000, peer_a());
    c.permit(&mut h, &[peer_b()]);
    assert!(c.send_indication(&mut h, peer_b(), b"12345").0.is_some());
    assert!(c.channel_data(&mut h, 0x4000, b"123").0.is_some());
    assert!(c.channel_data(&mut h, 0x4000, b"").0.is_some());
    // Dropped traffic is not counted.
    assert!(c.channel_data(&mut h, 0x4999, b"nope").0.is_none());
    assert!(h.peer(id, sa("198.51.100.99:1"), b"nope").is_none());
    assert!(h.peer(id, peer_a(), b"1234567").is_some());
    assert!(h.peer(id, peer_b(), b"12").is_some());
    let want = Relayed {
        to_peer_packets: 3,
        to_peer_bytes: 8,
        to_client_packets: 2,
        to_client_bytes: 9,
    };
    assert_eq!(h.server.allocation(id).unwrap().stats, want);
    c.refresh(&mut h, Some(0));
    assert_eq!(h.ended(), vec![(id, EndReason::Deleted, want, secs(0))]);
}
