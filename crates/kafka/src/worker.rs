//! `weft persist`: the persistence worker's consumer group loop.
//!
//! A dedicated thread polls a [`BaseConsumer`] (librdkafka's polling and
//! its rebalance callbacks stay off the async runtime) and hands records,
//! in order, through a bounded channel to the async loop, which folds them
//! ([`Fold`]), writes snapshots to the store on a debounce, and commits
//! offsets only up to what stored snapshots cover.
//!
//! On a rebalance that takes partitions away, the consumer thread blocks in
//! the revoke callback until the async loop has written every unwritten
//! document of those partitions and answered with the offsets to commit,
//! commits them synchronously, and only then lets the partitions go: the
//! next owner starts where this one's durable work ends. If that fails (the
//! store is down), nothing is committed and the next owner re-folds from
//! the previous commit: duplicates, never loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_sync::RecordKind;
use weft_sync::store::{DocStore, SnapshotWrite};

use crate::config::KafkaConfig;
use crate::context::WeftContext;
use crate::envelope;
use crate::fold::{Fold, FoldConfig};

/// Records buffered between the consumer thread and the fold.
const EVENT_CAPACITY: usize = 8192;
/// How long one poll of the consumer thread blocks.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long the revoke callback waits for the fold to write its documents.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Group session timeout: how long a silent worker keeps its partitions.
const SESSION_TIMEOUT_MS: &str = "10000";
/// Group heartbeat period (a third of the session timeout or less).
const HEARTBEAT_INTERVAL_MS: &str = "1000";
/// How long to wait before retrying a store read that failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The broker, the updates topic, the node identity for client ids.
    pub kafka: KafkaConfig,
    /// The consumer group the workers share.
    pub group: String,
    /// When folded documents are written.
    pub fold: FoldConfig,
    /// How often due snapshots are written and offsets committed.
    pub tick: Duration,
}

/// What the worker exposes to health, readiness and metrics.
#[derive(Debug, Default)]
pub struct WorkerStatus {
    /// The consumer has joined the group (it had an assignment, possibly
    /// empty).
    pub joined: AtomicBool,
    /// Partitions this worker owns.
    pub partitions: AtomicUsize,
    /// Records not yet inside a stored snapshot, over the owned partitions:
    /// the high watermark minus the committed offset.
    pub lag: AtomicI64,
    /// Update records folded.
    pub folded: AtomicU64,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// Snapshot writes refused by the fence (another worker wrote more).
    pub snapshots_superseded: AtomicU64,
    /// Snapshot writes that failed (retried).
    pub snapshot_failures: AtomicU64,
    /// Records skipped because they did not decode.
    pub malformed: AtomicU64,
    /// Documents held in memory.
    pub documents: AtomicUsize,
    /// Snapshot write time and size (the `snapshot_*` histograms).
    pub timings: weft_sync::SyncMetrics,
}

enum Event {
    Record {
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
    Assigned(Vec<i32>),
    Revoke {
        partitions: Vec<i32>,
        reply: std::sync::mpsc::SyncSender<Vec<(i32, i64)>>,
    },
}

/// The consumer context: forwards rebalances to the fold.
struct WorkerContext {
    log: WeftContext,
    events: mpsc::Sender<Event>,
    topic: String,
}

impl ClientContext for WorkerContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list, &self.topic);
        if partitions.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Only the poll thread may wait for the fold. Closing the
            // consumer elsewhere (after the final commit) has nothing to do.
            debug!(
                ?partitions,
                "revoked while closing; the final commit already ran"
            );
            return;
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self
            .events
            .blocking_send(Event::Revoke {
                partitions: partitions.clone(),
                reply,
            })
            .is_err()
        {
            return;
        }
        let Ok(offsets) = answer.recv_timeout(REVOKE_TIMEOUT) else {
            warn!(
                ?partitions,
                "revoked before the fold wrote its documents; the next owner re-folds"
            );
            return;
        };
        if let Err(error) = commit(consumer, &self.topic, &offsets, CommitMode::Sync) {
            warn!(error = %error, "commit on revoke failed; the next owner re-folds");
        }
        info!(?partitions, "partitions handed over");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions = partitions_of(list, &self.topic);
            info!(?partitions, "partitions assigned");
            if tokio::runtime::Handle::try_current().is_ok() {
                // Not the poll thread (a consumer closing elsewhere): nobody
                // folds for it any more.
                return;
            }
            // In order with the records, and never lost: the fold commits
            // only partitions it knows it owns.
            let _stopped = self.events.blocking_send(Event::Assigned(partitions));
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements()
        .iter()
        .filter(|element| element.topic() == topic)
        .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
        .collect()
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &[(i32, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)
}

