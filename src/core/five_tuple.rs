//! The 5-tuple (RFC 8656 §2): client address, server address and transport. An allocation
//! is identified by the 5-tuple its Allocate request arrived on, so everything a client sends
//! later is matched to its allocation through this key.

use std::net::SocketAddr;

/// The transport between client and server (not the relayed transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Stream transports pad ChannelData to a multiple of 4 (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it (its server-reflexive address).
    pub client: SocketAddr,
    /// The server's listening address the client sent to.
    pub server: SocketAddr,
    pub transport: Transport,
}

impl FiveTuple {
    pub fn udp(client: SocketAddr, server: SocketAddr) -> FiveTuple {
        FiveTuple {
            client,
            server,
            transport: Transport::Udp,
        }
    }
}

impl std::fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{}/{}",
            self.client,
            self.server,
            self.transport.as_str()
        )
    }
}
