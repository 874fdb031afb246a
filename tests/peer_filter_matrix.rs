//! The peer filter against a running server: every spelling of a special-purpose address that
//! has let relays reach what they should not (CVE-2020-26262: 0.0.0.0, ::, ::1; CVE-2026-27624:
//! IPv6 forms embedding a private IPv4 address) is refused with 403 on CreatePermission and
//! ChannelBind by default, and accepted once the matching `--allow-peer` entry is configured.
//!
//! No datagram is ever sent to a non-loopback peer: denied and allowed non-loopback addresses are
//! only named in CreatePermission/ChannelBind, which send nothing to the peer. Send indications
//! go only to loopback forms, where a peer socket on this machine listens.

mod raw;

use raw::*;
use std::net::{IpAddr, SocketAddr};
use turnd::config::ConfigArgs;

/// One address form: what it is, the address, and the `--allow-peer` entry that unlocks it.
struct Form {
    label: &'static str,
    addr: &'static str,
    allow: &'static str,
}

const fn form(label: &'static str, addr: &'static str, allow: &'static str) -> Form {
    Form { label, addr, allow }
}

const V4_FORMS: &[Form] = &[
    form("private 10/8", "10.0.0.1", "10.0.0.1/32"),
    form("loopback", "127.0.0.1", "127.0.0.1/32"),
    form("cloud metadata", "169.254.169.254", "169.254.169.254/32"),
    form("CGNAT 100.64/10", "100.64.0.1", "100.64.0.1/32"),
    form("private 192.168/16", "192.168.1.1", "192.168.1.1/32"),
    form("private 172.16/12", "172.16.0.1", "172.16.0.1/32"),
    form("unspecified (CVE-2020-26262)", "0.0.0.0", "0.0.0.0/32"),
    form("limited broadcast", "255.255.255.255", "255.255.255.255/32"),
    form("multicast", "224.0.0.1", "224.0.0.1/32"),
];

/// IPv6 forms. Those embedding an IPv4 address are unlocked by the IPv4 entry: the embedded
/// address is checked as IPv4 (CVE-2026-27624).
const V6_FORMS: &[Form] = &[
    form("loopback", "::1", "::1/128"),
    form("unspecified (CVE-2020-26262)", "::", "::/128"),
    form("link-local", "fe80::1", "fe80::1/128"),
    form("unique local", "fc00::1", "fc00::1/128"),
    form("multicast", "ff02::1", "ff02::1/128"),
    form("IPv4-mapped loopback", "::ffff:127.0.0.1", "127.0.0.1/32"),
    form("IPv4-mapped private", "::ffff:10.0.0.1", "10.0.0.1/32"),
    form("IPv4-compatible loopback", "::127.0.0.1", "127.0.0.1/32"),
    form("NAT64 well-known prefix", "64:ff9b::7f00:1", "127.0.0.1/32"),
    // Under the local-use prefix every RFC 6052 reading (/48, /56, /64, /96) is checked: this
    // address reads 10.10.10.10 at all four, so the one entry opens it.
    form(
        "NAT64 local-use prefix, every reading",
        "64:ff9b:1:a0a:a:a0a:a0a:a0a",
        "10.10.10.10/32",
    ),
    // (The /96 spelling 64:ff9b:1::a00:1 also reads 0.0.0.0 at /48: see
    // `local_use_nat64_is_opened_only_when_every_reading_is`.)
    form("6to4 of 127.0.0.1", "2002:7f00:1::", "127.0.0.1/32"),
    // Teredo: server 127.0.0.1, client 1.2.3.4 (stored inverted in the last 32 bits).
    form(
        "Teredo server 127.0.0.1",
        "2001:0:7f00:1::fefd:fcfb",
        "127.0.0.1/32",
    ),
    // Teredo: server 1.2.3.4, client 127.0.0.1 (inverted: 80ff:fffe).
    form(
        "Teredo client 127.0.0.1",
        "2001:0:102:304::80ff:fffe",
        "127.0.0.1/32",
    ),
];

/// Port used for peers that are only named, never sent to.
const NAMED_PORT: u16 = 3478;

fn addr_of(f: &Form) -> SocketAddr {
    SocketAddr::new(f.addr.parse::<IpAddr>().unwrap(), NAMED_PORT)
}

