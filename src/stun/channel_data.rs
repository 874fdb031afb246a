//! ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel number, length) in front
//! of the application data. It exists so media can be relayed with 4 bytes of overhead
//! instead of a 36-byte Send/Data indication.

use super::{ParseError, CHANNEL_DATA_HEADER_LEN};

/// The channel numbers a client may bind. RFC 8656 narrowed the range to 0x4000–0x4FFF, but
/// deployed clients (RFC 5766 implementations, browsers) use up to 0x7FFF, so we accept both.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;

pub fn is_valid_channel(n: u16) -> bool {
    (CHANNEL_MIN..=CHANNEL_MAX).contains(&n)
}

/// A parsed ChannelData message borrowing its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// True when the first two bits are 0b01: ChannelData rather than STUN (RFC 8656 §12).
    pub fn is_channel_data(buf: &[u8]) -> bool {
        buf.first().is_some_and(|b| b & 0xC0 == 0x40)
    }

    /// Parses a ChannelData datagram. Over UDP the datagram may carry up to 3 bytes of padding
    /// after the data (RFC 8656 §12.5), so a datagram longer than the length field is accepted
    /// and the extra bytes are ignored; a shorter one is dropped.
    pub fn parse(buf: &'a [u8]) -> Result<ChannelData<'a>, ParseError> {
        if buf.len() < CHANNEL_DATA_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !is_valid_channel(channel) {
            return Err(ParseError::BadChannelNumber);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        let data = buf
            .get(CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + len)
            .ok_or(ParseError::BadLength)?;
        Ok(ChannelData { channel, data })
    }

    /// The framed length a stream transport needs to read: header, data, and padding to a
    /// multiple of 4 (padding is mandatory over TCP, RFC 8656 §12.5).
    pub fn stream_frame_len(header: [u8; 4]) -> usize {
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        CHANNEL_DATA_HEADER_LEN + ((len + 3) & !3)
    }
}

/// Writes a ChannelData header into `out[..4]`. The relay reads peer datagrams at an offset of
/// 4 so the header can be written in front of the payload in place, with no copy.
pub fn write_header(out: &mut [u8], channel: u16, len: u16) {
    out[0..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_padding() {
        let buf = [0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0];
        let cd = ChannelData::parse(&buf).unwrap();
        assert_eq!(cd.channel, 0x4000);
        assert_eq!(cd.data, &[1, 2, 3]);
        assert_eq!(ChannelData::stream_frame_len([0x40, 0, 0, 3]), 8);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(ChannelData::parse(&[0x40, 0]), Err(ParseError::Truncated));
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 5, 1]),
            Err(ParseError::BadLength)
        );
        assert_eq!(
            ChannelData::parse(&[0x80, 0, 0, 0]),
            Err(ParseError::BadChannelNumber)
        );
        assert_eq!(
            ChannelData::parse(&[0x3F, 0xFF, 0, 0]),
            Err(ParseError::BadChannelNumber)
        );
        assert!(ChannelData::parse(&[0x7F, 0xFF, 0, 0]).is_ok());
    }
}