/// Runs the worker until `stop`, then writes every unwritten document and
/// commits. Returns an error only if the consumer cannot be created.
pub async fn run(
    config: WorkerConfig,
    store: Arc<dyn DocStore>,
    status: Arc<WorkerStatus>,
    stop: CancellationToken,
) -> Result<(), KafkaError> {
    let topic = config.kafka.topic.clone();
    let (events, mut received) = mpsc::channel(EVENT_CAPACITY);
    let mut client = config.kafka.base();
    client
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "fetch.wait.max.ms",
            config.kafka.fetch_wait.as_millis().to_string(),
        )
        // A worker that died is noticed within this, and its partitions go
        // to the others (Kafka's default is 45 s of nobody folding them).
        .set("session.timeout.ms", SESSION_TIMEOUT_MS)
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
    for (key, value) in &config.kafka.options {
        client.set(key, value);
    }
    let consumer: Arc<BaseConsumer<WorkerContext>> =
        Arc::new(client.create_with_context(WorkerContext {
            log: WeftContext::default(),
            events: events.clone(),
            topic: topic.clone(),
        })?);
    consumer.subscribe(&[&topic])?;
    let polling = Arc::new(AtomicBool::new(true));
    let poller = std::thread::Builder::new()
        .name("weft-persist-poll".to_owned())
        .spawn({
            let consumer = consumer.clone();
            let polling = polling.clone();
            let status = status.clone();
            move || poll_loop(&consumer, &events, &polling, &status)
        })
        .map_err(|error| {
            warn!(error = %error, "spawn the consumer thread");
            KafkaError::Subscription("could not spawn the consumer thread".to_owned())
        })?;

    let mut worker = Worker {
        fold: Fold::new(config.fold.clone()),
        store,
        topic: topic.clone(),
        status: status.clone(),
        owned: Vec::new(),
        committed: Vec::new(),
    };
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lag = tokio::time::interval(LAG_EVERY);
    lag.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = received.recv() => {
                let Some(event) = event else { break };
                worker.handle(event, &stop).await;
            }
            _ = tick.tick() => {
                worker.write_due(false, None).await;
                worker.commit(&consumer);
                worker.fold.evict_idle(Instant::now());
                status.documents.store(worker.fold.documents(), Ordering::Relaxed);
            }
            _ = lag.tick() => {
                measure_lag(&consumer, &topic, &worker.owned, &worker.fold.commit_offsets(), &status).await;
            }
        }
    }
    // Shutdown: stop polling, fold what was already handed over, write
    // everything, commit.
    polling.store(false, Ordering::Release);
    while let Ok(event) = received.try_recv() {
        if let Event::Record { .. } = event {
            worker.handle(event, &stop).await;
        }
    }
    worker.write_due(true, None).await;
    let offsets = worker.fold.commit_offsets();
    if let Err(error) = commit(&consumer, &topic, &offsets, CommitMode::Sync) {
        warn!(error = %error, "final commit failed; the next worker re-folds from the previous one");
    }
    drop(received);
    // Closing a consumer runs its callbacks and may block: off the runtime.
    let _joined = tokio::task::spawn_blocking(move || {
        let _poller = poller.join();
        drop(consumer);
    })
    .await;
    info!(?offsets, "persistence worker stopped");
    Ok(())
}

