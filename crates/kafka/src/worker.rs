//! `weft persist`: the persistence worker's consumer group loop.
//!
//! A dedicated thread polls a [`BaseConsumer`] (librdkafka's polling and
//! its rebalance callbacks stay off the async runtime) and hands records,
//! in order, through a bounded channel to the async loop, which folds them
//! ([`Fold`]), writes snapshots to the store on a debounce, and commits
//! offsets only up to what stored snapshots cover. The consumer thread,
//! rebalances and commits are in `group`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_sync::RecordKind;
use weft_sync::backoff::{Pauses, RetryGate};
use weft_sync::history::{EditLog, LoggedEdit};
use weft_sync::store::{SnapshotStore, SnapshotWrite};

use crate::config::KafkaConfig;
use crate::edit_history::{EditHistory, HistoryCounters, HistoryKeeping};
use crate::envelope;
use crate::fold::{Fold, FoldConfig};
use crate::group::{Event, WorkerContext, commit, group_consumer, measure_lag, poll_loop};

/// Records buffered between the consumer thread and the fold.
const EVENT_CAPACITY: usize = 8192;
/// How often the lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// The first pause before retrying a store read that failed (jittered,
/// doubling up to [`MAX_STORE_RETRY`]).
const FIRST_STORE_RETRY: Duration = Duration::from_millis(500);
/// The cap of that pause's delay; a jittered pause is below twice it.
const MAX_STORE_RETRY: Duration = Duration::from_secs(4);
/// The first pause of snapshot writes after one failed (jittered, doubling
/// up to [`MAX_WRITE_RETRY`]); the tick offers them far more often.
const FIRST_WRITE_RETRY: Duration = Duration::from_millis(500);
/// The cap of that pause's delay; a jittered pause is below twice it.
const MAX_WRITE_RETRY: Duration = Duration::from_secs(4);
/// Most automatic versions one tick takes (each a few store round trips,
/// while the fold waits); the rest stay due for the next ticks.
const MAX_VERSIONS_PER_TICK: usize = 32;
/// Log one in this many records that are not document updates.
const MALFORMED_LOG_EVERY: u64 = 100;

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
    /// Whether and how the per-edit history is kept (`None`:
    /// `--history-retention 0`).
    pub history: Option<HistoryKeeping>,
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
    /// The per-edit history's rows and automatic versions.
    pub history: Arc<HistoryCounters>,
}

