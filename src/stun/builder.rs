//! Building a STUN message into a caller-owned buffer.
//!
//! The header's length field is kept current after every attribute, so MESSAGE-INTEGRITY and
//! FINGERPRINT can be computed over exactly what precedes them (RFC 8489 §14.5, §14.7).

use super::address;
use super::attribute::AttrType;
use super::integrity::{self, INTEGRITY_LEN, INTEGRITY_SHA256_MAX};
use super::{BuildError, ErrorCode, MessageType, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use std::net::SocketAddr;

/// Writes one message into `buf`. Call [`MessageBuilder::finish`] for its length.
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> MessageBuilder<'b> {
    pub fn new(
        buf: &'b mut [u8],
        ty: MessageType,
        txid: TransactionId,
    ) -> Result<Self, BuildError> {
        if buf.len() < HEADER_LEN {
            return Err(BuildError::BufferTooSmall);
        }
        buf[0..2].copy_from_slice(&ty.to_u16().to_be_bytes());
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(&txid.0);
        Ok(MessageBuilder {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Length written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    fn set_length_field(&mut self, body: usize) {
        self.buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    }

    /// Reserves an attribute of `value_len` bytes (padded to 4) and returns its value slice.
    fn reserve(&mut self, ty: AttrType, value_len: usize) -> Result<&mut [u8], BuildError> {
        if value_len > u16::MAX as usize {
            return Err(BuildError::ValueTooLong);
        }
        let padded = (value_len + 3) & !3;
        let end = self.len + 4 + padded;
        if end > self.buf.len() || end - HEADER_LEN > u16::MAX as usize {
            return Err(BuildError::BufferTooSmall);
        }
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&ty.0.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&(value_len as u16).to_be_bytes());
        // Padding bytes are zero (RFC 8489 §14 lets them be anything; zero is predictable).
        self.buf[at + 4 + value_len..end].fill(0);
        self.len = end;
        self.set_length_field(end - HEADER_LEN);
        Ok(&mut self.buf[at + 4..at + 4 + value_len])
    }

    pub fn add(&mut self, ty: AttrType, value: &[u8]) -> Result<(), BuildError> {
        self.reserve(ty, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// An attribute of `len` zero bytes (PADDING, RFC 5780 §7.6: its value does not matter).
    pub fn add_zeros(&mut self, ty: AttrType, len: usize) -> Result<(), BuildError> {
        self.reserve(ty, len)?.fill(0);
        Ok(())
    }

    pub fn add_u32(&mut self, ty: AttrType, v: u32) -> Result<(), BuildError> {
        self.add(ty, &v.to_be_bytes())
    }

    pub fn add_xor_address(&mut self, ty: AttrType, addr: &SocketAddr) -> Result<(), BuildError> {
        let txid = self.txid();
        let out = self.reserve(ty, address::encoded_len(addr))?;
        address::encode_xor(addr, &txid, out);
        Ok(())
    }

    pub fn add_address(&mut self, ty: AttrType, addr: &SocketAddr) -> Result<(), BuildError> {
        let out = self.reserve(ty, address::encoded_len(addr))?;
        address::encode_plain(addr, out);
        Ok(())
    }

    /// ERROR-CODE: class and number split as RFC 8489 §14.8 lays them out.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> Result<(), BuildError> {
        let out = self.reserve(AttrType::ERROR_CODE, 4 + reason.len())?;
        out[0] = 0;
        out[1] = 0;
        out[2] = (code / 100) as u8;
        out[3] = (code % 100) as u8;
        out[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// ERROR-CODE with `code`'s number and reason phrase.
    pub fn add_error(&mut self, code: ErrorCode) -> Result<(), BuildError> {
        self.add_error_code(code.code(), code.reason())
    }

    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> Result<(), BuildError> {
        let out = self.reserve(AttrType::UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (chunk, t) in out.chunks_exact_mut(2).zip(types) {
            chunk.copy_from_slice(&t.to_be_bytes());
        }
        Ok(())
    }

    fn txid(&self) -> TransactionId {
        let mut t = TransactionId::default();
        t.0.copy_from_slice(&self.buf[8..20]);
        t
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (the long-term key, RFC 8489 §9.2.2).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), BuildError> {
        let at = self.len;
        if at + 4 + INTEGRITY_LEN > self.buf.len() {
            return Err(BuildError::BufferTooSmall);
        }
        let length_field = (at + 4 + INTEGRITY_LEN - HEADER_LEN) as u16;
        let mac = integrity::hmac_sha1(key, &self.buf[..at], length_field);
        self.add(AttrType::MESSAGE_INTEGRITY, &mac)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (untruncated) keyed with `key` (RFC 8489 §14.6).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), BuildError> {
        let at = self.len;
        if at + 4 + INTEGRITY_SHA256_MAX > self.buf.len() {
            return Err(BuildError::BufferTooSmall);
        }
        let length_field = (at + 4 + INTEGRITY_SHA256_MAX - HEADER_LEN) as u16;
        let mac = integrity::hmac_sha256(key, &self.buf[..at], length_field);
        self.add(AttrType::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), BuildError> {
        let at = self.len;
        if at + 8 > self.buf.len() {
            return Err(BuildError::BufferTooSmall);
        }
        let crc = integrity::fingerprint(&self.buf[..at], (at + 8 - HEADER_LEN) as u16);
        self.add_u32(AttrType::FINGERPRINT, crc)
    }

    /// The length of the finished message; `buf[..len]` is ready to send.
    pub fn finish(self) -> usize {
        self.len
    }
}
