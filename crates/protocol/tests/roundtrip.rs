//! Property tests for the frame codec: every message survives
//! `encode` then `decode_frame`, and no input makes `decode_frame` panic.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use weft_protocol::{
    AuthMessage, AwarenessUpdate, AwarenessUpdateEntry, Message, StateVector, SyncMessage,
    decode_frame,
};
use yrs::block::ClientID;

/// Client ids Yjs can produce: JavaScript safe integers, below 2^53.
const CLIENT_ID_LIMIT: u64 = 1 << 53;

/// Largest payload the tests build: 1 MiB.
const LARGE_PAYLOAD: usize = 1 << 20;

fn client_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Small ids, and the random uint32 ids y-websocket clients use.
        0..128u64,
        any::<u32>().prop_map(u64::from),
        // Anywhere in the 53-bit range, and its top end.
        0..CLIENT_ID_LIMIT,
        Just(CLIENT_ID_LIMIT - 1),
    ]
}

fn clock() -> impl Strategy<Value = u32> {
    prop_oneof![0..128u32, any::<u32>(), Just(u32::MAX)]
}

fn state_vector() -> impl Strategy<Value = StateVector> {
    vec((client_id(), clock()), 0..40).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(client, clock)| (ClientID::new(client), clock))
            .collect()
    })
}

/// A large payload, built from a length and a seed rather than drawn byte by
/// byte, so that a 1 MiB case costs one allocation.
fn large_payload() -> impl Strategy<Value = Vec<u8>> {
    (0..=LARGE_PAYLOAD, any::<u8>()).prop_map(|(len, seed)| {
        let mut state = u32::from(seed) | 1;
        (0..len)
            .map(|_| {
                // xorshift32: cheap bytes that are not all alike.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect()
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        16 => vec(any::<u8>(), 0..512),
        1 => large_payload(),
    ]
}

/// Any JSON document, as JSON text.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            hash_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An awareness state as a Yjs client writes it: `JSON.stringify(state)`,
/// where `null` means the client went away.
fn awareness_json() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("null".to_owned()),
        3 => ("[^\"\\\\]{0,20}", 0..10_000u32, 0..10_000u32).prop_map(|(name, anchor, head)| {
            serde_json::json!({
                "user": { "name": name, "color": "#30bced" },
                "cursor": { "anchor": anchor, "head": head },
            })
            .to_string()
        }),
        5 => json_value().prop_map(|value| value.to_string()),
    ]
}

fn awareness_update() -> impl Strategy<Value = AwarenessUpdate> {
    hash_map(client_id(), (clock(), awareness_json()), 0..8).prop_map(|entries| {
        let clients: HashMap<ClientID, AwarenessUpdateEntry> = entries
            .into_iter()
            .map(|(client, (clock, json))| {
                let json: Arc<str> = json.into();
                (ClientID::new(client), AwarenessUpdateEntry { clock, json })
            })
            .collect();
        AwarenessUpdate { clients }
    })
}

/// Tags that are not one of the four known ones: one-byte, two-byte (128
/// and up, which `yrs::sync::Message` does not round-trip) and wide tags.
fn unknown_tag() -> impl Strategy<Value = u32> {
    prop_oneof![
        4..128u32,
        128..16_384u32,
        16_384..=u32::MAX,
        Just(128u32),
        Just(u32::MAX)
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        state_vector().prop_map(|sv| Message::Sync(SyncMessage::SyncStep1(sv))),
        payload().prop_map(|update| Message::Sync(SyncMessage::SyncStep2(update))),
        payload().prop_map(|update| Message::Sync(SyncMessage::Update(update))),
        awareness_update().prop_map(Message::Awareness),
        any::<String>().prop_map(|reason| Message::Auth(AuthMessage::PermissionDenied(reason))),
        Just(Message::Auth(AuthMessage::PermissionGranted)),
        Just(Message::QueryAwareness),
        (unknown_tag(), payload()).prop_map(|(tag, payload)| Message::Unknown { tag, payload }),
    ]
}

/// Bytes that look like the start of a frame (a known or nearby tag, maybe
/// a sync step) followed by noise, so decoding gets past the first byte.
fn frame_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (0..6u8, 0..4u8, vec(any::<u8>(), 0..256)).prop_map(|(tag, step, rest)| {
        let mut frame = vec![tag];
        if tag == 0 || tag == 2 {
            frame.push(step);
        }
        frame.extend(rest);
        frame
    })
}

/// If a frame decodes, the decoded message is itself a round-trip fixed
/// point: encoding it and decoding again gives it back.
fn assert_decoded_message_round_trips(frame: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = decode_frame(frame) {
        prop_assert_eq!(decode_frame(&message.encode()), Ok(message));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(message in message()) {
        prop_assert_eq!(decode_frame(&message.encode()), Ok(message));
    }

    #[test]
    fn sync_step_1_round_trips_any_state_vector(sv in state_vector()) {
        let message = Message::Sync(SyncMessage::SyncStep1(sv));
        prop_assert_eq!(decode_frame(&message.encode()), Ok(message));
    }

    #[test]
    fn awareness_round_trips_any_json_states(update in awareness_update()) {
        let message = Message::Awareness(update);
        prop_assert_eq!(decode_frame(&message.encode()), Ok(message));
    }

    #[test]
    fn unknown_tags_round_trip(tag in unknown_tag(), payload in vec(any::<u8>(), 0..64)) {
        let message = Message::Unknown { tag, payload };
        prop_assert_eq!(decode_frame(&message.encode()), Ok(message));
    }

    #[test]
    fn sync_frame_encoding_matches_message_encoding(update in vec(any::<u8>(), 0..64)) {
        let sync = SyncMessage::Update(update);
        prop_assert_eq!(sync.encode_frame(), Message::Sync(sync).encode());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn arbitrary_bytes_that_decode_round_trip(bytes in vec(any::<u8>(), 0..4096)) {
        assert_decoded_message_round_trips(&bytes)?;
    }

    #[test]
    fn frame_like_bytes_that_decode_round_trip(bytes in frame_like_bytes()) {
        assert_decoded_message_round_trips(&bytes)?;
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_refused(message in message()) {
        let frame = message.encode();
        // Only check a few prefixes of the very large frames.
        let step = (frame.len() / 64).max(1);
        for len in (0..frame.len()).step_by(step) {
            prop_assert!(decode_frame(&frame[..len]).is_err(), "prefix of {} bytes decoded", len);
        }
    }
}

#[test]
fn empty_and_one_mebibyte_payloads_round_trip() {
    let large: Vec<u8> = (0..LARGE_PAYLOAD).map(|i| (i % 251) as u8).collect();
    for update in [Vec::new(), large] {
        for message in [
            Message::Sync(SyncMessage::SyncStep2(update.clone())),
            Message::Sync(SyncMessage::Update(update.clone())),
            Message::Unknown {
                tag: 200,
                payload: update.clone(),
            },
        ] {
            assert_eq!(decode_frame(&message.encode()), Ok(message));
        }
    }
}

#[test]
fn empty_awareness_and_state_vector_round_trip() {
    for message in [
        Message::Awareness(AwarenessUpdate {
            clients: HashMap::new(),
        }),
        Message::Sync(SyncMessage::SyncStep1(StateVector::default())),
        Message::Auth(AuthMessage::PermissionDenied(String::new())),
    ] {
        assert_eq!(decode_frame(&message.encode()), Ok(message));
    }
}
