//! One pass over a partition of the updates topic: reading from an offset
//! until enough is read ([`read_partition`], [`PassEnd`]).
//!
//! What the broker reports as the partition's end does not end a pass
//! below the position it must reach: some Kafka-API brokers (Tansu 0.6)
//! report a high watermark one past the *first* record of the last produce
//! batch, not the last, while serving every record, and a partition's new
//! leader may report a high watermark its predecessor had passed. Such a
//! broker never sends the end-of-partition event once the position passes
//! its watermark, so where a pass reads to the reported end (a document
//! without a live position), a poll that brings nothing also ends it when
//! the position is at or past a freshly read watermark.
//!
//! Replays read documents back through it (see `replay`), and the live
//! consumer re-reads offsets it skipped (see `consume`).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, TopicPartitionList};
use tracing::debug;
use weft_sync::BusError;

use crate::config::{BROKER_REQUEST_TIMEOUT, KafkaConfig};
use crate::context::WeftContext;
use crate::offset;

/// Fetch wait of a replay consumer: there is data until the end, so a long
/// wait would only delay the last fetch (some brokers always wait it out).
const REPLAY_FETCH_WAIT: Duration = Duration::from_millis(5);
/// Longest single poll: the deadline and the partition's end are checked
/// between polls.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// What one document needs from a pass: its records after `after` (all
/// for `None`), and every record below `until`.
///
/// `until` is what makes loading gap-free whatever the broker reports as
/// the partition's end: it is the next offset the live consumer processes,
/// read after the document was registered for live delivery, so every
/// record below it was processed before (and skipped, the document not yet
/// wanted) or is delivered live, and every record from it on is delivered
/// live. A pass never ends below it; `None` (no live position known) reads
/// to the partition's end as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The document.
    pub(crate) doc: String,
    /// The offset its records are needed after (a topic snapshot's).
    pub(crate) after: Option<i64>,
    /// The live consumer's position once the document was registered.
    pub(crate) until: Option<i64>,
}

/// A consumer for one pass: assigned explicitly, reporting the end of the
/// partition.
pub(crate) fn pass_consumer(config: &KafkaConfig) -> Result<BaseConsumer<WeftContext>, BusError> {
    config
        .consumer("replay", REPLAY_FETCH_WAIT)
        .set("enable.partition.eof", "true")
        .create_with_context(WeftContext::default())
        .map_err(|error| BusError::Replay(Box::new(error)))
}

/// When a pass over a partition has read enough.
///
/// A pass must reach `until`, the highest live position of the documents it
/// serves (see [`Wanted`]), whatever the broker says about the partition's
/// end: an end-of-partition event or a watermark below it is not trusted.
/// (A broker that reports a short high watermark, Tansu 0.6; a partition
/// whose new leader has not yet learnt the high watermark its predecessor
/// had; either would otherwise end the pass before records the live
/// consumer has already passed over, and the document would never get
/// them.) If some document has no live position, the pass also reads to
/// the partition's end as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassEnd {
    /// The pass reads every record below this offset.
    pub(crate) until: i64,
    /// ...and then on to the partition's end as the broker reports it.
    pub(crate) to_reported_end: bool,
}

impl PassEnd {
    /// The end a pass serving `wanted` must reach.
    pub(crate) fn for_documents(wanted: &[Wanted]) -> Self {
        Self {
            until: wanted
                .iter()
                .filter_map(|document| document.until)
                .max()
                .unwrap_or(i64::MIN),
            to_reported_end: wanted.iter().any(|document| document.until.is_none()),
        }
    }

    /// Exactly the records below `until` (a repair of skipped offsets).
    pub(crate) fn exactly(until: i64) -> Self {
        Self {
            until,
            to_reported_end: false,
        }
    }

    /// Whether the pass is done with `next` the next offset to read, before
    /// the broker said anything about the partition's end.
    pub(crate) fn done(self, next: i64) -> bool {
        next >= self.until && !self.to_reported_end
    }

    /// Whether the pass is done with `next` the next offset to read, now
    /// that the broker reports the partition's end there (the
    /// end-of-partition event, or an idle poll at or past a fresh high
    /// watermark).
    pub(crate) fn done_at_reported_end(self, next: i64) -> bool {
        next >= self.until
    }
}

