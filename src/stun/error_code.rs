//! The error codes of ERROR-CODE (RFC 8489 §14.8) that this server sends, with their reason
//! phrases, as one typed value.
//!
//! The numbers and names are IANA's "STUN Error Codes" registry: RFC 8489 §14.8 (300, 400, 401,
//! 420, 438, 500), RFC 8656 §18 (403, 437, 440, 441, 442, 443, 486, 508) and RFC 6062 §6.3 (446,
//! 447). A handler says `ErrorCode::AllocationMismatch` rather than `437`, so a typo cannot send a
//! code nobody registered, and the reason phrase and the metric label come from the same value.

use std::fmt;

/// An error code the server puts in ERROR-CODE (and in ADDRESS-ERROR-CODE, RFC 8656 §18.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 300 (RFC 8489 §10): the client should contact the server in ALTERNATE-SERVER.
    TryAlternate,
    /// 400 (RFC 8489): the request was malformed.
    BadRequest,
    /// 401 (RFC 8489 §9.2): the request did not carry (valid) credentials.
    Unauthenticated,
    /// 403 (RFC 8656): forbidden by local policy (the peer filter, a missing permission).
    Forbidden,
    /// 420 (RFC 8489): unknown comprehension-required attributes, listed in
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttribute,
    /// 437 (RFC 8656): no allocation on this 5-tuple, or Allocate on one that has one.
    AllocationMismatch,
    /// 438 (RFC 8489 §9.2): the NONCE is no longer valid; a fresh one is in the response.
    StaleNonce,
    /// 440 (RFC 8656): no relayed address of the requested family can be had.
    AddressFamilyNotSupported,
    /// 441 (RFC 8656): the request on an allocation is not from the user who created it.
    WrongCredentials,
    /// 442 (RFC 8656): REQUESTED-TRANSPORT names a protocol the server does not relay.
    UnsupportedTransportProtocol,
    /// 443 (RFC 8656): the peer's family is not one the allocation relays.
    PeerAddressFamilyMismatch,
    /// 446 (RFC 6062): a connection to that peer exists already on the allocation.
    ConnectionAlreadyExists,
    /// 447 (RFC 6062): the connection to the peer could not be made in time.
    ConnectionTimeoutOrFailure,
    /// 486 (RFC 8656): the user (or the server) holds all the allocations it may.
    AllocationQuotaReached,
    /// 500 (RFC 8489): a temporary error on the server.
    ServerError,
    /// 508 (RFC 8656): the server cannot carry out the request for capacity reasons.
    InsufficientCapacity,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::TryAlternate,
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::UnknownAttribute,
        ErrorCode::AllocationMismatch,
        ErrorCode::StaleNonce,
        ErrorCode::AddressFamilyNotSupported,
        ErrorCode::WrongCredentials,
        ErrorCode::UnsupportedTransportProtocol,
        ErrorCode::PeerAddressFamilyMismatch,
        ErrorCode::ConnectionAlreadyExists,
        ErrorCode::ConnectionTimeoutOrFailure,
        ErrorCode::AllocationQuotaReached,
        ErrorCode::ServerError,
        ErrorCode::InsufficientCapacity,
    ];

    /// The number: class × 100 + number (RFC 8489 §14.8).
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::TryAlternate => 300,
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownAttribute => 420,
            ErrorCode::AllocationMismatch => 437,
            ErrorCode::StaleNonce => 438,
            ErrorCode::AddressFamilyNotSupported => 440,
            ErrorCode::WrongCredentials => 441,
            ErrorCode::UnsupportedTransportProtocol => 442,
            ErrorCode::PeerAddressFamilyMismatch => 443,
            ErrorCode::ConnectionAlreadyExists => 446,
            ErrorCode::ConnectionTimeoutOrFailure => 447,
            ErrorCode::AllocationQuotaReached => 486,
            ErrorCode::ServerError => 500,
            ErrorCode::InsufficientCapacity => 508,
        }
    }

    /// The code of `number`, if it is one of ours.
    pub fn from_code(number: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == number)
    }

    /// The reason phrase sent with it: the registry's name, except for 401, which keeps RFC
    /// 5389's "Unauthorized" (RFC 8489 renamed it "Unauthenticated"). The phrase is for humans
    /// only (RFC 8489 §14.8), and the shorter one keeps the 401 challenge — the answer an
    /// unauthenticated source gets — at 120 bytes, a figure the amplification docs quote.
    pub const fn reason(self) -> &'static str {
        match self {
            ErrorCode::TryAlternate => "Try Alternate",
            ErrorCode::BadRequest => "Bad Request",
            ErrorCode::Unauthenticated => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnknownAttribute => "Unknown Attribute",
            ErrorCode::AllocationMismatch => "Allocation Mismatch",
            ErrorCode::StaleNonce => "Stale Nonce",
            ErrorCode::AddressFamilyNotSupported => "Address Family not Supported",
            ErrorCode::WrongCredentials => "Wrong Credentials",
            ErrorCode::UnsupportedTransportProtocol => "Unsupported Transport Protocol",
            ErrorCode::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            ErrorCode::ConnectionAlreadyExists => "Connection Already Exists",
            ErrorCode::ConnectionTimeoutOrFailure => "Connection Timeout or Failure",
            ErrorCode::AllocationQuotaReached => "Allocation Quota Reached",
            ErrorCode::ServerError => "Server Error",
            ErrorCode::InsufficientCapacity => "Insufficient Capacity",
        }
    }

    /// The number as a metric label value ("437").
    pub const fn label(self) -> &'static str {
        match self {
            ErrorCode::TryAlternate => "300",
            ErrorCode::BadRequest => "400",
            ErrorCode::Unauthenticated => "401",
            ErrorCode::Forbidden => "403",
            ErrorCode::UnknownAttribute => "420",
            ErrorCode::AllocationMismatch => "437",
            ErrorCode::StaleNonce => "438",
            ErrorCode::AddressFamilyNotSupported => "440",
            ErrorCode::WrongCredentials => "441",
            ErrorCode::UnsupportedTransportProtocol => "442",
            ErrorCode::PeerAddressFamilyMismatch => "443",
            ErrorCode::ConnectionAlreadyExists => "446",
            ErrorCode::ConnectionTimeoutOrFailure => "447",
            ErrorCode::AllocationQuotaReached => "486",
            ErrorCode::ServerError => "500",
            ErrorCode::InsufficientCapacity => "508",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_labels_and_lookup_agree() {
        let mut last = 0;
        for c in ErrorCode::ALL {
            assert!(c.code() > last, "ALL is in numeric order");
            last = c.code();
            assert_eq!(c.label(), c.code().to_string());
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert!(!c.reason().is_empty());
        }
        assert_eq!(ErrorCode::from_code(404), None);
    }
}
