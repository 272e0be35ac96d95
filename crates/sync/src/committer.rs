//! Group commit: many sessions' updates, one durable publish.
//!
//! On stop, the queue is closed to new submissions and drained: everything
//! already submitted is committed before the loop ends.
//!
//! Sessions submit updates through a bounded channel. One task forms
//! batches: a batch goes when [`CommitterConfig::window`] (2 ms by default)
//! has passed since its first update, or when it holds
//! [`CommitterConfig::max_batch`] updates; at a zero window, what arrives
//! while a batch is being published forms the next. The batch is published
//! to the [`MessageBus`] (embedded: one SQLite transaction; Kafka: every
//! record acknowledged with `acks=all`), and then, in order, each durable
//! update is handed to the `CommitTarget` (the loaded documents: apply and
//! broadcast) and its submitter's acknowledgement resolves.
//!
//! A bus that keeps several batches in flight (Kafka, see
//! [`MessageBus::publish_depth`]) is pipelined: a batch goes at once when
//! nothing is in flight, and while batches are in flight the next one
//! collects for at most the window; answers are still applied in the order
//! the batches went.
//!
//! A record the bus did not acknowledge fails its submission: the session is
//! closed and its client re-sends the update when it reconnects. Nothing is
//! applied that the log does not hold, so no node shows what the cluster
//! will not see.
//!
//! The committer also tells how long its oldest publish has been waiting
//! for the bus (`Committer::unanswered_for`): readiness turns false when
//! the log stops acknowledging (a broker quorum lost), while the updates
//! wait.
//!
//! The committer knows documents only through `CommitTarget`: what a
//! deletion must name, and where an acknowledged record goes. It never
//! decodes an update: a [`ClientUpdate`] arrives decoded and goes on to its
//! document as a [`CommittedUpdate`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Span, debug, debug_span, warn};

use weft_protocol::StateVector;
use yrs::updates::encoder::Encode;

use crate::ack::AckTo;
use crate::batch::Forming;
use crate::bus::{BusError, MessageBus, Position, Record, RecordKind};
use crate::error::PublishError;
use crate::frames::{DocName, SessionId};
use crate::metrics::SyncMetrics;
use crate::store::LogSeq;
use crate::tasks::TaskGroup;
use crate::tombstone;
use crate::update::{ClientUpdate, CommittedUpdate};

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

/// What a submission asks the log to hold.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// A client's update, checked and decoded at the door.
    Update(ClientUpdate),
    /// A deletion: the v1 state vector the deleter saw (the committer adds
    /// what was committed before it).
    Delete(Bytes),
}

impl Submitted {
    fn kind(&self) -> RecordKind {
        match self {
            Self::Update(_) => RecordKind::Update,
            Self::Delete(_) => RecordKind::Delete,
        }
    }
}

/// Where the committer hands what the log acknowledged: the loaded
/// documents. The narrow interface keeps the committer from knowing the
/// registry.
pub(crate) trait CommitTarget: Send + Sync + std::fmt::Debug + 'static {
    /// What a deletion of `doc` must name beyond the deleter's view: the
    /// loaded document's state vector and earlier tombstone (`None` if it
    /// is not loaded).
    fn deletion_state_vector(&self, doc: &str) -> Option<StateVector>;

    /// Applies a durable update to `doc`, if loaded, and broadcasts it to
    /// every session but `origin`. A document that is not loaded reads it
    /// from the log when it loads.
    fn apply(&self, doc: &str, update: CommittedUpdate, origin: SessionId);

    /// A durable deletion of `doc` at `position`. Returns whether the
    /// document left memory (the bus may then release it).
    fn delete(&self, doc: &str, position: LogSeq, deleted_state_vector: &[u8]) -> bool;
}

/// One submitted update or deletion.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) doc: DocName,
    pub(crate) what: Submitted,
    pub(crate) origin: SessionId,
    /// Where its outcome goes.
    pub(crate) done: AckTo,
    /// The update's span: publishing, applying and broadcasting are its
    /// children.
    pub(crate) span: Span,
}

/// Handle to the group-commit task.
#[derive(Debug, Clone)]
pub struct Committer {
    submissions: mpsc::Sender<Submission>,
    /// When the oldest batch still awaiting the bus's answer went out.
    oldest_unanswered: Arc<parking_lot::Mutex<Option<Instant>>>,
}

