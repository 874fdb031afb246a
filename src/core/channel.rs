//! Channel bindings (RFC 8656 §12): a 16-bit channel number standing for a peer transport
//! address, so data can travel in 4-byte-header ChannelData messages.
//!
//! Expired bindings are kept for a further 5 minutes in a cooling-off state, because the RFC
//! forbids rebinding that number to another peer, or that peer to another number, during
//! that time: a late ChannelData for the old binding must never reach a new peer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 8656 §12: "A channel binding lasts for 10 minutes unless refreshed."
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after expiry, neither the number nor the peer may be rebound elsewhere
/// for 5 minutes.
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// The most channel bindings the shell lets one allocation hold (`max_channels` of 0 means
/// this). Without it the bound would be the number of channel numbers (16,384, as
/// 0x4000–0x7FFF are accepted), each a step of the per-datagram scan.
pub const MAX_CHANNELS: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelBinding {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
    /// The kernel fast path's entry for it as last emitted (`super::fast_path`); `None`: not
    /// installed.
    pub installed: Option<Installed>,
}

/// A binding's kernel entry: the relay address it is sent from, and until when it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    pub relay: SocketAddr,
    pub expires: Instant,
}

/// Why a ChannelBind conflicts with existing bindings: both are 400 Bad Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindConflict {
    /// The number is (or recently was) bound to a different peer.
    NumberInUse,
    /// The peer is (or recently was) bound to a different number.
    PeerInUse,
}

#[derive(Clone, Debug, Default)]
pub struct Channels {
    list: Vec<ChannelBinding>,
}

impl Channels {
    /// The live binding for a channel number (client → peer direction).
    #[inline]
    pub fn by_number(&self, number: u16, now: Instant) -> Option<&ChannelBinding> {
        self.list
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// Bindings that occupy an entry at `now`: live, or in their cool-down.
    pub fn held(&self, now: Instant) -> usize {
        self.list
            .iter()
            .filter(|c| c.expires + CHANNEL_COOLDOWN > now)
            .count()
    }

    /// Whether `number` ↔ `peer` holds an entry (live or cooling down): binding it again
    /// refreshes that entry rather than taking a new one.
    pub fn holds(&self, number: u16, peer: SocketAddr, now: Instant) -> bool {
        self.list
            .iter()
            .any(|c| c.number == number && c.peer == peer && c.expires + CHANNEL_COOLDOWN > now)
    }

    /// The live binding for a peer (peer → client direction).
    #[inline]
    pub fn by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&ChannelBinding> {
        self.list.iter().find(|c| c.peer == peer && c.expires > now)
    }

    /// Keeps only the bindings (cooling-off ones included) whose peer satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(SocketAddr) -> bool) {
        self.list.retain(|c| keep(c.peer));
    }

    /// Ends at `now` every live binding whose peer fails `keep` (a reloaded peer filter denies
    /// it): it stops relaying at once and enters its cool-down, so neither its number nor its
    /// peer is rebound elsewhere for 5 minutes (a late ChannelData must not reach a new peer).
    /// Returns whether any ended; the caller schedules the sweep that forgets them.
    pub fn revoke(&mut self, now: Instant, mut keep: impl FnMut(SocketAddr) -> bool) -> bool {
        let mut any = false;
        for c in self.list.iter_mut().filter(|c| c.expires > now) {
            if !keep(c.peer) {
                c.expires = now;
                any = true;
            }
        }
        any
    }

    /// Binds or refreshes `number` ↔ `peer` for [`CHANNEL_LIFETIME`].
    #[cfg(test)]
    pub fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Instant, BindConflict> {
        self.bind_for(number, peer, now, CHANNEL_LIFETIME)
    }

    /// Binds or refreshes `number` ↔ `peer` until `now + lifetime`, enforcing the rules of
    /// RFC 8656 §12.2.
    pub fn bind_for(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
        lifetime: Duration,
    ) -> Result<Instant, BindConflict> {
        let expires = now + lifetime;
        let lingering = |c: &ChannelBinding| c.expires + CHANNEL_COOLDOWN > now;
        if self
            .list
            .iter()
            .any(|c| c.number == number && c.peer != peer && lingering(c))
        {
            return Err(BindConflict::NumberInUse);
        }
        if self
            .list
            .iter()
            .any(|c| c.peer == peer && c.number != number && lingering(c))
        {
            return Err(BindConflict::PeerInUse);
        }
        match self
            .list
            .iter_mut()
            .find(|c| c.number == number && c.peer == peer)
        {
            Some(c) => c.expires = expires,
            None => {
                // Forget a stale binding of this number or peer whose cool-down has ended.
                self.list.retain(|c| c.number != number && c.peer != peer);
                self.list.push(ChannelBinding {
                    number,
                    peer,
                    expires,
                    installed: None,
                });
            }
        }
        Ok(expires)
    }

