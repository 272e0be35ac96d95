//! The live consumer: where it starts, the loop that hands the node what
//! it wants, the watchdog that replaces a stuck consumer, and the repair of
//! offsets it skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_sync::{BusError, Delivery, Interest};

use crate::config::{BROKER_REQUEST_TIMEOUT, ConsumeScope, KafkaConfig};
use crate::connect::Topics;
use crate::context::{LiveStats, WeftContext};
use crate::counters::{Counters, MALFORMED_LOG_EVERY};
use crate::delivery::to_delivery;
use crate::live::Live;
use crate::offset;
use crate::pass::{AssignedPartition, PassEnd, pass_consumer, read_partition};
use crate::tasks::BusTasks;

/// A live consumer that received nothing (its own node's heartbeats
/// included) for this long is replaced.
const CONSUMER_STALL: Duration = Duration::from_secs(10);
/// How long re-reading skipped offsets may take.
const SKIPPED_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A consumer positioned at the live end of every partition of both
/// topics. The end offsets are read and assigned explicitly (not
/// `Offset::End`, which librdkafka resolves lazily): a record published
/// after this returns is at or past the assigned position.
pub(crate) async fn live_consumer(
    config: &KafkaConfig,
    topics: Topics,
    live_stats: &Arc<LiveStats>,
    tasks: &BusTasks,
) -> Result<(StreamConsumer<WeftContext>, TopicPartitionList), BusError> {
    let consumer: StreamConsumer<WeftContext> = config
        .consumer("live", config.fetch_wait)
        .create_with_context(WeftContext::for_live_consumer(live_stats.clone()))
        .map_err(|error| BusError::Check(Box::new(error)))?;
    // Held scope: only the heartbeats' partition until documents load
    // (see `live`).
    let names = match config.consume {
        ConsumeScope::All => vec![
            (config.topic.clone(), topics.updates),
            (config.awareness_topic(), topics.awareness),
        ],
        ConsumeScope::Held => vec![(config.awareness_topic(), 1)],
    };
    tasks
        .spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            for (name, partitions) in &names {
                for partition in 0..*partitions {
                    let (_low, high) = consumer
                        .fetch_watermarks(name, partition, BROKER_REQUEST_TIMEOUT)
                        .map_err(|error| BusError::Check(Box::new(error)))?;
                    assignment
                        .add_partition_offset(name, partition, offset::at(high))
                        .map_err(|error| BusError::Check(Box::new(error)))?;
                }
            }
            consumer
                .assign(&assignment)
                .map_err(|error| BusError::Check(Box::new(error)))?;
            Ok((consumer, assignment))
        })
        .await
        .map_err(|error| BusError::Check(error.into()))?
}

/// What the live consumer loop works with besides its consumer.
pub(crate) struct LiveLoop {
    pub(crate) live: Arc<Live>,
    /// What the node wants (its loaded documents).
    pub(crate) interest: Arc<dyn Interest>,
    /// To the registry's bus task.
    pub(crate) sender: mpsc::Sender<Delivery>,
    pub(crate) config: Arc<KafkaConfig>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) live_stats: Arc<LiveStats>,
    /// Where repairs of skipped offsets run.
    pub(crate) tasks: BusTasks,
}

/// The live consumer loop: runs until the registry drops its receiver
/// (or the bus's tasks are stopped).
///
/// A watchdog replaces a consumer that stopped receiving: every node hears
/// its own heartbeat (it publishes one every second and skips it here), so
/// [`CONSUMER_STALL`] without any record means the consumer is stuck (seen
/// with a broker restarted under it that keeps refusing the old client's
/// requests). The replacement resumes exactly where the old one was, so no
/// record is skipped.
pub(crate) async fn consume(consumer: Arc<StreamConsumer<WeftContext>>, context: LiveLoop) {
    let LiveLoop {
        live,
        interest,
        sender,
        config,
        counters,
        live_stats,
        tasks,
    } = context;
    let mut consumer = consumer;
    let mut consumer_errors = 0_u64;
    let mut last_received = tokio::time::Instant::now();
    loop {
        let received = tokio::select! {
            () = sender.closed() => break,
            received = consumer.recv() => Some(received),
            () = tokio::time::sleep_until(last_received + CONSUMER_STALL) => None,
        };
        let Some(received) = received else {
            warn!(stalled = ?CONSUMER_STALL, "live consumer received nothing, not even this node's heartbeats; replacing it at its positions");
            match live.replace_with(|positions| resume_consumer(&config, positions, &live_stats)) {
                Ok(replacement) => {
                    consumer = replacement;
                    counters.consumers_replaced.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    warn!(error = %error, "could not replace the live consumer; retrying")
                }
            }
            last_received = tokio::time::Instant::now();
            continue;
        };
        let delivery = match received {
            Ok(message) => {
                last_received = tokio::time::Instant::now();
                let expected = live.advance(message.topic(), message.partition(), message.offset());
                if message.topic() == config.topic
                    && let Some(expected) = expected
                    && message.offset() > expected
                {
                    repair_skipped(
                        Skipped {
                            partition: message.partition(),
                            from: expected,
                            to: message.offset(),
                        },
                        interest.clone(),
                        sender.clone(),
                        config.clone(),
                        counters.clone(),
                        &tasks,
                    );
                }
                let Some(delivery) = to_delivery(&message, interest.as_ref(), &config, &counters)
                else {
                    continue;
                };
                delivery
            }
            Err(error) => {
                consumer_errors += 1;
                if consumer_errors == 1 || consumer_errors.is_multiple_of(MALFORMED_LOG_EVERY) {
                    warn!(count = consumer_errors, error = %error, "kafka consumer error; librdkafka retries");
                }
                continue;
            }
        };
        if sender.send(delivery).await.is_err() {
            break;
        }
    }
    debug!("live consumer stopped");
}

