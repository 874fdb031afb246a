//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4).
//!
//! No state is kept for a client until its request authenticates: the 401 carries a stateless
//! nonce (a MAC over a timestamp, the security feature bits and the client address), and the
//! next request proves it echoes a nonce we issued to that address recently.
//!
//! Two kinds of client meet here. An RFC 5389 client treats the nonce as opaque, ignores
//! PASSWORD-ALGORITHMS (comprehension-optional) and signs with MESSAGE-INTEGRITY under the MD5
//! key: it is processed "as though PASSWORD-ALGORITHM were MD5" and answered exactly as before,
//! with MESSAGE-INTEGRITY. An RFC 8489 client sees the nonce cookie, echoes
//! PASSWORD-ALGORITHMS, picks a PASSWORD-ALGORITHM (the first of our list it supports:
//! SHA-256), may send USERHASH instead of USERNAME, and signs with MESSAGE-INTEGRITY-SHA256;
//! its responses are signed the same way.
//!
//! Bid-down protection (§9.2.1): our nonce always has the "Password algorithms" bit, and that
//! bit is under the nonce's MAC. A request echoing such a nonce may carry both
//! PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM, or neither (a legacy client); one without the
//! other, a PASSWORD-ALGORITHMS that differs from ours (an attacker removed SHA-256 from the
//! 401), or an algorithm we did not offer, is refused with 400.

use crate::core::auth::{PasswordAlgorithm, SessionKey, UserRef};
use crate::core::counters::AuthFailure;
use crate::core::five_tuple::FiveTuple;
use crate::core::nonce::{NonceStatus, SecurityFeatures, NONCE_LEN};
use crate::core::reply::Responder;
use crate::core::Server;
use crate::stun::{AttrType, ErrorCode, Message};
use std::borrow::Cow;
use std::time::Instant;

/// The PASSWORD-ALGORITHMS we offer, in order of preference (RFC 8489 §14.11): SHA-256, then
/// MD5, neither with parameters. Global: the 401 goes out before the user is known.
pub(crate) const OFFERED_ALGORITHMS: [u8; 8] = [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

impl Server {
    /// Returns the user name and key of an authenticated request, or the error response.
    pub(crate) fn authenticate<'m>(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'m>,
    ) -> Result<(Cow<'m, str>, SessionKey), Vec<u8>> {
        let unix_now = self.unix_now(now);
        let responder = Responder::to(msg, None, None);
        let shared = self.shared.clone();
        let credentials = shared.credentials.load();
        let realm = credentials.realm();
        let features = SecurityFeatures {
            password_algorithms: true,
            username_anonymity: shared.config.userhash,
        };
        let mut nonce_buf = [0u8; NONCE_LEN];
        let challenge = |code: ErrorCode, nonce_buf: &mut [u8; NONCE_LEN]| {
            let nonce = shared
                .nonce_key
                .issue(features, unix_now, from.client, nonce_buf);
            responder.error(code, |b| {
                b.add(AttrType::REALM, realm.as_bytes())?;
                b.add(AttrType::NONCE, nonce.as_bytes())?;
                b.add(AttrType::PASSWORD_ALGORITHMS, &OFFERED_ALGORITHMS)
            })
        };

        // RFC 8489 §9.2.4: no MESSAGE-INTEGRITY(-SHA256) → 401 with REALM, NONCE and
        // PASSWORD-ALGORITHMS.
        if !msg.has_integrity() {
            return Err(challenge(ErrorCode::Unauthenticated, &mut nonce_buf));
        }
        // Integrity without USERNAME (or USERHASH), REALM or NONCE → 400.
        let user = match (msg.username(), msg.userhash()) {
            (Some(Ok(name)), _) => Some(UserRef::Name(name)),
            (None, Some(Ok(hash))) => Some(UserRef::Hash(hash)),
            _ => None,
        };
        let (Some(user), Some(Ok(_realm)), Some(Ok(nonce))) = (user, msg.realm(), msg.nonce())
        else {
            self.counters.auth_failure(AuthFailure::BadRequest);
            return Err(responder.plain_error(ErrorCode::BadRequest));
        };
        // The bid-down checks of §9.2.4, for a nonce whose cookie has "Password algorithms".
        // The bits are read before the MAC check; a nonce whose bits were rewritten fails that
        // check below (438).
        let mut algorithm = PasswordAlgorithm::Md5;
        let rfc8489 = msg.password_algorithms().is_some() || msg.password_algorithm().is_some();
        if SecurityFeatures::of_nonce(nonce).is_some_and(|f| f.password_algorithms) && rfc8489 {
            let chosen = match (msg.password_algorithms(), msg.password_algorithm()) {
                (Some(list), Some(Ok(n))) if list == OFFERED_ALGORITHMS => {
                    PasswordAlgorithm::from_number(n)
                }
                _ => None,
            };
            let Some(chosen) = chosen else {
                self.counters.auth_failure(AuthFailure::BidDown);
                return Err(responder.plain_error(ErrorCode::BadRequest));
            };
            algorithm = chosen;
        }
        let lifetime = shared.config.nonce_lifetime.as_secs();
        match shared
            .nonce_key
            .check(nonce, unix_now, from.client, lifetime)
        {
            NonceStatus::Valid => {}
            // Stale, or not ours: a fresh nonce lets an honest client retry at once.
            NonceStatus::Stale | NonceStatus::Invalid => {
                self.counters.auth_failure(AuthFailure::StaleNonce);
                return Err(challenge(ErrorCode::StaleNonce, &mut nonce_buf));
            }
        }
        match credentials.authenticate_with(user, algorithm, unix_now, |key| {
            msg.verify_any_integrity(key)
        }) {
            Ok((name, mut key)) => {
                // §9.2.4: MESSAGE-INTEGRITY-SHA256 on every response, unless the request was
                // processed as MD5 for carrying neither PASSWORD-ALGORITHM(S).
                key.sha256_integrity = rfc8489;
                Ok((name, key))
            }
            Err(e) => {
                self.counters.auth_failure(AuthFailure::from(e));
                Err(challenge(ErrorCode::Unauthenticated, &mut nonce_buf))
            }
        }
    }
}
