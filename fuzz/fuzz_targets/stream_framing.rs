//! TCP/TLS stream framing: the input is a byte stream cut into reads; frames are peeled off the
//! way the shell's reader does. Invariants: no panic, a frame is never longer than `max`, never
//! shorter than a header, and the reader always makes progress or asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd::stun::framing::{complete_frame, frame_len, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    // The configurable bound (512..=65552), chosen by the first byte.
    let max = [512, 1500, 4096, MAX_FRAME_LEN, 65552][sel as usize % 5];
    let mut buf: Vec<u8> = Vec::new();
    // Reads of 1..=64 bytes, sized by the stream itself.
    let mut rest = stream;
    while !rest.is_empty() {
        let take = (rest[0] as usize % 64 + 1).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match frame_len(&buf, max) {
                Err(_) => return, // the connection is closed
                Ok(None) => break,
                Ok(Some(n)) => {
                    assert!(n >= 4 && n <= max);
                    match complete_frame(&buf, max) {
                        Ok(Some(m)) => {
                            assert_eq!(m, n);
                            assert!(m <= buf.len());
                            buf.drain(..m);
                        }
                        Ok(None) => {
                            assert!(buf.len() < n);
                            break;
                        }
                        Err(_) => unreachable!("frame_len accepted it"),
                    }
                }
            }
        }
    }
});
