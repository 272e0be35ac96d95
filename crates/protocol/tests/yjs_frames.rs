//! Frames as Yjs JavaScript clients (y-websocket, y-protocols, lib0) write
//! them, as byte literals.
//!
//! Layout, from y-protocols: `writeVarUint(messageType)`, then for sync
//! `writeVarUint(step)` and `writeVarUint8Array(payload)`; for awareness
//! `writeVarUint8Array(encodeAwarenessUpdate(..))`; for auth
//! `writeVarUint(0)` and `writeVarString(reason)`. lib0 varuints are
//! little-endian base-128; strings and byte arrays carry a varuint length.

use std::collections::HashMap;
use std::sync::Arc;

use weft_protocol::{
    AuthMessage, AwarenessUpdate, AwarenessUpdateEntry, Message, StateVector, SyncMessage,
    decode_frame,
};
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

/// A y-websocket client id (`random.uint32()`): 1234567, whose varuint is
/// `0x87 0xad 0x4b` (7, 45, 75 in base 128).
const CLIENT: u64 = 1_234_567;

/// `Y.encodeStateAsUpdate` of a document where client 1 typed "a" into
/// `doc.getText('t')`: one client with one struct (clock 0), an item with
/// info 4 (ContentString, no origins), parent by root key "t", content "a",
/// and an empty delete set.
const UPDATE_INSERT_A: [u8; 11] = [1, 1, 1, 0, 4, 1, 1, b't', 1, b'a', 0];

/// Asserts the frame decodes to `expected`, and, when the message has a
/// single canonical encoding, that encoding it gives the frame back.
fn assert_frame(frame: &[u8], expected: &Message, canonical: bool) {
    assert_eq!(
        decode_frame(frame).as_ref(),
        Ok(expected),
        "frame {frame:?}"
    );
    if canonical {
        assert_eq!(expected.encode(), frame);
    }
}

#[test]
fn sync_step_1_of_an_empty_document() {
    // encodeStateVector(new Y.Doc()) is [0]: zero entries.
    let frame = [0, 0, 1, 0];
    assert_frame(
        &frame,
        &Message::Sync(SyncMessage::SyncStep1(StateVector::default())),
        true,
    );
}

#[test]
fn sync_step_2_of_an_empty_document() {
    // encodeStateAsUpdate(new Y.Doc()) is [0, 0]: no structs, no deletes.
    let frame = [0, 1, 2, 0, 0];
    assert_frame(
        &frame,
        &Message::Sync(SyncMessage::SyncStep2(vec![0, 0])),
        true,
    );
}

#[test]
fn sync_step_1_with_one_client() {
    // One entry: client 1234567 at clock 5.
    let frame = [0, 0, 5, 1, 0x87, 0xad, 0x4b, 5];
    let sv: StateVector = [(ClientID::new(CLIENT), 5)].into_iter().collect();
    assert_frame(&frame, &Message::Sync(SyncMessage::SyncStep1(sv)), true);
}

#[test]
fn update_inserting_one_character() {
    let mut frame = vec![0, 2, 11];
    frame.extend(UPDATE_INSERT_A);
    assert_frame(
        &frame,
        &Message::Sync(SyncMessage::Update(UPDATE_INSERT_A.to_vec())),
        true,
    );

    // The payload is a real Yjs update: yrs applies it and sees "a".
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let update = Update::decode_v1(&UPDATE_INSERT_A).unwrap();
    doc.transact_mut().apply_update(update).unwrap();
    assert_eq!(text.get_string(&doc.transact()), "a");

    // And that document's SyncStep1 is what a JS peer holding it sends:
    // client 1 at clock 1.
    let frame = [0, 0, 3, 1, 1, 1];
    let sv = doc.transact().state_vector();
    assert_frame(&frame, &Message::Sync(SyncMessage::SyncStep1(sv)), true);
}

#[test]
fn awareness_state_of_one_client() {
    // encodeAwarenessUpdate(awareness, [1234567]) after
    // setLocalStateField('user', { name: 'ana' }): clock 1.
    let json = br#"{"user":{"name":"ana"}}"#;
    assert_eq!(json.len(), 23);
    let mut payload = vec![1, 0x87, 0xad, 0x4b, 1, 23];
    payload.extend(json);
    let mut frame = vec![1, 29];
    frame.extend(&payload);
    assert_eq!(frame.len(), 31);

    let expected = awareness(&[(CLIENT, 1, r#"{"user":{"name":"ana"}}"#)]);
    assert_frame(&frame, &expected, true);
}

#[test]
fn awareness_removal_is_a_null_state() {
    // removeAwarenessStates: the state becomes null and the clock goes up.
    let frame = [1, 10, 1, 0x87, 0xad, 0x4b, 2, 4, b'n', b'u', b'l', b'l'];
    assert_frame(&frame, &awareness(&[(CLIENT, 2, "null")]), true);
}

#[test]
fn awareness_of_two_clients() {
    let mut payload = vec![2];
    payload.extend([1, 3, 2, b'{', b'}']);
    payload.extend([0x87, 0xad, 0x4b, 0x80, 0x01, 4, b'n', b'u', b'l', b'l']);
    let mut frame = vec![1, payload.len() as u8];
    frame.extend(&payload);
    // Two entries: the encoding order follows a hash map, so only decode.
    assert_frame(
        &frame,
        &awareness(&[(1, 3, "{}"), (CLIENT, 128, "null")]),
        false,
    );
}

#[test]
fn query_awareness() {
    assert_frame(&[3], &Message::QueryAwareness, true);
}

#[test]
fn auth_permission_denied() {
    // y-protocols auth.js writePermissionDenied(encoder, 'denied').
    let frame = [2, 0, 6, b'd', b'e', b'n', b'i', b'e', b'd'];
    assert_frame(
        &frame,
        &Message::Auth(AuthMessage::PermissionDenied("denied".into())),
        true,
    );
}

#[test]
fn auth_permission_granted() {
    assert_frame(
        &[2, 1],
        &Message::Auth(AuthMessage::PermissionGranted),
        true,
    );
}

#[test]
fn unknown_message_types_keep_their_payload() {
    // A custom message type 100 with a three-byte payload.
    assert_frame(
        &[100, 3, 1, 2, 3],
        &Message::Unknown {
            tag: 100,
            payload: vec![1, 2, 3],
        },
        true,
    );
    // Type 300 is a two-byte varuint: 300 = 44 + 2 * 128.
    assert_frame(
        &[0xac, 0x02, 0],
        &Message::Unknown {
            tag: 300,
            payload: Vec::new(),
        },
        true,
    );
}

fn awareness(entries: &[(u64, u32, &str)]) -> Message {
    let clients: HashMap<ClientID, AwarenessUpdateEntry> = entries
        .iter()
        .map(|&(client, clock, json)| {
            let json: Arc<str> = json.into();
            (ClientID::new(client), AwarenessUpdateEntry { clock, json })
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients })
}

#[test]
fn borrowed_update_frame_matches_the_message_encoding() {
    let update = vec![1, 2, 3, 250];
    let expected =
        weft_protocol::Message::Sync(weft_protocol::SyncMessage::Update(update.clone())).encode();
    assert_eq!(weft_protocol::encode_update_frame(&update), expected);
}
