//! [`KafkaBus`]: one node's producer, live consumer and replays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, debug_span, info, warn};
use weft_sync::{
    BusError, BusStats, Delivery, FetchTotals, Interest, MessageBus, Origin, PartitionLag,
    Position, Record, RecordKind, Replayed,
};

use crate::acks::{AckWatch, HEARTBEAT_ACK_STALL};
use crate::config::{KafkaConfig, KafkaConfigError};
use crate::context::{LiveStats, WeftContext};
use crate::envelope::{self, partition_for};
use crate::live::{ConsumeScope, Live};
use crate::replay::{AssignedPartition, PassEnd, Replays, Wanted, pass_consumer, read_partition};
use crate::trace;

/// How long one metadata or watermark request may take.
pub(crate) const BROKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting waits for new topics' partitions to be served.
const TOPICS_SERVED_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a readiness check waits for the broker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Deliveries buffered between the consumer and the registry; past it the
/// consumer waits (and lags) rather than buffering without bound.
const DELIVERY_CAPACITY: usize = 4096;
/// Retention of the awareness topic when Weft creates it: presence is
/// renewed by clients every 15 s, so a minute of history is plenty.
const AWARENESS_RETENTION_MS: &str = "60000";
/// A live consumer that received nothing (its own node's heartbeats
/// included) for this long is replaced.
const CONSUMER_STALL: Duration = Duration::from_secs(10);
/// How long re-reading skipped offsets may take.
const SKIPPED_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Log one in this many malformed records (the first always).
const MALFORMED_LOG_EVERY: u64 = 100;

/// The producer in use and how many times it was replaced.
#[derive(Clone)]
struct Producer {
    client: FutureProducer<WeftContext>,
    generation: u64,
}

/// Partition counts learned when the node connected.
#[derive(Debug, Clone, Copy)]
struct Topics {
    updates: i32,
    awareness: i32,
}

/// Counters other layers export as metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records that did not decode (skipped).
    pub(crate) malformed: AtomicU64,
    /// Ephemeral records not handed to the producer (bus down, queue full).
    pub(crate) ephemeral_lost: AtomicU64,
    /// Producers replaced after a failed publish.
    pub(crate) producers_replaced: AtomicU64,
    /// Live consumers replaced after they stalled.
    pub(crate) consumers_replaced: AtomicU64,
    /// Passes over a partition that replayed documents.
    pub(crate) replay_passes: AtomicU64,
    /// Ranges of offsets the live consumer skipped (and that were re-read).
    pub(crate) live_gaps: AtomicU64,
}

impl Counters {
    pub(crate) fn malformed(&self, what: &str, error: &dyn std::fmt::Display) {
        let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if count == 1 || count.is_multiple_of(MALFORMED_LOG_EVERY) {
            warn!(count, what, error = %error, "malformed record skipped");
        }
    }
}

/// One node's connection to a Kafka-API broker.
pub struct KafkaBus {
    config: Arc<KafkaConfig>,
    /// Replaced after a failed publish (see [`KafkaBus::renew_producer`]).
    producer: parking_lot::Mutex<Producer>,
    topics: OnceLock<Topics>,
    subscribed: AtomicBool,
    counters: Arc<Counters>,
    live_stats: Arc<LiveStats>,
    live: Arc<Live>,
    /// Replays, coalesced per partition (see [`crate::replay`]).
    replays: Arc<Replays>,
    /// Whether the brokers acknowledge this node's heartbeats (readiness).
    heartbeat_acks: Arc<AckWatch>,
    /// What the node wants (its loaded documents), once subscribed.
    interest: OnceLock<Arc<dyn Interest>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaBus")
            .field("config", &self.config)
            .field("topics", &self.topics.get())
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Validates the settings and creates the producer. Does not contact
    /// the broker: [`MessageBus::subscribe`] connects (and the registry
    /// retries it with backoff until the broker answers).
    pub fn new(config: KafkaConfig) -> Result<Self, KafkaConfigError> {
        config.validate()?;
        let producer = new_producer(&config)?;
        Ok(Self {
            config: Arc::new(config),
            producer: parking_lot::Mutex::new(Producer {
                client: producer,
                generation: 0,
            }),
            topics: OnceLock::new(),
            subscribed: AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
            live_stats: Arc::default(),
            live: Arc::default(),
            replays: Arc::default(),
            heartbeat_acks: Arc::default(),
            interest: OnceLock::new(),
        })
    }

