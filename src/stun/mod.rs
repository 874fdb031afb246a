//! A zero-copy STUN (RFC 8489) and TURN (RFC 8656) codec.
//!
//! Parsing borrows the datagram ([`Message::parse`]) and records where each attribute lies in a
//! fixed-size table, so decoding never touches the heap. Building writes into a caller-owned
//! buffer ([`MessageBuilder`]), so a response can be assembled in a worker's scratch buffer.
//! Errors are small `Copy` enums: a malformed datagram from the network is a value, not a panic.

pub mod address;
pub mod attribute;
pub mod builder;
pub mod channel_data;
pub mod error;
pub mod error_code;
pub mod framing;
pub mod integrity;
pub mod message;
pub mod method;

pub use address::AddressFamily;
pub use attribute::AttrType;
pub use builder::MessageBuilder;
pub use channel_data::ChannelData;
pub use error::{BuildError, ParseError};
pub use error_code::ErrorCode;
pub use message::Message;
pub use method::{Class, MessageType, Method, TransactionId};

/// The fixed value in bytes 4..8 of every RFC 5389+ STUN message (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// Length of the ChannelData header (RFC 8656 §12.4).
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;
