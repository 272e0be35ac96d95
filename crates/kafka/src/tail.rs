//! Reading the updates topic outside a node: what `weft docs export`
//! needs to add the records the persistence worker has not folded yet to
//! the stored snapshots.
//!
//! [`topic_extent`] takes every partition's retained range once (the
//! export's cut), and [`read_changes`] reads one partition's records
//! within a range, decoding only those of the documents its caller wants
//! (with the decoder the nodes and the worker use). Nothing is held here:
//! each record goes to the caller as it is read, so the caller decides
//! what stays in memory.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use weft_sync::{BusError, Record};

use crate::config::{BROKER_REQUEST_TIMEOUT, KafkaConfig};
use crate::envelope::{self, EnvelopeError};
use crate::pass::{AssignedPartition, PassEnd, pass_consumer, read_partition};

/// The records a partition holds: offsets `low..high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionExtent {
    /// The partition.
    pub partition: i32,
    /// Its first retained offset.
    pub low: i64,
    /// The offset after its last record (the high watermark).
    pub high: i64,
}

/// A record read by [`read_changes`].
#[derive(Debug)]
pub enum Change {
    /// An update or a deletion of a wanted document.
    Record {
        /// Its offset.
        offset: i64,
        /// The record.
        record: Record,
    },
    /// A record of a wanted document that does not decode.
    Malformed {
        /// Its offset.
        offset: i64,
        /// Why.
        error: EnvelopeError,
    },
}

/// Every partition of `config`'s updates topic and its retained range,
/// read now, in partition order.
pub fn topic_extent(config: &KafkaConfig) -> Result<Vec<PartitionExtent>, BusError> {
    let consumer = pass_consumer(config)?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), BROKER_REQUEST_TIMEOUT)
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    let Some(topic) = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == config.topic)
    else {
        return Err(BusError::Replay(
            format!("topic {} is not in the broker's metadata", config.topic).into(),
        ));
    };
    if let Some(error) = topic.error() {
        return Err(BusError::Replay(
            format!("topic {}: {}", config.topic, RDKafkaErrorCode::from(error)).into(),
        ));
    }
    let mut partitions: Vec<i32> = topic
        .partitions()
        .iter()
        .map(|partition| partition.id())
        .collect();
    partitions.sort_unstable();
    let mut extents = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&config.topic, partition, BROKER_REQUEST_TIMEOUT)
            .map_err(|error| BusError::Replay(Box::new(error)))?;
        extents.push(PartitionExtent {
            partition,
            low,
            high,
        });
    }
    Ok(extents)
}

/// Reads the records of `partition` at offsets `start..end`, handing
/// those whose key `wants` (with their offset) to `on_change`, decoded;
/// the others are skipped undecoded. Fails if the range is not read
/// within `timeout`. Returns how many records were read. Blocking: call
/// it off the async runtime.
pub fn read_changes(
    config: &KafkaConfig,
    partition: i32,
    start: i64,
    end: i64,
    timeout: Duration,
    mut wants: impl FnMut(&str, i64) -> bool,
    mut on_change: impl FnMut(Change),
) -> Result<u64, BusError> {
    if start >= end {
        return Ok(0);
    }
    let deadline = Instant::now() + timeout;
    let consumer = pass_consumer(config)?;
    let source = AssignedPartition::assign(config, &consumer, partition, start)?;
    let read = read_partition(&source, start, PassEnd::exactly(end), deadline, |message| {
        let offset = message.offset();
        if offset >= end {
            return;
        }
        let Some(doc) = message.key().and_then(|key| std::str::from_utf8(key).ok()) else {
            return;
        };
        if !wants(doc, offset) {
            return;
        }
        match envelope::decode_change(message.payload().unwrap_or_default(), message.key()) {
            Ok(record) => on_change(Change::Record { offset, record }),
            Err(error) => on_change(Change::Malformed { offset, error }),
        }
    })?;
    Ok(read.records)
}
