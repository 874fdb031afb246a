//! Amplification (issue #8): for every request a client can send without credentials, bytes
//! out against bytes in, on the wire.
//!
//! The policy (docs/security.md, "Amplification"): a Binding success is answered whatever its size — its
//! XOR-MAPPED-ADDRESS is the service, a fixed 12 (IPv4) or 24 (IPv6) bytes over the request and
//! nothing else (no SOFTWARE); with `amplification = "refuse"`, an error response to an
//! unauthenticated request (401, 438, 400, 420) that would be larger than the request is not
//! sent at all, so out ≤ in holds for every one of them. The default, `allow`, answers them,
//! because real clients open with Allocates of 28–60 bytes (turnutils, aiortc, the `turn`
//! crate, captured in `fuzz/corpus`), smaller than any 401 carrying REALM and NONCE.

mod raw;

use raw::*;
use turnd::config::ConfigArgs;

/// An optional attribute that makes a request at least `size` bytes long (SOFTWARE, which a
/// server ignores), the way a client that wants answers from a refusing server pads.
fn padding(size: usize) -> Attr {
    Attr::Raw(A_SOFTWARE, vec![b'p'; size])
}

/// Every kind of unauthenticated request, with the error it must get when answered.
/// (what, request bytes, (method, error code) it must get when answered).
type Case = (&'static str, Vec<u8>, Option<(u16, u16)>);

fn cases(c: &mut Client, pad: usize) -> Vec<Case> {
    let p = || padding(pad);
    let mut v = Vec::new();
    let pads: Vec<Attr> = if pad > 0 { vec![p()] } else { vec![] };
    let with = |base: &[Attr]| -> Vec<Attr> { base.iter().cloned().chain(pads.clone()).collect() };
    for (name, method, attrs) in [
        ("Allocate without credentials", ALLOCATE, with(&[udp()])),
        ("Refresh without credentials", REFRESH, with(&[])),
        (
            "CreatePermission without credentials",
            CREATE_PERMISSION,
            with(&[peer("127.0.0.1:9".parse().unwrap())]),
        ),
        (
            "ChannelBind without credentials",
            CHANNEL_BIND,
            with(&[channel_number(0x4000), peer("127.0.0.1:9".parse().unwrap())]),
        ),
    ] {
        v.push((
            name,
            encode(msg_type(method, REQUEST), new_txid(), &attrs, None, false),
            Some((method, 401)),
        ));
    }
    // A nonce we never issued → 438.
    c.ensure_nonce();
    let mut auth = c.auth();
    auth.nonce = b"0000000000000000ffffffffffffffffffffffffffffffff".to_vec();
    v.push((
        "Allocate with a bad nonce",
        encode(
            msg_type(ALLOCATE, REQUEST),
            new_txid(),
            &with(&[udp()]),
            Some(&auth),
            false,
        ),
        Some((ALLOCATE, 438)),
    ));
    v.push((
        "Binding with an unknown required attribute",
        encode(
            msg_type(BINDING, REQUEST),
            new_txid(),
            &with(&[Attr::Raw(0x0031, vec![0; 4])]),
            None,
            false,
        ),
        Some((BINDING, 420)),
    ));
    v
}

fn refusing() -> TestServer {
    TestServer::start(ConfigArgs {
        amplification: Some("refuse".into()),
        ..base_args()
    })
}

#[test]
fn binding_answers_add_only_the_mapped_address() {
    for server in [TestServer::start(base_args()), refusing()] {
        let c = server.client();
        for fingerprint in [false, true] {
            let req = encode(
                msg_type(BINDING, REQUEST),
                new_txid(),
                &[],
                None,
                fingerprint,
            );
            c.send(&req);
            let resp = c.recv().expect("Binding answered");
            let p = Parsed::parse(&resp).unwrap();
            assert_success(&p, BINDING);
            // XOR-MAPPED-ADDRESS (IPv4): 4 + 8 bytes; FINGERPRINT mirrored; nothing else.
            assert_eq!(
                resp.len(),
                req.len() + 12,
                "Binding (fingerprint {fingerprint}): {} bytes in, {} out",
                req.len(),
                resp.len()
            );
        }
    }
}

#[test]
fn refusing_server_never_answers_with_more_bytes_than_it_got() {
    let server = refusing();
    let mut c = server.client();
    // A bare Refresh gets nothing; padded, it gets its 401 (and the NONCE the 438 case needs).
    c.send(&encode(
        msg_type(REFRESH, REQUEST),
        new_txid(),
        &[],
        None,
        false,
    ));
    c.expect_silence("a bare Refresh on a refusing server");
    let r = c.request_plain(REFRESH, &[padding(200)]);
    assert_error(&r, REFRESH, 401);
    c.realm = r.realm().unwrap();
    c.nonce = r.nonce();
    // Without padding most error answers would be larger than their request, and are
    // dropped; any that does come back (a 438 to a signed Allocate, which carries more than
    // its answer) is no larger than the request.
    for (what, req, _) in cases(&mut c, 0) {
        c.send(&req);
        if let Some(resp) = c.recv_for(QUIET) {
            assert!(
                resp.len() <= req.len(),
                "{what}: {} bytes in, {} bytes out",
                req.len(),
                resp.len()
            );
        }
    }
    // Padded to 200 bytes, every request is answered as the RFC says, and no larger.
    for (what, req, expect) in cases(&mut c, 200) {
        let (method, code) = expect.unwrap();
        let resp = c.transact(&req);
        assert_error(&resp, method, code);
        assert!(
            resp.raw.len() <= req.len(),
            "{what}: {} bytes in, {} bytes out",
            req.len(),
            resp.raw.len()
        );
    }
    // Real use still works on a refusing server once the first request is large enough.
    let mut c = server.client();
    let r = c.request_plain(REFRESH, &[padding(200)]);
    assert_error(&r, REFRESH, 401);
    c.realm = r.realm().unwrap();
    c.nonce = r.nonce();
    c.allocate();
}

#[test]
fn default_server_answers_small_first_requests() {
    // The default (`allow`) answers a bare 28-byte Allocate with its 401, as every real
    // client needs; the figures are docs/security.md's.
    let server = TestServer::start(base_args());
    let mut c = server.client();
    for (what, req, expect) in cases(&mut c, 0) {
        let (method, code) = expect.unwrap();
        let resp = c.transact(&req);
        assert_error(&resp, method, code);
        eprintln!(
            "{what}: {} bytes in, {} bytes out",
            req.len(),
            resp.raw.len()
        );
    }
}
