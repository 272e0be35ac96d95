//! [`KafkaBus`]: one node's producer, live consumer and replays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureRecord, Producer as _};
use tokio::sync::mpsc;
use tracing::debug;
use weft_sync::{
    BusError, Delivery, Interest, MessageBus, Origin, Position, Record, RecordKind, Replayed,
};

use crate::acks::{AckWatch, HEARTBEAT_ACK_STALL};
use crate::config::{ConsumeScope, KafkaConfig, KafkaConfigError};
use crate::connect::{self, Topics};
use crate::consume::{LiveLoop, consume, live_consumer};
use crate::context::LiveStats;
use crate::counters::Counters;
use crate::envelope::{self, partition_for};
use crate::live::Live;
use crate::metrics::KafkaMetrics;
use crate::pass::Wanted;
use crate::producer::Producers;
use crate::replay::Replays;
use crate::tasks::BusTasks;
use crate::{attribution, offset, trace};

/// How long a readiness check waits for the broker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Deliveries buffered between the consumer and the registry; past it the
/// consumer waits (and lags) rather than buffering without bound.
const DELIVERY_CAPACITY: usize = 4096;

/// One node's connection to a Kafka-API broker.
pub struct KafkaBus {
    config: Arc<KafkaConfig>,
    /// Replaced after a failed publish (see [`Producers::renew`]).
    producers: Producers,
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
    /// The node's tracker, which every task of the bus is spawned on.
    tasks: BusTasks,
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
    /// retries it with backoff until the broker answers). Every task the
    /// bus starts goes on `tasks` (the node's tracker), and stops when
    /// its token is cancelled.
    pub fn new(config: KafkaConfig, tasks: BusTasks) -> Result<Self, KafkaConfigError> {
        config.validate()?;
        let producers = Producers::new(&config)?;
        Ok(Self {
            config: Arc::new(config),
            producers,
            topics: OnceLock::new(),
            subscribed: AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
            live_stats: Arc::default(),
            live: Arc::default(),
            replays: Arc::new(Replays::new(tasks.clone())),
            heartbeat_acks: Arc::default(),
            interest: OnceLock::new(),
            tasks,
        })
    }

    /// Connects once (see [`connect::connect`]); later calls return the
    /// partition counts learned then.
    async fn connect(&self) -> Result<Topics, BusError> {
        if let Some(topics) = self.topics.get() {
            return Ok(*topics);
        }
        let topics = connect::connect(&self.config, &self.tasks).await?;
        Ok(*self.topics.get_or_init(|| topics))
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

    /// The bus's metrics (its counters, the live consumer's lag and fetch
    /// totals), for the node to register: a handle that reads them at
    /// each scrape.
    pub fn metrics(&self) -> KafkaMetrics {
        KafkaMetrics::new(self.counters.clone(), self.live_stats.clone())
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

    /// Ranges of offsets the live consumer skipped (and read again).
    pub fn live_gaps(&self) -> u64 {
        self.counters.live_gaps.load(Ordering::Relaxed)
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
            .producers
            .current()
            .client
            .send_result(future_record)
            .map_err(|(error, _)| error)?;
        // Nobody waits for presence. A heartbeat's acknowledgement is
        // watched (off the caller's path) to tell whether the brokers still
        // make records durable; awareness deliveries are dropped.
        if record.kind == RecordKind::Heartbeat && tokio::runtime::Handle::try_current().is_ok() {
            self.heartbeat_acks.sent(std::time::Instant::now());
            let watch = self.heartbeat_acks.clone();
            self.tasks.spawn(async move {
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

    fn log_id(&self) -> &str {
        &self.config.topic
    }

    async fn publish(&self, records: &[Record]) -> Vec<Result<Position, BusError>> {
        let Some(topics) = self.topics.get().copied() else {
            return records
                .iter()
                .map(|_| Err(BusError::NotConnected))
                .collect();
        };
        let producer = self.producers.current();
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let value = envelope::encode(record, &self.config.origin);
            let headers = attribution::with_attribution(
                trace::headers_for(&record.span),
                record,
                weft_sync::unix_millis(),
            );
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
                    Ok(Ok(delivered)) => {
                        Ok(offset::position(delivered.partition, delivered.offset))
                    }
                    Ok(Err((error, _message))) => Err(BusError::Publish(Box::new(error))),
                    Err(_canceled) => Err(BusError::Publish("producer shut down".into())),
                },
                Err(error) => Err(BusError::Publish(Box::new(error))),
            };
            results.push(result);
        }
        debug!(records = records.len(), "updates published");
        if results.iter().any(Result::is_err) {
            self.producers.renew(
                &self.config,
                producer.generation,
                &self.counters,
                &self.tasks,
            );
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
            live_consumer(&self.config, topics, &self.live_stats, &self.tasks).await
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
        self.tasks.spawn(consume(
            consumer,
            LiveLoop {
                live: self.live.clone(),
                interest,
                sender,
                config: self.config.clone(),
                counters: self.counters.clone(),
                live_stats: self.live_stats.clone(),
                tasks: self.tasks.clone(),
            },
        ));
        Ok(receiver)
    }

    async fn replay(&self, doc: &str, after: Option<Position>) -> Result<Vec<Replayed>, BusError> {
        let Some(topics) = self.topics.get().copied() else {
            return Err(BusError::NotConnected);
        };
        let partition = partition_for(doc, topics.updates);
        let after = offset::on_partition(after, partition);
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
        let until = self
            .tasks
            .spawn_blocking(move || {
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

    /// Not healthy while the brokers leave this node's heartbeats
    /// unacknowledged (see `acks`), or do not answer metadata.
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
        let producer = self.producers.current().client;
        let topic = self.config.topic.clone();
        self.tasks
            .spawn_blocking(move || {
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
        // Nobody waits for a release: the tracker does, at shutdown.
        drop(self.tasks.spawn_blocking(move || {
            live.release(&doc, &held, &heartbeats, |doc| {
                interest
                    .as_ref()
                    .is_some_and(|interest| interest.wants(doc))
            });
        }));
    }
}
