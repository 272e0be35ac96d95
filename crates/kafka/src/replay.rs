//! Reading documents' updates back from their partition.
//!
//! Replays of one partition are coalesced: while a pass over a partition
//! runs (or waits for one of the [`MAX_CONCURRENT_PASSES`] slots), the
//! documents that ask for the same partition queue up, and the next pass
//! serves all of them, reading from the earliest offset any of them needs.
//! A node that takes over hundreds of documents at once (the clients of a
//! dead node reconnecting) so reads each partition a few times instead of
//! once per document.
//!
//! Until the persistence worker writes snapshots, a node loads a document
//! by reading its partition from the beginning (else from the snapshot's
//! offset), keeping the records keyed by the document (updates and
//! deletions), until it has read every record below the live consumer's
//! position on the partition, taken after the document was registered for
//! live delivery ([`Wanted::until`]): every record below it is read here,
//! every record at or past it arrives live (see `docs/ARCHITECTURE.md`,
//! "Loading a document without a gap"). Duplicates between the two are
//! harmless; there is no gap.
//!
//! What the broker reports as the partition's end does not end a pass
//! below that position ([`PassEnd`]): some Kafka-API brokers (Tansu 0.6)
//! report a high watermark one past the *first* record of the last produce
//! batch, not the last, while serving every record, and a partition's new
//! leader may report a high watermark its predecessor had passed. Such a
//! broker never sends the end-of-partition event once the position passes
//! its watermark, so where a pass reads to the reported end (a document
//! without a live position), a poll that brings nothing also ends it when
//! the position is at or past a freshly read watermark.
//!
//! The same reading loop ([`read_partition`]) re-reads offsets the live
//! consumer skipped (see `bus`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, oneshot};
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

/// Passes over partitions running at once. Each is a librdkafka consumer
/// of its own (threads, buffers) on a blocking thread; when a node took
/// over hundreds of documents at once, an unbounded number of them left
/// the process's memory several times its size before (glibc keeps what
/// many threads freed). Coalescing keeps the queue short.
const MAX_CONCURRENT_PASSES: usize = 8;

/// One document waiting for a pass over its partition.
struct Request {
    wanted: Wanted,
    reply: Reply,
}

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

/// Where a document's replayed updates (or the pass's failure) go.
type Reply = oneshot::Sender<Result<Vec<Replayed>, BusError>>;

/// The node's replays: the slots for passes, and per partition the
/// documents waiting for the next pass. A partition is a key of `waiting`
/// exactly while a driver task serves it.
pub(crate) struct Replays {
    passes: Semaphore,
    waiting: Mutex<HashMap<i32, Vec<Request>>>,
}

impl Default for Replays {
    fn default() -> Self {
        Self {
            passes: Semaphore::new(MAX_CONCURRENT_PASSES),
            waiting: Mutex::default(),
        }
    }
}

impl Replays {
    /// `doc`'s updates in `partition` after offset `after` (from the
    /// partition's start for `None`), up to the partition's end when its
    /// pass runs. Call it only once the live consumer reads the partition
    /// (no gap between the two).
    pub(crate) async fn replay(
        self: &Arc<Self>,
        config: Arc<KafkaConfig>,
        counters: Arc<Counters>,
        partition: i32,
        wanted: Wanted,
    ) -> Result<Vec<Replayed>, BusError> {
        let (reply, answer) = oneshot::channel();
        let request = Request { wanted, reply };
        let start_driver = match self.waiting.lock().entry(partition) {
            Entry::Occupied(mut waiting) => {
                waiting.get_mut().push(request);
                false
            }
            Entry::Vacant(vacant) => {
                vacant.insert(vec![request]);
                true
            }
        };
        if start_driver {
            tokio::spawn(self.clone().drive(config, counters, partition));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(BusError::Replay("the replay was dropped".into())))
    }

