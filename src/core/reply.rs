//! Building responses. Control-path only: responses are small, built on the stack and then
//! copied into the `Vec` the shell sends.

use super::auth::SessionKey;
use crate::stun::{
    AttrType, BuildError, Class, ErrorCode, Message, MessageBuilder, MessageType, Method,
    TransactionId,
};

/// Large enough for any response this server sends (the biggest is a 420 listing unknown
/// attributes, or an Allocate success with IPv6 addresses: well under 300 bytes).
const MAX_RESPONSE: usize = 548;

/// What every response to a request shares: who it answers, and how to sign it.
#[derive(Clone, Copy)]
pub struct Responder<'a> {
    pub method: Method,
    pub txid: TransactionId,
    /// Present once the request authenticated: the response then carries MESSAGE-INTEGRITY
    /// or MESSAGE-INTEGRITY-SHA256, as the key says (RFC 8489 §9.2.4).
    pub key: Option<&'a SessionKey>,
    pub software: Option<&'a str>,
    /// Answer with FINGERPRINT when the request had one (RFC 8489 §7.3).
    pub fingerprint: bool,
}

impl<'a> Responder<'a> {
    /// A responder for `msg`, signing with `key` when the request authenticated.
    pub fn to(
        msg: &Message,
        key: Option<&'a SessionKey>,
        software: Option<&'a str>,
    ) -> Responder<'a> {
        Responder {
            method: msg.method(),
            txid: msg.transaction_id(),
            key,
            software,
            fingerprint: msg.has_fingerprint(),
        }
    }

    /// A success response; `attrs` adds the method-specific attributes.
    pub fn success(
        &self,
        attrs: impl FnOnce(&mut MessageBuilder) -> Result<(), BuildError>,
    ) -> Vec<u8> {
        self.build(Class::SuccessResponse, |b| attrs(b))
    }

    /// An error response; `attrs` adds attributes beyond ERROR-CODE (REALM, NONCE, …).
    pub fn error(
        &self,
        code: ErrorCode,
        attrs: impl FnOnce(&mut MessageBuilder) -> Result<(), BuildError>,
    ) -> Vec<u8> {
        self.build(Class::ErrorResponse, |b| {
            b.add_error(code)?;
            attrs(b)
        })
    }

    /// An error response with no attributes but ERROR-CODE.
    pub fn plain_error(&self, code: ErrorCode) -> Vec<u8> {
        self.error(code, |_| Ok(()))
    }

    fn build(
        &self,
        class: Class,
        attrs: impl FnOnce(&mut MessageBuilder) -> Result<(), BuildError>,
    ) -> Vec<u8> {
        let mut buf = [0u8; MAX_RESPONSE];
        let ty = MessageType::new(self.method, class);
        let result = (|| {
            let mut b = MessageBuilder::new(&mut buf, ty, self.txid)?;
            attrs(&mut b)?;
            if let Some(s) = self.software {
                b.add(AttrType::SOFTWARE, s.as_bytes())?;
            }
            if let Some(key) = self.key {
                if key.sha256_integrity {
                    b.add_message_integrity_sha256(key.as_bytes())?;
                } else {
                    b.add_message_integrity(key.as_bytes())?;
                }
            }
            if self.fingerprint {
                b.add_fingerprint()?;
            }
            Ok::<usize, BuildError>(b.finish())
        })();
        match result {
            Ok(len) => buf[..len].to_vec(),
            // Only reachable if a response outgrew MAX_RESPONSE (a configured SOFTWARE string
            // longer than the buffer): answer with a bare 500 rather than panic.
            Err(_) => {
                let mut buf = [0u8; 64];
                let ty = MessageType::new(self.method, Class::ErrorResponse);
                let len = MessageBuilder::new(&mut buf, ty, self.txid)
                    .and_then(|mut b| {
                        b.add_error(ErrorCode::ServerError)?;
                        Ok(b.finish())
                    })
                    .unwrap_or(0);
                buf[..len].to_vec()
            }
        }
    }
}