impl Committer {
    /// Starts the commit loop in `tasks`. The loop ends once `stop` is
    /// cancelled (or every `Committer` handle is dropped) and the queue is
    /// drained.
    pub(crate) fn spawn(
        bus: Arc<dyn MessageBus>,
        documents: Arc<dyn CommitTarget>,
        metrics: Arc<SyncMetrics>,
        config: &CommitterConfig,
        tasks: &TaskGroup,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (submissions, receiver) = mpsc::channel(config.queue_capacity);
        let oldest_unanswered = Arc::default();
        tasks.spawn(commit_loop(
            bus,
            documents,
            metrics,
            config.clone(),
            receiver,
            stop,
            Arc::clone(&oldest_unanswered),
        ));
        Self {
            submissions,
            oldest_unanswered,
        }
    }

    /// How long the oldest batch handed to the bus has been waiting for its
    /// answer; `None` when no batch is in flight. A log that answers (even
    /// with a failure) keeps this short; a broker that holds updates
    /// without acknowledging them (too few in-sync replicas) makes it grow
    /// until `--kafka-publish-timeout`.
    pub(crate) fn unanswered_for(&self) -> Option<Duration> {
        let oldest = *self.oldest_unanswered.lock();
        oldest.map(|since| since.elapsed())
    }

    /// Queues an update or a deletion; the returned receiver resolves once
    /// it is durable and applied (or failed).
    pub(crate) async fn submit(
        &self,
        doc: DocName,
        what: Submitted,
        origin: SessionId,
        span: Span,
    ) -> oneshot::Receiver<Result<LogSeq, PublishError>> {
        let (done, receiver) = oneshot::channel();
        self.submit_to(doc, what, origin, span, AckTo::Waiter(done))
            .await;
        receiver
    }

    /// Queues an update or a deletion whose outcome goes to `done`.
    pub(crate) async fn submit_to(
        &self,
        doc: DocName,
        what: Submitted,
        origin: SessionId,
        span: Span,
        done: AckTo,
    ) {
        let submission = Submission {
            doc,
            what,
            origin,
            done,
            span,
        };
        if let Err(mpsc::error::SendError(submission)) = self.submissions.send(submission).await {
            submission.done.resolve(Err(PublishError::Stopped));
        }
    }
}

async fn commit_loop(
    bus: Arc<dyn MessageBus>,
    documents: Arc<dyn CommitTarget>,
    metrics: Arc<SyncMetrics>,
    config: CommitterConfig,
    mut receiver: mpsc::Receiver<Submission>,
    stop: tokio_util::sync::CancellationToken,
    oldest_unanswered: Arc<parking_lot::Mutex<Option<Instant>>>,
) {
    let depth = bus.publish_depth().max(1);
    let mut forming = Forming::new(config.window, config.max_batch, depth);
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    // When each batch in flight went, in the same order.
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut closed = false;
    loop {
        if forming.ready(in_flight.len(), closed) {
            let mut batch = forming.take();
            let records = batch_records(documents.as_ref(), &mut batch);
            let sent = Instant::now();
            let mut publishing = publish(Arc::clone(&bus), batch, records);
            // The first poll hands the records to the bus's send queue,
            // before the next batch is formed (see
            // `MessageBus::publish_depth`).
            match futures::poll!(&mut publishing) {
                Poll::Ready(published) => {
                    finish_batch(bus.as_ref(), documents.as_ref(), &metrics, published);
                }
                Poll::Pending => {
                    in_flight.push_back(publishing);
                    sent_at.push_back(sent);
                    *oldest_unanswered.lock() = sent_at.front().copied();
                }
            }
            continue;
        }
        if closed && forming.is_empty() && in_flight.is_empty() {
            break;
        }
        let window_end = forming.window_end(in_flight.len());
        tokio::select! {
            biased;
            Some(published) = in_flight.next(), if !in_flight.is_empty() => {
                sent_at.pop_front();
                *oldest_unanswered.lock() = sent_at.front().copied();
                finish_batch(bus.as_ref(), documents.as_ref(), &metrics, published);
            }
            next = receiver.recv(), if !closed && !forming.is_full() => match next {
                Some(submission) => {
                    push(&mut forming, submission);
                    while !forming.is_full() {
                        match receiver.try_recv() {
                            Ok(submission) => push(&mut forming, submission),
                            Err(_) => break,
                        }
                    }
                }
                None => closed = true,
            },
            () = sleep_until_some(window_end), if window_end.is_some() => {}
            () = stop.cancelled(), if !receiver.is_closed() => {
                // Refuse new submissions but commit every queued one.
                receiver.close();
            }
        }
    }
    debug!("committer drained and stopped");
}