    /// Forgets bindings past their cool-down; returns the next time this needs doing.
    pub fn sweep(&mut self, now: Instant) -> Option<Instant> {
        self.list.retain(|c| c.expires + CHANNEL_COOLDOWN > now);
        self.list
            .iter()
            .map(|c| {
                if c.expires > now {
                    c.expires
                } else {
                    c.expires + CHANNEL_COOLDOWN
                }
            })
            .min()
    }

    /// Every binding, live or cooling down.
    pub fn iter(&self) -> impl Iterator<Item = &ChannelBinding> {
        self.list.iter()
    }

    /// Every binding, to update what the fast path installed for it.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ChannelBinding> {
        self.list.iter_mut()
    }

    /// Bindings that are live at `now`.
    pub fn active(&self, now: Instant) -> impl Iterator<Item = &ChannelBinding> {
        self.list.iter().filter(move |c| c.expires > now)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(p: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 1], p))
    }

    #[test]
    fn rebinding_rules() {
        let t0 = Instant::now();
        let mut ch = Channels::default();
        ch.bind(0x4000, peer(1), t0).unwrap();
        assert_eq!(ch.bind(0x4000, peer(2), t0), Err(BindConflict::NumberInUse));
        assert_eq!(ch.bind(0x4001, peer(1), t0), Err(BindConflict::PeerInUse));
        // Refreshing the same pair is fine.
        ch.bind(0x4000, peer(1), t0 + Duration::from_secs(100))
            .unwrap();
        // After expiry, still locked for the cool-down.
        let expired = t0 + Duration::from_secs(100) + CHANNEL_LIFETIME;
        assert!(ch.by_number(0x4000, expired).is_none());
        assert_eq!(
            ch.bind(0x4000, peer(2), expired),
            Err(BindConflict::NumberInUse)
        );
        // Same pair may come back during cool-down.
        ch.bind(0x4000, peer(1), expired).unwrap();
        assert!(ch.by_peer(peer(1), expired).is_some());
        // After expiry plus cool-down, the number is free for another peer.
        let free = expired + CHANNEL_LIFETIME + CHANNEL_COOLDOWN;
        ch.bind(0x4000, peer(2), free).unwrap();
        assert_eq!(ch.by_number(0x4000, free).unwrap().peer, peer(2));
        assert_eq!(ch.len(), 1);
    }

    #[test]
    fn revoke_ends_bindings_into_their_cool_down() {
        let t0 = Instant::now();
        let mut ch = Channels::default();
        ch.bind(0x4000, peer(1), t0).unwrap();
        ch.bind(0x4001, peer(2), t0).unwrap();
        let now = t0 + Duration::from_secs(10);
        assert!(ch.revoke(now, |p| p != peer(1)));
        assert!(ch.by_number(0x4000, now).is_none() && ch.by_peer(peer(1), now).is_none());
        assert!(ch.by_number(0x4001, now).is_some());
        // Still held: the number cannot go to another peer during the cool-down.
        assert_eq!(ch.held(now), 2);
        assert_eq!(
            ch.bind(0x4000, peer(3), now),
            Err(BindConflict::NumberInUse)
        );
        assert_eq!(ch.sweep(now), Some(now + CHANNEL_COOLDOWN));
        assert!(
            !ch.revoke(now, |p| p != peer(1)),
            "nothing live left to end"
        );
        ch.sweep(now + CHANNEL_COOLDOWN);
        assert_eq!(ch.len(), 1);
    }

    #[test]
    fn sweep_reports_next_deadline() {
        let t0 = Instant::now();
        let mut ch = Channels::default();
        ch.bind(0x4000, peer(1), t0).unwrap();
        assert_eq!(ch.sweep(t0), Some(t0 + CHANNEL_LIFETIME));
        let later = t0 + CHANNEL_LIFETIME;
        assert_eq!(ch.sweep(later), Some(later + CHANNEL_COOLDOWN));
        assert_eq!(ch.sweep(later + CHANNEL_COOLDOWN), None);
        assert!(ch.is_empty());
    }
}
