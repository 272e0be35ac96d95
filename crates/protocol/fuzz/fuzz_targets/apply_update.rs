//! Feeds arbitrary bytes through what Weft does with a peer's update
//! payload: `weft_protocol::check_update_v1`, then `yrs::Update::decode_v1`,
//! then applying whatever decodes to a fresh document. Nothing here may
//! panic: a panic is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

fuzz_target!(|data: &[u8]| {
    if weft_protocol::check_update_v1(data).is_err() {
        return;
    }
    if let Ok(update) = Update::decode_v1(data) {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        // Refusing an update is fine; panicking is not.
        let _refused_is_fine = txn.apply_update(update);
    }
});
