//! Application data through the relay: Send indications and ChannelData out, Data
//! indications and ChannelData in (RFC 8656 §11, §12).
//!
//! These are the data path, so nothing here allocates: encoding writes into the caller's
//! buffer and decoding borrows the datagram. A load generator can build its datagrams with
//! them and stay as cheap as the server it measures.

use crate::stun::channel_data::{self, ChannelData};
use crate::stun::{
    AttrType, BuildError, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
    CHANNEL_DATA_HEADER_LEN,
};
use std::net::SocketAddr;

/// How a relayed payload arrived, or is to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// A Send or Data indication to or from this peer.
    Peer(SocketAddr),
    /// ChannelData on this channel.
    Channel(u16),
}

/// A payload relayed from a peer, borrowing the datagram it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub via: Via,
    pub data: &'a [u8],
}

/// Encodes a Send indication (RFC 8656 §11.1): XOR-PEER-ADDRESS and DATA, no credentials and
/// no answer. Returns its length in `buf`.
pub fn encode_send(
    buf: &mut [u8],
    txid: TransactionId,
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, BuildError> {
    let ty = MessageType::new(Method::SEND, Class::Indication);
    let mut b = MessageBuilder::new(buf, ty, txid)?;
    b.add_xor_address(AttrType::XOR_PEER_ADDRESS, &peer)?;
    b.add(AttrType::DATA, data)?;
    Ok(b.finish())
}

/// Encodes ChannelData (RFC 8656 §12.4); with `pad`, zero padding to a multiple of 4, which
/// streams require (§12.5). Returns its length in `buf`.
pub fn encode_channel_data(
    buf: &mut [u8],
    channel: u16,
    data: &[u8],
    pad: bool,
) -> Result<usize, BuildError> {
    if data.len() > u16::MAX as usize {
        return Err(BuildError::ValueTooLong);
    }
    let end = CHANNEL_DATA_HEADER_LEN + data.len();
    let padded = if pad { (end + 3) & !3 } else { end };
    let out = buf.get_mut(..padded).ok_or(BuildError::BufferTooSmall)?;
    // Checked above: the length fits the 16-bit field.
    channel_data::write_header(out, channel, data.len() as u16);
    out[CHANNEL_DATA_HEADER_LEN..end].copy_from_slice(data);
    out[end..].fill(0);
    Ok(padded)
}

/// The payload of a Data indication or ChannelData message from the server; `None` for
/// anything else (responses, other indications, garbage).
pub fn decode(datagram: &[u8]) -> Option<Relayed<'_>> {
    if ChannelData::is_channel_data(datagram) {
        let cd = ChannelData::parse(datagram).ok()?;
        return Some(Relayed {
            via: Via::Channel(cd.channel),
            data: cd.data,
        });
    }
    decode_data_indication(&Message::parse(datagram).ok()?)
}

/// The payload of a parsed Data indication (RFC 8656 §11.4).
pub fn decode_data_indication<'a>(m: &Message<'a>) -> Option<Relayed<'a>> {
    if m.method() != Method::DATA || m.class() != Class::Indication {
        return None;
    }
    let peer = m.xor_peer_address()?.ok()?;
    Some(Relayed {
        via: Via::Peer(peer),
        data: m.data()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let mut buf = [0xFFu8; 16];
        let n = encode_channel_data(&mut buf, 0x4001, b"abcde", false).unwrap();
        assert_eq!(&buf[..n], b"\x40\x01\x00\x05abcde");
        let n = encode_channel_data(&mut buf, 0x4001, b"abcde", true).unwrap();
        assert_eq!(&buf[..n], b"\x40\x01\x00\x05abcde\0\0\0");
        let r = decode(&buf[..n]).unwrap();
        assert_eq!((r.via, r.data), (Via::Channel(0x4001), &b"abcde"[..]));
        assert_eq!(
            encode_channel_data(&mut buf, 0x4001, &[0; 13], false),
            Err(BuildError::BufferTooSmall)
        );
    }

    #[test]
    fn a_send_indication_is_not_data_but_a_data_indication_is() {
        let peer: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = encode_send(&mut buf, TransactionId([3; 12]), peer, b"hi").unwrap();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!((m.method(), m.class()), (Method::SEND, Class::Indication));
        assert_eq!(m.xor_peer_address(), Some(Ok(peer)));
        assert_eq!(m.data(), Some(&b"hi"[..]));
        assert_eq!(
            decode(&buf[..n]),
            None,
            "a Send indication is outbound only"
        );
        // The same bytes with the DATA method.
        let ty = MessageType::new(Method::DATA, Class::Indication).to_u16();
        buf[..2].copy_from_slice(&ty.to_be_bytes());
        let r = decode(&buf[..n]).unwrap();
        assert_eq!((r.via, r.data), (Via::Peer(peer), &b"hi"[..]));
    }

    #[test]
    fn garbage_is_not_data() {
        for d in [&[][..], &[0x40, 0, 0, 9, 1], &[0x80; 24], &[0; 20]] {
            assert_eq!(decode(d), None, "{d:?}");
        }
    }
}
