//! What the live consumer reads, and changing it while it runs.
//!
//! With [`ConsumeScope::All`](crate::ConsumeScope::All) a node reads every partition of both topics,
//! as every node did at first. With [`ConsumeScope::Held`](crate::ConsumeScope::Held) (the default) it
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
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tracing::{debug, info};

use crate::config::BROKER_REQUEST_TIMEOUT;
use crate::context::WeftContext;
use crate::offset;

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

    /// The record at `offset` of a partition was received: the next offset
    /// to read is the one after it. Returns the offset the consumer was
    /// expected to receive (its position before this record), if the
    /// partition is assigned at a known offset: a record past it means the
    /// records in between were skipped.
    pub(crate) fn advance(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let state = self.state.lock();
        let mut element = state.positions.find_partition(topic, partition)?;
        let expected = offset::exact(element.offset());
        // Never backwards: a replay's end is this position (see
        // `position`), so it must not drop below a record processed.
        let next = offset::advance(expected, offset);
        let _ = element.set_offset(offset::at(next));
        expected
    }

    /// The next offset the live consumer processes on a partition, if it
    /// reads the partition. Every record below it has been processed (asked
    /// whether its document is wanted) or is being processed now; every
    /// record at or past it is processed later.
    pub(crate) fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let state = self.state.lock();
        offset::exact(state.positions.find_partition(topic, partition)?.offset())
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
                added.add_partition_offset(topic, *partition, offset::at(high))?;
            }
        }
        if added.count() > 0 {
            let mut positions = state.positions.clone();
            for element in added.elements() {
                positions.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    element.offset(),
                )?;
            }
            if topic_runs(&positions) > topic_count(&positions) {
                // Appended, the new partitions would split a topic's run in
                // every fetch (see `topic_runs`): reassign everything, one
                // topic after the other, at the positions processed so far.
                positions = grouped_by_topic(&positions)?;
                consumer.assign(&positions)?;
                debug!(
                    partitions = positions.count(),
                    "live consumer reassigned, grouped by topic"
                );
            } else {
                consumer.incremental_assign(&added)?;
            }
            state.positions = positions;
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
    ///
    /// Unless `wanted_again` says the document is wanted again: a release
    /// runs on a blocking thread after the registry dropped the document,
    /// and a client may have loaded it again meanwhile, its `hold` finding
    /// the partitions still assigned (and this document among their
    /// holders). Releasing them then would leave the new instance without
    /// its live records for as long as it stays loaded. Asked under the
    /// lock that `hold` takes, so a load that registers the document after
    /// this answer holds (and assigns) only after the release is done.
    pub(crate) fn release(
        &self,
        doc: &str,
        partitions: &[(String, i32)],
        keep: &(String, i32),
        wanted_again: impl Fn(&str) -> bool,
    ) {
        let mut state = self.state.lock();
        if wanted_again(doc) {
            debug!(
                doc,
                "document loaded again before its release; keeping its partitions"
            );
            return;
        }
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

/// How many runs of one topic `positions` has in its order.
///
/// librdkafka fetches a broker's partitions in the order they were
/// assigned, and opens a new topic entry (its id, its partition array) in
/// the fetch request and in the response whenever the topic differs from
/// the previous partition's, so every run is parsed and written again in
/// every fetch, about a hundred a second per broker when idle. Partitions
/// assigned one document at a time alternate between the updates and the
/// awareness topic: up to one run per partition, where all partitions
/// assigned at once make one per topic.
fn topic_runs(positions: &TopicPartitionList) -> usize {
    let elements = positions.elements();
    let mut runs = 0;
    let mut previous: Option<&str> = None;
    for element in &elements {
        if previous != Some(element.topic()) {
            runs += 1;
            previous = Some(element.topic());
        }
    }
    runs
}

/// How many topics `positions` names.
fn topic_count(positions: &TopicPartitionList) -> usize {
    let elements = positions.elements();
    let topics: HashSet<&str> = elements.iter().map(|element| element.topic()).collect();
    topics.len()
}

/// `positions` ordered by topic, then partition.
fn grouped_by_topic(positions: &TopicPartitionList) -> Result<TopicPartitionList, KafkaError> {
    let mut elements: Vec<(String, i32, rdkafka::Offset)> = positions
        .elements()
        .iter()
        .map(|element| {
            (
                element.topic().to_owned(),
                element.partition(),
                element.offset(),
            )
        })
        .collect();
    elements.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut grouped = TopicPartitionList::with_capacity(elements.len());
    for (topic, partition, offset) in elements {
        grouped.add_partition_offset(&topic, partition, offset)?;
    }
    Ok(grouped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_at(topic: &str, partition: i32, offset: i64) -> Live {
        let live = Live::default();
        live.state
            .lock()
            .positions
            .add_partition_offset(topic, partition, offset::at(offset))
            .expect("a position");
        live
    }

    #[test]
    fn advancing_reports_where_the_consumer_was_expected_to_be() {
        let live = live_at("updates", 3, 10);
        assert_eq!(live.advance("updates", 3, 10), Some(10), "in order");
        assert_eq!(live.position("updates", 3), Some(11));
        assert_eq!(
            live.advance("updates", 3, 13),
            Some(11),
            "records 11 and 12 were skipped"
        );
        assert_eq!(live.position("updates", 3), Some(14));
    }

    #[test]
    fn the_position_never_goes_back() {
        let live = live_at("updates", 0, 20);
        live.advance("updates", 0, 25);
        assert_eq!(live.advance("updates", 0, 21), Some(26));
        assert_eq!(
            live.position("updates", 0),
            Some(26),
            "a replay's end is this position: it must cover every record processed"
        );
    }

    fn held_by(live: &Live, doc: &str, key: (&str, i32)) {
        live.state
            .lock()
            .held
            .entry((key.0.to_owned(), key.1))
            .or_default()
            .insert(doc.to_owned());
    }

    #[test]
    fn a_released_document_that_is_wanted_again_keeps_its_partition() {
        // The registry dropped the document, then a client loaded it again
        // before the release ran: the new instance's hold found the
        // partition assigned, held by this name.
        let live = live_at("updates", 2, 40);
        held_by(&live, "doc", ("updates", 2));
        let partitions = [("updates".to_owned(), 2)];
        let heartbeats = ("awareness".to_owned(), 0);
        live.release("doc", &partitions, &heartbeats, |_| true);
        assert_eq!(
            live.position("updates", 2),
            Some(40),
            "still read: the document loaded again needs its live records"
        );
        live.release("doc", &partitions, &heartbeats, |_| false);
        assert_eq!(live.position("updates", 2), None, "released");
    }

    fn list(entries: &[(&str, i32, i64)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition, at) in entries {
            list.add_partition_offset(topic, *partition, offset::at(*at))
                .expect("a position");
        }
        list
    }

    #[test]
    fn partitions_added_one_document_at_a_time_are_regrouped_by_topic() {
        let interleaved = list(&[
            ("awareness", 0, 5),
            ("updates", 3, 10),
            ("awareness", 3, 7),
            ("updates", 1, 2),
            ("awareness", 1, 0),
        ]);
        assert_eq!(topic_runs(&interleaved), 5);
        assert_eq!(topic_count(&interleaved), 2);
        let grouped = grouped_by_topic(&interleaved).expect("grouped");
        assert_eq!(topic_runs(&grouped), 2, "one run per topic");
        let order: Vec<(String, i32, Option<i64>)> = grouped
            .elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_owned(),
                    e.partition(),
                    offset::exact(e.offset()),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("awareness".to_owned(), 0, Some(5)),
                ("awareness".to_owned(), 1, Some(0)),
                ("awareness".to_owned(), 3, Some(7)),
                ("updates".to_owned(), 1, Some(2)),
                ("updates".to_owned(), 3, Some(10)),
            ],
            "every position kept"
        );
    }

    #[test]
    fn a_partition_appended_to_its_topic_run_needs_no_regrouping() {
        let appended = list(&[("awareness", 0, 5), ("updates", 3, 10), ("updates", 1, 2)]);
        assert_eq!(topic_runs(&appended), topic_count(&appended));
    }

    #[test]
    fn a_partition_not_read_has_no_position() {
        let live = live_at("updates", 0, 0);
        assert_eq!(live.advance("updates", 1, 5), None);
        assert_eq!(live.position("updates", 1), None);
        assert_eq!(live.position("other", 0), None);
    }
}