fn push(forming: &mut Forming<Submission>, submission: Submission) {
    let deletion = matches!(submission.what, Submitted::Delete(_));
    forming.push(submission, deletion);
}

async fn sleep_until_some(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// A batch being published.
type InFlight = Pin<Box<dyn Future<Output = Published> + Send>>;

/// A batch the bus answered for.
struct Published {
    batch: Vec<Submission>,
    records: Vec<Record>,
    results: Vec<Result<Position, BusError>>,
    started: std::time::Instant,
}

fn publish(bus: Arc<dyn MessageBus>, batch: Vec<Submission>, records: Vec<Record>) -> InFlight {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let results = bus.publish(&records).await;
        Published {
            batch,
            records,
            results,
            started,
        }
    })
}

/// The records of `batch`, each with its publish span. An update's bytes
/// move into its record, and back when the batch is finished (see
/// [`finish_batch`]).
fn batch_records(documents: &dyn CommitTarget, batch: &mut [Submission]) -> Vec<Record> {
    let batch_len = batch.len();
    let mut records = Vec::with_capacity(batch_len);
    for index in 0..batch_len {
        let (earlier, rest) = batch.split_at_mut(index);
        let Some(submission) = rest.first_mut() else {
            break;
        };
        let kind = submission.what.kind();
        let payload = match &mut submission.what {
            Submitted::Update(update) => update.take_bytes(),
            Submitted::Delete(seen) => deletion_payload(documents, earlier, &submission.doc, seen),
        };
        records.push(Record {
            doc: submission.doc.clone(),
            kind,
            payload,
            origin_session: submission.origin.raw(),
            author: match &submission.what {
                Submitted::Update(update) => update.author().cloned(),
                Submitted::Delete(_) => None,
            },
            span: debug_span!(parent: &submission.span, "publish", doc = %submission.doc, batch = batch_len),
        });
    }
    records
}

/// Applies what the bus acknowledged, in order, and answers every
/// submitter.
fn finish_batch(
    bus: &dyn MessageBus,
    documents: &dyn CommitTarget,
    metrics: &SyncMetrics,
    published: Published,
) {
    let Published {
        mut batch,
        mut records,
        mut results,
        started,
    } = published;
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
        let Submission {
            doc,
            what,
            origin,
            done,
            span,
        } = submission;
        match (results.next(), what) {
            (Some(Ok(position)), Submitted::Delete(_)) => {
                if documents.delete(&doc, position.offset, &record_payload(&records, index)) {
                    bus.release(&doc);
                }
                done.resolve(Ok(position.offset));
            }
            (Some(Ok(position)), Submitted::Update(mut update)) => {
                let _update = span.enter();
                update.put_bytes(take_record_payload(&mut records, index));
                documents.apply(
                    &doc,
                    CommittedUpdate::committed(position.offset, update),
                    origin,
                );
                done.resolve(Ok(position.offset));
            }
            (Some(Err(error)), _) => {
                if failed == 0 {
                    warn!(error = %error, error.source = ?std::error::Error::source(&error), "publish update failed; closing its session");
                }
                failed += 1;
                done.resolve(Err(PublishError::from(error)));
            }
            (None, _) => {
                failed += 1;
                done.resolve(Err(PublishError::Failed(
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
/// that it names everything committed before it: the deleter's view
/// (`seen`), the loaded document (every earlier batch is applied to it) and
/// the updates of the same document earlier in this batch (decoded at the
/// door: nothing is decoded here).
fn deletion_payload(
    documents: &dyn CommitTarget,
    earlier: &[Submission],
    doc: &DocName,
    seen: &[u8],
) -> Bytes {
    let earlier_updates = earlier
        .iter()
        .filter_map(|submission| match &submission.what {
            Submitted::Update(update) if submission.doc == *doc => Some(update.decoded()),
            _ => None,
        });
    let seen = tombstone::decode_state_vector(seen);
    let loaded = documents.deletion_state_vector(doc);
    let deleted = tombstone::deleted_state_vector(
        std::iter::once(&seen).chain(loaded.as_ref()),
        earlier_updates,
    );
    Bytes::from(deleted.encode_v1())
}

fn take_record_payload(records: &mut [Record], index: usize) -> Bytes {
    records
        .get_mut(index)
        .map(|record| std::mem::take(&mut record.payload))
        .unwrap_or_default()
}

fn record_payload(records: &[Record], index: usize) -> Bytes {
    records
        .get(index)
        .map(|record| record.payload.clone())
        .unwrap_or_default()
}
