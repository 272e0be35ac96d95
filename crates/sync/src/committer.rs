//! Group commit: many sessions' updates, one durable publish.
//!
//! On stop, the queue is closed to new submissions and drained: everything
//! already submitted is committed before the loop ends.
//!
//! Sessions submit updates through a bounded channel. One task takes every
//! waiting submission, keeps collecting for at most
//! [`CommitterConfig::window`] (2 ms by default; at zero, what arrives
//! during a publish forms the next batch) or until
//! [`CommitterConfig::max_batch`],
//! publishes the batch to the [`MessageBus`] (embedded: one SQLite
//! transaction; Kafka: every record acknowledged with `acks=all`), and then,
//! in order, hands each durable update to the [`Documents`] (apply and
//! broadcast) and resolves its submitter's acknowledgement.
//!
//! A record the bus did not acknowledge fails its submission: the session is
//! closed and its client re-sends the update when it reconnects. Nothing is
//! applied that the log does not hold, so no node shows what the cluster
//! will not see.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Span, debug, debug_span, warn};

use crate::bus::{MessageBus, Record, RecordKind};
use crate::metrics::SyncMetrics;
use crate::registry::Documents;
use crate::session::SessionId;
use crate::{DocName, LogSeq, PublishError};

/// How the committer batches.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// How long the committer keeps collecting after the first submission of
    /// a batch. Longer means fewer, larger transactions (less fsync per
    /// update) at the price of that much added latency per update.
    pub window: Duration,
    /// Upper bound on updates per transaction, so one transaction's time and
    /// memory stay bounded under a burst.
    pub max_batch: usize,
    /// Capacity of the submission channel. When it is full, submitting
    /// sessions wait, which stops them reading their sockets: backpressure
    /// reaches the clients instead of memory growing.
    pub queue_capacity: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2),
            max_batch: 1024,
            queue_capacity: 4096,
        }
    }
}

/// One submitted update.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) doc: DocName,
    /// [`RecordKind::Update`] or [`RecordKind::Delete`].
    pub(crate) kind: RecordKind,
    /// The Yjs update, or (a deletion) the deleted state vector.
    pub(crate) update: Bytes,
    pub(crate) origin: SessionId,
    pub(crate) done: oneshot::Sender<Result<LogSeq, PublishError>>,
    /// The update's span: publishing, applying and broadcasting are its
    /// children.
    pub(crate) span: Span,
}

/// Handle to the group-commit task.
#[derive(Debug, Clone)]
pub struct Committer {
    submissions: mpsc::Sender<Submission>,
}

impl Committer {
    /// Starts the commit loop on `tracker`. The loop ends once every
    /// `Committer` handle is dropped and the queue is drained.
    pub(crate) fn spawn(
        bus: Arc<dyn MessageBus>,
        documents: Arc<Documents>,
        metrics: Arc<SyncMetrics>,
        config: &CommitterConfig,
        tracker: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (submissions, receiver) = mpsc::channel(config.queue_capacity);
        tracker.spawn(commit_loop(
            bus,
            documents,
            metrics,
            config.clone(),
            receiver,
            stop,
        ));
        Self { submissions }
    }

    /// Queues an update; the returned receiver resolves once it is durable
    /// and applied (or failed).
    pub(crate) async fn submit(
        &self,
        doc: DocName,
        kind: RecordKind,
        update: Bytes,
        origin: SessionId,
        span: Span,
    ) -> oneshot::Receiver<Result<LogSeq, PublishError>> {
        let (done, receiver) = oneshot::channel();
        let submission = Submission {
            doc,
            kind,
            update,
            origin,
            done,
            span,
        };
        if let Err(mpsc::error::SendError(submission)) = self.submissions.send(submission).await {
            let _receiver_may_be_gone = submission.done.send(Err(PublishError::Stopped));
        }
        receiver
    }
}

async fn commit_loop(
    bus: Arc<dyn MessageBus>,
    documents: Arc<Documents>,
    metrics: Arc<SyncMetrics>,
    config: CommitterConfig,
    mut receiver: mpsc::Receiver<Submission>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch: Vec<Submission> = Vec::with_capacity(config.max_batch);
    loop {
        let next = tokio::select! {
            biased;
            next = receiver.recv() => next,
            () = stop.cancelled(), if !receiver.is_closed() => {
                // Refuse new submissions but commit every queued one.
                receiver.close();
                continue;
            }
        };
        let Some(first) = next else { break };
        batch.push(first);
        collect_batch(&mut receiver, &mut batch, &config).await;
        commit_batch(bus.as_ref(), &documents, &metrics, &mut batch).await;
    }
    debug!("committer drained and stopped");
}

