//! Malformed frames, each with the exact error it must produce.

use std::time::{Duration, Instant};

use weft_protocol::{AuthMessage, DecodeError, Message, SyncMessage, decode_frame};

/// Wraps an awareness payload in its frame: tag 1, varuint length, payload.
fn awareness_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![1];
    frame.extend(varuint(payload.len() as u64));
    frame.extend_from_slice(payload);
    frame
}

/// Wraps a state vector in a SyncStep1 frame.
fn sync_step_1_frame(state_vector: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 0];
    frame.extend(varuint(state_vector.len() as u64));
    frame.extend_from_slice(state_vector);
    frame
}

/// lib0's `writeVarUint`.
fn varuint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// One awareness entry: client id, clock, JSON string.
fn awareness_entry(client: u64, clock: u32, json: &[u8]) -> Vec<u8> {
    let mut entry = varuint(client);
    entry.extend(varuint(u64::from(clock)));
    entry.extend(varuint(json.len() as u64));
    entry.extend_from_slice(json);
    entry
}

fn awareness_payload(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = varuint(entries.len() as u64);
    for entry in entries {
        payload.extend_from_slice(entry);
    }
    payload
}

#[test]
fn empty_frame_is_incomplete() {
    assert_eq!(decode_frame(&[]), Err(DecodeError::Incomplete));
}

#[test]
fn truncated_varints_are_incomplete() {
    // The tag itself is cut.
    assert_eq!(decode_frame(&[0x80]), Err(DecodeError::Incomplete));
    assert_eq!(decode_frame(&[0xff, 0xff]), Err(DecodeError::Incomplete));
    // The sync step is missing, then cut.
    assert_eq!(decode_frame(&[0]), Err(DecodeError::Incomplete));
    assert_eq!(decode_frame(&[0, 0x80]), Err(DecodeError::Incomplete));
    // The payload length is missing, then cut.
    assert_eq!(decode_frame(&[0, 1]), Err(DecodeError::Incomplete));
    assert_eq!(decode_frame(&[0, 2, 0x85]), Err(DecodeError::Incomplete));
    // The auth permission is missing; the reason length is cut.
    assert_eq!(decode_frame(&[2]), Err(DecodeError::Incomplete));
    assert_eq!(decode_frame(&[2, 0, 0x81]), Err(DecodeError::Incomplete));
    // An awareness or unknown frame with no length at all.
    assert_eq!(decode_frame(&[1]), Err(DecodeError::Incomplete));
    assert_eq!(decode_frame(&[0x80, 0x01]), Err(DecodeError::Incomplete));
}

#[test]
fn overlong_varint_is_invalid() {
    assert_eq!(decode_frame(&[0xff; 11]), Err(DecodeError::InvalidVarint));
    // The same after a valid tag, as the sync step or a length.
    let mut frame = vec![0];
    frame.extend([0xff; 11]);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));
    let mut frame = vec![0, 1];
    frame.extend([0xff; 11]);
    frame.push(0);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));
}

/// Tags, steps and lengths are `u32`s. A varint above `u32::MAX` must be
/// refused, not wrapped: a tag of 2^32 is an unknown message to Yjs, and
/// must not be read as tag 0 (sync).
#[test]
fn varint_wider_than_u32_is_invalid_in_every_framing_position() {
    let two_pow_32 = varuint(1 << 32);
    assert_eq!(two_pow_32, [0x80, 0x80, 0x80, 0x80, 0x10]);

    // Tag 2^32 followed by what would be an empty SyncStep2.
    let mut frame = two_pow_32.clone();
    frame.extend([1, 0]);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // Sync step 2^32 + 1 (would wrap to SyncStep2).
    let mut frame = vec![0];
    frame.extend(varuint((1 << 32) + 1));
    frame.push(0);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // Update length 2^32 + 2, followed by two bytes.
    let mut frame = vec![0, 2];
    frame.extend(varuint((1 << 32) + 2));
    frame.extend([7, 7]);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // Unknown-message payload length 2^32.
    let mut frame = vec![9];
    frame.extend(&two_pow_32);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // Auth reason length 2^32 + 2, followed by a two-byte reason.
    let mut frame = vec![2, 0];
    frame.extend(varuint((1 << 32) + 2));
    frame.extend(b"no");
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // Awareness payload length 2^32 + 1, followed by one byte.
    let mut frame = vec![1];
    frame.extend(varuint((1 << 32) + 1));
    frame.push(0);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidVarint));

    // The largest u32 is fine.
    let mut frame = varuint(u64::from(u32::MAX));
    assert_eq!(frame, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    frame.push(0);
    assert_eq!(
        decode_frame(&frame),
        Ok(Message::Unknown {
            tag: u32::MAX,
            payload: Vec::new()
        })
    );
}

