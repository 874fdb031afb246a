//! ChannelData (RFC 8656 §12.4): parse arbitrary bytes; a parsed frame's payload lies inside
//! the input, and its channel number is in the valid range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd::stun::channel_data::{is_valid_channel, ChannelData};

fuzz_target!(|data: &[u8]| {
    let is = ChannelData::is_channel_data(data);
    if let Some(h) = data.get(..4) {
        let n = ChannelData::stream_frame_len([h[0], h[1], h[2], h[3]]);
        assert!(n >= 4);
    }
    if let Ok(cd) = ChannelData::parse(data) {
        assert!(is);
        assert!(is_valid_channel(cd.channel));
        assert!(cd.data.len() + 4 <= data.len());
    }
});
