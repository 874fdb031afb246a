//! Finding a relay address when the operator listens on a wildcard (`0.0.0.0`, `[::]`) and
//! gives no `relay_ips`: the address of the interface that carries the default route, which
//! is the one a host's peers can reach. Nothing is sent; the kernel's routing table
//! (`/proc/net/route`, `/proc/net/ipv6_route`) and interface list are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The interface of the IPv4 default route in `/proc/net/route` text.
pub fn default_route_iface_v4(route: &str) -> Option<&str> {
    route.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let iface = f.next()?;
        let dest = f.next()?;
        let mask = f.nth(5)?;
        (dest == "00000000" && mask == "00000000").then_some(iface)
    })
}

/// The interface of the IPv6 default route (`::/0`) in `/proc/net/ipv6_route` text.
pub fn default_route_iface_v6(route: &str) -> Option<&str> {
    route.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let zero = "00000000000000000000000000000000";
        (f.len() >= 10 && f[0] == zero && f[1] == "00" && f[9] != "lo").then(|| f[9])
    })
}

/// Addresses usable as a relay address on `iface`: not loopback, link-local or unspecified.
fn iface_addrs(iface: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and free with freeifaddrs;
    // every pointer is checked for null before use and none outlives the list.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            if std::ffi::CStr::from_ptr(ifa.ifa_name).to_str() != Ok(iface) {
                continue;
            }
            let ip = match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            out.push(ip);
        }
        libc::freeifaddrs(head);
    }
    out.retain(|ip| usable(*ip));
    out
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        // fe80::/10 is link-local: peers elsewhere cannot send to it.
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The relay address for a wildcard listener of the given family, if the host has one.
pub fn relay_ip_for_wildcard(v6: bool) -> Option<IpAddr> {
    let iface = if v6 {
        let text = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
        default_route_iface_v6(&text)?.to_string()
    } else {
        let text = std::fs::read_to_string("/proc/net/route").ok()?;
        default_route_iface_v4(&text)?.to_string()
    };
    iface_addrs(&iface)
        .into_iter()
        .find(|ip| ip.is_ipv6() == v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
";
    const ROUTE6: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn finds_default_route_interfaces() {
        assert_eq!(default_route_iface_v4(ROUTE), Some("eth0"));
        assert_eq!(default_route_iface_v6(ROUTE6), Some("eth0"));
        assert_eq!(default_route_iface_v4("Iface\tDestination\n"), None);
        assert_eq!(default_route_iface_v6(""), None);
    }

    #[test]
    fn link_local_and_loopback_are_not_relay_addresses() {
        assert!(!usable("fe80::1".parse().unwrap()));
        assert!(!usable("127.0.0.1".parse().unwrap()));
        assert!(!usable("169.254.1.1".parse().unwrap()));
        assert!(usable("fd00::2".parse().unwrap()));
        assert!(usable("192.0.2.2".parse().unwrap()));
    }
}
