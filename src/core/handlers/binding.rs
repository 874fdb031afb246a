//! Binding (RFC 8489): tells the client its server-reflexive address. No authentication, no
//! state: this is also what ICE's STUN-only candidates gather from.
//!
//! Where NAT behaviour discovery is configured (RFC 5780) and the request came over UDP to
//! one of the four addresses of a pair, the answer also carries MAPPED-ADDRESS,
//! RESPONSE-ORIGIN and OTHER-ADDRESS, is sent from the address CHANGE-REQUEST asks for, to the
//! port RESPONSE-PORT names, and echoes PADDING. Still stateless: nothing is kept per client.

use crate::core::five_tuple::FiveTuple;
use crate::core::nat_discovery::{self, ChangeRequest, NatPair};
use crate::core::reply::Responder;
use crate::core::Server;
use crate::stun::{address, AttrType, Class, ErrorCode, Message, MessageBuilder, MessageType};
use std::net::SocketAddr;
use std::time::Instant;

impl Server {
    pub(crate) fn handle_binding(&mut self, now: Instant, from: FiveTuple, msg: &Message) {
        // No key (unauthenticated) and no SOFTWARE: answers to unauthenticated requests stay
        // small, so the server is a poor amplifier.
        let responder = Responder::to(msg, None, None);
        let Some(pair) = self.nat_pair(&from) else {
            let resp = responder
                .success(|b| b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from.client));
            self.transmit(from, resp);
            return;
        };
        match nat_answer(&pair, from, msg) {
            Some((to, resp)) => self.transmit(to, resp),
            // A malformed RFC 5780 attribute, or RESPONSE-PORT with PADDING (§6.1, §10).
            None => {
                let resp = responder.plain_error(ErrorCode::BadRequest);
                self.transmit_unauthenticated(now, from, resp, msg.raw().len());
            }
        }
    }

    /// The RFC 5780 pair whose addresses include the one `from` reached, over UDP only: the
    /// alternate addresses have no TCP or TLS listeners, so over a stream there is no other
    /// address to offer.
    pub(crate) fn nat_pair(&self, from: &FiveTuple) -> Option<NatPair> {
        if from.transport.is_stream() {
            return None;
        }
        self.shared
            .config
            .nat_discovery
            .iter()
            .find(|p| p.contains(from.server))
            .copied()
    }

    /// Whether `from` reached one of the three extra discovery addresses (not a `listen`
    /// address), where only Binding is served.
    pub(crate) fn on_nat_secondary(&self, from: &FiveTuple) -> bool {
        !from.transport.is_stream()
            && self
                .shared
                .config
                .nat_discovery
                .iter()
                .any(|p| p.is_secondary(from.server))
    }
}

/// The RFC 5780 answer: the 5-tuple to send it on (its `server` is the source address, its
/// `client` the destination) and the message. None when the request must get a 400.
fn nat_answer(pair: &NatPair, from: FiveTuple, msg: &Message) -> Option<(FiveTuple, Vec<u8>)> {
    let change = match msg.get(AttrType::CHANGE_REQUEST) {
        Some(v) => ChangeRequest::parse(v)?,
        None => ChangeRequest::default(),
    };
    let response_port = match msg.get(AttrType::RESPONSE_PORT) {
        Some(v) => Some(nat_discovery::parse_response_port(v)?),
        None => None,
    };
    let padding = msg.get(AttrType::PADDING).map(|v| v.len());
    // §6.1: both together would let one small request aim a large answer at any port of the
    // source; the RFC says 400.
    if padding.is_some() && response_port.is_some() {
        return None;
    }
    // Echo the request's padding length (rounded up to 4), so the answer is no larger than
    // the request plus its fixed address attributes.
    let padding = padding.map(|n| ((n + 3) & !3).min(nat_discovery::MAX_PADDING));
    let source = pair.source(from.server, change);
    let other = pair.other_address(from.server);
    let to = SocketAddr::new(
        from.client.ip(),
        response_port.unwrap_or(from.client.port()),
    );
    let addr_len = 4 + address::encoded_len(&from.client);
    let mut buf = vec![0u8; 20 + 4 * addr_len + padding.map_or(0, |n| 4 + n) + 8];
    let ty = MessageType::new(msg.method(), Class::SuccessResponse);
    let len = (|| {
        let mut b = MessageBuilder::new(&mut buf, ty, msg.transaction_id())?;
        b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from.client)?;
        // §6.1: MAPPED-ADDRESS too, for RFC 3489-era clients.
        b.add_address(AttrType::MAPPED_ADDRESS, &from.client)?;
        b.add_address(AttrType::RESPONSE_ORIGIN, &source)?;
        b.add_address(AttrType::OTHER_ADDRESS, &other)?;
        if let Some(n) = padding {
            b.add_zeros(AttrType::PADDING, n)?;
        }
        if msg.has_fingerprint() {
            b.add_fingerprint()?;
        }
        Ok::<usize, crate::stun::BuildError>(b.finish())
    })()
    // Invariant: `buf` was sized for exactly these attributes, and the padding is capped so
    // the message length fits its 16-bit field; a failure would be a sizing bug. Answer 400
    // rather than panic.
    .ok()?;
    buf.truncate(len);
    Some((FiveTuple::udp(to, source), buf))
}
