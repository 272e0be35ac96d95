//! What the live consumer reads, and changing it while it runs.
//!
//! With [`ConsumeScope::All`] a node reads every partition of both topics,
//! as every node did at first. With [`ConsumeScope::Held`] (the default) it
//! reads the partitions of the documents it holds, plus partition 0 of the
//! awareness topic, where every node's heartbeats go. A document's
//! partitions are added when it is loaded, *before* its replay reads to the
//! end of the partition, at the partition's end at that moment: records
//! past it arrive live, records before it are in the replay (some may come
//! twice; Yjs updates are idempotent), so loading stays gap-free. They are
//! released when the last document held on them is unloaded.
//!
//! With an ingress that hashes each document to one node, a node then reads
//! only its share of the topic; a client that lands on another node still
//! works (that node adds the partition), it only costs that node the
//! partition's traffic while the document is open there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};

use crate::bus::BROKER_REQUEST_TIMEOUT;
use crate::context::WeftContext;

/// Which partitions a node's live consumer reads (`--kafka-consume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeScope {
    /// Every partition of both topics.
    All,
    /// The partitions of the documents the node holds (and the heartbeats').
    #[default]
    Held,
}

/// The live consumer, its positions and, in `Held` scope, which documents
/// keep which partitions assigned. One lock orders every change.
#[derive(Default)]
pub(crate) struct Live {
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    consumer: Option<Arc<StreamConsumer<WeftContext>>>,
    /// Next offset to read per assigned partition (what a replacement
    /// consumer resumes at).
    positions: TopicPartitionList,
    /// (topic, partition) -> the held documents on it.
    held: HashMap<(String, i32), HashSet<String>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Installs the first consumer and its assignment.
    pub(crate) fn start(
        &self,
        consumer: Arc<StreamConsumer<WeftContext>>,
        positions: TopicPartitionList,
    ) {
        let mut state = self.state.lock();
        state.consumer = Some(consumer);
        state.positions = positions;
    }

    /// The next offset to read on a partition, after a record was received.
    pub(crate) fn advance(&self, topic: &str, partition: i32, next: i64) {
        let state = self.state.lock();
        if let Some(mut element) = state.positions.find_partition(topic, partition) {
            let _ = element.set_offset(Offset::Offset(next));
        }
    }

    /// Replaces the consumer with one `make` assigns at the current
    /// positions; under the lock, so no partition is added in between.
    pub(crate) fn replace_with(
        &self,
        make: impl FnOnce(&TopicPartitionList) -> Result<StreamConsumer<WeftContext>, KafkaError>,
    ) -> Result<Arc<StreamConsumer<WeftContext>>, KafkaError> {
        let mut state = self.state.lock();
        let consumer = Arc::new(make(&state.positions)?);
        state.consumer = Some(consumer.clone());
        Ok(consumer)
    }

    /// Makes `doc`'s partitions part of the assignment (at their current
    /// end) if they are not already. Blocking: fetches watermarks.
    pub(crate) fn hold(&self, doc: &str, partitions: &[(String, i32)]) -> Result<(), KafkaError> {
        let mut state = self.state.lock();
        let Some(consumer) = state.consumer.clone() else {
            // Not subscribed yet: a document loaded now would miss its live
            // records. The load fails and is retried by its client.
            return Err(KafkaError::Subscription(
                "the live consumer has not started".to_owned(),
            ));
        };
        let mut added = TopicPartitionList::new();
        for (topic, partition) in partitions {
            let assigned = state.positions.find_partition(topic, *partition).is_some();
            if !assigned {
                let (_low, high) =
                    consumer.fetch_watermarks(topic, *partition, BROKER_REQUEST_TIMEOUT)?;
                added.add_partition_offset(topic, *partition, Offset::Offset(high))?;
            }
        }
        if added.count() > 0 {
            consumer.incremental_assign(&added)?;
            for element in added.elements() {
                state.positions.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    element.offset(),
                )?;
            }
            info!(doc, partitions = ?added.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>(), "live consumer now reads these partitions");
        }
        for key in partitions {
            state
                .held
                .entry(key.clone())
                .or_default()
                .insert(doc.to_owned());
        }
        Ok(())
    }

    /// `doc` is no longer held: partitions no held document needs any more
    /// leave the assignment, except those in `keep`.
    pub(crate) fn release(&self, doc: &str, partitions: &[(String, i32)], keep: &(String, i32)) {
        let mut state = self.state.lock();
        let mut removed = TopicPartitionList::new();
        for key in partitions {
            let Some(docs) = state.held.get_mut(key) else {
                continue;
            };
            docs.remove(doc);
            if docs.is_empty() {
                state.held.remove(key);
                if key != keep {
                    let _ = removed.add_partition(&key.0, key.1);
                }
            }
        }
        if removed.count() == 0 {
            return;
        }
        if let Some(consumer) = &state.consumer
            && let Err(error) = consumer.incremental_unassign(&removed)
        {
            debug!(error = %error, "unassign released partitions");
            return;
        }
        let mut kept = TopicPartitionList::new();
        for element in state.positions.elements() {
            let gone = removed
                .find_partition(element.topic(), element.partition())
                .is_some();
            if !gone {
                let _ = kept.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    element.offset(),
                );
            }
        }
        state.positions = kept;
        debug!(
            doc,
            released = removed.count(),
            "live consumer released partitions"
        );
    }
}