/// lib0 reads non-minimal varints (`0x84 0x00` is 4); so do we, as long as
/// they fit in five bytes.
#[test]
fn padded_varint_within_five_bytes_is_accepted() {
    assert_eq!(
        decode_frame(&[0x84, 0x80, 0x00, 0x00]),
        Ok(Message::Unknown {
            tag: 4,
            payload: Vec::new()
        })
    );
    assert_eq!(
        decode_frame(&[0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x00]),
        Ok(Message::Sync(SyncMessage::SyncStep2(Vec::new())))
    );
    assert_eq!(
        decode_frame(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x00]),
        Err(DecodeError::InvalidVarint)
    );
}

#[test]
fn length_prefix_larger_than_frame_is_incomplete() {
    // SyncStep2 claiming 5 bytes, with 2.
    assert_eq!(decode_frame(&[0, 1, 5, 1, 2]), Err(DecodeError::Incomplete));
    // Update claiming 1 byte, with none.
    assert_eq!(decode_frame(&[0, 2, 1]), Err(DecodeError::Incomplete));
    // SyncStep1 claiming 3 bytes, with 1.
    assert_eq!(decode_frame(&[0, 0, 3, 0]), Err(DecodeError::Incomplete));
    // Awareness claiming 10 bytes, with 3.
    assert_eq!(
        decode_frame(&[1, 10, 0, 0, 0]),
        Err(DecodeError::Incomplete)
    );
    // Auth reason claiming 4 bytes, with 2.
    assert_eq!(
        decode_frame(&[2, 0, 4, b'n', b'o']),
        Err(DecodeError::Incomplete)
    );
    // Unknown tag with a length of u32::MAX and nothing after it.
    assert_eq!(
        decode_frame(&[7, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::Incomplete)
    );
}

#[test]
fn unknown_sync_step_is_refused() {
    assert_eq!(
        decode_frame(&[0, 3, 0]),
        Err(DecodeError::UnknownSyncStep(3))
    );
    assert_eq!(
        decode_frame(&[0, 0x80, 0x01, 0]),
        Err(DecodeError::UnknownSyncStep(128))
    );
    assert_eq!(
        decode_frame(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::UnknownSyncStep(u32::MAX))
    );
}

#[test]
fn unknown_auth_permission_is_refused() {
    assert_eq!(
        decode_frame(&[2, 2]),
        Err(DecodeError::UnknownAuthPermission(2))
    );
    assert_eq!(
        decode_frame(&[2, 0x80, 0x01]),
        Err(DecodeError::UnknownAuthPermission(128))
    );
}

#[test]
fn auth_reason_must_be_utf8() {
    assert_eq!(
        decode_frame(&[2, 0, 2, 0xc3, 0x28]),
        Err(DecodeError::InvalidUtf8)
    );
    assert_eq!(
        decode_frame(&[2, 0, 2, 0xc3, 0xa9]),
        Ok(Message::Auth(AuthMessage::PermissionDenied("é".to_owned())))
    );
}

#[test]
fn trailing_bytes_are_counted() {
    // Empty SyncStep2, then two stray bytes.
    assert_eq!(
        decode_frame(&[0, 1, 0, 9, 9]),
        Err(DecodeError::TrailingBytes(2))
    );
    // QueryAwareness has no payload.
    assert_eq!(decode_frame(&[3, 0]), Err(DecodeError::TrailingBytes(1)));
    // PermissionGranted has no payload.
    assert_eq!(
        decode_frame(&[2, 1, 0xaa]),
        Err(DecodeError::TrailingBytes(1))
    );
    // A denied reason shorter than what follows it.
    assert_eq!(
        decode_frame(&[2, 0, 1, b'x', b'y', b'z']),
        Err(DecodeError::TrailingBytes(2))
    );
    // An empty awareness update, then a second message in the same frame.
    assert_eq!(
        decode_frame(&[1, 1, 0, 3]),
        Err(DecodeError::TrailingBytes(1))
    );
    // Unknown tag, then 100 stray bytes.
    let mut frame = vec![42, 1, 0];
    frame.extend([0; 100]);
    assert_eq!(decode_frame(&frame), Err(DecodeError::TrailingBytes(100)));
}

/// A handful of bytes must not make the decoder reserve room for billions
/// of entries: the entry count is checked against the payload first.
#[test]
fn huge_entry_counts_fail_fast_without_allocating() {
    let two_pow_31 = varuint(1 << 31);
    assert_eq!(two_pow_31, [0x80, 0x80, 0x80, 0x80, 0x08]);

    let started = Instant::now();

    // A state vector of 5 bytes claiming 2^31 entries.
    let frame = sync_step_1_frame(&two_pow_31);
    assert_eq!(frame.len(), 8);
    assert_eq!(decode_frame(&frame), Err(DecodeError::InvalidStateVector));

    // The same with u32::MAX entries and one real entry after the count.
    let mut sv = varuint(u64::from(u32::MAX));
    sv.extend([1, 1]);
    assert_eq!(
        decode_frame(&sync_step_1_frame(&sv)),
        Err(DecodeError::InvalidStateVector)
    );

    // An awareness update claiming 2^31 entries.
    assert_eq!(
        decode_frame(&awareness_frame(&two_pow_31)),
        Err(DecodeError::InvalidAwareness)
    );

    // An awareness update claiming 2^32 + 1 entries with one real entry
    // after the count. `yrs` reads this count as a usize, so a check that
    // wrapped it to 32 bits would see 1 entry and let `yrs` try to reserve
    // room for four billion.
    let mut payload = varuint((1 << 32) + 1);
    payload.extend(awareness_entry(1, 0, b"null"));
    assert_eq!(
        decode_frame(&awareness_frame(&payload)),
        Err(DecodeError::InvalidAwareness)
    );

    // One entry declared, three claimed: count larger than the bytes allow.
    let mut payload = varuint(3);
    payload.extend(awareness_entry(1, 0, b"{}"));
    assert_eq!(
        decode_frame(&awareness_frame(&payload)),
        Err(DecodeError::InvalidAwareness)
    );

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn awareness_with_invalid_json_is_refused() {
    for json in [
        &b""[..],
        b"{",
        b"{\"user\":}",
        b"undefined",
        b"NaN",
        b"'single'",
        b"{} {}",
        b"[1,]",
        b"\"unterminated",
        b"\"raw\ncontrol\"",
    ] {
        let payload = awareness_payload(&[awareness_entry(7, 1, json)]);
        assert_eq!(
            decode_frame(&awareness_frame(&payload)),
            Err(DecodeError::InvalidAwareness),
            "{:?}",
            String::from_utf8_lossy(json)
        );
    }
    // One bad state among good ones refuses the whole update.
    let payload = awareness_payload(&[
        awareness_entry(7, 1, b"null"),
        awareness_entry(8, 1, b"{oops}"),
        awareness_entry(9, 1, b"{}"),
    ]);
    assert_eq!(
        decode_frame(&awareness_frame(&payload)),
        Err(DecodeError::InvalidAwareness)
    );
}

#[test]
fn awareness_json_that_json_parse_accepts_is_accepted() {
    for json in [
        &b"null"[..],
        b"{}",
        b" { \"a\" : [1, 2.5e3, true, null] }\n",
        b"\"just a string\"",
        b"0",
        b"-0.0",
        // JSON.stringify escapes lone surrogates (ES2019), so a half emoji
        // in a user name arrives like this.
        b"{\"name\":\"\\ud83d\"}",
        b"{\"a\":1,\"a\":2}",
    ] {
        let payload = awareness_payload(&[awareness_entry(7, 1, json)]);
        let decoded = decode_frame(&awareness_frame(&payload));
        assert!(
            decoded.is_ok(),
            "{:?}: {decoded:?}",
            String::from_utf8_lossy(json)
        );
    }
}

#[test]
fn awareness_json_must_be_utf8() {
    let payload = awareness_payload(&[awareness_entry(7, 1, b"\"\xff\"")]);
    assert_eq!(
        decode_frame(&awareness_frame(&payload)),
        Err(DecodeError::InvalidAwareness)
    );
}

#[test]
fn awareness_client_id_beyond_53_bits_is_refused() {
    let max = (1u64 << 53) - 1;
    let payload = awareness_payload(&[awareness_entry(max, 0, b"null")]);
    assert!(decode_frame(&awareness_frame(&payload)).is_ok());

    for client in [1 << 53, u64::MAX] {
        let payload = awareness_payload(&[awareness_entry(client, 0, b"null")]);
        assert_eq!(
            decode_frame(&awareness_frame(&payload)),
            Err(DecodeError::InvalidAwareness),
            "client {client}"
        );
    }
}

#[test]
fn awareness_payload_with_bytes_after_its_entries_is_refused() {
    let mut payload = awareness_payload(&[awareness_entry(7, 1, b"null")]);
    payload.push(0);
    assert_eq!(
        decode_frame(&awareness_frame(&payload)),
        Err(DecodeError::InvalidAwareness)
    );
}

#[test]
fn awareness_entry_cut_short_is_refused() {
    let payload = awareness_payload(&[awareness_entry(7, 1, b"null")]);
    let cut = &payload[..payload.len() - 1];
    assert_eq!(
        decode_frame(&awareness_frame(cut)),
        Err(DecodeError::InvalidAwareness)
    );
}

#[test]
fn state_vector_client_id_beyond_53_bits_is_refused() {
    let max = (1u64 << 53) - 1;
    for (client, ok) in [(max, true), (1 << 53, false), (u64::MAX, false)] {
        let mut sv = varuint(1);
        sv.extend(varuint(client));
        sv.extend(varuint(3));
        let decoded = decode_frame(&sync_step_1_frame(&sv));
        if ok {
            assert!(decoded.is_ok(), "client {client}: {decoded:?}");
        } else {
            assert_eq!(
                decoded,
                Err(DecodeError::InvalidStateVector),
                "client {client}"
            );
        }
    }
}

#[test]
fn state_vector_cut_short_is_refused() {
    // Two entries claimed and room for them, but the second clock is cut.
    let sv = [2, 1, 5, 2, 0x80];
    assert_eq!(
        decode_frame(&sync_step_1_frame(&sv)),
        Err(DecodeError::InvalidStateVector)
    );
}