    fn producer(&self) -> Producer {
        self.producer.lock().clone()
    }

    /// Replaces the producer after a publish failed, unless another caller
    /// already did. An idempotent producer keeps its producer id and
    /// sequence numbers across broker failures; a broker that lost that
    /// state (a restarted broker without it, a fatal idempotence error)
    /// would refuse it for good. A new producer starts a new sequence; the
    /// updates that failed are re-sent by their clients, and duplicates are
    /// harmless.
    fn renew_producer(&self, failed: u64) {
        let replacement = match new_producer(&self.config) {
            Ok(client) => client,
            Err(error) => {
                warn!(error = %error, "could not create a new producer; keeping the old one");
                return;
            }
        };
        let mut current = self.producer.lock();
        if current.generation != failed {
            return;
        }
        let old = std::mem::replace(
            &mut *current,
            Producer {
                client: replacement,
                generation: failed + 1,
            },
        );
        drop(current);
        info!(
            generation = failed + 1,
            "producer replaced after a failed publish"
        );
        // Dropping a producer flushes it, which may block: not on the runtime.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// The partitions (updates and awareness) of `doc` the live consumer
    /// must read while the document is held; `None` in `All` scope.
    fn held_partitions(&self, doc: &str, topics: Topics) -> Option<Vec<(String, i32)>> {
        (self.config.consume == ConsumeScope::Held).then(|| {
            vec![
                (
                    self.config.topic.clone(),
                    partition_for(doc, topics.updates),
                ),
                (
                    self.config.awareness_topic(),
                    partition_for(doc, topics.awareness),
                ),
            ]
        })
    }

    /// Records skipped because they did not decode.
    pub fn malformed_records(&self) -> u64 {
        self.counters.malformed.load(Ordering::Relaxed)
    }

    /// Passes over a partition that replayed documents so far (several
    /// documents of one partition loading at once share one).
    pub fn replay_passes(&self) -> u64 {
        self.counters.replay_passes.load(Ordering::Relaxed)
    }

    /// Awareness records and heartbeats that could not be handed to the
    /// producer.
    pub fn ephemeral_lost(&self) -> u64 {
        self.counters.ephemeral_lost.load(Ordering::Relaxed)
    }

    /// Creates the topics if missing, waits until their partitions are
    /// served, and learns their partition counts.
    async fn connect(&self) -> Result<Topics, BusError> {
        if let Some(topics) = self.topics.get() {
            return Ok(*topics);
        }
        self.create_topics().await?;
        let probe: BaseConsumer<WeftContext> = self
            .config
            .consumer("connect", self.config.fetch_wait)
            .create_with_context(WeftContext::default())
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let names = [self.config.topic.clone(), self.config.awareness_topic()];
        let counts = tokio::task::spawn_blocking(move || wait_until_served(&probe, &names))
            .await
            .map_err(|error| BusError::Check(error.into()))??;
        let topics = Topics {
            updates: counts[0],
            awareness: counts[1],
        };
        info!(topic = %self.config.topic, partitions = topics.updates, awareness_partitions = topics.awareness, "connected to the broker");
        Ok(*self.topics.get_or_init(|| topics))
    }

    async fn create_topics(&self) -> Result<(), BusError> {
        let admin: AdminClient<WeftContext> = self
            .config
            .base()
            .create_with_context(WeftContext::default())
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let awareness_name = self.config.awareness_topic();
        let replication = self.config.replication_factor;
        let max_record_bytes = self.config.max_record_bytes.to_string();
        let retention_ms = self.config.retention.map_or_else(
            || "-1".to_owned(),
            |retention| retention.as_millis().to_string(),
        );
        let updates = NewTopic::new(
            &self.config.topic,
            self.config.partitions,
            TopicReplication::Fixed(replication),
        )
        .set("max.message.bytes", &max_record_bytes)
        .set("retention.ms", &retention_ms);
        let awareness = NewTopic::new(
            &awareness_name,
            self.config.partitions,
            TopicReplication::Fixed(replication),
        )
        .set("retention.ms", AWARENESS_RETENTION_MS);
        let options = AdminOptions::new().operation_timeout(Some(BROKER_REQUEST_TIMEOUT));
        let results = admin
            .create_topics([&updates, &awareness], &options)
            .await
            .map_err(|error| BusError::Check(Box::new(error)))?;
        for result in results {
            match result {
                Ok(name) => info!(topic = %name, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Check(
                        format!("create topic {name}: {code}").into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A consumer positioned at the live end of every partition of both
    /// topics. The end offsets are read and assigned explicitly (not
    /// `Offset::End`, which librdkafka resolves lazily): a record published
    /// after this returns is at or past the assigned position.
    async fn live_consumer(
        &self,
        topics: Topics,
    ) -> Result<(StreamConsumer<WeftContext>, TopicPartitionList), BusError> {
        let consumer: StreamConsumer<WeftContext> = self
            .config
            .consumer("live", self.config.fetch_wait)
            .create_with_context(WeftContext::for_live_consumer(self.live_stats.clone()))
            .map_err(|error| BusError::Check(Box::new(error)))?;
        // Held scope: only the heartbeats' partition until documents load
        // (see `live`).
        let names = match self.config.consume {
            ConsumeScope::All => vec![
                (self.config.topic.clone(), topics.updates),
                (self.config.awareness_topic(), topics.awareness),
            ],
            ConsumeScope::Held => vec![(self.config.awareness_topic(), 1)],
        };
        tokio::task::spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            for (name, partitions) in &names {
                for partition in 0..*partitions {
                    let (_low, high) = consumer
                        .fetch_watermarks(name, partition, BROKER_REQUEST_TIMEOUT)
                        .map_err(|error| BusError::Check(Box::new(error)))?;
                    assignment
                        .add_partition_offset(name, partition, Offset::Offset(high))
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

    fn send_ephemeral(&self, topics: Topics, record: &Record) -> Result<(), KafkaError> {
        let value = envelope::encode(record, &self.config.origin);
        let topic = self.config.awareness_topic();
        let future_record = if record.kind == RecordKind::Heartbeat {
            // No key: heartbeats concern no document. Every node reads every
            // partition, so one partition reaches them all.
            FutureRecord::<[u8], _>::to(&topic)
                .payload(&value)
                .partition(0)
        } else {
            FutureRecord::to(&topic)
                .key(record.doc.as_bytes())
                .payload(&value)
                .partition(partition_for(&record.doc, topics.awareness))
        };
        let delivery = self
            .producer()
            .client
            .send_result(future_record)
            .map_err(|(error, _)| error)?;
        // Nobody waits for presence. A heartbeat's acknowledgement is
        // watched (off the caller's path) to tell whether the brokers still
        // make records durable; awareness deliveries are dropped.
        if record.kind == RecordKind::Heartbeat
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            self.heartbeat_acks.sent(std::time::Instant::now());
            let watch = self.heartbeat_acks.clone();
            runtime.spawn(async move {
                if let Ok(Ok(_)) = delivery.await {
                    watch.acknowledged();
                }
            });
        }
        Ok(())
    }
}

/// Publish batches awaiting the broker's acknowledgement at once: enough
/// that a batch never waits for the previous one's round trip, few enough
/// to bound what a broker outage leaves pending (1,024 updates a batch at
/// most).
const PUBLISH_DEPTH: usize = 8;

#[async_trait]
impl MessageBus for KafkaBus {
    fn origin(&self) -> &Origin {
        &self.config.origin
    }

    async fn publish(&self, records: &[Record]) -> Vec<Result<Position, BusError>> {
        let Some(topics) = self.topics.get().copied() else {
            return records
                .iter()
                .map(|_| Err(BusError::NotConnected))
                .collect();
        };
        let producer = self.producer();
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let value = envelope::encode(record, &self.config.origin);
            let headers = trace::headers_for(&record.span);
            let future_record = FutureRecord::to(&self.config.topic)
                .key(record.doc.as_bytes())
                .payload(&value)
                .partition(partition_for(&record.doc, topics.updates))
                .headers(headers);
            pending.push(
                producer
                    .client
                    .send_result(future_record)
                    .map_err(|(error, _)| error),
            );
        }
        let mut results = Vec::with_capacity(records.len());
        for delivery in pending {
            let result = match delivery {
                Ok(future) => match future.await {
                    Ok(Ok(delivered)) => Ok(Position {
                        partition: delivered.partition,
                        offset: delivered.offset,
                    }),
                    Ok(Err((error, _message))) => Err(BusError::Publish(Box::new(error))),
                    Err(_canceled) => Err(BusError::Publish("producer shut down".into())),
                },
                Err(error) => Err(BusError::Publish(Box::new(error))),
            };
            results.push(result);
        }
        debug!(records = records.len(), "updates published");
        if results.iter().any(Result::is_err) {
            self.renew_producer(producer.generation);
        }
        results
    }

    /// `publish` hands every record to librdkafka's queue before it first
    /// waits, and the idempotent producer keeps a partition's order across
    /// requests, so batches can be in flight together.
    fn publish_depth(&self) -> usize {
        PUBLISH_DEPTH
    }

    fn publish_ephemeral(&self, record: Record) {
        let sent = match self.topics.get() {
            Some(topics) => self.send_ephemeral(*topics, &record).is_ok(),
            None => false,
        };
        if !sent {
            self.counters.ephemeral_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn subscribe(
        &self,
        interest: Arc<dyn Interest>,
    ) -> Result<mpsc::Receiver<Delivery>, BusError> {
        if self.subscribed.swap(true, Ordering::AcqRel) {
            return Err(BusError::AlreadySubscribed);
        }
        let connected = async {
            let topics = self.connect().await?;
            self.live_consumer(topics).await
        }
        .await;
        let (consumer, positions) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                self.subscribed.store(false, Ordering::Release);
                return Err(error);
            }
        };
        let consumer = Arc::new(consumer);
        let _first_subscription = self.interest.set(interest.clone());
        self.live.start(consumer.clone(), positions);
        let (sender, receiver) = mpsc::channel(DELIVERY_CAPACITY);
        tokio::spawn(consume(
            consumer,
            self.live.clone(),
            interest,
            sender,
            self.config.clone(),
            self.counters.clone(),
            self.live_stats.clone(),
        ));
        Ok(receiver)
    }

    async fn replay(&self, doc: &str, after: Option<Position>) -> Result<Vec<Replayed>, BusError> {
        let Some(topics) = self.topics.get().copied() else {
            return Err(BusError::NotConnected);
        };
        let partition = partition_for(doc, topics.updates);
        let after = after
            .filter(|position| position.partition == partition)
            .map(|position| position.offset);
        let doc = doc.to_owned();
        // First the live consumer reads the partition (held scope: from its
        // end now, if no other document needs it already), then the pass
        // reads at least up to where the live consumer is: every record
        // below that was processed before the document was registered (or
        // is delivered live), every record from it on is delivered live.
        let live = self.live.clone();
        let held = self.held_partitions(&doc, topics);
        let holder = doc.clone();
        let topic = self.config.topic.clone();
        let until = tokio::task::spawn_blocking(move || {
            if let Some(held) = held {
                live.hold(&holder, &held)?;
            }
            Ok::<_, KafkaError>(live.position(&topic, partition))
        })
        .await
        .map_err(|error| BusError::Replay(error.into()))?
        .map_err(|error| BusError::Replay(Box::new(error)))?;
        if until.is_none() {
            debug!(
                doc,
                partition, "no live position for the partition; replaying to its reported end"
            );
        }
        self.replays
            .replay(
                self.config.clone(),
                self.counters.clone(),
                partition,
                Wanted { doc, after, until },
            )
            .await
    }

    fn stats(&self) -> BusStats {
        BusStats {
            malformed_records: self.counters.malformed.load(Ordering::Relaxed),
            ephemeral_lost: self.counters.ephemeral_lost.load(Ordering::Relaxed),
            producers_replaced: self.counters.producers_replaced.load(Ordering::Relaxed),
            consumers_replaced: self.counters.consumers_replaced.load(Ordering::Relaxed),
            live_gaps: self.counters.live_gaps.load(Ordering::Relaxed),
            replay_passes: self.counters.replay_passes.load(Ordering::Relaxed),
        }
    }

    /// Not healthy while the brokers leave this node's heartbeats
    /// unacknowledged (see [`crate::acks`]), or do not answer metadata.
    async fn check(&self) -> Result<(), BusError> {
        if self.topics.get().is_none() {
            return Err(BusError::NotConnected);
        }
        if let Some(waiting) = self
            .heartbeat_acks
            .unacknowledged_for(std::time::Instant::now())
            && waiting >= HEARTBEAT_ACK_STALL
        {
            return Err(BusError::Check(
                format!(
                    "the brokers have not acknowledged this node's heartbeats for {} s (acks=all: too few in-sync replicas, or brokers down)",
                    waiting.as_secs()
                )
                .into(),
            ));
        }
        let producer = self.producer().client;
        let topic = self.config.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), CHECK_TIMEOUT)
                .map(drop)
                .map_err(|error| BusError::Check(Box::new(error)))
        })
        .await
        .map_err(|error| BusError::Check(error.into()))?
    }

    fn release(&self, doc: &str) {
        let Some(topics) = self.topics.get().copied() else {
            return;
        };
        let Some(held) = self.held_partitions(doc, topics) else {
            return;
        };
        let live = self.live.clone();
        let doc = doc.to_owned();
        let heartbeats = (self.config.awareness_topic(), 0);
        let interest = self.interest.get().cloned();
        tokio::task::spawn_blocking(move || {
            live.release(&doc, &held, &heartbeats, |doc| {
                interest
                    .as_ref()
                    .is_some_and(|interest| interest.wants(doc))
            });
        });
    }

    fn fetched(&self) -> Option<FetchTotals> {
        Some(self.live_stats.fetched.lock().clone())
    }

    fn consumer_lag(&self) -> Vec<PartitionLag> {
        self.live_stats
            .lag
            .lock()
            .iter()
            .map(|((topic, partition), lag)| PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                lag: *lag,
            })
            .collect()
    }
}

/// The live consumer loop: runs until the registry drops its receiver.
///
/// A watchdog replaces a consumer that stopped receiving: every node hears
/// its own heartbeat (it publishes one every second and skips it here), so
/// [`CONSUMER_STALL`] without any record means the consumer is stuck (seen
/// with a broker restarted under it that keeps refusing the old client's
/// requests). The replacement resumes exactly where the old one was, so no
/// record is skipped.
async fn consume(
    consumer: Arc<StreamConsumer<WeftContext>>,
    live: Arc<Live>,
    interest: Arc<dyn Interest>,
    sender: mpsc::Sender<Delivery>,
    config: Arc<KafkaConfig>,
    counters: Arc<Counters>,
    live_stats: Arc<LiveStats>,
) {
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
) {
    counters.live_gaps.fetch_add(1, Ordering::Relaxed);
    warn!(
        partition = skipped.partition,
        from = skipped.from,
        to = skipped.to,
        "the live consumer skipped offsets; re-reading them"
    );
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || {
            read_skipped(&config, skipped, interest.as_ref(), &counters)
        })
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

/// What a consumed record means for this node, if anything: `None` for a
/// record of a document it has not loaded (skipped by key, before the
/// value is decoded), its own records other than updates, and malformed
/// ones (counted).
///
/// The node's own updates are delivered too. It applied them when the
/// broker acknowledged them, so they usually change nothing (and are not
/// broadcast again); but a publish can fail for the node (no acknowledgement
/// within `--kafka-publish-timeout`, a producer replaced) after the record
/// reached the log, and every other node applies it. Skipping its own
/// records, the node's replica (and every client of it but the one that
/// sent the update, until that one re-sends it) would lack it for as long
/// as the document stays loaded.
fn to_delivery(
    message: &impl Message,
    interest: &dyn Interest,
    config: &KafkaConfig,
    counters: &Counters,
) -> Option<Delivery> {
    let key = match message.key().map(std::str::from_utf8) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(error)) => {
            counters.malformed("record key", &error);
            return None;
        }
    };
    if let Some(doc) = key
        && !interest.wants(doc)
    {
        return None;
    }
    let decoded = match envelope::decode(message.payload().unwrap_or_default(), key) {
        Ok(decoded) => decoded,
        Err(error) => {
            counters.malformed("record value", &error);
            return None;
        }
    };
    if decoded.origin == config.origin && decoded.record.kind != RecordKind::Update {
        return None;
    }
    let on_updates_topic = message.topic() == config.topic;
    let expected_topic = match decoded.record.kind {
        RecordKind::Update | RecordKind::Delete => on_updates_topic,
        RecordKind::Awareness | RecordKind::Heartbeat | RecordKind::Stateless => !on_updates_topic,
    };
    if !expected_topic || (decoded.record.kind == RecordKind::Heartbeat) != key.is_none() {
        counters.malformed("record kind", &"kind does not belong on this topic or key");
        return None;
    }
    let position = on_updates_topic.then(|| Position {
        partition: message.partition(),
        offset: message.offset(),
    });
    let mut record = decoded.record;
    if record.kind == RecordKind::Update {
        record.span = debug_span!(
            parent: None,
            "consume",
            doc = %record.doc,
            partition = message.partition(),
            offset = message.offset(),
            from = %decoded.origin.node,
        );
        trace::continue_trace(&record.span, message.headers());
    }
    Some(Delivery {
        record,
        origin: decoded.origin,
        position,
    })
}