/// Runs the worker until `stop`, then writes every unwritten document and
/// commits. Returns an error only if the consumer cannot be created.
pub async fn run(
    config: WorkerConfig,
    store: Arc<dyn SnapshotStore>,
    history: Option<Arc<dyn EditLog>>,
    status: Arc<WorkerStatus>,
    stop: CancellationToken,
) -> Result<(), KafkaError> {
    let topic = config.kafka.topic.clone();
    let (events, mut received) = mpsc::channel(EVENT_CAPACITY);
    let consumer = Arc::new(group_consumer(
        &config.kafka,
        &config.group,
        events.clone(),
    )?);
    let polling = Arc::new(AtomicBool::new(true));
    let poller = std::thread::Builder::new()
        .name("weft-persist-poll".to_owned())
        .spawn({
            let consumer = consumer.clone();
            let polling = polling.clone();
            let status = status.clone();
            move || poll_loop(&consumer, &events, &polling, &status.joined)
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
        writes: RetryGate::new(FIRST_WRITE_RETRY, MAX_WRITE_RETRY),
        history: history
            .zip(config.history)
            .map(|(store, keeping)| EditHistory::new(store, keeping, status.history.clone())),
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
                worker.keep_history().await;
                worker.write_due(false, None).await;
                worker.commit(&consumer);
                worker.fold.evict_idle(Instant::now());
                status.documents.store(worker.fold.documents(), Ordering::Relaxed);
            }
            _ = lag.tick() => {
                if let Some(measured) = measure_lag(&consumer, &topic, &worker.owned, &worker.commit_offsets()).await {
                    status.lag.store(measured, Ordering::Relaxed);
                }
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
    if let Some(history) = &mut worker.history {
        history.store_edits().await;
    }
    worker.write_due(true, None).await;
    let offsets = worker.commit_offsets();
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

/// A stored snapshot as a reader sees it (`None` if it holds nothing, as a
/// deleted document's does).
fn read_state_of(snapshot: &weft_sync::Snapshot) -> Option<weft_sync::ReadState> {
    use yrs::updates::decoder::Decode;
    let has_content = yrs::StateVector::decode_v1(&snapshot.state_vector)
        .is_ok_and(|state_vector| !state_vector.is_empty());
    Some(weft_sync::ReadState {
        state: snapshot.state.clone(),
        has_content,
        deleted_at_ms: None,
        covers: snapshot.covers.offset,
        deleted_position: None,
    })
    .filter(|state| state.has_content)
}

struct Worker {
    fold: Fold,
    store: Arc<dyn SnapshotStore>,
    topic: String,
    status: Arc<WorkerStatus>,
    owned: Vec<i32>,
    committed: Vec<(i32, i64)>,
    /// Closed for a pause after a snapshot write failed (a store that is
    /// down is not asked again every tick, by every worker at once).
    writes: RetryGate,
    /// The per-edit history and automatic versions, if kept.
    history: Option<EditHistory>,
}

impl Worker {
    async fn handle(&mut self, event: Event, stop: &CancellationToken) {
        match event {
            Event::Record {
                partition,
                offset,
                key,
                value,
                author,
                at_ms,
            } => {
                let attribution = (author, at_ms);
                self.fold_record(partition, offset, key, value, attribution, stop)
                    .await;
            }
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
                if let Some(history) = &mut self.history {
                    history.store_edits().await;
                }
                self.write_due(true, Some(&partitions)).await;
                let offsets: Vec<(i32, i64)> = self
                    .commit_offsets()
                    .into_iter()
                    .filter(|(partition, _)| partitions.contains(partition))
                    .collect();
                self.fold.revoke(&partitions);
                if let Some(history) = &mut self.history {
                    history.revoke(&partitions);
                }
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
        (author, at_ms): (Option<Arc<str>>, Option<i64>),
        stop: &CancellationToken,
    ) {
        let now = Instant::now();
        let decoded = match envelope::decode_change_from(
            value.as_deref().unwrap_or_default(),
            key.as_deref(),
        ) {
            Ok(record) => record,
            Err(error) => {
                let count = self.status.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if count == 1 || count.is_multiple_of(MALFORMED_LOG_EVERY) {
                    warn!(
                        partition,
                        offset, count, error = %error, "record is not a document update; skipped"
                    );
                }
                self.fold.apply(partition, offset, None, now);
                return;
            }
        };
        let record = decoded.record;
        let doc = record.doc.to_string();
        if self.fold.needs_base(partition, &doc) {
            // The store must answer before this record can be folded; keep
            // trying (the consumer thread waits behind the full channel).
            let mut pauses = Pauses::new(FIRST_STORE_RETRY, MAX_STORE_RETRY);
            loop {
                match self.store.load_snapshot(&self.topic, &doc).await {
                    Ok(snapshot) => {
                        self.fold
                            .insert_base(partition, &doc, snapshot.as_ref(), now);
                        break;
                    }
                    Err(error) => {
                        warn!(doc, error = %error, error.source = ?std::error::Error::source(&error), "read snapshot failed; retrying");
                        let pause = pauses.next_pause();
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
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
        if let Some(history) = &mut self.history {
            // Every record read, folded or already covered: a crash may
            // have stored the snapshot and not the edits.
            let deletion = record.kind == RecordKind::Delete;
            let edit = LoggedEdit {
                doc: record.doc,
                position: offset,
                update: if deletion {
                    Vec::new()
                } else {
                    record.payload.to_vec()
                },
                author,
                at_ms,
                node: Some(decoded.origin.node),
            };
            history.note(partition, edit, deletion, now);
            if history.full() {
                Self::store_edits_until_stored(history, stop).await;
            }
        }
    }

    /// Stores the buffered edits, retrying (the consumer thread waits
    /// behind the full channel meanwhile) until they are or `stop`.
    async fn store_edits_until_stored(history: &mut EditHistory, stop: &CancellationToken) {
        let mut pauses = Pauses::new(FIRST_STORE_RETRY, MAX_STORE_RETRY);
        while !history.store_edits().await {
            let pause = pauses.next_pause();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Stores the edits read since the last tick, then takes the
    /// automatic versions due (only once the rows up to them are stored).
    async fn keep_history(&mut self) {
        let Some(history) = &mut self.history else {
            return;
        };
        if !history.store_edits().await {
            return;
        }
        let due_versions = history.due_versions(Instant::now());
        for due in due_versions.into_iter().take(MAX_VERSIONS_PER_TICK) {
            let folded = match self.fold.folded_state(due.partition, &due.doc) {
                Some(folded) => Some(folded),
                // Evicted since (written, then idle): its stored snapshot
                // holds the same.
                None => match self.store.load_snapshot(&self.topic, &due.doc).await {
                    Ok(snapshot) => snapshot.and_then(|snapshot| read_state_of(&snapshot)),
                    Err(error) => {
                        warn!(doc = %due.doc, error = %error, "automatic version: reading the snapshot failed; retried on the next tick");
                        continue;
                    }
                },
            };
            history.take_version(&due, folded).await;
        }
    }

    /// Per partition, the offset safe to commit: below the first record
    /// whose snapshot or edit row is not stored yet.
    fn commit_offsets(&self) -> Vec<(i32, i64)> {
        let mut offsets = self.fold.commit_offsets();
        if let Some(history) = &self.history {
            history.clamp(&mut offsets);
        }
        offsets
    }

    /// Writes the due snapshots (`all`: every unwritten one, of
    /// `partitions` if given, whether or not a failure closed the gate).
    async fn write_due(&mut self, all: bool, partitions: Option<&[i32]>) {
        let now = Instant::now();
        if !all && !self.writes.open(now) {
            return;
        }
        let jobs = self.fold.due(now, all, partitions);
        let mut failed = false;
        for job in jobs {
            let started = Instant::now();
            match self
                .store
                .save_snapshot(&self.topic, &job.doc, &job.snapshot)
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
                    debug!(doc = %job.doc, partition = job.snapshot.covers.partition, covers = job.snapshot.covers.offset, bytes = job.snapshot.state.len(), ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot stored");
                    self.fold.stored(&job);
                }
                Err(error) => {
                    failed = true;
                    self.status
                        .snapshot_failures
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(doc = %job.doc, error = %error, error.source = ?std::error::Error::source(&error), "snapshot write failed; its records stay uncommitted and are retried");
                }
            }
        }
        if failed {
            self.writes.failed(Instant::now());
        } else {
            self.writes.succeeded();
        }
    }

    /// Commits what stored snapshots now cover, where it moved.
    fn commit(&mut self, consumer: &BaseConsumer<WorkerContext>) {
        let offsets: Vec<(i32, i64)> = self
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
