//! The relay port pool: which ports of the configured range are free on each relay address.
//!
//! All workers draw from one pool, behind a mutex that is taken only when an allocation is
//! created or freed — never on the relay path. Ports are picked at a random point of the
//! range (RFC 8656 §7.2 recommends unpredictable relay ports, which makes blind injection
//! harder) and probed linearly from there.

use std::net::IpAddr;

#[derive(Debug)]
struct IpPorts {
    ip: IpAddr,
    /// One bit per port of the range: set = in use or reserved.
    used: Vec<u64>,
    in_use: usize,
}

#[derive(Debug)]
pub struct PortPool {
    low: u16,
    high: u16,
    ips: Vec<IpPorts>,
}

impl PortPool {
    pub fn new(ips: &[IpAddr], low: u16, high: u16) -> PortPool {
        let n = (high as usize).saturating_sub(low as usize) + 1;
        let ips = ips
            .iter()
            .map(|&ip| IpPorts {
                ip,
                used: vec![0; n.div_ceil(64)],
                in_use: 0,
            })
            .collect();
        PortPool { low, high, ips }
    }

    fn size(&self) -> usize {
        self.high as usize - self.low as usize + 1
    }

    fn slot(&mut self, ip: IpAddr) -> Option<&mut IpPorts> {
        self.ips.iter_mut().find(|p| p.ip == ip)
    }

    fn is_used(p: &IpPorts, i: usize) -> bool {
        p.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(p: &mut IpPorts, i: usize, used: bool) {
        let was = Self::is_used(p, i);
        if used {
            p.used[i / 64] |= 1 << (i % 64);
        } else {
            p.used[i / 64] &= !(1 << (i % 64));
        }
        match (was, used) {
            (false, true) => p.in_use += 1,
            (true, false) => p.in_use -= 1,
            _ => {}
        }
    }

    /// Takes a free port on `ip`, starting the search at `random % size`. With `even`, the
    /// port is even; with `pair`, port+1 is taken too (EVEN-PORT with the R bit, RFC 8656
    /// §7.2, so RTP and RTCP get adjacent ports).
    pub fn take(&mut self, ip: IpAddr, random: u64, even: bool, pair: bool) -> Option<u16> {
        let size = self.size();
        let low = self.low as usize;
        let start = (random % size as u64) as usize;
        let p = self.slot(ip)?;
        for k in 0..size {
            let i = (start + k) % size;
            let port = low + i;
            if (even || pair) && port % 2 != 0 {
                continue;
            }
            if Self::is_used(p, i) {
                continue;
            }
            if pair && (i + 1 >= size || Self::is_used(p, i + 1)) {
                continue;
            }
            Self::set(p, i, true);
            if pair {
                Self::set(p, i + 1, true);
            }
            return Some(port as u16);
        }
        None
    }

    /// Marks a port free again.
    pub fn release(&mut self, ip: IpAddr, port: u16) {
        let (low, high) = (self.low, self.high);
        if port < low || port > high {
            return;
        }
        if let Some(p) = self.slot(ip) {
            Self::set(p, (port - low) as usize, false);
        }
    }

    /// Ports in use (or reserved) on `ip`.
    pub fn in_use(&self, ip: IpAddr) -> usize {
        self.ips.iter().find(|p| p.ip == ip).map_or(0, |p| p.in_use)
    }

    /// Ports in use (or reserved) across all relay addresses.
    pub fn in_use_total(&self) -> usize {
        self.ips.iter().map(|p| p.in_use).sum()
    }

    /// Ports free across all relay addresses.
    pub fn free(&self) -> usize {
        self.ips.iter().map(|p| self.size() - p.in_use).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn exhausts_and_recovers() {
        let mut pool = PortPool::new(&[IP], 50000, 50003);
        let mut got: Vec<u16> = (0..4)
            .map(|r| pool.take(IP, r * 7, false, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![50000, 50001, 50002, 50003]);
        assert_eq!(pool.take(IP, 1, false, false), None);
        pool.release(IP, 50002);
        assert_eq!(pool.take(IP, 0, false, false), Some(50002));
        assert_eq!(pool.free(), 0);
    }

    #[test]
    fn even_and_pairs() {
        let mut pool = PortPool::new(&[IP], 50001, 50006);
        let p = pool.take(IP, 0, true, true).unwrap();
        assert_eq!(p % 2, 0);
        assert_eq!(pool.in_use(IP), 2);
        let q = pool.take(IP, 0, true, true).unwrap();
        assert_ne!(p, q);
        assert_eq!(
            pool.take(IP, 0, true, true),
            None,
            "50006 has no partner in range"
        );
        assert_eq!(pool.take(IP, 0, true, false), Some(50006));
    }

    #[test]
    fn unknown_ip_has_no_ports() {
        let mut pool = PortPool::new(&[IP], 50000, 50010);
        assert_eq!(pool.take("::1".parse().unwrap(), 0, false, false), None);
    }
}