/// Offsets of the updates topic the live consumer skipped: it received
/// the record at `to` when it expected the one at `from`.
#[derive(Debug, Clone, Copy)]
struct Skipped {
    partition: i32,
    from: i64,
    to: i64,
}

/// Re-reads offsets the live consumer skipped and delivers what the node
/// wants of them, as the live consumer would have (late, so possibly after
/// later records: Yjs updates integrate in any order).
///
/// A partition's offsets are consecutive (Weft's topic is not compacted and
/// its producers are not transactional), so a jump means records were never
/// processed: a consumer whose position was reset (librdkafka's
/// `auto.offset.reset` after an out-of-range answer), or a broker that
/// served them to nobody. Without this, a node would hold such a record's
/// document without its update until the document is loaded again.
fn repair_skipped(
    skipped: Skipped,
    interest: Arc<dyn Interest>,
    sender: mpsc::Sender<Delivery>,
    config: Arc<KafkaConfig>,
    counters: Arc<Counters>,
    tasks: &BusTasks,
) {
    counters.live_gaps.fetch_add(1, Ordering::Relaxed);
    warn!(
        partition = skipped.partition,
        from = skipped.from,
        to = skipped.to,
        "the live consumer skipped offsets; re-reading them"
    );
    let reads = tasks.clone();
    tasks.spawn(async move {
        let read = reads
            .spawn_blocking(move || read_skipped(&config, skipped, interest.as_ref(), &counters))
            .await;
        let deliveries = match read {
            Ok(Ok(deliveries)) => deliveries,
            Ok(Err(error)) => {
                warn!(partition = skipped.partition, from = skipped.from, to = skipped.to, error = %error, "could not re-read skipped offsets");
                return;
            }
            Err(error) => {
                warn!(partition = skipped.partition, error = %error, "re-reading skipped offsets failed");
                return;
            }
        };
        info!(
            partition = skipped.partition,
            from = skipped.from,
            to = skipped.to,
            delivered = deliveries.len(),
            "skipped offsets re-read"
        );
        for delivery in deliveries {
            if sender.send(delivery).await.is_err() {
                return;
            }
        }
    });
}

/// The deliveries among the skipped records (blocking).
fn read_skipped(
    config: &KafkaConfig,
    skipped: Skipped,
    interest: &dyn Interest,
    counters: &Counters,
) -> Result<Vec<Delivery>, BusError> {
    let consumer = pass_consumer(config)?;
    let source = AssignedPartition::assign(config, &consumer, skipped.partition, skipped.from)?;
    let mut deliveries = Vec::new();
    read_partition(
        &source,
        skipped.from,
        PassEnd::exactly(skipped.to),
        std::time::Instant::now() + SKIPPED_READ_TIMEOUT,
        |message| {
            if message.offset() < skipped.to
                && let Some(delivery) = to_delivery(message, interest, config, counters)
            {
                deliveries.push(delivery);
            }
        },
    )?;
    Ok(deliveries)
}

/// A new live consumer assigned at `positions`.
fn resume_consumer(
    config: &KafkaConfig,
    positions: &TopicPartitionList,
    live_stats: &Arc<LiveStats>,
) -> Result<StreamConsumer<WeftContext>, KafkaError> {
    let consumer: StreamConsumer<WeftContext> = config
        .consumer("live", config.fetch_wait)
        .create_with_context(WeftContext::for_live_consumer(live_stats.clone()))?;
    consumer.assign(positions)?;
    Ok(consumer)
}
