//! [`DeadLetterTopic`]: a cluster's webhook dead letters, `<topic>-deadletter`.
//!
//! One record per event given up on after `--webhook-retry-for`, keyed by
//! document (so one partition orders a document's dead letters), its value
//! the event's JSON body exactly as it was POSTed, and what happened in
//! headers (see [`DELIVERY_HEADER`] and the others). Produced idempotently
//! with `acks=all`: [`DeadLetterTopic::append`] resolves once the brokers
//! acknowledged the record, and only then may the delivered position move
//! past the event (a crash before that dead-letters it again).
//!
//! The topic is created like the updates topic (its partitions, replication
//! factor, retention and record size) the first time one is appended.

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use weft_sync::BusError;
use weft_sync::changes::DeadLetter;

use crate::config::{KafkaConfig, KafkaConfigError};
use crate::context::WeftContext;

/// Suffix of the dead-letter topic's name.
pub const DEAD_LETTER_TOPIC_SUFFIX: &str = "-deadletter";
/// Header: the event's `Weft-Delivery` id.
pub const DELIVERY_HEADER: &str = "weft-delivery";
/// Header: the target URL.
pub const TARGET_HEADER: &str = "weft-target";
/// Header: the event's first and last feed positions, `FROM-TO`.
pub const POSITIONS_HEADER: &str = "weft-positions";
/// Header: the last failure ("answered 500 Internal Server Error", "timed out").
pub const ERROR_HEADER: &str = "weft-error";
/// Header: how many POSTs were tried, in decimal.
pub const ATTEMPTS_HEADER: &str = "weft-attempts";
/// Header: when the event was given up on, ms since the Unix epoch.
pub const DEAD_AT_HEADER: &str = "weft-dead-at-ms";
/// Header: the body's size in bytes; present only when the body was too
/// large for a record and the value was left empty.
pub const BODY_BYTES_HEADER: &str = "weft-body-bytes";
/// Room left in a record for its key and headers: a body larger than
/// `--kafka-max-record-bytes` less this is not put in the value.
const RECORD_OVERHEAD_BYTES: usize = 64 * 1024;

/// The dead-letter topic of one updates topic, and its producer.
pub struct DeadLetterTopic {
    config: KafkaConfig,
    topic: String,
    producer: FutureProducer<WeftContext>,
    created: AtomicBool,
}

impl std::fmt::Debug for DeadLetterTopic {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeadLetterTopic")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterTopic {
    /// The dead-letter topic of `config`'s updates topic.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaConfigError> {
        Ok(Self {
            config: config.clone(),
            topic: dead_letter_topic(&config.topic),
            producer: config
                .producer()
                .create_with_context(WeftContext::default())?,
            created: AtomicBool::new(false),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.topic
    }

    /// Appends `letter`; resolves once the brokers acknowledged it.
    pub async fn append(&self, letter: &DeadLetter<'_>) -> Result<(), BusError> {
        self.create().await?;
        let fits = letter.body.len() + RECORD_OVERHEAD_BYTES <= self.config.max_record_bytes;
        let value: &[u8] = if fits { letter.body } else { b"" };
        let headers = headers_of(letter, fits);
        let record = FutureRecord::to(&self.topic)
            .key(letter.doc)
            .payload(value)
            .headers(headers);
        self.producer
            .send(record, self.config.publish_timeout)
            .await
            .map(|_| ())
            .map_err(|(error, _)| BusError::Check(Box::new(error)))
    }

    /// Creates the topic unless it exists; asks the brokers once.
    async fn create(&self) -> Result<(), BusError> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        let admin: AdminClient<WeftContext> = self
            .config
            .base()
            .create_with_context(WeftContext::default())
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let max_record_bytes = self.config.max_record_bytes.to_string();
        let retention_ms = self.config.retention.map_or_else(
            || "-1".to_owned(),
            |retention| retention.as_millis().to_string(),
        );
        let topic = NewTopic::new(
            &self.topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication_factor),
        )
        .set("max.message.bytes", &max_record_bytes)
        .set("retention.ms", &retention_ms);
        crate::connect::create_new_topics(&admin, &[&topic]).await?;
        self.created.store(true, Ordering::Release);
        Ok(())
    }
}

/// `<topic>-deadletter`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_TOPIC_SUFFIX}")
}

/// A dead letter's headers; `fits`: whether its body is the record's value.
fn headers_of(letter: &DeadLetter<'_>, fits: bool) -> OwnedHeaders {
    let positions = format!("{}-{}", letter.from, letter.to);
    let attempts = letter.attempts.to_string();
    let dead_at = letter.at_ms.to_string();
    let body_bytes = letter.body.len().to_string();
    let mut fields: Vec<(&str, &str)> = vec![
        (DELIVERY_HEADER, letter.delivery),
        (TARGET_HEADER, letter.target),
        (POSITIONS_HEADER, &positions),
        (ERROR_HEADER, letter.reason),
        (ATTEMPTS_HEADER, &attempts),
        (DEAD_AT_HEADER, &dead_at),
    ];
    if !fits {
        fields.push((BODY_BYTES_HEADER, &body_bytes));
    }
    let mut headers = OwnedHeaders::new_with_capacity(fields.len());
    for (key, value) in fields {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;

    fn letter(body: &[u8]) -> DeadLetter<'_> {
        DeadLetter {
            target: "https://hooks.example/weft",
            delivery: "3-9.0",
            doc: "notes/a",
            from: 3,
            to: 9,
            body,
            reason: "answered 500 Internal Server Error",
            attempts: 7,
            at_ms: 1_700_000_000_000,
        }
    }

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|header| {
                let value = header
                    .value
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                (header.key.to_owned(), value.into_owned())
            })
            .collect()
    }

    #[test]
    fn a_dead_letter_names_what_happened_in_its_headers() {
        let headers = headers_of(&letter(b"{}"), true);
        assert_eq!(
            pairs(&headers),
            vec![
                ("weft-delivery".to_owned(), "3-9.0".to_owned()),
                (
                    "weft-target".to_owned(),
                    "https://hooks.example/weft".to_owned()
                ),
                ("weft-positions".to_owned(), "3-9".to_owned()),
                (
                    "weft-error".to_owned(),
                    "answered 500 Internal Server Error".to_owned()
                ),
                ("weft-attempts".to_owned(), "7".to_owned()),
                ("weft-dead-at-ms".to_owned(), "1700000000000".to_owned()),
            ]
        );
        let oversized = headers_of(&letter(b"0123456789"), false);
        assert_eq!(
            pairs(&oversized).last(),
            Some(&("weft-body-bytes".to_owned(), "10".to_owned()))
        );
        assert_eq!(dead_letter_topic("weft-updates"), "weft-updates-deadletter");
    }
}
