//! Reservations (EVEN-PORT with the R bit, RFC 8656 §7.2) under the quotas: a reservation is
//! counted like an allocation against `user_quota` and `total_quota`, held by the user who
//! made it, passed to the allocation that redeems it, and freed — port, quota unit, deadline —
//! at the first of its 30 s, the end of the allocation that made it, or its redemption.

use super::*;

fn ft(port: u16) -> FiveTuple {
    udp(&format!("192.0.2.100:{port}"))
}

fn quota(user: u32, total: u32) -> Harness {
    Harness::with(Setup {
        quotas: (user, total),
        ..Setup::default()
    })
}

/// Ports held on the IPv4 relay address, alice's quota units, reservations, deadlines.
fn held(h: &Harness) -> (usize, u32, usize, usize) {
    (
        h.ports_in_use(relay_v4()),
        h.shared.quotas.of_user("alice"),
        h.shared.reservations.len(),
        h.server.pending_timers(),
    )
}

/// `user_quota = 1`: a reservation would be a second unit, so EVEN-PORT with R is refused
/// (486) and leaves nothing behind, thousands of times over; a plain allocation still fits.
#[test]
fn a_user_at_quota_one_cycling_even_port_r_holds_at_most_one_unit() {
    let mut h = quota(1, 0);
    let mut c = Client::alice(ft(40000));
    for i in 0..2_000 {
        c.allocate_with(&mut h, &[even_port(true)]).assert_error(
            Method::ALLOCATE,
            486,
            Some(&c.key),
        );
        assert_eq!(held(&h), (0, 0, 0, 0), "cycle {i}");
        c.allocate_with(&mut h, &[even_port(false)])
            .assert_success(Method::ALLOCATE, &c.key);
        assert_eq!(held(&h), (1, 1, 0, 1), "cycle {i}");
        c.refresh(&mut h, Some(0))
            .assert_success(Method::REFRESH, &c.key);
        assert_eq!(held(&h), (0, 0, 0, 0), "cycle {i}");
    }
    assert_eq!(h.server.counters().dropped[DropReason::Quota], 2_000);
}

/// `user_quota = 2`: an allocation and its reservation. Cycling Allocate + delete thousands
/// of times never holds more than the quota, and never more than two ports of the ten: the
/// reservation goes with the allocation that made it.
#[test]
fn even_port_r_and_delete_cycles_never_exhaust_the_pool() {
    let mut h = quota(2, 0);
    assert_eq!(PORT_COUNT, 10);
    let mut c = Client::alice(ft(40000));
    let mut tokens = std::collections::HashSet::new();
    for i in 0..5_000 {
        let resp = c.allocate_with(&mut h, &[even_port(true)]);
        resp.assert_success(Method::ALLOCATE, &c.key);
        assert!(tokens.insert(resp.token()), "cycle {i}: a token came back");
        assert_eq!(held(&h), (2, 2, 1, 2), "cycle {i}");
        assert!(h.server.pending_timers() <= h.server.pending_timers_bound());
        // A second one is over the quota.
        let mut d = Client::alice(ft(40001));
        d.allocate_with(&mut h, &[])
            .assert_error(Method::ALLOCATE, 486, Some(&d.key));
        c.refresh(&mut h, Some(0))
            .assert_success(Method::REFRESH, &c.key);
        assert_eq!(held(&h), (0, 0, 0, 0), "cycle {i}");
        h.advance(Duration::from_millis(3));
    }
}

/// The reservation of an allocation that ends — deleted, expired, closed with its stream —
/// ends with it, before its 30 s are up; its token is then unknown.
#[test]
fn a_reservation_goes_with_the_allocation_that_made_it() {
    let mut shared = Setup {
        quotas: (2, 0),
        ..Setup::default()
    }
    .shared();
    Arc::get_mut(&mut shared).unwrap().config.default_lifetime = secs(10);
    let mut h = Harness::from_shared(shared, 1);
    let mut c = Client::alice(ft(40000));
    // Expiry at 10 s, before the reservation's 30 s.
    let tok = c.allocate_with(&mut h, &[even_port(true)]).token();
    assert_eq!(held(&h), (2, 2, 1, 2));
    h.advance(secs(10));
    assert_eq!(h.allocation_count(), 0);
    assert_eq!(held(&h), (0, 0, 0, 0));
    let mut d = Client::alice(ft(40001));
    d.allocate_with(&mut h, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&d.key));
    assert_eq!(held(&h), (0, 0, 0, 0));
    // Closed by the admin API.
    let mut e = Client::alice(ft(40002));
    e.allocate_with(&mut h, &[even_port(true)]);
    let id = h.id_of(e.ft).unwrap();
    assert!(h.server.close(h.now, id));
    h.drain();
    assert_eq!(held(&h), (0, 0, 0, 0));
    // Shutdown.
    e.allocate_with(&mut h, &[even_port(true)]);
    h.server.close_all(h.now);
    h.drain();
    assert_eq!(held(&h), (0, 0, 0, 0));
}

/// At its 30 s a reservation lapses: port and quota unit back, and the allocation that made
/// it keeps its own.
#[test]
fn a_lapsed_reservation_gives_back_its_quota_unit() {
    let mut h = quota(2, 2);
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[even_port(true)])
        .assert_success(Method::ALLOCATE, &c.key);
    assert_eq!(h.shared.quotas.total(), 2);
    h.advance(secs(30));
    assert_eq!(held(&h), (1, 1, 0, 1));
    assert_eq!(h.shared.quotas.total(), 1);
    // The unit is usable again.
    Client::alice(ft(40001)).allocate(&mut h);
}

