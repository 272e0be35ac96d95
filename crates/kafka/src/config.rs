//! What a node needs to reach its broker, and the librdkafka settings that
//! follow from it.

use std::time::Duration;

use rdkafka::ClientConfig;
use weft_sync::Origin;

use crate::security::{KafkaSecurity, SecurityError};

/// How long one metadata or watermark request may take.
pub(crate) const BROKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which partitions a node's live consumer reads (`--kafka-consume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeScope {
    /// Every partition of both topics.
    All,
    /// The partitions of the documents the node holds (and the heartbeats').
    #[default]
    Held,
}

/// The Kafka bus settings (`--kafka-*` flags).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// The updates topic; awareness uses `<topic>-awareness`.
    pub topic: String,
    /// Partitions of the topics when Weft creates them (an existing topic
    /// keeps its own count).
    pub partitions: i32,
    /// Replication factor of the topics when Weft creates them.
    pub replication_factor: i32,
    /// This node.
    pub origin: Origin,
    /// `linger.ms`: how long the producer waits to batch records. Weft's
    /// committer already batches what arrives while a batch is in flight,
    /// so a small value suffices; larger trades latency for fewer requests.
    pub linger: Duration,
    /// `fetch.wait.max.ms`: how long the broker may hold a fetch with no
    /// new data. A real Kafka broker answers as soon as data arrives, so
    /// this mostly bounds idle polling; some Kafka-API brokers (Tansu)
    /// always wait the full time, which then bounds cross-node latency.
    pub fetch_wait: Duration,
    /// `message.timeout.ms`: how long a publish may wait for the broker's
    /// acknowledgement before the update fails and its session is closed
    /// (the client re-sends it on reconnect).
    pub publish_timeout: Duration,
    /// Largest record Weft produces (`message.max.bytes` of the producer,
    /// `max.message.bytes` of the topics it creates). A client's first
    /// SyncStep2 can carry a whole document edited offline, so this must
    /// hold the largest WebSocket message a node accepts, plus the envelope.
    pub max_record_bytes: usize,
    /// `retention.ms` of the updates topic when Weft creates it; `None`
    /// keeps every record (-1). Records a node needs to load a document must
    /// outlive the persistence worker's lag, or they are lost: bound it
    /// only with a worker running.
    pub retention: Option<Duration>,
    /// Which partitions the live consumer reads (`--kafka-consume`).
    pub consume: ConsumeScope,
    /// TLS and SASL towards the brokers (`--kafka-security-protocol`...).
    pub security: KafkaSecurity,
    /// Any other librdkafka property (`--kafka-option key=value`), applied
    /// last, so it overrides the above.
    pub options: Vec<(String, String)>,
}

/// Room for the envelope around an update (document name, origin, kind).
pub const ENVELOPE_OVERHEAD_BYTES: usize = 64 * 1024;

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// A setting out of range, named.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The flag.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A TLS or SASL setting, named.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// librdkafka refused the configuration.
    #[error("librdkafka refused the configuration")]
    Client(#[from] rdkafka::error::KafkaError),
}

/// Group session timeout: how long a silent worker keeps its partitions.
const GROUP_SESSION_TIMEOUT_MS: &str = "10000";
/// Group heartbeat period (a third of the session timeout or less).
const GROUP_HEARTBEAT_INTERVAL_MS: &str = "1000";

/// Suffix of the awareness topic's name.
const AWARENESS_TOPIC_SUFFIX: &str = "-awareness";

impl KafkaConfig {
    /// The topic awareness and heartbeats travel on.
    pub fn awareness_topic(&self) -> String {
        format!("{}{AWARENESS_TOPIC_SUFFIX}", self.topic)
    }

    /// Checks the settings librdkafka would only refuse later.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("--kafka-brokers", "no broker address given"));
        }
        if self.topic.is_empty()
            || !self
                .topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || self.topic.len() > 237
        {
            // Kafka's limit is 249: room for the longest suffix Weft adds
            // (`-revocations`).
            return Err(invalid(
                "--kafka-topic",
                "a topic name is 1-237 characters of [a-zA-Z0-9._-]",
            ));
        }
        if self.partitions < 1 {
            return Err(invalid("--kafka-partitions", "must be at least 1"));
        }
        if self.max_record_bytes < 1024 * 1024 {
            return Err(invalid(
                "--kafka-max-record-bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.replication_factor < 1 {
            return Err(invalid("--kafka-replication-factor", "must be at least 1"));
        }
        self.security.validate()?;
        for (key, _) in &self.options {
            if key.trim().is_empty() {
                return Err(invalid("--kafka-option", "expected key=value"));
            }
        }
        Ok(())
    }

    /// Settings every client of this node shares.
    pub(crate) fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("weft-{}", self.origin.node))
            // Requests are small and latency-bound (every update waits for
            // its acknowledgement): send them without Nagle's delay.
            .set("socket.nagle.disable", "true")
            // A broker that goes away is retried with librdkafka's backoff.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "5000");
        self.security.apply(&mut config);
        config
    }

    /// The producer: idempotent, `acks=all`.
    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", millis(self.linger))
            .set("message.max.bytes", self.max_record_bytes.to_string())
            .set("message.timeout.ms", millis(self.publish_timeout))
            // Each Weft record is small; bound what librdkafka may queue so
            // a dead broker cannot grow memory without bound (a publish past
            // it fails and its session is closed).
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "262144");
        self.apply_options(&mut config);
        config
    }

    /// A consumer that is assigned partitions explicitly and never commits.
    pub(crate) fn consumer(&self, purpose: &str, fetch_wait: Duration) -> ClientConfig {
        let mut config = self.base();
        config
            .set(
                "group.id",
                format!(
                    "weft-{purpose}-{}-{:016x}",
                    self.origin.node, self.origin.incarnation
                ),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", millis(fetch_wait))
            .set("fetch.min.bytes", "1");
        if purpose == "live" {
            // Statistics carry the consumer lag per partition (a metric).
            config.set("statistics.interval.ms", "5000");
        }
        self.apply_options(&mut config);
        config
    }

    /// The persistence worker's consumer: a member of `group` that commits
    /// explicitly (only what stored snapshots cover) and starts a partition
    /// the group never committed at its earliest record.
    pub(crate) fn group_consumer(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", millis(self.fetch_wait))
            // A worker that died is noticed within this, and its partitions
            // go to the others (Kafka's default is 45 s of nobody folding
            // them).
            .set("session.timeout.ms", GROUP_SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", GROUP_HEARTBEAT_INTERVAL_MS);
        self.apply_options(&mut config);
        config
    }

    /// A member of the owners' group (`--cluster-mode ownership`): named
    /// `client_id` (its node and address), cooperative-sticky assignment,
    /// never committing (it reads nothing).
    pub(crate) fn owner_consumer(&self, group: &str, client_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("client.id", client_id)
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("enable.partition.eof", "false")
            // Paused at once on assignment: fetch as little as possible in
            // the moment before.
            .set("queued.min.messages", "1")
            .set("max.partition.fetch.bytes", "1")
            // A node that died loses its partitions within this.
            .set("session.timeout.ms", GROUP_SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", GROUP_HEARTBEAT_INTERVAL_MS);
        self.apply_options(&mut config);
        config
    }

    fn apply_options(&self, config: &mut ClientConfig) {
        for (key, value) in &self.options {
            config.set(key, value);
        }
    }
}

fn invalid(setting: &'static str, reason: &str) -> KafkaConfigError {
    KafkaConfigError::Invalid {
        setting,
        reason: reason.to_owned(),
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}
