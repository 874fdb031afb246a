//! RFC 8489 long-term credentials end to end over UDP, against a running server: SHA-256 with
//! MESSAGE-INTEGRITY-SHA256 and USERHASH (Allocate, CreatePermission, ChannelBind, Send,
//! data relayed both ways, Refresh), a legacy MD5 client on the same server, and a bid-down
//! attempt refused.

mod raw;
#[path = "raw/rfc8489.rs"]
mod raw8489;

use raw::*;
use raw8489::*;
use turnd::config::ConfigArgs;

fn server(userhash: bool) -> TestServer {
    TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.1/32".into()],
        userhash: userhash.then(|| "true".to_string()),
        ..base_args()
    })
}

/// Allocate, permission, Send indication out, Data indication back, ChannelData both ways,
/// Refresh to 0 — every response signed with MESSAGE-INTEGRITY-SHA256.
fn relay_round_trip(c: &mut ModernClient) {
    let relay = c.allocate();
    let peer = Peer::v4();
    c.permit(peer.addr());
    c.inner.send_indication(peer.addr(), b"sha-256 out");
    let (got, from) = peer.recv().expect("peer gets the Send payload");
    assert_eq!((got.as_slice(), from), (&b"sha-256 out"[..], relay));
    peer.send_to(relay, b"sha-256 back");
    let (from, payload) = c.inner.recv_data_indication();
    assert_eq!(
        (from, payload.as_slice()),
        (peer.addr(), &b"sha-256 back"[..])
    );

    c.bind_channel(0x4000, peer.addr());
    c.inner.send_channel_data(0x4000, b"channel out", true);
    let (got, _) = peer.recv().expect("peer gets the ChannelData payload");
    assert_eq!(got, b"channel out");
    peer.send_to(relay, b"channel back");
    assert_eq!(
        c.inner.recv_channel_data(),
        (0x4000, b"channel back".to_vec())
    );

    let r = c.refresh(0);
    c.assert_success(&r, REFRESH);
}

#[test]
fn sha256_handshake_relays_both_ways() {
    let s = server(false);
    let mut c = ModernClient::new(s.client(), ALG_SHA256);
    let r = c.challenge();
    // The 401 of an RFC 8489 server: the nonce cookie with "Password algorithms", and the
    // list SHA-256, MD5.
    let nonce = r.nonce().unwrap();
    assert_eq!(cookie_features(&nonce), Some([0x80, 0, 0]));
    assert_eq!(
        r.get(A_PASSWORD_ALGORITHMS),
        Some(&[0u8, 2, 0, 0, 0, 1, 0, 0][..])
    );
    relay_round_trip(&mut c);
}

#[test]
fn userhash_handshake_relays_both_ways() {
    let s = server(true);
    let mut c = ModernClient::new(s.client(), ALG_SHA256);
    let r = c.challenge();
    assert_eq!(cookie_features(&r.nonce().unwrap()), Some([0xC0, 0, 0]));
    c.hashed = true;
    relay_round_trip(&mut c);
}

#[test]
fn legacy_md5_client_on_the_same_server() {
    let s = server(true);
    let mut modern = ModernClient::new(s.client(), ALG_SHA256);
    modern.hashed = true;
    modern.allocate();

    // An RFC 5389 client: the nonce is opaque to it, PASSWORD-ALGORITHMS is ignored, it signs
    // with MESSAGE-INTEGRITY (MD5 key) and gets MESSAGE-INTEGRITY back.
    let mut legacy = s.client().with_user(BOB.0, BOB.1);
    let r = legacy.allocate_with(&[udp()]);
    assert_success(&r, ALLOCATE);
    assert!(r.verify_integrity(&legacy.key()));
    assert!(!r.has(A_MESSAGE_INTEGRITY_SHA256));
    let relay = r.xor_address(A_XOR_RELAYED_ADDRESS).unwrap();
    let peer = Peer::v4();
    legacy.permit(peer.addr());
    legacy.send_indication(peer.addr(), b"legacy");
    let (got, from) = peer.recv().expect("legacy payload relayed");
    assert_eq!((got.as_slice(), from), (&b"legacy"[..], relay));

    // An RFC 8489 client choosing MD5 from the list is fine too (signed with SHA-256 MAC).
    let mut md5 = ModernClient::new(s.client().with_user(BOB.0, BOB.1), ALG_MD5);
    md5.allocate();
}

#[test]
fn bid_down_is_refused() {
    let s = server(false);
    let mut c = ModernClient::new(s.client(), ALG_MD5);
    c.challenge();
    // An on-path attacker removed SHA-256 from the 401's PASSWORD-ALGORITHMS; the client
    // echoes the list it saw and picks MD5. The server compares with what it sent: 400.
    let forged = [0u8, 1, 0, 0];
    let r = c
        .inner
        .transact(&c.signed_with(ALLOCATE, &[udp()], Some(&forged), Some(ALG_MD5)));
    assert_error(&r, ALLOCATE, 400);
    assert!(!r.has(A_NONCE) && !r.has(A_MESSAGE_INTEGRITY_SHA256));
    // PASSWORD-ALGORITHM without the list (the attacker removed the list): 400 as well.
    let r = c
        .inner
        .transact(&c.signed_with(ALLOCATE, &[udp()], None, Some(ALG_SHA256)));
    assert_error(&r, ALLOCATE, 400);
    // The attacker strips the cookie's feature bits instead: the nonce is no longer ours.
    let mut nonce = c.inner.nonce.clone().unwrap();
    nonce[9..13].copy_from_slice(b"AAAA");
    c.inner.nonce = Some(nonce);
    let r = c.inner.transact(&c.signed(ALLOCATE, &[udp()]));
    assert_error(&r, ALLOCATE, 438);
    // With the honest 438's nonce and list, the same client gets its allocation.
    c.algorithms = r.get(A_PASSWORD_ALGORITHMS).map(<[u8]>::to_vec);
    c.inner.nonce = r.nonce();
    c.algorithm = ALG_SHA256;
    c.allocate();
}
