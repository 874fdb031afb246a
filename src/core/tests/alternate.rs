//! ALTERNATE-SERVER (RFC 8489 §10): a full or draining server answers Allocate with a signed
//! 300 Try Alternate; a user over their own quota, a server without alternates, and an
//! alternate list naming only this server get the usual 486/508.

use super::*;

fn ft(port: u16) -> FiveTuple {
    udp(&format!("192.0.2.100:{port}"))
}

const ALT_V4: &str = "203.0.113.9:3478";
const ALT_V6: &str = "[2001:db8::9]:3478";

fn with_alternates(quotas: (u32, u32), alternates: &[&str]) -> Harness {
    Harness::with(Setup {
        quotas,
        alternate_servers: alternates.iter().map(|a| sa(a)).collect(),
        ..Setup::default()
    })
}

/// Every ALTERNATE-SERVER of a 300 answer, in order.
fn alternates(r: &Resp) -> Vec<SocketAddr> {
    r.msg()
        .attributes()
        .filter(|(t, _)| *t == AttrType::ALTERNATE_SERVER)
        .map(|(_, v)| crate::stun::address::decode_plain(v).expect("address"))
        .collect()
}

#[test]
fn full_server_redirects_with_a_signed_300_same_family_first() {
    let mut h = with_alternates((0, 1), &[ALT_V6, ALT_V4]);
    Client::alice(ft(40001)).allocate(&mut h);
    let mut b = Client::bob(ft(40002));
    let resp = b.allocate_with(&mut h, &[]);
    resp.assert_error(Method::ALLOCATE, 300, Some(&b.key));
    assert_eq!(alternates(&resp), vec![sa(ALT_V4), sa(ALT_V6)]);
    // A redirect is not a quota refusal, and holds nothing.
    let c = h.server.counters();
    assert_eq!(c.dropped[DropReason::Quota], 0);
    let allocate_300 = c.responses[Some(crate::core::RequestMethod::Allocate)]
        [crate::core::ResponseResult::Error(crate::stun::ErrorCode::TryAlternate)];
    assert_eq!(allocate_300, 1, "counted as allocate/300");
    assert_eq!(h.allocation_count(), 1);
    assert_eq!(h.ports_in_use(relay_v4()), 1);
}

#[test]
fn user_over_their_own_quota_is_not_redirected() {
    let mut h = with_alternates((1, 0), &[ALT_V4]);
    let mut a = Client::alice(ft(40001));
    a.allocate(&mut h);
    let mut a2 = Client::alice(ft(40002));
    a2.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&a2.key));
}

#[test]
fn draining_redirects_and_existing_allocations_stay() {
    let mut h = with_alternates((0, 0), &[ALT_V4]);
    let mut a = Client::alice(ft(40001));
    a.allocate(&mut h);
    h.server.shared().quotas.set_draining(true);
    let mut b = Client::bob(ft(40002));
    let resp = b.allocate_with(&mut h, &[]);
    resp.assert_error(Method::ALLOCATE, 300, Some(&b.key));
    assert_eq!(alternates(&resp), vec![sa(ALT_V4)]);
    a.refresh(&mut h, None)
        .assert_success(Method::REFRESH, &a.key.clone());
}

#[test]
fn no_port_left_redirects() {
    let mut h = Harness::with(Setup {
        ports: (PORT_LOW, PORT_LOW),
        alternate_servers: vec![sa(ALT_V4)],
        ..Setup::default()
    });
    Client::alice(ft(40001)).allocate(&mut h);
    let mut b = Client::bob(ft(40002));
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 300, Some(&b.key));
}

#[test]
fn never_redirects_to_itself_or_across_families_only() {
    // The only alternates are this server's own address and one of the other family: the
    // 300 would need one of the request's family, so 508 it is.
    let own = server_v4().to_string();
    let mut h = with_alternates((0, 0), &[&own, ALT_V6]);
    h.server.shared().quotas.set_draining(true);
    let mut b = Client::bob(ft(40002));
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&b.key));
}

#[test]
fn without_alternates_full_and_draining_are_486_and_508() {
    let mut h = with_alternates((0, 1), &[]);
    Client::alice(ft(40001)).allocate(&mut h);
    let mut b = Client::bob(ft(40002));
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 486, Some(&b.key));
    h.server.shared().quotas.set_draining(true);
    b.allocate_with(&mut h, &[])
        .assert_error(Method::ALLOCATE, 508, Some(&b.key));
}