/// Adds every submission already queued to `batch`, then keeps collecting
/// until the window closes or the batch is full.
///
/// With a zero window this is "smart batching": a lone update is published
/// at once, and whatever arrives while a batch is being published forms the
/// next one, so batches grow with the load and no update waits for a timer.
async fn collect_batch(
    receiver: &mut mpsc::Receiver<Submission>,
    batch: &mut Vec<Submission>,
    config: &CommitterConfig,
) {
    while batch.len() < config.max_batch {
        match receiver.try_recv() {
            Ok(submission) => batch.push(submission),
            Err(_) => break,
        }
    }
    if config.window.is_zero() {
        return;
    }
    let deadline = Instant::now() + config.window;
    while batch.len() < config.max_batch {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(submission)) => batch.push(submission),
            Ok(None) | Err(_) => break,
        }
    }
}

async fn commit_batch(
    bus: &dyn MessageBus,
    documents: &Documents,
    metrics: &SyncMetrics,
    batch: &mut Vec<Submission>,
) {
    let mut records: Vec<Record> = batch
        .iter()
        .enumerate()
        .map(|(index, submission)| Record {
            doc: submission.doc.clone(),
            kind: submission.kind,
            payload: match submission.kind {
                RecordKind::Delete => deletion_payload(documents, &batch[..index], submission),
                _ => submission.update.clone(),
            },
            origin_session: submission.origin.raw(),
            span: debug_span!(parent: &submission.span, "publish", doc = %submission.doc, batch = batch.len()),
        })
        .collect();
    let started = std::time::Instant::now();
    let mut results = bus.publish(&records).await;
    for record in &mut records {
        record.span = Span::none(); // ends its publish span
    }
    metrics
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)] // a histogram bucket
    metrics.publish_batch_updates.observe(batch.len() as f64);
    if results.len() != batch.len() {
        warn!(
            results = results.len(),
            updates = batch.len(),
            "bus answered for a different number of records; failing the batch"
        );
        results.clear();
    }
    let mut results = results.into_iter();
    let mut failed = 0_usize;
    for (index, submission) in batch.drain(..).enumerate() {
        match results.next() {
            Some(Ok(position)) if submission.kind == RecordKind::Delete => {
                if documents.delete(
                    &submission.doc,
                    position.offset,
                    &record_payload(&records, index),
                ) {
                    bus.release(&submission.doc);
                }
                let _submitter_may_be_gone = submission.done.send(Ok(position.offset));
            }
            Some(Ok(position)) => {
                let _update = submission.span.enter();
                documents.deliver(
                    &submission.doc,
                    position.offset,
                    &submission.update,
                    Some(submission.origin),
                );
                let _submitter_may_be_gone = submission.done.send(Ok(position.offset));
            }
            Some(Err(error)) => {
                if failed == 0 {
                    warn!(error = %error, error.source = ?std::error::Error::source(&error), "publish update failed; closing its session");
                }
                failed += 1;
                let _submitter_may_be_gone = submission.done.send(Err(PublishError::from(error)));
            }
            None => {
                failed += 1;
                let _submitter_may_be_gone = submission.done.send(Err(PublishError::Failed(
                    "no answer from the bus".to_owned(),
                )));
            }
        }
    }
    if failed > 1 {
        warn!(failed, "more updates of the batch failed to publish");
    }
}

/// The state vector a deletion publishes, computed when it is committed so
/// that it names everything committed before it: the deleter's view, the
/// loaded document (every earlier batch is applied to it) and the updates
/// of the same document earlier in this batch.
fn deletion_payload(documents: &Documents, earlier: &[Submission], deletion: &Submission) -> Bytes {
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    let mut deleted = crate::tombstone::decode_state_vector(&deletion.update);
    if let Some(document) = documents.loaded_document(&deletion.doc) {
        crate::tombstone::merge(&mut deleted, &document.deletion_state_vector());
    }
    for submission in earlier {
        if submission.doc == deletion.doc
            && submission.kind == RecordKind::Update
            && let Ok(update) = yrs::Update::decode_v1(&submission.update)
        {
            crate::tombstone::include_update(&mut deleted, &update);
        }
    }
    Bytes::from(deleted.encode_v1())
}

fn record_payload(records: &[Record], index: usize) -> Bytes {
    records
        .get(index)
        .map(|record| record.payload.clone())
        .unwrap_or_default()
}
