//! `--kafka-*`: clustering through Kafka, shared by `weft serve`,
//! `weft persist`, `weft docs migrate` and `weft docs export`.

use std::time::Duration;

use clap::Args;

use super::duration::parse_duration;

/// Clustering through Kafka. Without `--kafka-brokers` the node runs alone
/// on its embedded store.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port[,host:port...]`). Set: this node
    /// joins the cluster that shares the topic; unset: embedded single node
    /// (`weft persist` requires it).
    #[arg(long, env = "WEFT_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// The updates topic. Awareness and heartbeats use `<topic>-awareness`.
    #[arg(long, env = "WEFT_KAFKA_TOPIC", default_value = "weft-updates")]
    pub kafka_topic: String,

    /// Partitions of the topics when Weft creates them (an existing topic
    /// keeps its count). Documents spread over partitions by key.
    #[arg(long, env = "WEFT_KAFKA_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub kafka_partitions: i32,

    /// Replication factor of the topics when Weft creates them. Use 3 in
    /// production so `acks=all` means three copies.
    #[arg(long, env = "WEFT_KAFKA_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub kafka_replication_factor: i32,

    /// This node's name in the cluster (records' origin, peers' liveness).
    /// Default: the host name (a pod's name on Kubernetes).
    #[arg(long, env = "WEFT_NODE_ID")]
    pub node_id: Option<String>,

    /// librdkafka `linger.ms`: how long the producer waits to batch. Lower
    /// is lower latency; higher, fewer and larger produce requests.
    #[arg(long, env = "WEFT_KAFKA_LINGER_MS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub kafka_linger_ms: u64,

    /// librdkafka `fetch.wait.max.ms`: the longest a fetch waits for data.
    /// Kafka answers early when data arrives, so this bounds idle polling;
    /// brokers that always wait it out (Tansu) add it to cross-node latency.
    #[arg(long, env = "WEFT_KAFKA_FETCH_WAIT_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub kafka_fetch_wait_ms: u64,

    /// How long an update may wait for the broker's acknowledgement before
    /// it fails and its session is closed (1011; the client re-sends).
    #[arg(long, env = "WEFT_KAFKA_PUBLISH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub kafka_publish_timeout: Duration,

    /// Largest record Weft produces, and the `max.message.bytes` of the
    /// topics it creates. Must hold `--max-message-bytes` plus 64 KiB of
    /// envelope; the brokers' own limits must allow it too.
    #[arg(long, env = "WEFT_KAFKA_MAX_RECORD_BYTES", default_value_t = 17 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024 * 1024..=1024 * 1024 * 1024))]
    pub kafka_max_record_bytes: u64,

    /// `retention.ms` of the updates topic when Weft creates it: a duration
    /// (`7d`, `72h`) or `infinite`. In a cluster the topic is the log of
    /// record: bound it only with a persistence worker running, and longer
    /// than the worker may ever lag. An existing topic keeps its setting.
    #[arg(long, env = "WEFT_KAFKA_RETENTION", default_value = "infinite", value_parser = parse_retention)]
    pub kafka_retention: Retention,

    /// Which partitions a node reads: `held`, those of the documents it
    /// holds (with an ingress that routes each document to one node, each
    /// node reads its share of the topic), or `all`, every partition.
    #[arg(long, env = "WEFT_KAFKA_CONSUME", value_enum, default_value_t = ConsumeArg::Held)]
    pub kafka_consume: ConsumeArg,

    /// Any librdkafka property, `key=value`, repeatable (separated by `;`
    /// in the environment variable, since librdkafka values may hold
    /// commas), e.g. `security.protocol=ssl`. Applied last, so it overrides
    /// Weft's own settings.
    #[arg(long = "kafka-option", env = "WEFT_KAFKA_OPTIONS", value_delimiter = ';', value_parser = parse_key_value)]
    pub kafka_options: Vec<(String, String)>,

    #[command(flatten)]
    pub security: crate::kafka_security::KafkaSecurityArgs,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got `{text}`")),
    }
}
/// `--kafka-consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumeArg {
    /// The partitions of the documents this node holds.
    Held,
    /// Every partition.
    All,
}

/// A topic retention: `None` keeps every record.
#[derive(Debug, Clone, Copy)]
pub struct Retention(pub Option<Duration>);

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text.trim().eq_ignore_ascii_case("infinite") {
        return Ok(Retention(None));
    }
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(60) {
        return Err("a retention under a minute would delete records nodes still need; use a duration like 7d, or infinite".to_owned());
    }
    Ok(Retention(Some(duration)))
}

#[cfg(test)]
mod retention_tests {
    use std::time::Duration;

    use super::parse_retention;

    #[test]
    fn retention_is_a_duration_or_infinite() {
        assert_eq!(parse_retention("infinite").map(|r| r.0), Ok(None));
        assert_eq!(
            parse_retention("7d").map(|r| r.0),
            Ok(Some(Duration::from_secs(7 * 86_400)))
        );
        assert!(parse_retention("5s").is_err(), "too short to be safe");
        assert!(parse_retention("forever").is_err());
    }
}
