//! Decodes arbitrary bytes as one y-websocket frame. Decoding must never
//! panic, and a frame that decodes must survive re-encoding: encoding the
//! message and decoding the result gives the same message back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_protocol::decode_frame;

fuzz_target!(|frame: &[u8]| {
    if let Ok(message) = decode_frame(frame) {
        let encoded = message.encode();
        assert_eq!(
            decode_frame(&encoded).as_ref(),
            Ok(&message),
            "re-encoded frame {encoded:?} does not decode to the same message"
        );
    }
});