fn poll_loop(
    consumer: &BaseConsumer<WorkerContext>,
    events: &mpsc::Sender<Event>,
    polling: &AtomicBool,
    status: &WorkerStatus,
) {
    let mut errors = 0_u64;
    while polling.load(Ordering::Acquire) {
        let Some(polled) = consumer.poll(POLL_SLICE) else {
            continue;
        };
        status.joined.store(true, Ordering::Release);
        match polled {
            Ok(message) => {
                let event = Event::Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                };
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(error) => {
                errors += 1;
                if errors == 1 || errors.is_multiple_of(100) {
                    warn!(count = errors, error = %error, "consumer error; librdkafka retries");
                }
            }
        }
    }
    // Leave the group cleanly so the partitions move at once.
    consumer.unsubscribe();
}

struct Worker {
    fold: Fold,
    store: Arc<dyn DocStore>,
    topic: String,
    status: Arc<WorkerStatus>,
    owned: Vec<i32>,
    committed: Vec<(i32, i64)>,
}

impl Worker {
    async fn handle(&mut self, event: Event, stop: &CancellationToken) {
        match event {
            Event::Record {
                partition,
                offset,
                key,
                value,
            } => self.fold_record(partition, offset, key, value, stop).await,
            Event::Assigned(partitions) => {
                self.status.joined.store(true, Ordering::Release);
                for partition in partitions {
                    if !self.owned.contains(&partition) {
                        self.owned.push(partition);
                    }
                }
                self.status
                    .partitions
                    .store(self.owned.len(), Ordering::Relaxed);
            }
            Event::Revoke { partitions, reply } => {
                self.write_due(true, Some(&partitions)).await;
                let offsets: Vec<(i32, i64)> = self
                    .fold
                    .commit_offsets()
                    .into_iter()
                    .filter(|(partition, _)| partitions.contains(partition))
                    .collect();
                self.fold.revoke(&partitions);
                self.owned
                    .retain(|partition| !partitions.contains(partition));
                self.status
                    .partitions
                    .store(self.owned.len(), Ordering::Relaxed);
                self.committed
                    .retain(|(partition, _)| !partitions.contains(partition));
                let _consumer_gave_up = reply.send(offsets);
            }
        }
    }