/// CreatePermission and ChannelBind for `peer`; returns a line per unexpected answer.
/// `expect` is the error code wanted, or `None` for success.
fn probe(
    c: &mut Client,
    label: &str,
    peer: SocketAddr,
    channel: u16,
    expect: Option<u16>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let answers = [
        ("CreatePermission", c.create_permission(&[peer])),
        ("ChannelBind", c.channel_bind(channel, peer)),
    ];
    for (what, r) in answers {
        let got = match r.class() {
            SUCCESS => None,
            _ => Some(r.error_code().map_or(0, |(code, _)| code)),
        };
        if got != expect {
            let show = |v: Option<u16>| v.map_or("success".to_string(), |c| c.to_string());
            problems.push(format!(
                "{label} {peer}: {what} answered {}, expected {}",
                show(got),
                show(expect)
            ));
        }
        if !r.verify_integrity(&c.key()) {
            problems.push(format!("{label} {peer}: {what} answer not signed"));
        }
    }
    problems
}

#[track_caller]
fn assert_no_problems(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} unexpected answers:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

fn v4_server(allow: &[&str]) -> TestServer {
    TestServer::allowing(allow)
}

fn v6_server(allow: &[&str]) -> TestServer {
    TestServer::start(ConfigArgs {
        allow_peer: allow.iter().map(|s| s.to_string()).collect(),
        ..base_args_v6()
    })
}

// ---------------------------------------------------------------------------------------------
// Denied by default, allowed by the matching entry
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_forms_denied_by_default() {
    let server = v4_server(&[]);
    let mut c = server.client();
    c.allocate();
    let mut problems = Vec::new();
    for f in V4_FORMS {
        problems.extend(probe(&mut c, f.label, addr_of(f), 0x4000, Some(403)));
    }
    assert_no_problems(problems);
}

#[test]
fn ipv4_forms_allowed_with_matching_allow_peer() {
    let mut problems = Vec::new();
    for f in V4_FORMS {
        let server = v4_server(&[f.allow]);
        let mut c = server.client();
        c.allocate();
        problems.extend(probe(&mut c, f.label, addr_of(f), 0x4000, None));
        // The entry unlocks this address only.
        for (i, other) in V4_FORMS.iter().enumerate() {
            if other.allow != f.allow {
                let label = format!("{} (with --allow-peer {})", other.label, f.allow);
                let ch = 0x4001 + i as u16;
                problems.extend(probe(&mut c, &label, addr_of(other), ch, Some(403)));
            }
        }
    }
    assert_no_problems(problems);
}

#[test]
fn ipv6_forms_denied_by_default() {
    let server = v6_server(&[]);
    let mut c = server.client();
    c.allocate_v6();
    let mut problems = Vec::new();
    for f in V6_FORMS {
        problems.extend(probe(&mut c, f.label, addr_of(f), 0x4000, Some(403)));
    }
    assert_no_problems(problems);
}

#[test]
fn ipv6_forms_allowed_with_matching_allow_peer() {
    let mut problems = Vec::new();
    for f in V6_FORMS {
        let server = v6_server(&[f.allow]);
        let mut c = server.client();
        c.allocate_v6();
        problems.extend(probe(&mut c, f.label, addr_of(f), 0x4000, None));
        for (i, other) in V6_FORMS.iter().enumerate() {
            if other.allow != f.allow {
                let label = format!("{} (with --allow-peer {})", other.label, f.allow);
                let ch = 0x4001 + i as u16;
                problems.extend(probe(&mut c, &label, addr_of(other), ch, Some(403)));
            }
        }
    }
    assert_no_problems(problems);
}

/// Allowing only the IPv6 spelling does not unlock the IPv4 address it embeds.
#[test]
fn ipv6_allow_entry_does_not_unlock_embedded_ipv4() {
    let mut problems = Vec::new();
    for f in V6_FORMS.iter().filter(|f| !f.allow.contains(':')) {
        let v6_entry = format!("{}/128", f.addr);
        let server = v6_server(&[&v6_entry]);
        let mut c = server.client();
        c.allocate_v6();
        let label = format!("{} (with only --allow-peer {v6_entry})", f.label);
        problems.extend(probe(&mut c, &label, addr_of(f), 0x4000, Some(403)));
    }
    assert_no_problems(problems);
}

