//! Cutting a byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5).
//!
//! Over TCP and TLS the client's messages arrive as one byte stream. The first two bits of
//! every frame say what it is: `0b00` a STUN message, whose length field (bytes 2..4) counts
//! the attributes after the 20-byte header; `0b01` ChannelData, whose length field counts the
//! application data after the 4-byte header, padded to a multiple of 4 on streams. Anything
//! else means the stream is out of step (or not TURN at all); there is no way to find the next
//! frame boundary again, so the connection must be closed.
//!
//! Sans-IO like the rest of the codec: the shell buffers what it reads and asks
//! [`frame_len`] / [`complete_frame`] where the next frame ends.

use super::{CHANNEL_DATA_HEADER_LEN, HEADER_LEN};

/// Why a stream cannot be framed. Every case is fatal for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// The first two bits are 0b10 or 0b11: neither STUN nor ChannelData.
    BadFirstByte(u8),
    /// A STUN length field that is not a multiple of 4 (RFC 8489 §5).
    UnalignedStunLength(u16),
    /// The frame would be longer than the configured maximum.
    TooLarge { len: usize, max: usize },
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::BadFirstByte(b) => {
                write!(f, "first byte {b:#04x} is neither STUN nor ChannelData")
            }
            FramingError::UnalignedStunLength(l) => {
                write!(f, "STUN length {l} is not a multiple of 4")
            }
            FramingError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
        }
    }
}

impl std::error::Error for FramingError {}

/// The largest frame the protocol allows: a STUN message with a 65,532-byte body (the
/// largest multiple of 4 a 16-bit length holds). A padded ChannelData frame is at most 65,540.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + 0xFFFC;

/// The full length of the frame at the start of `buf`, once its 4-byte header is there
/// (`Ok(None)` before that). The frame may not be complete yet: compare with `buf.len()`.
/// The first byte is checked as soon as it arrives, so garbage fails fast.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let channel_data = match first >> 6 {
        0b00 => false,
        0b01 => true,
        _ => return Err(FramingError::BadFirstByte(first)),
    };
    let Some(header) = buf.get(..CHANNEL_DATA_HEADER_LEN) else {
        return Ok(None);
    };
    let field = u16::from_be_bytes([header[2], header[3]]);
    let len = if channel_data {
        // Padding to 4 is mandatory on stream transports.
        CHANNEL_DATA_HEADER_LEN + ((field as usize + 3) & !3)
    } else {
        if field % 4 != 0 {
            return Err(FramingError::UnalignedStunLength(field));
        }
        HEADER_LEN + field as usize
    };
    if len > max {
        return Err(FramingError::TooLarge { len, max });
    }
    Ok(Some(len))
}

/// The length of the next frame if `buf` holds all of it.
pub fn complete_frame(buf: &[u8], max: usize) -> Result<Option<usize>, FramingError> {
    Ok(frame_len(buf, max)?.filter(|&n| n <= buf.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stun(body: usize) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN + body];
        v[0] = 0x00;
        v[1] = 0x01;
        v[2..4].copy_from_slice(&(body as u16).to_be_bytes());
        v[4..8].copy_from_slice(&super::super::MAGIC_COOKIE.to_be_bytes());
        for (i, b) in v[HEADER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v
    }

    fn channel_data(channel: u16, data: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(data as u16).to_be_bytes());
        v.extend((0..data).map(|i| i as u8 ^ 0x5A));
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn lengths_of_each_kind() {
        assert_eq!(frame_len(&[], 100), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00], 100), Ok(None));
        assert_eq!(frame_len(&stun(8), 100), Ok(Some(28)));
        assert_eq!(frame_len(&stun(0)[..4], 100), Ok(Some(20)));
        // ChannelData: 4 + data, padded to 4.
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x03], 100), Ok(Some(8)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x04], 100), Ok(Some(8)));
        assert_eq!(frame_len(&[0x7F, 0xFF, 0x00, 0x00], 100), Ok(Some(4)));
        assert_eq!(
            complete_frame(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3], 100),
            Ok(None)
        );
        assert_eq!(
            complete_frame(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0], 100),
            Ok(Some(8))
        );
        assert_eq!(
            frame_len(&channel_data(0x4000, 0xFFFF), MAX_FRAME_LEN),
            Ok(Some(0x10004))
        );
    }

    #[test]
    fn fatal_errors() {
        assert_eq!(
            frame_len(&[0x80], 100),
            Err(FramingError::BadFirstByte(0x80))
        );
        assert_eq!(
            frame_len(&[0xC3, 0, 0, 0], 100),
            Err(FramingError::BadFirstByte(0xC3))
        );
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x05], 100),
            Err(FramingError::UnalignedStunLength(5))
        );
        assert_eq!(
            frame_len(&stun(100), 100),
            Err(FramingError::TooLarge { len: 120, max: 100 })
        );
        assert_eq!(
            frame_len(&[0x40, 0x00, 0x00, 0x61], 100),
            Err(FramingError::TooLarge { len: 104, max: 100 })
        );
    }

    /// Cuts `stream` the way a connection does: append each chunk, take every complete frame.
    fn reassemble(stream: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        for p in points {
            buf.extend_from_slice(&stream[at..p.max(at)]);
            at = p.max(at);
            while let Some(n) = complete_frame(&buf, max)? {
                frames.push(buf.drain(..n).collect());
            }
        }
        assert!(buf.is_empty(), "bytes left over: {buf:?}");
        Ok(frames)
    }

    fn frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0usize..64).prop_map(|w| stun(w * 4)),
            (0x4000u16..=0x7FFF, 0usize..300).prop_map(|(c, n)| channel_data(c, n)),
        ]
    }

    proptest! {
        #[test]
        fn any_split_reassembles_exactly(
            frames in proptest::collection::vec(frame(), 1..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let stream: Vec<u8> = frames.concat();
            let got = reassemble(&stream, &cuts, MAX_FRAME_LEN).unwrap();
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn byte_by_byte_reassembles(frames in proptest::collection::vec(frame(), 1..6)) {
            let stream: Vec<u8> = frames.concat();
            let cuts: Vec<usize> = (0..stream.len()).collect();
            prop_assert_eq!(reassemble(&stream, &cuts, MAX_FRAME_LEN).unwrap(), frames);
        }

        #[test]
        fn never_panics_and_lengths_are_sane(
            buf in proptest::collection::vec(any::<u8>(), 0..64),
            max in 0usize..100_000,
        ) {
            match frame_len(&buf, max) {
                Ok(Some(n)) => {
                    prop_assert!(n <= max);
                    prop_assert!(n >= CHANNEL_DATA_HEADER_LEN);
                    prop_assert!(n % 4 == 0);
                }
                Ok(None) => prop_assert!(buf.len() < 4),
                Err(_) => {}
            }
            let _ = complete_frame(&buf, max);
        }
    }
}
