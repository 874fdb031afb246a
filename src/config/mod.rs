//! TEMPORARY stand-in until the config module lands.
use crate::core::auth::UserSecret;
use crate::core::peer_filter::Cidr;
use std::net::{IpAddr, SocketAddr};
#[derive(Clone, Debug)]
pub struct PortRange { pub low: u16, pub high: u16 }
#[derive(Clone, Debug)]
pub struct ExternalIp { pub public: IpAddr, pub private: Option<IpAddr> }
#[derive(Clone, Debug)]
pub struct User { pub name: String, pub secret: UserSecret }
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>, pub relay_ips: Vec<IpAddr>, pub relay_ports: PortRange,
    pub external_ips: Vec<ExternalIp>, pub realm: String, pub users: Vec<User>, pub auth_secrets: Vec<String>,
    pub allow_peers: Vec<Cidr>, pub deny_peers: Vec<Cidr>, pub workers: usize, pub log_level: String,
    pub default_lifetime: u32, pub max_lifetime: u32, pub nonce_lifetime: u32, pub software: Option<String>,
}
impl Config { pub fn effective_workers(&self) -> usize { if self.workers == 0 { 2 } else { self.workers } } }