    /// Runs passes over `partition` until nobody waits for one.
    async fn drive(
        self: Arc<Self>,
        config: Arc<KafkaConfig>,
        counters: Arc<Counters>,
        partition: i32,
    ) {
        loop {
            // Requests keep queueing while this waits for a slot.
            let Ok(_slot) = self.passes.acquire().await else {
                return;
            };
            let batch = {
                let mut waiting = self.waiting.lock();
                match waiting.get_mut(&partition) {
                    Some(requests) if !requests.is_empty() => std::mem::take(requests),
                    _ => {
                        waiting.remove(&partition);
                        return;
                    }
                }
            };
            let (wanted, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|request| (request.wanted, request.reply))
                .unzip();
            let (config, counters) = (config.clone(), counters.clone());
            let pass = tokio::task::spawn_blocking(move || {
                replay_partition(&config, partition, &wanted, &counters)
            })
            .await;
            match pass {
                Ok(Ok(per_doc)) => {
                    for (reply, replayed) in replies.into_iter().zip(per_doc) {
                        let _ = reply.send(Ok(replayed));
                    }
                }
                Ok(Err(error)) => fail_all(replies, &error),
                Err(error) => fail_all(replies, &error),
            }
        }
    }
}

fn fail_all(replies: Vec<Reply>, error: &dyn std::fmt::Display) {
    let message = error.to_string();
    for reply in replies {
        let _ = reply.send(Err(BusError::Replay(message.clone().into())));
    }
}

/// One pass over `partition` for the documents `wanted`: each one's
/// updates, in `wanted`'s order, from its start up to at least its `until`
/// (and, for a document without one, the partition's end).
fn replay_partition(
    config: &KafkaConfig,
    partition: i32,
    wanted: &[Wanted],
    counters: &Counters,
) -> Result<Vec<Vec<Replayed>>, BusError> {
    let started = Instant::now();
    counters.replay_passes.fetch_add(1, Ordering::Relaxed);
    let consumer = pass_consumer(config)?;
    let (low, high) = consumer
        .fetch_watermarks(&config.topic, partition, BROKER_REQUEST_TIMEOUT)
        .map_err(|error| BusError::Replay(Box::new(error)))?;
    // Where each document's records start, and which documents a key is.
    let mut starts = Vec::with_capacity(wanted.len());
    let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (index, document) in wanted.iter().enumerate() {
        let wanted_start = document.after.map_or(low, |offset| offset + 1);
        if wanted_start < low {
            warn!(
                doc = document.doc,
                partition,
                wanted_start,
                low,
                "records the document needs were deleted by retention; keep the topic's retention longer than the persistence worker's lag"
            );
        }
        starts.push(wanted_start);
        by_key
            .entry(document.doc.as_bytes())
            .or_default()
            .push(index);
    }
    let wanted_start = starts.iter().copied().min().unwrap_or(low);
    // Never start past the reported high watermark: a broker that reports
    // it short (see above) would call that offset out of range. Records at
    // or below a document's `after` that this re-reads are skipped below.
    let start = wanted_start.min(high).max(low);
    let end = PassEnd::for_documents(wanted);
    debug!(
        docs = wanted.len(),
        partition,
        wanted_start,
        start,
        low,
        high,
        until = end.until,
        "replaying"
    );
    let mut replayed: Vec<Vec<Replayed>> = wanted.iter().map(|_| Vec::new()).collect();
    let source = AssignedPartition::assign(config, &consumer, partition, start)?;
    let read = read_partition(&source, start, end, started + REPLAY_TIMEOUT, |message| {
        let Some(docs) = message.key().and_then(|key| by_key.get(key)) else {
            return;
        };
        let offset = message.offset();
        if docs.iter().all(|&index| offset < starts[index]) {
            return;
        }
        let doc = wanted[docs[0]].doc.as_str();
        match envelope::decode(message.payload().unwrap_or_default(), Some(doc)) {
            Ok(decoded)
                if matches!(decoded.record.kind, RecordKind::Update | RecordKind::Delete) =>
            {
                for &index in docs.iter().filter(|&&index| offset >= starts[index]) {
                    replayed[index].push(Replayed {
                        position: Position { partition, offset },
                        kind: decoded.record.kind,
                        update: decoded.record.payload.clone(),
                    });
                }
            }
            Ok(_) => counters.malformed("replayed record", &"not an update"),
            Err(error) => counters.malformed("replayed record", &error),
        }
    })?;
    debug!(
        docs = wanted.len(),
        partition,
        start,
        high_watermark = high,
        until = end.until,
        next = read.next,
        read = read.records,
        kept = replayed.iter().map(Vec::len).sum::<usize>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition replayed"
    );
    Ok(replayed)
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
            .add_partition_offset(&config.topic, partition, Offset::Offset(start))
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
        read.next = read.next.max(message.offset() + 1);
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
