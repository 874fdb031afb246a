//! RFC 5780 NAT behaviour discovery: the address arithmetic of §6.1, Table 1.
//!
//! A server doing discovery has two IPs (A1, A2) and two ports (P1, P2) and listens on all
//! four combinations. A Binding request that arrives on Da:Dp is answered from the address
//! CHANGE-REQUEST asks for: Ca (the other IP) when "change IP" is set, Cp (the other port)
//! when "change port" is set. OTHER-ADDRESS is always Ca:Cp. From which of those answers get
//! through, a client learns how its NAT maps and filters.
//!
//! Nothing here keeps state: each answer is computed from the request and this pair alone.

use std::net::SocketAddr;

/// Longest PADDING value a response carries. A response echoes the request's PADDING length
/// (so padding never amplifies) but must still fit one IPv4 UDP datagram (65,507 bytes) with
/// the header, four address attributes and FINGERPRINT.
pub const MAX_PADDING: usize = 64 * 1024 - 1024;

/// One address pair: the primary listen address A1:P1 and its alternate A2:P2, with the
/// ports the sockets were actually bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatPair {
    pub primary: SocketAddr,
    pub alternate: SocketAddr,
}

/// The flags of CHANGE-REQUEST (RFC 5780 §7.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeRequest {
    pub ip: bool,
    pub port: bool,
}

impl ChangeRequest {
    /// Decodes the 4-byte value: A (0x4) is "change IP", B (0x2) is "change port". None for
    /// any other length.
    pub fn parse(v: &[u8]) -> Option<ChangeRequest> {
        match v {
            [_, _, _, flags] => Some(ChangeRequest {
                ip: flags & 0x04 != 0,
                port: flags & 0x02 != 0,
            }),
            _ => None,
        }
    }
}

/// RESPONSE-PORT (RFC 5780 §7.5): a port and two bytes of padding. Port 0 cannot be sent to,
/// so it is as malformed as a wrong length.
pub fn parse_response_port(v: &[u8]) -> Option<u16> {
    match v {
        [a, b, _, _] => Some(u16::from_be_bytes([*a, *b])).filter(|p| *p != 0),
        _ => None,
    }
}

impl NatPair {
    /// A1:P1, A1:P2, A2:P1, A2:P2.
    pub fn addresses(&self) -> [SocketAddr; 4] {
        let (a1, p1) = (self.primary.ip(), self.primary.port());
        let (a2, p2) = (self.alternate.ip(), self.alternate.port());
        [
            self.primary,
            SocketAddr::new(a1, p2),
            SocketAddr::new(a2, p1),
            self.alternate,
        ]
    }

    /// The three addresses that are not the primary listen address: only Binding is served
    /// there.
    pub fn is_secondary(&self, local: SocketAddr) -> bool {
        local != self.primary && self.addresses().contains(&local)
    }

    /// Whether `local` is one of the four addresses.
    pub fn contains(&self, local: SocketAddr) -> bool {
        self.addresses().contains(&local)
    }

    /// The other IP and the other port of `local` (Ca and Cp), given `local` is one of the
    /// four addresses.
    fn other_ip_port(&self, local: SocketAddr) -> (std::net::IpAddr, u16) {
        let ca = if local.ip() == self.primary.ip() {
            self.alternate.ip()
        } else {
            self.primary.ip()
        };
        let cp = if local.port() == self.primary.port() {
            self.alternate.port()
        } else {
            self.primary.port()
        };
        (ca, cp)
    }

    /// OTHER-ADDRESS for a request received on `local`: Ca:Cp, whatever the flags.
    pub fn other_address(&self, local: SocketAddr) -> SocketAddr {
        let (ca, cp) = self.other_ip_port(local);
        SocketAddr::new(ca, cp)
    }

    /// Where the response to a request received on `local` is sent from (Table 1).
    pub fn source(&self, local: SocketAddr, change: ChangeRequest) -> SocketAddr {
        let (ca, cp) = self.other_ip_port(local);
        SocketAddr::new(
            if change.ip { ca } else { local.ip() },
            if change.port { cp } else { local.port() },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> NatPair {
        NatPair {
            primary: "192.0.2.1:3478".parse().unwrap(),
            alternate: "192.0.2.2:3479".parse().unwrap(),
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn table_1_from_every_local_address() {
        let p = pair();
        let none = ChangeRequest::default();
        let ip = ChangeRequest {
            ip: true,
            port: false,
        };
        let port = ChangeRequest {
            ip: false,
            port: true,
        };
        let both = ChangeRequest {
            ip: true,
            port: true,
        };
        // (Da:Dp, Ca:Cp)
        for (local, other) in [
            ("192.0.2.1:3478", "192.0.2.2:3479"),
            ("192.0.2.1:3479", "192.0.2.2:3478"),
            ("192.0.2.2:3478", "192.0.2.1:3479"),
            ("192.0.2.2:3479", "192.0.2.1:3478"),
        ] {
            let (local, other) = (a(local), a(other));
            assert_eq!(p.other_address(local), other);
            assert_eq!(p.source(local, none), local);
            assert_eq!(
                p.source(local, ip),
                SocketAddr::new(other.ip(), local.port())
            );
            assert_eq!(
                p.source(local, port),
                SocketAddr::new(local.ip(), other.port())
            );
            assert_eq!(p.source(local, both), other);
        }
    }

    #[test]
    fn secondary_addresses() {
        let p = pair();
        assert!(!p.is_secondary(a("192.0.2.1:3478")));
        assert!(p.is_secondary(a("192.0.2.1:3479")));
        assert!(p.is_secondary(a("192.0.2.2:3478")));
        assert!(p.is_secondary(a("192.0.2.2:3479")));
        assert!(!p.is_secondary(a("192.0.2.3:3478")));
        assert!(!p.contains(a("192.0.2.1:9999")));
    }

    #[test]
    fn attribute_values() {
        assert_eq!(
            ChangeRequest::parse(&[0, 0, 0, 6]),
            Some(ChangeRequest {
                ip: true,
                port: true
            })
        );
        assert_eq!(
            ChangeRequest::parse(&[0, 0, 0, 4]),
            Some(ChangeRequest {
                ip: true,
                port: false
            })
        );
        assert_eq!(ChangeRequest::parse(&[0, 0, 6]), None);
        assert_eq!(parse_response_port(&[0x12, 0x34, 0, 0]), Some(0x1234));
        assert_eq!(parse_response_port(&[0, 0, 0, 0]), None);
        assert_eq!(parse_response_port(&[0x12, 0x34]), None);
    }
}