/// `--deny-peer` adds ranges and beats a shorter `--allow-peer`, in every form.
#[test]
fn deny_peer_adds_ranges_and_overrides_shorter_allow() {
    let server = TestServer::start(ConfigArgs {
        allow_peer: vec!["127.0.0.0/8".into()],
        deny_peer: vec!["127.0.0.1/32".into(), "1.2.3.0/24".into()],
        ..base_args()
    });
    let mut c = server.client();
    c.allocate();
    let mut problems = Vec::new();
    let cases = [
        ("127.0.0.1", Some(403)),
        ("127.0.0.2", None),
        ("1.2.3.4", Some(403)),
        ("1.2.4.4", None),
    ];
    for (i, (ip, expect)) in cases.into_iter().enumerate() {
        let peer = SocketAddr::new(ip.parse().unwrap(), NAMED_PORT);
        problems.extend(probe(&mut c, ip, peer, 0x4000 + i as u16, expect));
    }

    let server = TestServer::start(ConfigArgs {
        deny_peer: vec!["1.2.3.0/24".into()],
        ..base_args_v6()
    });
    let mut c = server.client();
    c.allocate_v6();
    let cases = [
        ("::ffff:1.2.3.4", Some(403)),
        ("64:ff9b::102:304", Some(403)),
        ("2002:102:304::1", Some(403)),
        ("2001:0:102:304::f7f7:f7f7", Some(403)),
        ("::ffff:1.2.4.4", None),
        ("2002:102:404::1", None),
    ];
    for (i, (ip, expect)) in cases.into_iter().enumerate() {
        let peer = SocketAddr::new(ip.parse().unwrap(), NAMED_PORT);
        problems.extend(probe(&mut c, ip, peer, 0x4000 + i as u16, expect));
    }
    assert_no_problems(problems);
}

// ---------------------------------------------------------------------------------------------
// Data to denied peers is dropped
// ---------------------------------------------------------------------------------------------

#[test]
fn send_to_denied_ipv4_loopback_forms_is_dropped() {
    let server = v4_server(&[]);
    let peer = Peer::v4();
    let port = peer.addr().port();
    let mut c = server.client();
    let relay = c.allocate();

    for ip in ["127.0.0.1", "0.0.0.0"] {
        let target = SocketAddr::new(ip.parse().unwrap(), port);
        let r = c.create_permission(&[target]);
        assert_error(&r, CREATE_PERMISSION, 403);
        let r = c.channel_bind(0x4000, target);
        assert_error(&r, CHANNEL_BIND, 403);
        c.send_indication(target, b"must not arrive");
        c.send_channel_data(0x4000, b"must not arrive", false);
        peer.expect_silence(&format!(
            "a Send indication and ChannelData to denied {target}"
        ));
    }
    // Nor does the denied peer reach the client.
    peer.send_to(relay, b"must not arrive");
    c.expect_silence("data from a denied loopback peer");

    // Control: with the peer allowed, the same Send indication arrives.
    let server = v4_server(&["127.0.0.1/32"]);
    let mut c = server.client();
    let relay = c.allocate();
    c.permit(peer.addr());
    c.send_indication(peer.addr(), b"allowed");
    assert_eq!(peer.recv(), Some((b"allowed".to_vec(), relay)));
}

#[test]
fn send_to_denied_ipv6_loopback_forms_is_dropped() {
    let server = v6_server(&[]);
    let peer6 = Peer::v6();
    let peer4 = Peer::v4();
    let mut c = server.client();
    let relay = c.allocate_v6();

    let targets = [
        SocketAddr::new("::1".parse().unwrap(), peer6.addr().port()),
        SocketAddr::new("::".parse().unwrap(), peer6.addr().port()),
        SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), peer4.addr().port()),
    ];
    for target in targets {
        let r = c.create_permission(&[target]);
        assert_error(&r, CREATE_PERMISSION, 403);
        let r = c.channel_bind(0x4000, target);
        assert_error(&r, CHANNEL_BIND, 403);
        c.send_indication(target, b"must not arrive");
        c.send_channel_data(0x4000, b"must not arrive", false);
        let what = format!("a Send indication and ChannelData to denied {target}");
        peer6.expect_silence(&what);
        peer4.expect_silence(&what);
    }
    peer6.send_to(relay, b"must not arrive");
    c.expect_silence("data from a denied IPv6 loopback peer");

    // Control: with ::1 allowed, the same Send indication arrives.
    let server = v6_server(&["::1/128"]);
    let mut c = server.client();
    let relay = c.allocate_v6();
    c.permit(peer6.addr());
    c.send_indication(peer6.addr(), b"allowed");
    assert_eq!(peer6.recv(), Some((b"allowed".to_vec(), relay)));
    peer6.send_to(relay, b"back");
    assert_eq!(c.recv_data_indication(), (peer6.addr(), b"back".to_vec()));
}

