//! Reading one document's updates back from its partition.
//!
//! Until the persistence worker writes snapshots, a node loads a document
//! by reading its partition from the beginning, keeping the records keyed
//! by the document (updates and deletions), until the consumer reports the partition's end. That end
//! is at least the high watermark when the replay started, which is after
//! the document was registered for live delivery: every record below it is
//! read here, every record at or past it arrives live (see
//! `docs/ARCHITECTURE.md`, "Loading a document without a gap"). Duplicates
//! between the two are harmless; there is no gap.
//!
//! The replay reads to the end-of-partition event rather than to a high
//! watermark read up front: some Kafka-API brokers (Tansu 0.6) report a
//! high watermark one past the *first* record of the last produce batch,
//! not the last, while serving every record. Such a broker never sends the
//! event once the position passes its watermark, so a poll that brings
//! nothing also ends the replay when the position is at or past a freshly
//! read watermark.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, warn};
use weft_sync::{BusError, Position, RecordKind, Replayed};

use crate::bus::{BROKER_REQUEST_TIMEOUT, Counters};
use crate::config::KafkaConfig;
use crate::context::WeftContext;
use crate::envelope;

/// Fetch wait of a replay consumer: there is data until the end, so a long
/// wait would only delay the last fetch (some brokers always wait it out).
const REPLAY_FETCH_WAIT: Duration = Duration::from_millis(5);
/// How long one replay may take before the load fails (the client retries).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest single poll: the deadline and the partition's end are checked
/// between polls.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// The document's updates in `partition` after offset `after` (from the
/// partition's start for `None`), up to the partition's end.
pub(crate) fn replay_partition(
    config: &KafkaConfig,
    partition: i32,
    doc: &str,
    after: Option<i64>,
    counters: &Counters,
) -> Result<Vec<Replayed>, BusError> {
    let started = Instant::now();
    let consumer: BaseConsumer<WeftContext> = config
        .consumer("replay", REPLAY_FETCH_WAIT)
        .set("enable.partition.eof", "true")
        .create_with_context(WeftContext::default())
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    let (low, high) = consumer
        .fetch_watermarks(&config.topic, partition, BROKER_REQUEST_TIMEOUT)
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    let wanted_start = after.map_or(low, |offset| offset + 1);
    if wanted_start < low {
        warn!(
            doc,
            partition,
            wanted_start,
            low,
            "records the document needs were deleted by retention; keep the topic's retention longer than the persistence worker's lag"
        );
    }
    // Never start past the reported high watermark: a broker that reports
    // it short (see above) would call that offset out of range. Records at
    // or below `after` that this re-reads are skipped below.
    let start = wanted_start.min(high).max(low);
    debug!(doc, partition, wanted_start, start, low, high, "replaying");
    let mut replayed = Vec::new();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&config.topic, partition, Offset::Offset(start))
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    consumer
        .assign(&assignment)
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    let deadline = started + REPLAY_TIMEOUT;
    let mut read = 0_u64;
    let mut next = start;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(BusError::Replay(
                format!(
                    "timed out after {read} records from offset {start} in partition {partition}"
                )
                .into(),
            ));
        }
        let Some(polled) = consumer.poll(POLL_SLICE.min(deadline - now)) else {
            // Nothing arrived: done if the partition ends here. (A broker
            // that reports a short high watermark never sends the
            // end-of-partition event once the position passes it.)
            let (_low, end) = consumer
                .fetch_watermarks(&config.topic, partition, BROKER_REQUEST_TIMEOUT)
                .map_err(|error| BusError::Replay(Box::new(error)))?;
            if next >= end {
                break;
            }
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => break,
            Err(error) => return Err(BusError::Replay(Box::new(error))),
        };
        next = message.offset() + 1;
        read += 1;
        if message.offset() < wanted_start || message.key() != Some(doc.as_bytes()) {
            continue;
        }
        match envelope::decode(message.payload().unwrap_or_default(), Some(doc)) {
            Ok(decoded)
                if matches!(decoded.record.kind, RecordKind::Update | RecordKind::Delete) =>
            {
                replayed.push(Replayed {
                    position: Position {
                        partition,
                        offset: message.offset(),
                    },
                    kind: decoded.record.kind,
                    update: decoded.record.payload,
                });
            }
            Ok(_) => counters.malformed("replayed record", &"not an update"),
            Err(error) => counters.malformed("replayed record", &error),
        }
    }
    debug!(
        doc,
        partition,
        start,
        high_watermark = high,
        read,
        kept = replayed.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "document replayed"
    );
    Ok(replayed)
}
