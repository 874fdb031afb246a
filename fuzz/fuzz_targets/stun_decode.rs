//! The STUN decoder: `Message::parse` on arbitrary bytes, then every getter on what parsed.
//! Invariant: no panic; a parsed message's raw bytes are a prefix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd::stun::{attribute::is_understood, message::looks_like_stun, AttrType, Message};

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_stun(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(data.starts_with(msg.raw()));
    let _ = (
        msg.message_type(),
        msg.method(),
        msg.class(),
        msg.transaction_id(),
    );
    for (ty, value) in msg.attributes() {
        let _ = (
            ty.is_comprehension_required(),
            msg.get(ty),
            msg.has(ty),
            value.len(),
        );
    }
    let mut unknown = [0u16; 16];
    let n = msg.unknown_required(is_understood, &mut unknown);
    assert!(n <= unknown.len());
    let _ = (msg.has_fingerprint(), msg.has_integrity());
    let _ = msg.verify_integrity(&[0u8; 16]);
    let _ = (
        msg.verify_integrity_sha256(&[0u8; 32]),
        msg.verify_any_integrity(&[0u8; 16]),
    );
    let _ = (
        msg.userhash(),
        msg.password_algorithm(),
        msg.password_algorithms(),
    );
    let _ = (msg.username(), msg.realm(), msg.nonce(), msg.software());
    let _ = (
        msg.lifetime(),
        msg.requested_transport(),
        msg.channel_number(),
    );
    let _ = (
        msg.even_port(),
        msg.reservation_token(),
        msg.dont_fragment(),
    );
    let _ = (
        msg.requested_address_family(),
        msg.additional_address_family(),
    );
    let _ = (
        msg.xor_mapped_address(),
        msg.xor_relayed_address(),
        msg.xor_peer_address(),
    );
    let _ = msg.xor_peer_addresses().count();
    let _ = msg.mapped_address();
    if let (Some(d), Some(r)) = (msg.data(), msg.data_range()) {
        assert_eq!(&data[r], d);
    }
    let _ = msg.error_code();
    let _ = msg.unknown_attributes().count();
    let _ = msg.get(AttrType::FINGERPRINT);
});
