//! The protobuf records (`proto/weft/v1/envelope.proto`) and where a
//! document's records go.

use prost::Message as _;
use weft_sync::{Origin, Record, RecordKind};

/// The generated `weft.v1` types.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/weft.v1.rs"));
}

/// The record header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The partition Kafka's default partitioner (the Java client's, and
/// librdkafka's `murmur2_random` for keyed records) assigns to `key`.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    debug_assert!(partitions > 0, "a topic has partitions");
    let positive = murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
    // `positive` < 2^31 and `partitions` > 0, so the remainder fits an i32.
    i32::try_from(positive % partitions.max(1).unsigned_abs()).unwrap_or(0)
}

/// Encodes a record as its envelope.
pub fn encode(record: &Record, origin: &Origin) -> Vec<u8> {
    proto::Envelope {
        doc: record.doc.to_string(),
        kind: kind_to_proto(record.kind) as i32,
        payload: record.payload.to_vec(),
        origin_node: origin.node.to_string(),
        origin_session: record.origin_session,
        origin_incarnation: origin.incarnation,
    }
    .encode_to_vec()
}

/// Why a record's value is not a usable envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not protobuf, or not an `Envelope`.
    #[error("value does not decode as weft.v1.Envelope")]
    Decode(#[from] prost::DecodeError),
    /// A kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(i32),
    /// The envelope names another document than the record key.
    #[error("envelope document does not match the record key")]
    KeyMismatch,
    /// A record of the updates topic that changes no document (neither an
    /// update nor a deletion), or has no document key.
    #[error("not a document's update or deletion")]
    NotAChange,
}

/// A decoded envelope.
#[derive(Debug)]
pub struct Decoded {
    /// The record.
    pub record: Record,
    /// Who published it.
    pub origin: Origin,
}

/// Decodes a record value; `key` is the record key (`None` for heartbeats).
pub fn decode(value: &[u8], key: Option<&str>) -> Result<Decoded, EnvelopeError> {
    let envelope = proto::Envelope::decode(value)?;
    let kind = match proto::Kind::try_from(envelope.kind) {
        Ok(proto::Kind::Update) => RecordKind::Update,
        Ok(proto::Kind::Awareness) => RecordKind::Awareness,
        Ok(proto::Kind::Heartbeat) => RecordKind::Heartbeat,
        Ok(proto::Kind::Stateless) => RecordKind::Stateless,
        Ok(proto::Kind::Delete) => RecordKind::Delete,
        Ok(proto::Kind::Unspecified) | Err(_) => {
            return Err(EnvelopeError::UnknownKind(envelope.kind));
        }
    };
    if let Some(key) = key
        && key != envelope.doc
    {
        return Err(EnvelopeError::KeyMismatch);
    }
    Ok(Decoded {
        record: Record {
            doc: envelope.doc.into(),
            kind,
            payload: envelope.payload.into(),
            origin_session: envelope.origin_session,
            author: None,
            span: tracing::Span::none(),
        },
        origin: Origin {
            node: envelope.origin_node.into(),
            incarnation: envelope.origin_incarnation,
        },
    })
}

/// Decodes a record of the updates topic that replays and the persistence
/// worker read back: an update or a deletion of the document named by its
/// key. Anything else there is malformed.
pub fn decode_change(value: &[u8], key: Option<&[u8]>) -> Result<Record, EnvelopeError> {
    decode_change_from(value, key).map(|decoded| decoded.record)
}

/// [`decode_change`], with who published the record.
pub fn decode_change_from(value: &[u8], key: Option<&[u8]>) -> Result<Decoded, EnvelopeError> {
    let Some(doc) = key.and_then(|key| std::str::from_utf8(key).ok()) else {
        return Err(EnvelopeError::NotAChange);
    };
    let decoded = decode(value, Some(doc))?;
    match decoded.record.kind {
        RecordKind::Update | RecordKind::Delete => Ok(decoded),
        RecordKind::Awareness | RecordKind::Heartbeat | RecordKind::Stateless => {
            Err(EnvelopeError::NotAChange)
        }
    }
}

