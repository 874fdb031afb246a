//! Codec errors: small `Copy` values, because a malformed datagram is ordinary input for a
//! server on the open internet, not an exceptional event worth a heap allocation.

use std::fmt;

/// Why a datagram is not a well-formed STUN message or ChannelData frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the header it claims to have.
    Truncated,
    /// The two top bits of the type are not 0b00 (not STUN).
    NotStun,
    /// Bytes 4..8 are not the magic cookie: an RFC 3489 client we do not serve.
    BadMagicCookie,
    /// The length field is not a multiple of 4, or disagrees with the datagram.
    BadLength,
    /// An attribute's length runs past the end of the message.
    AttributeOverflow,
    /// More attributes than the fixed parse table holds ([`crate::stun::message::MAX_ATTRIBUTES`]).
    TooManyAttributes,
    /// FINGERPRINT present but not last, or its CRC does not match.
    BadFingerprint,
    /// An attribute's value has the wrong size or an invalid field.
    BadAttribute(u16),
    /// ChannelData with a channel number outside 0x4000..=0x7FFF.
    BadChannelNumber,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated => f.write_str("truncated message"),
            ParseError::NotStun => f.write_str("not a STUN message"),
            ParseError::BadMagicCookie => f.write_str("bad magic cookie"),
            ParseError::BadLength => f.write_str("bad message length"),
            ParseError::AttributeOverflow => f.write_str("attribute overflows the message"),
            ParseError::TooManyAttributes => f.write_str("too many attributes"),
            ParseError::BadFingerprint => f.write_str("bad FINGERPRINT"),
            ParseError::BadAttribute(t) => write!(f, "malformed attribute {t:#06x}"),
            ParseError::BadChannelNumber => f.write_str("channel number out of range"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Why a message could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The caller's buffer is too small for what was asked.
    BufferTooSmall,
    /// An attribute value longer than the 16-bit length field can say.
    ValueTooLong,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BufferTooSmall => f.write_str("buffer too small"),
            BuildError::ValueTooLong => f.write_str("attribute value too long"),
        }
    }
}

impl std::error::Error for BuildError {}
