//! Binding (RFC 8489): tells the client its server-reflexive address. No authentication, no
//! state: this is also what ICE's STUN-only candidates gather from.

use crate::core::five_tuple::FiveTuple;
use crate::core::reply::Responder;
use crate::core::Server;
use crate::stun::{AttrType, Message};

impl Server {
    pub(crate) fn handle_binding(&mut self, from: FiveTuple, msg: &Message) -> Vec<u8> {
        // No key (unauthenticated) and no SOFTWARE: answers to unauthenticated requests stay
        // small, so the server is a poor amplifier.
        let responder = Responder::to(msg, None, None);
        responder.success(|b| b.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, &from.client))
    }
}