fn kind_to_proto(kind: RecordKind) -> proto::Kind {
    match kind {
        RecordKind::Update => proto::Kind::Update,
        RecordKind::Awareness => proto::Kind::Awareness,
        RecordKind::Heartbeat => proto::Kind::Heartbeat,
        RecordKind::Stateless => proto::Kind::Stateless,
        RecordKind::Delete => proto::Kind::Delete,
    }
}

/// A W3C `traceparent` value with a fresh trace id and span id, sampled.
pub fn new_traceparent() -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let high = state.hash_one(1_u8);
    let low = state.hash_one(2_u8);
    let span = state.hash_one(3_u8) | 1;
    format!("00-{high:016x}{low:016x}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn partitions_like_the_java_client() {
        // Kafka's own murmur2 test vectors (clients' UtilsTest): the hash of
        // "21" is -973932308, of "foobar" -790332482.
        let hash_21 = murmur2::murmur2(b"21", murmur2::KAFKA_SEED);
        assert_eq!(hash_21 as i32, -973_932_308);
        let hash_foobar = murmur2::murmur2(b"foobar", murmur2::KAFKA_SEED);
        assert_eq!(hash_foobar as i32, -790_332_482);
        assert_eq!(
            partition_for("21", 7),
            i32::try_from((hash_21 & 0x7fff_ffff) % 7).unwrap()
        );
        for partitions in 1..20 {
            let partition = partition_for("team-a/notes", partitions);
            assert!((0..partitions).contains(&partition));
        }
    }

    #[test]
    fn only_a_documents_updates_and_deletions_are_changes() {
        let origin = Origin::new("node");
        let record = |kind| Record {
            doc: Arc::from("doc"),
            kind,
            payload: Bytes::from_static(b"payload"),
            origin_session: 1,
            author: None,
            span: tracing::Span::none(),
        };
        for kind in [RecordKind::Update, RecordKind::Delete] {
            let value = encode(&record(kind), &origin);
            let change = decode_change(&value, Some(b"doc")).expect("a change");
            assert_eq!(change.kind, kind);
            assert_eq!(&*change.doc, "doc");
            assert!(matches!(
                decode_change(&value, None),
                Err(EnvelopeError::NotAChange)
            ));
            assert!(matches!(
                decode_change(&value, Some(b"other")),
                Err(EnvelopeError::KeyMismatch)
            ));
        }
        let awareness = encode(&record(RecordKind::Awareness), &origin);
        assert!(matches!(
            decode_change(&awareness, Some(b"doc")),
            Err(EnvelopeError::NotAChange)
        ));
        assert!(matches!(
            decode_change(b"\xff\xff", Some(b"doc")),
            Err(EnvelopeError::Decode(_))
        ));
    }

    #[test]
    fn envelope_round_trips_and_rejects_what_it_must() {
        let origin = Origin {
            node: Arc::from("node-a"),
            incarnation: 42,
        };
        let record = Record {
            doc: Arc::from("team-a/notes"),
            kind: RecordKind::Awareness,
            payload: Bytes::from_static(b"\x01\x02"),
            origin_session: 9,
            author: None,
            span: tracing::Span::none(),
        };
        let value = encode(&record, &origin);
        let decoded = decode(&value, Some("team-a/notes")).unwrap();
        assert_eq!(decoded.origin, origin);
        assert_eq!(decoded.record.kind, RecordKind::Awareness);
        assert_eq!(decoded.record.payload.as_ref(), b"\x01\x02");
        assert_eq!(decoded.record.origin_session, 9);
        assert!(matches!(
            decode(&value, Some("other")),
            Err(EnvelopeError::KeyMismatch)
        ));
        assert!(decode(b"\xff\xff\xff", None).is_err());
        let unknown = proto::Envelope {
            kind: 99,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            decode(&unknown, None),
            Err(EnvelopeError::UnknownKind(99))
        ));
    }

    #[test]
    fn traceparent_has_the_w3c_shape() {
        let value = new_traceparent();
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
    }
}