/// How far a pass read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassRead {
    /// Records read.
    pub(crate) records: u64,
    /// The offset after the last record read.
    pub(crate) next: i64,
}

/// What a pass reads: a consumer assigned to one partition (or, in tests,
/// a script of what a broker answers).
pub(crate) trait PassSource {
    /// A record read.
    type Record<'a>: Message
    where
        Self: 'a;

    /// The next record, or an error (the end-of-partition event among
    /// them), or `None` if nothing came within `timeout`.
    fn poll(&self, timeout: Duration) -> Option<KafkaResult<Self::Record<'_>>>;

    /// The partition's end as the broker reports it now (blocking).
    fn reported_end(&self) -> Result<i64, BusError>;
}

/// A pass consumer assigned to one partition of the updates topic.
pub(crate) struct AssignedPartition<'a> {
    consumer: &'a BaseConsumer<WeftContext>,
    topic: &'a str,
    partition: i32,
}

impl<'a> AssignedPartition<'a> {
    /// Assigns `consumer` to `partition` of `config`'s topic at `start`.
    pub(crate) fn assign(
        config: &'a KafkaConfig,
        consumer: &'a BaseConsumer<WeftContext>,
        partition: i32,
        start: i64,
    ) -> Result<Self, BusError> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&config.topic, partition, offset::at(start))
            .map_err(|error| BusError::Replay(Box::new(error)))?;
        consumer
            .assign(&assignment)
            .map_err(|error| BusError::Replay(Box::new(error)))?;
        Ok(Self {
            consumer,
            topic: &config.topic,
            partition,
        })
    }
}

impl PassSource for AssignedPartition<'_> {
    type Record<'b>
        = BorrowedMessage<'b>
    where
        Self: 'b;

    fn poll(&self, timeout: Duration) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        self.consumer.poll(timeout)
    }

    fn reported_end(&self) -> Result<i64, BusError> {
        let (_low, high) = self
            .consumer
            .fetch_watermarks(self.topic, self.partition, BROKER_REQUEST_TIMEOUT)
            .map_err(|error| BusError::Replay(Box::new(error)))?;
        Ok(high)
    }
}