    async fn fold_record(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        stop: &CancellationToken,
    ) {
        let now = Instant::now();
        let decoded = key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
            .map(|doc| {
                (
                    doc,
                    envelope::decode(value.as_deref().unwrap_or_default(), Some(doc)),
                )
            });
        let (doc, record) = match decoded {
            Some((doc, Ok(decoded)))
                if matches!(decoded.record.kind, RecordKind::Update | RecordKind::Delete) =>
            {
                (doc.to_owned(), decoded.record)
            }
            _ => {
                let count = self.status.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if count == 1 || count.is_multiple_of(100) {
                    warn!(
                        partition,
                        offset, count, "record is not a document update; skipped"
                    );
                }
                self.fold.apply(partition, offset, None, now);
                return;
            }
        };
        if self.fold.needs_base(partition, &doc) {
            // The store must answer before this record can be folded; keep
            // trying (the consumer thread waits behind the full channel).
            loop {
                match self.store.load_topic_snapshot(&self.topic, &doc).await {
                    Ok(snapshot) => {
                        self.fold
                            .insert_base(partition, &doc, snapshot.as_ref(), now);
                        break;
                    }
                    Err(error) => {
                        warn!(doc, error = %error, error.source = ?std::error::Error::source(&error), "read snapshot failed; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(STORE_RETRY) => {}
                        }
                    }
                }
            }
        }
        let folded = if record.kind == RecordKind::Delete {
            info!(doc, partition, offset, "document deleted");
            self.fold
                .delete(partition, offset, &doc, &record.payload, now)
        } else {
            self.fold
                .apply(partition, offset, Some((&doc, &record.payload)), now)
        };
        if folded {
            self.status.folded.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn write_due(&mut self, all: bool, partitions: Option<&[i32]>) {
        let jobs = self.fold.due(Instant::now(), all, partitions);
        for job in jobs {
            let started = Instant::now();
            match self
                .store
                .save_topic_snapshot(&self.topic, &job.doc, &job.snapshot)
                .await
            {
                Ok(outcome) => {
                    self.status
                        .timings
                        .snapshot_seconds
                        .observe(started.elapsed().as_secs_f64());
                    #[allow(clippy::cast_precision_loss)] // a histogram bucket
                    self.status
                        .timings
                        .snapshot_bytes
                        .observe(job.snapshot.state.len() as f64);
                    let counter = match outcome {
                        SnapshotWrite::Written => &self.status.snapshots_written,
                        SnapshotWrite::Superseded => &self.status.snapshots_superseded,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    debug!(doc = %job.doc, partition = job.snapshot.partition, covers = job.snapshot.covers_offset, bytes = job.snapshot.state.len(), ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot stored");
                    self.fold.stored(&job);
                }
                Err(error) => {
                    self.status
                        .snapshot_failures
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(doc = %job.doc, error = %error, error.source = ?std::error::Error::source(&error), "snapshot write failed; its records stay uncommitted and are retried");
                }
            }
        }
    }

    /// Commits what stored snapshots now cover, where it moved.
    fn commit(&mut self, consumer: &BaseConsumer<WorkerContext>) {
        let offsets: Vec<(i32, i64)> = self
            .fold
            .commit_offsets()
            .into_iter()
            .filter(|offset| self.owned.contains(&offset.0) && !self.committed.contains(offset))
            .collect();
        if offsets.is_empty() {
            return;
        }
        match commit(consumer, &self.topic, &offsets, CommitMode::Async) {
            Ok(()) => {
                for (partition, offset) in offsets {
                    self.committed.retain(|(owned, _)| *owned != partition);
                    self.committed.push((partition, offset));
                }
            }
            Err(error) => warn!(error = %error, "commit failed; retried on the next tick"),
        }
    }
}

/// Lag = high watermark - committed position, summed over owned partitions.
async fn measure_lag(
    consumer: &Arc<BaseConsumer<WorkerContext>>,
    topic: &str,
    owned: &[i32],
    commit_offsets: &[(i32, i64)],
    status: &Arc<WorkerStatus>,
) {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    let owned = owned.to_vec();
    let commit_offsets = commit_offsets.to_vec();
    let measured = tokio::task::spawn_blocking(move || {
        // Partitions this worker has read nothing from yet (it resumed at a
        // committed offset with nothing after it) count from the group's
        // committed offset.
        let mut unread = TopicPartitionList::new();
        for partition in &owned {
            if !commit_offsets.iter().any(|(read, _)| read == partition) {
                unread.add_partition(&topic, *partition);
            }
        }
        let committed = if unread.count() > 0 {
            consumer.committed_offsets(unread, Duration::from_secs(5))?
        } else {
            unread
        };
        let mut lag = 0_i64;
        for partition in owned {
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))?;
            let position = commit_offsets
                .iter()
                .find(|(read, _)| *read == partition)
                .map(|(_, offset)| *offset)
                .or_else(|| {
                    committed
                        .find_partition(&topic, partition)
                        .and_then(|element| element.offset().to_raw())
                        .filter(|offset| *offset >= 0)
                })
                .unwrap_or(low);
            lag += (high - position).max(0);
        }
        Ok::<i64, KafkaError>(lag)
    })
    .await;
    match measured {
        Ok(Ok(lag)) => status.lag.store(lag, Ordering::Relaxed),
        Ok(Err(error)) => debug!(error = %error, "measure lag"),
        Err(error) => debug!(error = %error, "measure lag task"),
    }
}
