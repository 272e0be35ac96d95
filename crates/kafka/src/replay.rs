//! Reading documents' updates back from their partition.
//!
//! Replays of one partition are coalesced: while a pass over a partition
//! runs (or waits for one of the `MAX_CONCURRENT_PASSES` slots), the
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
//! live delivery (`Wanted::until`): every record below it is read here,
//! every record at or past it arrives live (see `docs/ARCHITECTURE.md`,
//! "Loading a document without a gap"). Duplicates between the two are
//! harmless; there is no gap.
//!
//! A pass never ends below the live position, whatever the broker reports
//! as the partition's end (see `pass`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::sync::{Semaphore, oneshot};
use tracing::{debug, warn};
use weft_sync::{BusError, Replayed};

use crate::config::{BROKER_REQUEST_TIMEOUT, KafkaConfig};
use crate::counters::Counters;
use crate::pass::{AssignedPartition, PassEnd, Wanted, pass_consumer, read_partition};
use crate::tasks::BusTasks;
use crate::{envelope, offset};

/// How long one replay may take before the load fails (the client retries).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);
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

/// Where a document's replayed updates (or the pass's failure) go.
type Reply = oneshot::Sender<Result<Vec<Replayed>, BusError>>;

/// The node's replays: the slots for passes, and per partition the
/// documents waiting for the next pass. A partition is a key of `waiting`
/// exactly while a driver task serves it.
pub(crate) struct Replays {
    passes: Semaphore,
    waiting: Mutex<HashMap<i32, Vec<Request>>>,
    /// Where the drivers and their passes run (the node's tracker).
    tasks: BusTasks,
}

impl Replays {
    /// No replays yet; drivers will run on `tasks`.
    pub(crate) fn new(tasks: BusTasks) -> Self {
        Self {
            passes: Semaphore::new(MAX_CONCURRENT_PASSES),
            waiting: Mutex::default(),
            tasks,
        }
    }

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
        if self.tasks.stopping() {
            return Err(BusError::Replay("the bus is shutting down".into()));
        }
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
            let driving = Driving {
                replays: self.clone(),
                partition,
                served: false,
            };
            self.tasks.spawn(driving.drive(config, counters));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(BusError::Replay("the replay was dropped".into())))
    }
}

/// The driver of one partition's passes. Stopped before it served every
/// request (the node's shutdown), it drops the requests still waiting, so
/// their callers get an error instead of waiting for a driver that is
/// gone.
struct Driving {
    replays: Arc<Replays>,
    partition: i32,
    /// Whether it ended having served every request.
    served: bool,
}

impl Drop for Driving {
    fn drop(&mut self) {
        if !self.served {
            self.replays.waiting.lock().remove(&self.partition);
        }
    }
}

impl Driving {
    /// Runs passes over the partition until nobody waits for one.
    async fn drive(mut self, config: Arc<KafkaConfig>, counters: Arc<Counters>) {
        let partition = self.partition;
        loop {
            // Requests keep queueing while this waits for a slot.
            let Ok(_slot) = self.replays.passes.acquire().await else {
                return;
            };
            let batch = {
                let mut waiting = self.replays.waiting.lock();
                match waiting.get_mut(&partition) {
                    Some(requests) if !requests.is_empty() => std::mem::take(requests),
                    _ => {
                        waiting.remove(&partition);
                        self.served = true;
                        return;
                    }
                }
            };
            let (wanted, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|request| (request.wanted, request.reply))
                .unzip();
            let (config, counters) = (config.clone(), counters.clone());
            let pass = self
                .replays
                .tasks
                .spawn_blocking(move || replay_partition(&config, partition, &wanted, &counters))
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
        let wanted_start = offset::first_after(document.after, low);
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
        let at = message.offset();
        if docs.iter().all(|&index| at < starts[index]) {
            return;
        }
        match envelope::decode_change(message.payload().unwrap_or_default(), message.key()) {
            Ok(record) => {
                for &index in docs.iter().filter(|&&index| at >= starts[index]) {
                    replayed[index].push(Replayed {
                        position: offset::position(partition, at),
                        kind: record.kind,
                        update: record.payload.clone(),
                    });
                }
            }
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
