//! The revocations topic (`<topic>-revocations`): every node's revocations
//! of tokens, read by every node from the start.
//!
//! One partition, so one order for every reader; records keyed by the
//! revocation's id, values opaque to this crate (the gateway's JSON). The
//! topic's retention is the longest a revocation lives, so Kafka drops
//! records once they no longer matter. A node reads the whole topic up to
//! the end it saw at start before it says it has loaded it (readiness),
//! then follows it live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_sync::BusError;
use weft_sync::backoff::Pauses;

use crate::config::{BROKER_REQUEST_TIMEOUT, KafkaConfig, KafkaConfigError};
use crate::context::WeftContext;

/// Suffix of the revocations topic's name.
const REVOCATIONS_TOPIC_SUFFIX: &str = "-revocations";
/// How long the consumer lets the broker hold a fetch with nothing new:
/// a revocation must reach every node within a second.
const FETCH_WAIT: Duration = Duration::from_millis(100);
/// The first pause before trying again to create or read the topic at
/// start (jittered, doubling up to [`MAX_RETRY_PAUSE`]): a topic just
/// created has no leader for a moment.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two tries.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The revocations topic: append and follow.
pub struct RevocationTopic {
    config: KafkaConfig,
    topic: String,
    retention: Duration,
    producer: FutureProducer<WeftContext>,
    /// Whether this node created (or found) the topic already.
    created: AtomicBool,
}

impl std::fmt::Debug for RevocationTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationTopic")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl RevocationTopic {
    /// The revocations topic of `config`'s cluster; records live
    /// `retention` (the longest a revocation does).
    pub fn new(config: &KafkaConfig, retention: Duration) -> Result<Self, KafkaConfigError> {
        Ok(Self {
            config: config.clone(),
            topic: format!("{}{REVOCATIONS_TOPIC_SUFFIX}", config.topic),
            retention,
            producer: config
                .producer()
                .create_with_context(WeftContext::default())?,
            created: AtomicBool::new(false),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.topic
    }

    /// Appends a record; resolves once the brokers acknowledged it
    /// (`acks=all`).
    pub async fn append(&self, key: &str, value: &[u8]) -> Result<(), BusError> {
        self.create().await?;
        let record = FutureRecord::to(&self.topic).key(key).payload(value);
        self.producer
            .send(record, self.config.publish_timeout)
            .await
            .map(|_| ())
            .map_err(|(error, _)| BusError::Check(Box::new(error)))
    }

    /// Sends every record of the topic to `records`, then resolves
    /// `loaded`, then follows new records until `stop`. Retries the start
    /// (creating and reading the topic) until it works or `stop`.
    pub async fn follow(
        self: Arc<Self>,
        records: mpsc::Sender<Vec<u8>>,
        loaded: oneshot::Sender<()>,
        stop: CancellationToken,
    ) {
        let mut pauses = Pauses::new(FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE);
        let (consumer, first, end) = loop {
            match self.start().await {
                Ok(started) => break started,
                Err(error) => {
                    warn!(error = %error, error.source = ?std::error::Error::source(&error), topic = %self.topic, "could not read the revocations topic; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pauses.next_pause()) => {}
                    }
                }
            }
        };
        let mut loaded = Some(loaded);
        if end <= first
            && let Some(loaded) = loaded.take()
        {
            let _node_may_be_stopping = loaded.send(());
        }
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    debug!(error = %error, "revocations topic: fetch failed; librdkafka retries");
                    continue;
                }
            };
            if let Some(value) = message.payload()
                && records.send(value.to_vec()).await.is_err()
            {
                return;
            }
            if message.offset() + 1 >= end
                && let Some(loaded) = loaded.take()
            {
                let _node_may_be_stopping = loaded.send(());
            }
        }
    }

    /// Creates the topic if missing, and a consumer assigned to its
    /// partition from the start; returns it and the partition's first and
    /// end offsets then.
    async fn start(&self) -> Result<(StreamConsumer<WeftContext>, i64, i64), BusError> {
        self.create().await?;
        let consumer: StreamConsumer<WeftContext> = self
            .config
            .consumer("revocations", FETCH_WAIT)
            .create_with_context(WeftContext::default())
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(&self.topic, 0, Offset::Beginning)
            .map_err(|error| BusError::Check(Box::new(error)))?;
        consumer
            .assign(&partitions)
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let consumer = Arc::new(consumer);
        let probe = consumer.clone();
        let topic = self.topic.clone();
        let (first, end) = tokio::task::spawn_blocking(move || {
            probe.fetch_watermarks(&topic, 0, BROKER_REQUEST_TIMEOUT)
        })
        .await
        .map_err(|error| BusError::Check(Box::new(error)))?
        .map_err(|error| BusError::Check(Box::new(error)))?;
        let consumer = Arc::try_unwrap(consumer)
            .map_err(|_| BusError::Check("the revocations consumer is still shared".into()))?;
        info!(topic = %self.topic, records_before = end, "reading the revocations topic");
        Ok((consumer, first, end))
    }

    /// Creates the topic (one partition) unless it exists; asks the
    /// brokers once per node.
    async fn create(&self) -> Result<(), BusError> {
        if self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        let admin: AdminClient<WeftContext> = self
            .config
            .base()
            .create_with_context(WeftContext::default())
            .map_err(|error| BusError::Check(Box::new(error)))?;
        let retention_ms = self.retention.as_millis().to_string();
        let topic = NewTopic::new(
            &self.topic,
            1,
            TopicReplication::Fixed(self.config.replication_factor),
        )
        .set("retention.ms", &retention_ms);
        crate::connect::create_new_topics(&admin, &[&topic]).await?;
        self.created.store(true, Ordering::Release);
        Ok(())
    }
}