/// Waits (at most [`TOPICS_SERVED_TIMEOUT`]) until every partition of the
/// topics `names` has a leader that answers offset requests, and returns
/// their partition counts. Kafka acknowledges a topic's creation once its
/// controller recorded it; each broker learns of it, and becomes its
/// partitions' leader, a moment later, and until then answers metadata
/// without the topic and offset requests with "not leader". A node that
/// starts with other nodes, or loads a document at once, must not see that.
/// Partitions still unserved at the deadline (every replica down) do not
/// stop the node: it connects, warns, and only their documents fail to load.
fn wait_until_served(
    probe: &BaseConsumer<WeftContext>,
    names: &[String; 2],
) -> Result<[i32; 2], BusError> {
    let deadline = Instant::now() + TOPICS_SERVED_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    // The partition counts the metadata listed on any attempt (the last
    // attempt's requests may time out at the deadline).
    let mut counts = None;
    loop {
        let not_served = match served(probe, names, deadline) {
            Ok(counts) => return Ok(counts),
            Err(not_served) => not_served,
        };
        counts = not_served.counts.or(counts);
        if Instant::now() + pause >= deadline {
            let waited_ms = TOPICS_SERVED_TIMEOUT.as_millis() as u64;
            return match counts {
                Some(counts) => {
                    warn!(reason = %not_served.reason, waited_ms, "connecting although some partitions are not served; their documents fail to load until they are");
                    Ok(counts)
                }
                None => Err(BusError::Check(
                    format!("{} (waited {waited_ms} ms)", not_served.reason).into(),
                )),
            };
        }
        debug!(reason = %not_served.reason, "topics not served yet");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Why the topics are not served yet, and their partition counts if the
/// metadata already lists them.
struct NotServed {
    counts: Option<[i32; 2]>,
    reason: String,
}

/// The partition counts of `names` if every partition's leader answers an
/// offset request; otherwise why not.
fn served(
    probe: &BaseConsumer<WeftContext>,
    names: &[String; 2],
    deadline: Instant,
) -> Result<[i32; 2], NotServed> {
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let unknown = |reason: String| NotServed {
        counts: None,
        reason,
    };
    let mut counts = [0_i32; 2];
    let mut leaderless = None;
    let mut partitions = TopicPartitionList::new();
    for (count, name) in counts.iter_mut().zip(names) {
        let metadata = probe
            .fetch_metadata(Some(name), remaining())
            .map_err(|error| unknown(format!("metadata of topic {name}: {error}")))?;
        let Some(topic) = metadata.topics().iter().find(|topic| topic.name() == name) else {
            return Err(unknown(format!(
                "topic {name} is not in the broker's metadata yet"
            )));
        };
        if let Some(error) = topic.error() {
            return Err(unknown(format!(
                "topic {name}: {}",
                RDKafkaErrorCode::from(error)
            )));
        }
        if topic.partitions().is_empty() {
            return Err(unknown(format!("topic {name} has no partitions yet")));
        }
        for partition in topic.partitions() {
            if partition.error().is_some() || partition.leader() < 0 {
                leaderless.get_or_insert_with(|| {
                    format!("partition {} of topic {name} has no leader", partition.id())
                });
            }
            partitions
                .add_partition_offset(name, partition.id(), Offset::End)
                .map_err(|error| unknown(error.to_string()))?;
        }
        *count = i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX);
    }
    let known = |reason: String| NotServed {
        counts: Some(counts),
        reason,
    };
    if let Some(reason) = leaderless {
        return Err(known(reason));
    }
    // One offset request per leader for every partition at once (the
    // "latest" timestamp): each leader serves its partitions.
    let answered = probe
        .offsets_for_times(partitions, remaining())
        .map_err(|error| known(format!("offsets of the topics' partitions: {error}")))?;
    for element in answered.elements() {
        if let Err(error) = element.error() {
            return Err(known(format!(
                "partition {} of topic {}: {error}",
                element.partition(),
                element.topic()
            )));
        }
    }
    Ok(counts)
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<WeftContext>, KafkaConfigError> {
    Ok(config
        .producer()
        .create_with_context(WeftContext::default())?)
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};
    use weft_sync::Interest;

    use super::*;

    struct Everything;

    impl Interest for Everything {
        fn wants(&self, _doc: &str) -> bool {
            true
        }
    }

    fn config(node: &Origin) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9".to_owned(),
            topic: "updates".to_owned(),
            partitions: 1,
            replication_factor: 1,
            origin: node.clone(),
            linger: Duration::from_millis(1),
            fetch_wait: Duration::from_millis(10),
            publish_timeout: Duration::from_secs(10),
            max_record_bytes: 2 * 1024 * 1024,
            retention: None,
            consume: ConsumeScope::Held,
            options: Vec::new(),
        }
    }

    fn consumed(config: &KafkaConfig, kind: RecordKind, from: &Origin) -> Option<Delivery> {
        let (topic, doc) = match kind {
            RecordKind::Heartbeat => (config.awareness_topic(), ""),
            RecordKind::Awareness | RecordKind::Stateless => (config.awareness_topic(), "doc"),
            RecordKind::Update | RecordKind::Delete => (config.topic.clone(), "doc"),
        };
        let record = Record {
            doc: Arc::from(doc),
            kind,
            payload: bytes::Bytes::from_static(b"payload"),
            origin_session: 1,
            span: tracing::Span::none(),
        };
        let message = OwnedMessage::new(
            Some(envelope::encode(&record, from)),
            (!doc.is_empty()).then(|| doc.as_bytes().to_vec()),
            topic,
            Timestamp::NotAvailable,
            0,
            7,
            None,
        );
        to_delivery(&message, &Everything, config, &Counters::default())
    }

    #[test]
    fn a_nodes_own_updates_come_back_and_nothing_else_of_its_own() {
        let node = Origin::new("node");
        let config = config(&node);
        let own = consumed(&config, RecordKind::Update, &node)
            .expect("its own update: applied if its acknowledgement was lost");
        assert_eq!(own.origin, node);
        assert_eq!(
            own.position,
            Some(Position {
                partition: 0,
                offset: 7
            })
        );
        for kind in [
            RecordKind::Delete,
            RecordKind::Awareness,
            RecordKind::Stateless,
            RecordKind::Heartbeat,
        ] {
            assert!(
                consumed(&config, kind, &node).is_none(),
                "its own {kind:?} is not delivered"
            );
        }
        let peer = Origin::new("peer");
        for kind in [
            RecordKind::Update,
            RecordKind::Delete,
            RecordKind::Awareness,
        ] {
            assert!(
                consumed(&config, kind, &peer).is_some(),
                "a peer's {kind:?}"
            );
        }
    }
}
