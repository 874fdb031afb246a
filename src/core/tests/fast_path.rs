//! The kernel fast path's entries (docs/xdp.md): installed when a channel can be relayed in
//! the kernel, moved by every refresh, and removed at every end of the channel's use — channel
//! expiry, permission expiry, the allocation deleted, expired, closed by the operator or at
//! shutdown, one family of a dual allocation deleted, a peer-filter reload. Never for
//! bandwidth-capped allocations or stream clients.
//!
//! The harness keeps a model of the kernel's maps from the outputs and checks after every
//! drain that each live entry relays exactly what the core would (`Harness::check_kernel`).

use super::*;
use crate::core::channel::CHANNEL_LIFETIME;
use crate::core::fast_path::{ChannelKey, FastPath};

fn ft() -> FiveTuple {
    udp("192.0.2.100:40000")
}

fn harness() -> Harness {
    Harness::with(Setup {
        fast_path: true,
        ..Setup::default()
    })
}

/// Alice's allocation on [`ft`] with channel 0x4000 bound to `peer_a` at the current time.
fn bound(h: &mut Harness) -> (Client, AllocationId, SocketAddr) {
    let mut c = Client::alice(ft());
    let (id, _) = c.allocate(h);
    c.bind(h, 0x4000, peer_a());
    let relay = h.alloc(ft()).relay;
    (c, id, relay)
}

fn key(id: AllocationId, relay: SocketAddr, peer: SocketAddr, channel: u16) -> ChannelKey {
    ChannelKey {
        id,
        client: ft(),
        channel,
        relay,
        peer,
    }
}

/// The fast-path outputs since the last call.
fn take(h: &mut Harness) -> Vec<(Instant, FastPath)> {
    std::mem::take(&mut h.fast_path)
}

fn install(k: ChannelKey, expires: Instant) -> FastPath {
    FastPath::Install {
        key: k,
        expires,
        dont_fragment: false,
    }
}

#[test]
fn a_bound_channel_is_installed_until_its_permission_expires() {
    let mut h = harness();
    let (_, id, relay) = bound(&mut h);
    // The channel lives 10 minutes, its permission 5, the allocation 10: the entry the first.
    assert_eq!(
        take(&mut h),
        [(
            h.at(0),
            install(key(id, relay, peer_a(), 0x4000), h.at(300))
        )]
    );
    assert_eq!(h.kernel.len(), 1);
    // The install comes before the answer: ChannelData the client sends on seeing it can
    // take the kernel path.
}

#[test]
fn every_refresh_moves_the_entry_to_the_earliest_deadline() {
    let mut h = harness();
    let (mut c, id, relay) = bound(&mut h);
    let k = key(id, relay, peer_a(), 0x4000);
    take(&mut h);
    // The permission refreshed: now the channel (600) or the allocation (600) ends first.
    h.advance_to(100);
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(take(&mut h), [(h.at(100), install(k, h.at(400)))]);
    // The channel refreshed too: the permission (400) is first again, nothing changes.
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(take(&mut h), []);
    // Permission at 550, channel at 1000: the allocation (600) is first.
    h.advance_to(250);
    c.permit(&mut h, &[peer_a()]);
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(take(&mut h), [(h.at(250), install(k, h.at(550)))]);
    h.advance_to(400);
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(take(&mut h), [(h.at(400), install(k, h.at(600)))]);
    // A Refresh of the allocation moves it on to the permission's 700.
    c.refresh(&mut h, Some(600))
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(take(&mut h), [(h.at(400), install(k, h.at(700)))]);
    // Requests that change nothing emit nothing.
    c.refresh(&mut h, Some(600))
        .assert_success(Method::REFRESH, &c.key);
    c.permit(&mut h, &[peer_b()]);
    assert_eq!(take(&mut h), []);
}

