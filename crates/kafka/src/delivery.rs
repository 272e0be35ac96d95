//! Record decoding for the live consumer: what a consumed record means for
//! this node ([`to_delivery`]).

use rdkafka::Message;
use tracing::debug_span;
use weft_sync::{Delivery, Interest, RecordKind};

use crate::config::KafkaConfig;
use crate::counters::Counters;
use crate::{envelope, offset, trace};

/// What a consumed record means for this node, if anything: `None` for a
/// record of a document it has not loaded (skipped by key, before the
/// value is decoded), its own records other than updates, and malformed
/// ones (counted).
///
/// The node's own updates are delivered too. It applied them when the
/// broker acknowledged them, so they usually change nothing (and are not
/// broadcast again); but a publish can fail for the node (no acknowledgement
/// within `--kafka-publish-timeout`, a producer replaced) after the record
/// reached the log, and every other node applies it. Skipping its own
/// records, the node's replica (and every client of it but the one that
/// sent the update, until that one re-sends it) would lack it for as long
/// as the document stays loaded.
pub(crate) fn to_delivery(
    message: &impl Message,
    interest: &dyn Interest,
    config: &KafkaConfig,
    counters: &Counters,
) -> Option<Delivery> {
    let key = match message.key().map(std::str::from_utf8) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(error)) => {
            counters.malformed("record key", &error);
            return None;
        }
    };
    if let Some(doc) = key
        && !interest.wants(doc)
    {
        return None;
    }
    let decoded = match envelope::decode(message.payload().unwrap_or_default(), key) {
        Ok(decoded) => decoded,
        Err(error) => {
            counters.malformed("record value", &error);
            return None;
        }
    };
    if decoded.origin == config.origin && decoded.record.kind != RecordKind::Update {
        return None;
    }
    let on_updates_topic = message.topic() == config.topic;
    let expected_topic = match decoded.record.kind {
        RecordKind::Update | RecordKind::Delete => on_updates_topic,
        RecordKind::Awareness | RecordKind::Heartbeat | RecordKind::Stateless => !on_updates_topic,
    };
    if !expected_topic || (decoded.record.kind == RecordKind::Heartbeat) != key.is_none() {
        counters.malformed("record kind", &"kind does not belong on this topic or key");
        return None;
    }
    let position = on_updates_topic.then(|| offset::position_of(message));
    let mut record = decoded.record;
    if record.kind == RecordKind::Update {
        record.span = debug_span!(
            parent: None,
            "consume",
            doc = %record.doc,
            partition = message.partition(),
            offset = message.offset(),
            from = %decoded.origin.node,
        );
        trace::continue_trace(&record.span, message.headers());
    }
    Some(Delivery {
        record,
        origin: decoded.origin,
        position,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rdkafka::message::{OwnedMessage, Timestamp};
    use weft_sync::{Origin, Position, Record};

    use super::*;
    use crate::config::ConsumeScope;

    struct Everything;

    impl Interest for Everything {
        fn wants(&self, _doc: &str) -> bool {
            true
        }
    }

    fn config(node: &Origin) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9".to_owned(),
            topic: "updates".to_owned(),
            partitions: 1,
            replication_factor: 1,
            origin: node.clone(),
            linger: Duration::from_millis(1),
            fetch_wait: Duration::from_millis(10),
            publish_timeout: Duration::from_secs(10),
            max_record_bytes: 2 * 1024 * 1024,
            retention: None,
            consume: ConsumeScope::Held,
            security: crate::security::KafkaSecurity::default(),
            options: Vec::new(),
        }
    }

    fn consumed(config: &KafkaConfig, kind: RecordKind, from: &Origin) -> Option<Delivery> {
        let (topic, doc) = match kind {
            RecordKind::Heartbeat => (config.awareness_topic(), ""),
            RecordKind::Awareness | RecordKind::Stateless => (config.awareness_topic(), "doc"),
            RecordKind::Update | RecordKind::Delete => (config.topic.clone(), "doc"),
        };
        let record = Record {
            doc: Arc::from(doc),
            kind,
            payload: bytes::Bytes::from_static(b"payload"),
            origin_session: 1,
            span: tracing::Span::none(),
        };
        let message = OwnedMessage::new(
            Some(envelope::encode(&record, from)),
            (!doc.is_empty()).then(|| doc.as_bytes().to_vec()),
            topic,
            Timestamp::NotAvailable,
            0,
            7,
            None,
        );
        to_delivery(&message, &Everything, config, &Counters::default())
    }

    #[test]
    fn a_nodes_own_updates_come_back_and_nothing_else_of_its_own() {
        let node = Origin::new("node");
        let config = config(&node);
        let own = consumed(&config, RecordKind::Update, &node)
            .expect("its own update: applied if its acknowledgement was lost");
        assert_eq!(own.origin, node);
        assert_eq!(
            own.position,
            Some(Position {
                partition: 0,
                offset: 7
            })
        );
        for kind in [
            RecordKind::Delete,
            RecordKind::Awareness,
            RecordKind::Stateless,
            RecordKind::Heartbeat,
        ] {
            assert!(
                consumed(&config, kind, &node).is_none(),
                "its own {kind:?} is not delivered"
            );
        }
        let peer = Origin::new("peer");
        for kind in [
            RecordKind::Update,
            RecordKind::Delete,
            RecordKind::Awareness,
        ] {
            assert!(
                consumed(&config, kind, &peer).is_some(),
                "a peer's {kind:?}"
            );
        }
    }
}