/// The IPv6 relay works end to end, and families are kept apart: an IPv4 Allocate on an
/// IPv6-only server is 440, an IPv4 peer on an IPv6 allocation is 443.
#[test]
fn ipv6_relay_families() {
    let server = v6_server(&[]);
    let mut c = server.client();
    let r = c.allocate_with(&[udp()]);
    assert_error(&r, ALLOCATE, 440);
    let r = c.allocate_with(&[udp(), address_family(FAMILY_V4)]);
    assert_error(&r, ALLOCATE, 440);
    let relay = c.allocate_v6();
    assert_eq!(relay.ip(), "::1".parse::<IpAddr>().unwrap());
    let r = c.create_permission(&["1.2.3.4:3478".parse().unwrap()]);
    assert_error(&r, CREATE_PERMISSION, 443);
    let r = c.channel_bind(0x4000, "1.2.3.4:3478".parse().unwrap());
    assert_error(&r, CHANNEL_BIND, 443);
}

/// Under `64:ff9b:1::/48` the relay cannot know the NAT64 prefix length, so every RFC 6052
/// reading must be allowed: the /96 spelling of 10.0.0.1 reads 0.0.0.0 at /48 and stays shut
/// when only 10.0.0.1 is allowed.
#[test]
fn local_use_nat64_is_opened_only_when_every_reading_is() {
    let server = v6_server(&["10.0.0.1/32"]);
    let mut c = server.client();
    c.allocate_v6();
    let mut problems = Vec::new();
    for (i, (addr, expect)) in [
        ("64:ff9b:1::a00:1", Some(403)),
        // A /48 gateway's spelling of 10.0.0.1: its /56, /64, /96 readings are 0.x and 1.0.0.0.
        ("64:ff9b:1:a00:0:100::", Some(403)),
        // The well-known prefix has one reading.
        ("64:ff9b::a00:1", None),
        // Every reading public (8.8.8.8): open without any entry.
        ("64:ff9b:1:808:8:808:808:808", None),
    ]
    .into_iter()
    .enumerate()
    {
        let peer = SocketAddr::new(addr.parse().unwrap(), NAMED_PORT);
        problems.extend(probe(&mut c, addr, peer, 0x4000 + i as u16, expect));
    }
    assert_no_problems(problems);
}

/// An allow entry reopens a built-in range only when it is at least as specific: a /0 written
/// to "let the internet through" opens none of them, nor the relay's own addresses.
#[test]
fn broad_allow_entries_open_nothing_built_in() {
    let server = v4_server(&["0.0.0.0/0", "169.0.0.0/8"]);
    let mut c = server.client();
    c.allocate();
    let mut problems = all_refused(&mut c, V4_FORMS, "0.0.0.0/0");
    let server = v6_server(&["::/0", "0.0.0.0/0"]);
    let mut c = server.client();
    c.allocate_v6();
    problems.extend(all_refused(&mut c, V6_FORMS, "::/0"));
    assert_no_problems(problems);
}

/// [`probe`] for every one of `forms` through `c`'s allocation, each on a channel of its own,
/// expecting 403 although the server allows `entry`.
fn all_refused(c: &mut Client, forms: &[Form], entry: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, f) in forms.iter().enumerate() {
        let label = format!("{} (with {entry})", f.label);
        let channel = 0x4000 + i as u16;
        problems.extend(probe(c, &label, addr_of(f), channel, Some(403)));
    }
    problems
}