/// Reads from `start` until `end` says the pass is done, handing every
/// record to `on_record`; fails at `deadline`.
pub(crate) fn read_partition<'source, S: PassSource>(
    source: &'source S,
    start: i64,
    end: PassEnd,
    deadline: Instant,
    mut on_record: impl FnMut(&S::Record<'source>),
) -> Result<PassRead, BusError> {
    let mut read = PassRead {
        records: 0,
        next: start,
    };
    if end.done(read.next) {
        return Ok(read);
    }
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(BusError::Replay(
                format!(
                    "timed out after {} records from offset {start} (next {}, reading until {})",
                    read.records, read.next, end.until
                )
                .into(),
            ));
        }
        let Some(polled) = source.poll(POLL_SLICE.min(deadline - now)) else {
            // Nothing arrived: done if the partition ends here. (A broker
            // that reports a short high watermark never sends the
            // end-of-partition event once the position passes it.)
            if end.done_at_reported_end(read.next) && read.next >= source.reported_end()? {
                break;
            }
            continue;
        };
        let message = match polled {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(_)) => {
                if end.done_at_reported_end(read.next) {
                    break;
                }
                // The broker's end is short of records the live consumer
                // already passed over: keep reading.
                debug!(
                    next = read.next,
                    until = end.until,
                    "end of partition reported below the live position; reading on"
                );
                continue;
            }
            Err(error) => return Err(BusError::Replay(Box::new(error))),
        };
        read.next = offset::advance(Some(read.next), message.offset());
        read.records += 1;
        on_record(&message);
        if end.done(read.next) {
            break;
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    /// What a scripted broker answers to one poll.
    enum Answer {
        Record(i64),
        EndOfPartition,
        Nothing,
        /// From now on the reported end (high watermark) is this (not an
        /// answer to a poll of its own).
        ReportEnd(i64),
    }

    /// A partition read through a script: what a broker sent, in order.
    struct Script {
        answers: RefCell<VecDeque<Answer>>,
        reported_end: Cell<i64>,
    }

    impl Script {
        fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
            Self {
                answers: RefCell::new(answers.into_iter().collect()),
                reported_end: Cell::new(0),
            }
        }
    }

    impl PassSource for Script {
        type Record<'a> = OwnedMessage;

        fn poll(&self, _timeout: Duration) -> Option<KafkaResult<OwnedMessage>> {
            loop {
                let answer = self.answers.borrow_mut().pop_front()?;
                return match answer {
                    Answer::Record(offset) => Some(Ok(OwnedMessage::new(
                        Some(format!("record {offset}").into_bytes()),
                        Some(b"doc".to_vec()),
                        "updates".to_owned(),
                        Timestamp::NotAvailable,
                        0,
                        offset,
                        None,
                    ))),
                    Answer::EndOfPartition => Some(Err(KafkaError::PartitionEOF(0))),
                    Answer::Nothing => None,
                    Answer::ReportEnd(end) => {
                        self.reported_end.set(end);
                        continue;
                    }
                };
            }
        }

        fn reported_end(&self) -> Result<i64, BusError> {
            Ok(self.reported_end.get())
        }
    }

    fn read_offsets(script: &Script, end: PassEnd) -> Vec<i64> {
        let mut offsets = Vec::new();
        read_partition(
            script,
            0,
            end,
            Instant::now() + Duration::from_secs(5),
            |message| offsets.push(message.offset()),
        )
        .expect("the pass ends");
        offsets
    }

    fn wanted(until: Option<i64>) -> Wanted {
        Wanted {
            doc: "doc".to_owned(),
            after: None,
            until,
        }
    }

    /// A broker whose reported end lags what it serves (Tansu 0.6; a new
    /// partition leader that has not yet learnt its predecessor's high
    /// watermark): it says the partition ends at 3 while the live
    /// consumer has already processed records 3 and 4.
    fn short_end_script() -> Script {
        Script::new([
            Answer::ReportEnd(3),
            Answer::Record(0),
            Answer::Record(1),
            Answer::Record(2),
            Answer::EndOfPartition,
            Answer::Nothing,
            Answer::Record(3),
            Answer::Record(4),
            Answer::ReportEnd(5),
            Answer::EndOfPartition,
        ])
    }

    #[test]
    fn a_pass_reads_up_to_the_live_position_whatever_the_broker_reports_as_the_end() {
        let end = PassEnd::for_documents(&[wanted(Some(5))]);
        assert_eq!(
            read_offsets(&short_end_script(), end),
            [0, 1, 2, 3, 4],
            "records 3 and 4 were processed by the live consumer before the document was registered: only the replay can bring them"
        );
    }

    #[test]
    fn a_pass_without_a_live_position_reads_to_the_reported_end() {
        let end = PassEnd::for_documents(&[wanted(None)]);
        assert_eq!(read_offsets(&short_end_script(), end), [0, 1, 2]);
    }

    #[test]
    fn a_pass_serves_the_furthest_live_position_of_its_documents_and_stops_there() {
        let end = PassEnd::for_documents(&[wanted(Some(2)), wanted(Some(4))]);
        assert_eq!(end.until, 4);
        assert_eq!(read_offsets(&short_end_script(), end), [0, 1, 2, 3]);
    }

    #[test]
    fn a_pass_with_nothing_below_the_live_position_reads_nothing() {
        let script = short_end_script();
        assert!(read_offsets(&script, PassEnd::exactly(0)).is_empty());
        assert_eq!(script.answers.borrow().len(), 10, "not even polled");
    }

    #[test]
    fn an_idle_poll_ends_a_pass_only_at_the_live_position_and_the_reported_end() {
        let script = Script::new([
            Answer::ReportEnd(2),
            Answer::Record(0),
            Answer::Record(1),
            // No end-of-partition event: an idle poll at the reported end.
            Answer::Nothing,
            Answer::Nothing,
            Answer::Record(2),
            Answer::ReportEnd(3),
            Answer::Nothing,
            Answer::Record(99),
        ]);
        let end = PassEnd::for_documents(&[wanted(Some(3)), wanted(None)]);
        assert!(end.to_reported_end);
        assert_eq!(read_offsets(&script, end), [0, 1, 2]);
    }
}