#[test]
fn permission_expiry_removes_the_entry_at_that_instant() {
    let mut h = harness();
    let (mut c, id, relay) = bound(&mut h);
    take(&mut h);
    h.advance_to(299);
    assert_eq!(take(&mut h), []);
    h.advance_to(300);
    assert_eq!(
        take(&mut h),
        [(
            h.at(300),
            FastPath::Remove(key(id, relay, peer_a(), 0x4000))
        )]
    );
    assert!(h.kernel.is_empty());
    // User space agrees: the channel is bound but its peer has no permission.
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    // A new permission brings the entry back until the channel's own end.
    c.permit(&mut h, &[peer_a()]);
    assert_eq!(
        take(&mut h),
        [(
            h.at(300),
            install(key(id, relay, peer_a(), 0x4000), h.at(600))
        )]
    );
}

#[test]
fn channel_expiry_removes_the_entry_at_that_instant() {
    let mut h = harness();
    let (mut c, id, relay) = bound(&mut h);
    // Permission and allocation kept alive past the channel's 10 minutes.
    h.advance_to(250);
    c.permit(&mut h, &[peer_a()]);
    c.refresh(&mut h, Some(3600))
        .assert_success(Method::REFRESH, &c.key);
    h.advance_to(500);
    c.permit(&mut h, &[peer_a()]);
    take(&mut h);
    let end = CHANNEL_LIFETIME.as_secs();
    h.advance_to(end - 1);
    assert_eq!(take(&mut h), []);
    h.advance_to(end);
    assert_eq!(
        take(&mut h),
        [(
            h.at(end),
            FastPath::Remove(key(id, relay, peer_a(), 0x4000))
        )]
    );
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
    // Bound again (same number and peer, allowed during the cool-down): back in.
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(h.kernel.len(), 1);
}

/// A shorter configured channel lifetime (the debug builds' test hook behind
/// `tests/xdp_relay.rs`'s end-to-end expiry test) moves the binding's end and its entry's
/// deadline together, and the entry goes at that instant.
#[test]
fn a_configured_channel_lifetime_ends_the_entry_at_that_instant() {
    let mut h = Harness::with(Setup {
        fast_path: true,
        channel_lifetime: Duration::from_secs(2),
        ..Setup::default()
    });
    let (mut c, id, relay) = bound(&mut h);
    assert_eq!(
        take(&mut h),
        [(h.at(0), install(key(id, relay, peer_a(), 0x4000), h.at(2)))]
    );
    h.advance_to(1);
    assert_eq!(take(&mut h), []);
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_some());
    h.advance_to(2);
    assert_eq!(
        take(&mut h),
        [(h.at(2), FastPath::Remove(key(id, relay, peer_a(), 0x4000)))]
    );
    assert!(c.channel_data(&mut h, 0x4000, b"x").0.is_none());
}

/// Every way an allocation ends takes its entries out, before its relay socket closes.
#[test]
fn every_end_of_the_allocation_removes_its_entries() {
    type End = fn(&mut Harness, &mut Client, AllocationId);
    let ends: [(&str, End); 5] = [
        ("refresh 0", |h, c, _| {
            c.refresh(h, Some(0))
                .assert_success(Method::REFRESH, &c.key);
        }),
        ("expiry", |h, c, _| {
            // The permissions kept alive, so the allocation's own end is the first.
            for t in [250, 500] {
                h.advance_to(t);
                c.permit(h, &[peer_a(), peer_b()]);
            }
            h.fast_path.clear();
            h.advance_to(600);
        }),
        ("admin close", |h, _, id| {
            assert!(h.server.close(h.now, id));
            h.drain();
        }),
        ("shutdown", |h, _, _| {
            let now = h.now;
            h.server.close_all(now);
            h.drain();
        }),
        ("peer filter reload", |h, _, _| {
            reload(h, &["198.51.100.0/24"]);
            let now = h.now;
            h.server.handle_peer_filter_changed(now);
            h.drain();
        }),
    ];
    for (what, end) in ends {
        let mut h = harness();
        let (mut c, id, relay) = bound(&mut h);
        c.bind(&mut h, 0x4001, peer_b());
        h.advance_to(100);
        take(&mut h);
        assert_eq!(h.kernel.len(), 2, "{what}");
        end(&mut h, &mut c, id);
        let removed: Vec<ChannelKey> = take(&mut h)
            .into_iter()
            .map(|(at, f)| match f {
                FastPath::Remove(k) => {
                    assert_eq!(at, h.now, "{what}: removed late");
                    k
                }
                other => panic!("{what}: {other:?}"),
            })
            .collect();
        assert_eq!(removed.len(), 2, "{what}: {removed:?} (both channels out)");
        assert!(
            removed.contains(&key(id, relay, peer_a(), 0x4000)),
            "{what}"
        );
        assert!(
            removed.contains(&key(id, relay, peer_b(), 0x4001)),
            "{what}"
        );
        assert!(h.kernel.is_empty(), "{what}");
    }
}

