//! The sans-IO core set up for tests that drive it without sockets (`zero_alloc.rs`,
//! `core_leak.rs`): one user `u` / `p`, signed requests, and the shared state.

// Each test crate includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use turnd::core::auth::{long_term_key, Credentials, UserSecret};
use turnd::core::nonce::NonceKey;
use turnd::core::peer_filter::PeerFilter;
use turnd::core::ports::PortPool;
use turnd::core::{CoreConfig, RelayAddr, Shared};
use turnd::stun::{AttrType, Class, MessageBuilder, MessageType, Method, TransactionId};

pub const REALM: &str = "core";
/// The wall clock the servers start at.
pub const UNIX: u64 = 1_700_000_000;

/// Relay addresses advertised as themselves.
pub fn relays(ips: &[IpAddr]) -> Vec<RelayAddr> {
    ips.iter()
        .map(|&ip| RelayAddr {
            bind: ip,
            advertised: ip,
        })
        .collect()
}

/// Shared state for `config` (its relays get ports `low..=high`), user `u` / `p`, and the
/// peer networks `allow` let through the filter.
pub fn shared(config: CoreConfig, allow: &[&str], (low, high): (u16, u16)) -> Arc<Shared> {
    let ips: Vec<IpAddr> = config.relays.iter().map(|r| r.bind).collect();
    Arc::new(Shared {
        config,
        credentials: Credentials::new(
            REALM,
            [("u".to_string(), UserSecret::Password("p".into()))],
            [],
        )
        .into(),
        nonce_key: NonceKey::new([3; 32]),
        peer_filter: PeerFilter::new(allow.iter().map(|c| c.parse().unwrap()).collect(), vec![])
            .into(),
        ports: Mutex::new(PortPool::new(&ips, low, high)),
        reservations: Default::default(),
        tcp_connections: Default::default(),
        quotas: Default::default(),
    })
}

/// A request of `method` signed by user `u` with `nonce`, its attributes added by `f`.
pub fn request(
    method: Method,
    nonce: &[u8],
    txid: u8,
    f: impl FnOnce(&mut MessageBuilder),
) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let ty = MessageType::new(method, Class::Request);
    let mut b = MessageBuilder::new(&mut buf, ty, TransactionId([txid; 12])).unwrap();
    f(&mut b);
    b.add(AttrType::USERNAME, b"u").unwrap();
    b.add(AttrType::REALM, REALM.as_bytes()).unwrap();
    b.add(AttrType::NONCE, nonce).unwrap();
    b.add_message_integrity(&long_term_key("u", REALM, "p"))
        .unwrap();
    let n = b.finish();
    buf[..n].to_vec()
}
