//! The persistence worker's consumer group side: the consumer thread, the
//! rebalance callbacks that hand partitions over, commits and lag.
//!
//! On a rebalance that takes partitions away, the consumer thread blocks in
//! the revoke callback until the worker's loop has written every unwritten
//! document of those partitions and answered with the offsets to commit,
//! commits them synchronously, and only then lets the partitions go: the
//! next owner starts where this one's durable work ends. If that fails (the
//! store is down), nothing is committed and the next owner re-folds from
//! the previous commit: duplicates, never loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::KafkaConfig;
use crate::context::WeftContext;
use crate::offset;

/// How long one poll of the consumer thread blocks.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// How long the revoke callback waits for the fold to write its documents.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request of a lag measurement may take (it is retried on
/// the next measurement).
const LAG_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Log one in this many consumer errors (the first always).
const ERROR_LOG_EVERY: u64 = 100;

/// The group's consumer for `kafka`'s updates topic, subscribed; its
/// rebalances go to `events`.
pub(crate) fn group_consumer(
    kafka: &KafkaConfig,
    group: &str,
    events: mpsc::Sender<Event>,
) -> Result<BaseConsumer<WorkerContext>, KafkaError> {
    let consumer: BaseConsumer<WorkerContext> =
        kafka
            .group_consumer(group)
            .create_with_context(WorkerContext {
                log: WeftContext::default(),
                events,
                topic: kafka.topic.clone(),
            })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok(consumer)
}

/// What the consumer thread hands the worker's loop, in order.
pub(crate) enum Event {
    /// A record read.
    Record {
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        /// The `weft-author` and `weft-at-ms` headers, if it has them.
        author: Option<Arc<str>>,
        at_ms: Option<i64>,
    },
    /// Partitions this worker now owns.
    Assigned(Vec<i32>),
    /// Partitions being taken away: the loop writes their documents and
    /// answers with the offsets to commit before they go.
    Revoke {
        partitions: Vec<i32>,
        reply: std::sync::mpsc::SyncSender<Vec<(i32, i64)>>,
    },
}

/// The consumer context: forwards rebalances to the fold.
pub(crate) struct WorkerContext {
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

/// Commits `offsets` (partition, next offset to read) of `topic`.
pub(crate) fn commit<C: ConsumerContext>(
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
        list.add_partition_offset(topic, *partition, offset::at(*offset))?;
    }
    consumer.commit(&list, mode)
}

/// The consumer thread: polls until `polling` turns false, handing
/// records to the loop; `joined` turns true with the first answer.
pub(crate) fn poll_loop(
    consumer: &BaseConsumer<WorkerContext>,
    events: &mpsc::Sender<Event>,
    polling: &AtomicBool,
    joined: &AtomicBool,
) {
    let mut errors = 0_u64;
    while polling.load(Ordering::Acquire) {
        let Some(polled) = consumer.poll(POLL_SLICE) else {
            continue;
        };
        joined.store(true, Ordering::Release);
        match polled {
            Ok(message) => {
                let (author, at_ms) = crate::attribution::attribution_of(message.headers());
                let event = Event::Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    author,
                    at_ms,
                };
                if events.blocking_send(event).is_err() {
                    return;
                }
            }
            Err(error) => {
                errors += 1;
                if errors == 1 || errors.is_multiple_of(ERROR_LOG_EVERY) {
                    warn!(count = errors, error = %error, "consumer error; librdkafka retries");
                }
            }
        }
    }
    // Leave the group cleanly so the partitions move at once.
    consumer.unsubscribe();
}

/// Lag = high watermark - committed position, summed over owned partitions.
/// `None` if the broker did not answer (logged at DEBUG).
pub(crate) async fn measure_lag(
    consumer: &Arc<BaseConsumer<WorkerContext>>,
    topic: &str,
    owned: &[i32],
    commit_offsets: &[(i32, i64)],
) -> Option<i64> {
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
            consumer.committed_offsets(unread, LAG_REQUEST_TIMEOUT)?
        } else {
            unread
        };
        let mut lag = 0_i64;
        for partition in owned {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, LAG_REQUEST_TIMEOUT)?;
            let position = commit_offsets
                .iter()
                .find(|(read, _)| *read == partition)
                .map(|(_, offset)| *offset)
                .or_else(|| {
                    committed
                        .find_partition(&topic, partition)
                        .and_then(|element| offset::exact(element.offset()))
                })
                .unwrap_or(low);
            lag += (high - position).max(0);
        }
        Ok::<i64, KafkaError>(lag)
    })
    .await;
    match measured {
        Ok(Ok(lag)) => Some(lag),
        Ok(Err(error)) => {
            debug!(error = %error, "measure lag");
            None
        }
        Err(error) => {
            debug!(error = %error, "measure lag task");
            None
        }
    }
}
