//! Message type: the method and class packed into the first 14 bits of the header
//! (RFC 8489 §5, figure 3), and the transaction id that pairs a response with its request.

/// The class of a message: the two C bits of the message type (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

/// A STUN method (12 bits). TURN adds its methods to STUN's Binding (RFC 8656 §17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// RFC 6062 TCP relay methods.
    pub const CONNECT: Method = Method(0x00a);
    pub const CONNECTION_BIND: Method = Method(0x00b);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00c);

    /// A short lowercase name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Method::BINDING => "binding",
            Method::ALLOCATE => "allocate",
            Method::REFRESH => "refresh",
            Method::SEND => "send",
            Method::DATA => "data",
            Method::CREATE_PERMISSION => "create_permission",
            Method::CHANNEL_BIND => "channel_bind",
            Method::CONNECT => "connect",
            Method::CONNECTION_BIND => "connection_bind",
            Method::CONNECTION_ATTEMPT => "connection_attempt",
            _ => "unknown",
        }
    }
}

/// Method and class together: what the 16-bit type field of the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub method: Method,
    pub class: Class,
}

impl MessageType {
    pub const fn new(method: Method, class: Class) -> MessageType {
        MessageType { method, class }
    }

    /// Decodes the type field. The two top bits must be zero: that is what tells STUN apart
    /// from ChannelData (0b01) on a shared port (RFC 8656 §12).
    pub fn from_u16(v: u16) -> Option<MessageType> {
        if v & 0xC000 != 0 {
            return None;
        }
        let m = (v & 0x000F) | ((v & 0x00E0) >> 1) | ((v & 0x3E00) >> 2);
        let class = match ((v >> 7) & 0b10) | ((v >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        };
        Some(MessageType {
            method: Method(m),
            class,
        })
    }

    pub fn to_u16(self) -> u16 {
        let m = self.method.0 & 0x0FFF;
        let c: u16 = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        };
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }
}

/// The 96-bit transaction id (RFC 8489 §5): chosen by the client, echoed in the response,
/// and the key under which the server recognises a retransmitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_type_values() {
        let cases = [
            (0x0001, Method::BINDING, Class::Request),
            (0x0101, Method::BINDING, Class::SuccessResponse),
            (0x0111, Method::BINDING, Class::ErrorResponse),
            (0x0003, Method::ALLOCATE, Class::Request),
            (0x0113, Method::ALLOCATE, Class::ErrorResponse),
            (0x0016, Method::SEND, Class::Indication),
            (0x0017, Method::DATA, Class::Indication),
            (0x0109, Method::CHANNEL_BIND, Class::SuccessResponse),
            (0x001c, Method::CONNECTION_ATTEMPT, Class::Indication),
        ];
        for (raw, method, class) in cases {
            let t = MessageType::from_u16(raw).unwrap();
            assert_eq!((t.method, t.class), (method, class), "{raw:#06x}");
            assert_eq!(t.to_u16(), raw);
        }
    }

    #[test]
    fn every_type_round_trips() {
        for raw in 0u16..0x4000 {
            assert_eq!(MessageType::from_u16(raw).unwrap().to_u16(), raw);
        }
        assert!(MessageType::from_u16(0x4000).is_none());
    }
}
