//! The values a client sees and must not guess — relay ports, RESERVATION-TOKENs, transaction
//! ids of Data and ConnectionAttempt indications, CONNECTION-IDs — come from the worker's
//! CSPRNG (`StdRng`), seeded by the shell. What matters, and what is checked: the generator is
//! a CSPRNG (so earlier outputs do not give away later ones, as xorshift's did), its stream is
//! the seed's (distinct seeds, distinct values; a fixed seed, the same run every time), and no
//! value repeats within a stream.

use super::tcp_relay::{connect, tcp_allocation};
use super::*;
use rand::rngs::StdRng;
use std::collections::HashSet;

/// What one core with `seed` hands out, in a fixed sequence of requests.
#[derive(Debug, PartialEq, Eq)]
struct Draws {
    port: u16,
    token: [u8; 8],
    data_txids: Vec<[u8; 12]>,
    connection_id: u32,
    attempt_txid: [u8; 12],
}

fn draws(seed: u64) -> Draws {
    let shared = Setup {
        ports: (20000, 60000),
        ..Setup::default()
    }
    .shared();
    let mut h = Harness::from_shared(shared, seed);
    let mut c = Client::alice(udp("192.0.2.100:40000"));
    let resp = c.allocate_with(&mut h, &[even_port(true)]);
    resp.assert_success(Method::ALLOCATE, &c.key);
    c.permit(&mut h, &[peer_a()]);
    let id = h.id_of(c.ft).unwrap();
    let data_txids = (0..200)
        .map(|_| {
            let (_, framed) = h.peer(id, peer_a(), b"media").expect("a Data indication");
            Resp(framed).txid().0
        })
        .collect();
    let (mut t, tcp_id) = tcp_allocation(&mut h);
    let connection_id = connect(&mut h, &mut t, tcp_id, peer_a());
    let inbound = SocketAddr::new(peer_a().ip(), 7000);
    h.server
        .handle_peer_inbound(h.now, tcp_id, inbound)
        .expect("a permitted peer connects in");
    h.drain();
    let attempt = h.take_one(t.ft);
    assert_eq!(attempt.msg().method(), Method::CONNECTION_ATTEMPT);
    Draws {
        port: resp.relayed().port(),
        token: resp.token(),
        data_txids,
        connection_id,
        attempt_txid: attempt.txid().0,
    }
}

#[test]
fn the_generator_is_a_csprng_seeded_by_the_shell() {
    let h = Harness::new();
    // StdRng: ChaCha12 in rand 0.8, a CSPRNG. This fails to compile if it becomes anything
    // else.
    let _: &StdRng = &h.server.rng;
}

#[test]
fn a_fixed_seed_gives_the_same_values() {
    assert_eq!(draws(1), draws(1));
}

#[test]
fn distinct_seeds_give_distinct_values() {
    let (a, b) = (draws(1), draws(2));
    assert_ne!(a.port, b.port);
    assert_ne!(a.token, b.token);
    assert_ne!(a.connection_id, b.connection_id);
    assert_ne!(a.attempt_txid, b.attempt_txid);
    let a_txids: HashSet<_> = a.data_txids.iter().collect();
    assert!(b.data_txids.iter().all(|t| !a_txids.contains(t)));
}

#[test]
fn no_transaction_id_repeats_within_a_stream() {
    let d = draws(3);
    let mut seen: HashSet<[u8; 12]> = d.data_txids.iter().copied().collect();
    assert_eq!(seen.len(), d.data_txids.len());
    assert!(seen.insert(d.attempt_txid));
}
