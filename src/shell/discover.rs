//! What the host's network looks like, read from the kernel (nothing is sent):
//!
//! - a relay address when the operator listens on a wildcard (`0.0.0.0`, `[::]`) and gives no
//!   `relay_ips`: the address of the interface that carries the default route, which is the
//!   one a host's peers can reach (`/proc/net/route`, `/proc/net/ipv6_route`, `getifaddrs`);
//! - every address of every interface, for the peer filter's own-host set
//!   ([`interface_addrs`]).

use crate::core::own_host::InterfaceAddr;
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

/// Every address of every interface of the host (its network namespace), with its prefix
/// length and whether the interface is a loopback: the own-host set of the peer filter is
/// built from it (start-up and SIGHUP). Empty when `getifaddrs` fails; the listed addresses
/// of the configuration are still own then.
pub fn interface_addrs() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    for_each_ifaddr(|_, addr| out.push(addr));
    out.sort_unstable_by_key(|a| (a.ip, a.prefix));
    out.dedup();
    out
}

/// Addresses usable as a relay address on `iface`: not loopback, link-local or unspecified.
fn iface_addrs(iface: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for_each_ifaddr(|name, addr| {
        if name == iface.as_bytes() {
            out.push(addr.ip);
        }
    });
    out.retain(|ip| usable(*ip));
    out
}

/// The names of the interfaces that carry any of `ips` (the XDP program's default
/// interfaces, docs/xdp.md), sorted, each once.
pub fn interfaces_of(ips: &[IpAddr]) -> Vec<String> {
    let mut out = Vec::new();
    for_each_ifaddr(|name, addr| {
        if ips.contains(&addr.ip) {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
    });
    out.sort_unstable();
    out.dedup();
    out
}

/// Calls `f` with the interface name and address of each IPv4 and IPv6 entry `getifaddrs`
/// lists.
fn for_each_ifaddr(mut f: impl FnMut(&[u8], InterfaceAddr)) {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and free with freeifaddrs;
    // every pointer is checked for null before use and none outlives the list.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes();
            let Some(ip) = sockaddr_ip(ifa.ifa_addr) else {
                continue;
            };
            let full = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = if ifa.ifa_netmask.is_null() {
                full
            } else {
                sockaddr_ip(ifa.ifa_netmask).map_or(full, prefix_len)
            };
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
            f(
                name,
                InterfaceAddr {
                    ip,
                    prefix,
                    loopback,
                },
            );
        }
        libc::freeifaddrs(head);
    }
}

/// The IP of an `AF_INET` or `AF_INET6` socket address.
///
/// # Safety
/// `sa` points at a valid `sockaddr` whose family says how large it is (as `getifaddrs`
/// guarantees for `ifa_addr` and `ifa_netmask`).
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    match (*sa).sa_family as i32 {
        libc::AF_INET => {
            let sa = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            let sa = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The prefix length of a netmask: its leading one bits.
fn prefix_len(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones() as u8,
        IpAddr::V6(m) => u128::from(m).leading_ones() as u8,
    }
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
    fn interface_addrs_include_loopback_with_its_prefix() {
        // Every network namespace has `lo`; once it is up it holds 127.0.0.1/8.
        let all = interface_addrs();
        if let Some(lo) = all.iter().find(|a| a.ip == IpAddr::from([127, 0, 0, 1])) {
            assert!(lo.loopback);
            assert_eq!(lo.prefix, 8);
        }
        assert!(all
            .iter()
            .all(|a| a.prefix <= if a.ip.is_ipv4() { 32 } else { 128 }));
    }

    #[test]
    fn netmask_prefix_lengths() {
        let p = |s: &str| prefix_len(s.parse().unwrap());
        assert_eq!(p("255.0.0.0"), 8);
        assert_eq!(p("255.255.255.255"), 32);
        assert_eq!(p("0.0.0.0"), 0);
        assert_eq!(p("ffff:ffff:ffff:ffff::"), 64);
        assert_eq!(p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 128);
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
