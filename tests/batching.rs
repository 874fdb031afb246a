//! Batched UDP I/O end to end (issue 5): bursts sent faster than the server wakes up, which it
//! reads with `recvmmsg` and relays with `sendmmsg` (and GSO for the equal-sized runs). What
//! is checked here is the outcome: every datagram arrives, intact and in order, in both
//! directions, with the GSO path on (where the kernel has it) and with the fallback forced by
//! the hidden `TURND_UDP_GSO=off`. How a batch is cut into GSO segments and messages is
//! checked without sockets in `src/shell/udp/tests.rs`.

mod raw;

use raw::*;

/// Datagrams per burst: more than one `recvmmsg` takes (64), small enough for the default
/// socket buffers of loopback.
const BURST: usize = 100;

/// A payload carrying its index, so order and loss show.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; len];
    p[..2].copy_from_slice(&(i as u16).to_be_bytes());
    p
}

fn index_of(p: &[u8]) -> usize {
    u16::from_be_bytes([p[0], p[1]]) as usize
}

/// A burst of ChannelData client → peer and of datagrams peer → client, equal sizes except
/// every tenth (which ends a GSO run), all arriving in order.
fn bursts_arrive_whole_and_in_order(what: &str) {
    let server = TestServer::allowing(&["127.0.0.1/32"]);
    let peer = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate();
    c.bind_channel(0x4000, peer.addr());
    let size = |i: usize| if i % 10 == 9 { 100 } else { 160 };

    for i in 0..BURST {
        c.send_channel_data(0x4000, &numbered(i, size(i)), false);
    }
    for i in 0..BURST {
        let (got, from) = peer
            .recv()
            .unwrap_or_else(|| panic!("{what}: peer got {i} of {BURST} ChannelData"));
        assert_eq!(from, relay);
        assert_eq!(index_of(&got), i, "{what}: client→peer in order");
        assert_eq!(got, numbered(i, size(i)), "{what}: client→peer intact");
    }

    for i in 0..BURST {
        peer.send_to(relay, &numbered(i, size(i)));
    }
    for i in 0..BURST {
        let bytes = c
            .recv()
            .unwrap_or_else(|| panic!("{what}: client got {i} of {BURST} ChannelData"));
        let (channel, got) = parse_channel_data(&bytes);
        assert_eq!(channel, 0x4000);
        assert_eq!(index_of(&got), i, "{what}: peer→client in order");
        assert_eq!(got, numbered(i, size(i)), "{what}: peer→client intact");
    }

    // Send/Data too: each Data indication carries its own transaction id, but the sizes are
    // equal, so they are GSO-able as well.
    let other = Peer::v4();
    c.permit(other.addr());
    for i in 0..BURST {
        other.send_to(relay, &numbered(i, 160));
    }
    for i in 0..BURST {
        let (from, got) = c.recv_data_indication();
        assert_eq!(from, other.addr());
        assert_eq!(index_of(&got), i, "{what}: Data indications in order");
    }
}

// One test, run twice in sequence: the GSO switch is an environment variable read at start-up,
// and tests of one binary run in parallel threads of one process.
#[test]
fn bursts_relay_whole_and_in_order_with_and_without_gso() {
    bursts_arrive_whole_and_in_order("with GSO where the kernel has it");
    std::env::set_var("TURND_UDP_GSO", "off");
    bursts_arrive_whole_and_in_order("GSO off (fallback)");
    std::env::remove_var("TURND_UDP_GSO");
}
