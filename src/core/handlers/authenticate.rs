//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4).
//!
//! No state is kept for a client until its request authenticates: the 401 carries a stateless
//! nonce (a MAC over a timestamp and the client address), and the next request proves it
//! echoes a nonce we issued to that address recently.

use crate::core::auth::{AuthError, Key};
use crate::core::five_tuple::FiveTuple;
use crate::core::nonce::{NonceStatus, NONCE_LEN};
use crate::core::reply::Responder;
use crate::core::server::AuthFailure;
use crate::core::Server;
use crate::stun::{AttrType, Message};
use std::time::Instant;

impl Server {
    /// Returns the USERNAME and key of an authenticated request, or the error response.
    pub(crate) fn authenticate<'m>(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'m>,
    ) -> Result<(&'m str, Key), Vec<u8>> {
        let unix_now = self.unix_now(now);
        let responder = Responder::to(msg, None, None);
        let shared = self.shared.clone();
        let credentials = shared.credentials.load();
        let realm = credentials.realm();
        let mut nonce_buf = [0u8; NONCE_LEN];
        let challenge = |code: u16, nonce_buf: &mut [u8; NONCE_LEN]| {
            let nonce = shared.nonce_key.issue(unix_now, from.client, nonce_buf);
            responder.error(code, |b| {
                b.add(AttrType::REALM, realm.as_bytes())?;
                b.add(AttrType::NONCE, nonce.as_bytes())
            })
        };

        // RFC 8489 §9.2.4: no MESSAGE-INTEGRITY → 401 with REALM and NONCE.
        if !msg.has_integrity() {
            return Err(challenge(401, &mut nonce_buf));
        }
        // MESSAGE-INTEGRITY without USERNAME, REALM or NONCE → 400.
        let (Some(Ok(username)), Some(Ok(_realm)), Some(Ok(nonce))) =
            (msg.username(), msg.realm(), msg.nonce())
        else {
            self.counters.auth_failure(AuthFailure::BadRequest);
            return Err(responder.plain_error(400));
        };
        let lifetime = shared.config.nonce_lifetime.as_secs();
        match shared
            .nonce_key
            .check(nonce, unix_now, from.client, lifetime)
        {
            NonceStatus::Valid => {}
            // Stale, or not ours: a fresh nonce lets an honest client retry at once.
            NonceStatus::Stale | NonceStatus::Invalid => {
                self.counters.auth_failure(AuthFailure::StaleNonce);
                return Err(challenge(438, &mut nonce_buf));
            }
        }
        match credentials.authenticate(username, unix_now, |key| msg.verify_integrity(key)) {
            Ok(key) => Ok((username, key)),
            Err(e) => {
                self.counters.auth_failure(match e {
                    AuthError::UnknownUser => AuthFailure::UnknownUser,
                    AuthError::Expired => AuthFailure::Expired,
                    AuthError::BadIntegrity => AuthFailure::BadIntegrity,
                });
                Err(challenge(401, &mut nonce_buf))
            }
        }
    }
}
