//! Connecting to the broker: creating the topics if missing and waiting
//! until their partitions are served.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};
use weft_sync::BusError;
use weft_sync::backoff::Pauses;

use crate::config::{BROKER_REQUEST_TIMEOUT, KafkaConfig};
use crate::context::WeftContext;
use crate::tasks::BusTasks;

/// How long connecting waits for new topics' partitions to be served.
const TOPICS_SERVED_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause between two looks at whether the topics are served
/// (jittered, doubling up to [`MAX_PAUSE`]).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The cap of the delay; a jittered pause is below twice it.
const MAX_PAUSE: Duration = Duration::from_millis(250);
/// Retention of the awareness topic when Weft creates it: presence is
/// renewed by clients every 15 s, so a minute of history is plenty.
const AWARENESS_RETENTION_MS: &str = "60000";

/// Partition counts learned when the node connected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Topics {
    /// Partitions of the updates topic.
    pub(crate) updates: i32,
    /// Partitions of the awareness topic.
    pub(crate) awareness: i32,
}

/// Creates the topics if missing, waits until their partitions are
/// served, and learns their partition counts.
pub(crate) async fn connect(config: &KafkaConfig, tasks: &BusTasks) -> Result<Topics, BusError> {
    create_topics(config).await?;
    let probe: BaseConsumer<WeftContext> = config
        .consumer("connect", config.fetch_wait)
        .create_with_context(WeftContext::default())
        .map_err(|error| BusError::Check(Box::new(error)))?;
    let names = [config.topic.clone(), config.awareness_topic()];
    let counts = tasks
        .spawn_blocking(move || wait_until_served(&probe, &names))
        .await
        .map_err(|error| BusError::Check(error.into()))??;
    let topics = Topics {
        updates: counts[0],
        awareness: counts[1],
    };
    info!(topic = %config.topic, partitions = topics.updates, awareness_partitions = topics.awareness, "connected to the broker");
    Ok(topics)
}

async fn create_topics(config: &KafkaConfig) -> Result<(), BusError> {
    let admin: AdminClient<WeftContext> = config
        .base()
        .create_with_context(WeftContext::default())
        .map_err(|error| BusError::Check(Box::new(error)))?;
    let awareness_name = config.awareness_topic();
    let replication = config.replication_factor;
    let max_record_bytes = config.max_record_bytes.to_string();
    let retention_ms = config.retention.map_or_else(
        || "-1".to_owned(),
        |retention| retention.as_millis().to_string(),
    );
    let updates = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(replication),
    )
    .set("max.message.bytes", &max_record_bytes)
    .set("retention.ms", &retention_ms);
    let awareness = NewTopic::new(
        &awareness_name,
        config.partitions,
        TopicReplication::Fixed(replication),
    )
    .set("retention.ms", AWARENESS_RETENTION_MS);
    crate::connect::create_new_topics(&admin, &[&updates, &awareness]).await?;
    Ok(())
}

/// Creates `topics` on the cluster `admin` reaches; a topic that exists
/// already is left as it is (another node, or an earlier start, made it).
pub(crate) async fn create_new_topics(
    admin: &AdminClient<WeftContext>,
    topics: &[&NewTopic<'_>],
) -> Result<(), BusError> {
    let options = AdminOptions::new().operation_timeout(Some(BROKER_REQUEST_TIMEOUT));
    let results = admin
        .create_topics(topics.iter().copied(), &options)
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
    let mut pauses = Pauses::new(FIRST_PAUSE, MAX_PAUSE);
    // The partition counts the metadata listed on any attempt (the last
    // attempt's requests may time out at the deadline).
    let mut counts = None;
    loop {
        let not_served = match served(probe, names, deadline) {
            Ok(counts) => return Ok(counts),
            Err(not_served) => not_served,
        };
        counts = not_served.counts.or(counts);
        let pause = pauses.next_pause();
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
