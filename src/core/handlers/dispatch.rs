//! A request's common path, before its method's own rules: unknown attributes, the NAT
//! discovery addresses, the Binding rate, the retransmission cache, authentication, and the
//! 5-tuple's allocation. Each TURN handler then receives one [`Request`] and answers with a
//! response or an [`ErrorCode`]; the error response is built here.

use crate::core::allocation::State;
use crate::core::counters::DropReason;
use crate::core::five_tuple::FiveTuple;
use crate::core::ids::AllocationId;
use crate::core::reply::Responder;
use crate::core::request::{Answer, Handled, Request, RequestMethod};
use crate::core::{EndReason, Server};
use crate::stun::attribute::{is_nat_discovery_attribute, is_understood};
use crate::stun::{AddressFamily, ErrorCode, Message};
use std::time::Instant;

/// The handler of one TURN method.
type Handler = fn(&mut Server, &Request) -> Handled;

impl Server {
    /// A request of a method the server serves (unsupported ones never get here).
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
        method: RequestMethod,
    ) {
        let mut unknown = [0u16; 16];
        let nat = method == RequestMethod::Binding && self.nat_pair(&from).is_some();
        // RFC 5780's request attributes are understood only where discovery is served:
        // elsewhere CHANGE-REQUEST must earn a 420 (RFC 5780 §6).
        let n = msg.unknown_required(
            |t| is_understood(t) || (nat && is_nat_discovery_attribute(t)),
            &mut unknown,
        );
        // Only Binding is served on the three extra NAT discovery addresses: TURN stays on
        // the primary listen address (dropped, like any datagram for no one).
        if method.is_turn() && self.on_nat_secondary(&from) {
            return;
        }
        let handler: Handler = match method {
            RequestMethod::Binding => {
                if n > 0 {
                    let resp = Responder::to(msg, None, None)
                        .error(ErrorCode::UnknownAttribute, |b| {
                            b.add_unknown_attributes(&unknown[..n])
                        });
                    self.transmit_unauthenticated(now, from, resp, msg.raw().len());
                    return;
                }
                if !self.binding_limit.allow(now, from.client.ip()) {
                    self.counters.dropped[DropReason::RateLimited] += 1;
                    return;
                }
                return self.handle_binding(now, from, msg);
            }
            RequestMethod::Allocate => Server::handle_allocate,
            RequestMethod::Refresh => Server::handle_refresh,
            RequestMethod::CreatePermission => Server::handle_create_permission,
            RequestMethod::ChannelBind => Server::handle_channel_bind,
            RequestMethod::Connect => Server::handle_connect,
            RequestMethod::ConnectionBind => Server::handle_connection_bind,
        };
        self.handle_turn_request(now, from, msg, method, &unknown[..n], handler);
    }

    /// A TURN request: answered from the retransmission cache, or authenticated (RFC 8489
    /// §9.2.4), checked for `unknown` attributes, matched to the 5-tuple's allocation and
    /// handed to `handler`. Its answer is remembered for retransmissions (RFC 8489 §6.3.1).
    fn handle_turn_request(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message,
        method: RequestMethod,
        unknown: &[u16],
        handler: Handler,
    ) {
        if let Some(cached) = self.transactions.get(&from, &msg.transaction_id()) {
            let payload = cached.to_vec();
            self.transmit(from, payload);
            return;
        }
        // An allocation past its expiry whose deadline has not fired yet is gone for every
        // purpose: a request must not bring it back.
        if let Some(id) = self.allocations.id_for(&from) {
            let expired = self
                .allocations
                .get(id)
                .is_some_and(|a| a.state == State::Active && a.expires <= now);
            if expired {
                self.free_allocation(now, id, EndReason::Expired);
            }
        }
        let auth_from = if method == RequestMethod::ConnectionBind {
            self.connection_bind_nonce_owner(now, from, msg)
        } else {
            from
        };
        let (username, key) = match self.authenticate(now, auth_from, msg) {
            Ok(v) => v,
            Err(resp) => {
                self.transmit_unauthenticated(now, from, resp, msg.raw().len());
                return;
            }
        };
        let shared = self.shared.clone();
        let reply = Responder::to(msg, Some(&key), shared.config.software.as_deref());
        // RFC 8489 §6.3: unknown attributes are checked once authentication is done, so the
        // 420 is signed like every answer to an authenticated request (a client discards an
        // unsigned one, §9.2.5).
        if !unknown.is_empty() {
            let resp = reply.error(ErrorCode::UnknownAttribute, |b| {
                b.add_unknown_attributes(unknown)
            });
            self.respond_and_remember(now, from, msg.transaction_id(), resp);
            return;
        }
        let allocation = self.allocations.id_for(&from);
        let owned = self.owned_allocation(allocation, &username);
        let families = owned
            .ok()
            .and_then(|id| self.allocations.get(id))
            .map_or([false; 2], |a| {
                [
                    a.has_family(AddressFamily::V4),
                    a.has_family(AddressFamily::V6),
                ]
            });
        let req = Request {
            now,
            from,
            msg,
            username: &username,
            key: &key,
            reply,
            allocation,
            owned,
            families,
        };
        let handled = handler(self, &req);
        // Whatever the request changed in the allocation's channels, permissions or lifetime
        // reaches the kernel fast path before the answer goes out.
        if let Some(id) = self.allocations.id_for(&from) {
            self.sync_fast_path(now, id);
        }
        let resp = match handled {
            Ok(Answer::Now(resp)) => resp,
            Ok(Answer::Later) => return,
            Err(code) => reply.plain_error(code),
        };
        self.respond_and_remember(now, from, msg.transaction_id(), resp);
    }

    /// Allocation `id` (the 5-tuple's) if it is active and `username` created it: 437 when
    /// there is none, 441 when another user did (RFC 8656 §5).
    fn owned_allocation(
        &self,
        id: Option<AllocationId>,
        username: &str,
    ) -> Result<AllocationId, ErrorCode> {
        let a = id
            .and_then(|id| self.allocations.get(id))
            .filter(|a| a.state == State::Active)
            .ok_or(ErrorCode::AllocationMismatch)?;
        if &*a.username != username {
            return Err(ErrorCode::WrongCredentials);
        }
        Ok(a.id)
    }
}