#[test]
fn a_deleted_family_takes_only_its_own_channels_out() {
    let mut h = harness();
    let mut c = Client::alice(ft());
    let additional = Attr::Raw(AttrType::ADDITIONAL_ADDRESS_FAMILY, vec![2, 0, 0, 0]);
    c.allocate_with(&mut h, &[additional])
        .assert_success(Method::ALLOCATE, &c.key);
    let id = h.id_of(ft()).unwrap();
    c.bind(&mut h, 0x4000, peer_a());
    c.bind(&mut h, 0x4001, peer_v6());
    let relays: Vec<SocketAddr> = h.alloc(ft()).held_relays().map(|(r, _)| r).collect();
    let relay_v6 = *relays.iter().find(|r| r.is_ipv6()).unwrap();
    assert_eq!(h.kernel.len(), 2);
    take(&mut h);
    c.request(&mut h, Method::REFRESH, &[lifetime(0), family(2)])
        .assert_success(Method::REFRESH, &c.key);
    assert_eq!(
        take(&mut h),
        [(
            h.now,
            FastPath::Remove(key(id, relay_v6, peer_v6(), 0x4001))
        )]
    );
    assert_eq!(h.kernel.len(), 1);
}

#[test]
fn capped_allocations_and_stream_clients_are_never_installed() {
    for setup in [
        Setup {
            fast_path: true,
            allocation_bandwidth: 1_000_000,
            ..Setup::default()
        },
        Setup {
            fast_path: true,
            user_bandwidth: 1_000_000,
            ..Setup::default()
        },
        // No fast path in the shell: nothing, whatever the allocation.
        Setup::default(),
    ] {
        let mut h = Harness::with(setup);
        bound(&mut h);
        assert_eq!(take(&mut h), []);
    }
    let mut h = harness();
    let mut c = Client::alice(tcp("192.0.2.100:40000"));
    c.allocate(&mut h);
    c.bind(&mut h, 0x4000, peer_a());
    assert_eq!(take(&mut h), []);
}

/// A peer filter without the documentation ranges' exception for `deny` (a reload).
fn reload(h: &mut Harness, deny: &[&str]) {
    let cidr = |s: &&str| {
        let (ip_, len) = s.split_once('/').unwrap();
        Cidr::new(ip(ip_), len.parse().unwrap()).unwrap()
    };
    let allow = vec![
        Cidr::new(ip("198.51.100.0"), 24).unwrap(),
        Cidr::new(ip("2001:db8:1::"), 48).unwrap(),
    ];
    h.shared
        .peer_filter
        .store(PeerFilter::new(allow, deny.iter().map(cidr).collect()));
}

#[test]
fn a_reload_that_denies_one_peer_takes_only_its_channel_out() {
    let mut h = harness();
    let (mut c, id, relay) = bound(&mut h);
    c.bind(&mut h, 0x4001, peer_b());
    take(&mut h);
    reload(&mut h, &["198.51.100.2/32"]);
    let now = h.now;
    h.server.handle_peer_filter_changed(now);
    h.drain();
    assert_eq!(
        take(&mut h),
        [(now, FastPath::Remove(key(id, relay, peer_b(), 0x4001)))]
    );
    assert_eq!(h.kernel.len(), 1);
    // The timer notices a reload the shell did not report, within its next tick.
    reload(&mut h, &["198.51.100.0/24"]);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        take(&mut h),
        [(h.now, FastPath::Remove(key(id, relay, peer_a(), 0x4000)))]
    );
}