/// Redeeming passes the reservation's unit to the new allocation: counted once, freed once.
#[test]
fn a_redeemed_reservation_is_counted_once() {
    let mut h = quota(2, 0);
    for i in 0..500 {
        let mut rtp = Client::alice(ft(40000));
        let tok = rtp.allocate_with(&mut h, &[even_port(true)]).token();
        let mut rtcp = Client::alice(ft(40001));
        rtcp.allocate_with(&mut h, &[token(tok)])
            .assert_success(Method::ALLOCATE, &rtcp.key);
        // Two allocations, no reservation, two units; the redeemed reservation's deadline is
        // gone with it.
        assert_eq!(held(&h), (2, 2, 0, 2), "cycle {i}");
        // Ending the allocation that made it frees nothing of the redeemed port.
        rtp.refresh(&mut h, Some(0))
            .assert_success(Method::REFRESH, &rtp.key);
        assert_eq!(held(&h), (1, 1, 0, 1), "cycle {i}");
        rtcp.refresh(&mut h, Some(0))
            .assert_success(Method::REFRESH, &rtcp.key);
        assert_eq!(held(&h), (0, 0, 0, 0), "cycle {i}");
    }
}

/// A token is bound to the user who obtained it: another user quoting it gets the answer an
/// unknown token gets, is charged nothing, and the reservation stays for its owner.
#[test]
fn another_user_cannot_redeem_a_token() {
    let mut h = quota(2, 0);
    let mut rtp = Client::alice(ft(40000));
    let tok = rtp.allocate_with(&mut h, &[even_port(true)]).token();
    for i in 0..50 {
        let mut thief = Client::bob(ft(41000 + i));
        thief.allocate_with(&mut h, &[token(tok)]).assert_error(
            Method::ALLOCATE,
            508,
            Some(&thief.key),
        );
        assert_eq!(h.shared.quotas.of_user("bob"), 0);
        assert_eq!(held(&h), (2, 2, 1, 2));
    }
    let mut rtcp = Client::alice(ft(40001));
    rtcp.allocate_with(&mut h, &[token(tok)])
        .assert_success(Method::ALLOCATE, &rtcp.key);
}

/// A token quoted after its 30 s but before the deadline fired (a late shell): 508, and the
/// reservation's port and unit go back there and then, once.
#[test]
fn a_token_quoted_after_its_time_frees_the_reservation_once() {
    let mut h = quota(2, 0);
    let mut rtp = Client::alice(ft(40000));
    let tok = rtp.allocate_with(&mut h, &[even_port(true)]).token();
    h.jump(secs(31));
    let mut rtcp = Client::alice(ft(40001));
    rtcp.allocate_with(&mut h, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&rtcp.key));
    assert_eq!(held(&h), (1, 1, 0, 1));
    h.advance(secs(1));
    assert_eq!(held(&h), (1, 1, 0, 1));
}

/// The reservation is shared state: redeemed on another worker, its unit passes across;
/// made on a worker whose allocation then ends, another worker finds the token gone.
#[test]
fn reservations_across_workers() {
    let mut w1 = quota(2, 0);
    let mut w2 = Harness::from_shared(w1.shared.clone(), 2);
    let mut rtp = Client::alice(ft(40000));
    let tok = rtp.allocate_with(&mut w1, &[even_port(true)]).token();
    let mut rtcp = Client::alice(ft(40001));
    rtcp.allocate_with(&mut w2, &[token(tok)])
        .assert_success(Method::ALLOCATE, &rtcp.key);
    assert_eq!(w1.shared.quotas.of_user("alice"), 2);
    // The maker's deadline on worker 1 fires at 30 s and finds nothing to free.
    w1.advance(secs(31));
    assert_eq!(w1.shared.quotas.of_user("alice"), 2);
    assert_eq!(w1.server.pending_timers(), 1);
    rtp.refresh(&mut w1, Some(0));
    rtcp.refresh(&mut w2, Some(0));
    assert_eq!(w1.shared.quotas.of_user("alice"), 0);
    assert_eq!(w1.ports_in_use(relay_v4()), 0);

    let tok = rtp.allocate_with(&mut w1, &[even_port(true)]).token();
    rtp.refresh(&mut w1, Some(0));
    rtcp.allocate_with(&mut w2, &[token(tok)])
        .assert_error(Method::ALLOCATE, 508, Some(&rtcp.key));
    assert_eq!(w1.shared.quotas.of_user("alice"), 0);
    assert_eq!(w1.ports_in_use(relay_v4()), 0);
}

/// A reservation is counted against `total_quota` too.
#[test]
fn a_reservation_counts_against_the_total_quota() {
    let mut h = quota(0, 3);
    let mut c = Client::alice(ft(40000));
    c.allocate_with(&mut h, &[even_port(true)])
        .assert_success(Method::ALLOCATE, &c.key);
    let mut d = Client::bob(ft(40001));
    d.allocate_with(&mut h, &[even_port(true)])
        .assert_error(Method::ALLOCATE, 486, Some(&d.key));
    d.allocate_with(&mut h, &[])
        .assert_success(Method::ALLOCATE, &d.key);
    assert_eq!(h.shared.quotas.total(), 3);
}
