//! ALTERNATE-SERVER (RFC 8489 §10) between two turnd binaries on loopback: server A holds at
//! most one allocation (`--total-quota 1`) and names server B in `--alternate-server`. A
//! second client's Allocate to A gets a 300 Try Alternate signed with its key and naming B;
//! the raw client follows it, with the same credentials and socket, and B allocates. A server
//! draining after SIGTERM (an allocation keeps it alive) redirects to B as well.

mod common;
mod raw;

use common::{TurnServer, PASSWORD, USER};
use raw::{assert_success, Client, ALLOCATE};
use std::net::SocketAddr;

const A_ALTERNATE_SERVER: u16 = 0x8023;

fn client(server: SocketAddr) -> Client {
    Client::new(server).with_user(USER, PASSWORD)
}

/// Allocates on `c.server`; on a 300, checks it is signed and names `expected`, then follows
/// it (at most one hop: a second 300 fails the test). Returns the relayed address.
fn allocate_following(c: &mut Client, expected: SocketAddr) -> SocketAddr {
    let r = c.allocate_with(&[raw::udp()]);
    assert_eq!(
        r.error_code().map(|(code, _)| code),
        Some(300),
        "{}",
        raw::describe(&r)
    );
    assert!(r.verify_integrity(&c.key()), "the 300 is not signed");
    let v = r.get(A_ALTERNATE_SERVER).expect("ALTERNATE-SERVER");
    assert_eq!(v[1], 1, "IPv4, the family of the request");
    let alt = SocketAddr::from(([v[4], v[5], v[6], v[7]], u16::from_be_bytes([v[2], v[3]])));
    assert_eq!(alt, expected);
    // RFC 8489 §10: the same request, same credentials, to the alternate (a new nonce).
    c.server = alt;
    c.nonce = None;
    let r = c.allocate_with(&[raw::udp()]);
    assert_success(&r, ALLOCATE);
    r.xor_address(raw::A_XOR_RELAYED_ADDRESS).expect("relayed")
}

#[test]
fn full_server_redirects_to_the_alternate() {
    let b = TurnServer::spawn_turnd(&[]);
    let b_arg = b.addr().to_string();
    let a = TurnServer::spawn_turnd(&["--total-quota", "1", "--alternate-server", &b_arg]);

    let mut first = client(a.addr());
    first.allocate();
    let mut second = client(a.addr());
    allocate_following(&mut second, b.addr());
    // A's own allocation is untouched.
    assert_success(&first.refresh(None), raw::REFRESH);
}

#[test]
fn draining_server_redirects_to_the_alternate() {
    let b = TurnServer::spawn_turnd(&[]);
    let b_arg = b.addr().to_string();
    let a = TurnServer::spawn_turnd(&["--alternate-server", &b_arg]);
    // An allocation keeps A running while it drains.
    let mut keeper = client(a.addr());
    keeper.allocate();
    let pid = a.pid() as libc::pid_t;
    // SAFETY: kill(2) on our own child, not reaped while `a` holds its handle.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The signal is handled on another thread: until it is, Allocates still succeed on A.
    // Bounded: at most 100 tries, 20 ms apart.
    for _ in 0..100 {
        let mut c = client(a.addr());
        let r = c.allocate_with(&[raw::udp()]);
        if r.error_code().map(|(code, _)| code) == Some(300) {
            let mut c = client(a.addr());
            allocate_following(&mut c, b.addr());
            assert_success(&keeper.refresh(None), raw::REFRESH);
            return;
        }
        assert_success(&r, ALLOCATE);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("A never started redirecting after SIGTERM");
}

/// One `alternate_servers` list for every node is the usual deployment, so a node finds itself
/// in it. Behind a wildcard listener a UDP request's server address is the wildcard, not the
/// address the client used: the node still recognises its entry (an address of its own
/// interfaces, on its port) and never redirects a client back to itself.
#[test]
fn a_wildcard_node_never_redirects_to_itself() {
    let b = TurnServer::spawn_turnd(&[]);
    let port = common::free_udp_port();
    let own = format!("127.0.0.1:{port}");
    let _a = TurnServer::spawn_turnd(&[
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--total-quota",
        "1",
        "--alternate-server",
        &own,
        "--alternate-server",
        &b.addr().to_string(),
    ]);
    let a_wildcard: SocketAddr = own.parse().unwrap();
    let mut first = client(a_wildcard);
    first.allocate();
    // Two same-family entries, one picked at random per answer: 16 answers all naming B.
    for _ in 0..16 {
        let mut c = client(a_wildcard);
        allocate_following(&mut c, b.addr());
    }
}
