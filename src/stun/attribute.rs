//! Attribute types (IANA STUN registry) and the comprehension rule of RFC 8489 §14.

/// A STUN attribute type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrType(pub u16);

impl AttrType {
    pub const MAPPED_ADDRESS: AttrType = AttrType(0x0001);
    pub const CHANGE_REQUEST: AttrType = AttrType(0x0003);
    pub const USERNAME: AttrType = AttrType(0x0006);
    pub const MESSAGE_INTEGRITY: AttrType = AttrType(0x0008);
    pub const ERROR_CODE: AttrType = AttrType(0x0009);
    pub const UNKNOWN_ATTRIBUTES: AttrType = AttrType(0x000A);
    pub const CHANNEL_NUMBER: AttrType = AttrType(0x000C);
    pub const LIFETIME: AttrType = AttrType(0x000D);
    pub const XOR_PEER_ADDRESS: AttrType = AttrType(0x0012);
    pub const DATA: AttrType = AttrType(0x0013);
    pub const REALM: AttrType = AttrType(0x0014);
    pub const NONCE: AttrType = AttrType(0x0015);
    pub const XOR_RELAYED_ADDRESS: AttrType = AttrType(0x0016);
    pub const REQUESTED_ADDRESS_FAMILY: AttrType = AttrType(0x0017);
    pub const EVEN_PORT: AttrType = AttrType(0x0018);
    pub const REQUESTED_TRANSPORT: AttrType = AttrType(0x0019);
    pub const DONT_FRAGMENT: AttrType = AttrType(0x001A);
    pub const MESSAGE_INTEGRITY_SHA256: AttrType = AttrType(0x001C);
    pub const PASSWORD_ALGORITHM: AttrType = AttrType(0x001D);
    pub const USERHASH: AttrType = AttrType(0x001E);
    pub const XOR_MAPPED_ADDRESS: AttrType = AttrType(0x0020);
    pub const RESERVATION_TOKEN: AttrType = AttrType(0x0022);
    pub const PRIORITY: AttrType = AttrType(0x0024);
    pub const USE_CANDIDATE: AttrType = AttrType(0x0025);
    pub const PADDING: AttrType = AttrType(0x0026);
    pub const RESPONSE_PORT: AttrType = AttrType(0x0027);
    pub const CONNECTION_ID: AttrType = AttrType(0x002A);
    pub const ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
    pub const ADDRESS_ERROR_CODE: AttrType = AttrType(0x8001);
    pub const PASSWORD_ALGORITHMS: AttrType = AttrType(0x8002);
    pub const ALTERNATE_DOMAIN: AttrType = AttrType(0x8003);
    pub const ICMP: AttrType = AttrType(0x8004);
    pub const SOFTWARE: AttrType = AttrType(0x8022);
    pub const ALTERNATE_SERVER: AttrType = AttrType(0x8023);
    pub const TRANSACTION_TRANSMIT_COUNTER: AttrType = AttrType(0x8025);
    pub const CACHE_TIMEOUT: AttrType = AttrType(0x8027);
    pub const FINGERPRINT: AttrType = AttrType(0x8028);
    pub const ICE_CONTROLLED: AttrType = AttrType(0x8029);
    pub const ICE_CONTROLLING: AttrType = AttrType(0x802A);
    pub const RESPONSE_ORIGIN: AttrType = AttrType(0x802B);
    pub const OTHER_ADDRESS: AttrType = AttrType(0x802C);

    /// Types 0x0000–0x7FFF are comprehension-required: a server that does not understand one
    /// must reject the request with 420 and list it in UNKNOWN-ATTRIBUTES (RFC 8489 §14).
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

/// The comprehension-required attributes this server understands in requests and
/// indications. Anything else below 0x8000 earns a 420 (RFC 8489 §6.3.1.1).
pub fn is_understood(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::MAPPED_ADDRESS
            | AttrType::USERNAME
            | AttrType::MESSAGE_INTEGRITY
            // RFC 8489 §9.2: SHA-256 long-term credentials and anonymous usernames.
            | AttrType::MESSAGE_INTEGRITY_SHA256
            | AttrType::PASSWORD_ALGORITHM
            | AttrType::USERHASH
            | AttrType::ERROR_CODE
            | AttrType::UNKNOWN_ATTRIBUTES
            | AttrType::CHANNEL_NUMBER
            | AttrType::LIFETIME
            | AttrType::XOR_PEER_ADDRESS
            | AttrType::DATA
            | AttrType::REALM
            | AttrType::NONCE
            | AttrType::XOR_RELAYED_ADDRESS
            | AttrType::REQUESTED_ADDRESS_FAMILY
            | AttrType::EVEN_PORT
            | AttrType::REQUESTED_TRANSPORT
            | AttrType::DONT_FRAGMENT
            | AttrType::XOR_MAPPED_ADDRESS
            | AttrType::RESERVATION_TOKEN
            | AttrType::CONNECTION_ID
            // ICE connectivity-check attributes: harmless on a Binding request.
            | AttrType::PRIORITY
            | AttrType::USE_CANDIDATE
    )
}

/// RFC 5780's comprehension-required request attributes, understood on Binding requests
/// where NAT behaviour discovery is served.
pub fn is_nat_discovery_attribute(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::CHANGE_REQUEST | AttrType::PADDING | AttrType::RESPONSE_PORT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comprehension_split() {
        assert!(AttrType::USERNAME.is_comprehension_required());
        assert!(AttrType(0x7FFF).is_comprehension_required());
        assert!(!AttrType::SOFTWARE.is_comprehension_required());
        assert!(!AttrType::FINGERPRINT.is_comprehension_required());
    }
}
