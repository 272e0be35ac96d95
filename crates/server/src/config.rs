//! From the command line to a node's typed, validated settings.
//!
//! [`NodeConfig::from_args`] does every check that needs no network or
//! disk beyond reading a key file, so a bad setting fails before anything
//! listens, with a message that names the flag and its environment twin.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weft_gateway::GatewayConfig;
use weft_gateway::auth::Authenticator;
use weft_gateway::limits::LimitsConfig;
use weft_kafka::KafkaConfig;
use weft_sync::compaction::CompactionSettings;
use weft_sync::{CommitterConfig, HistorySettings, Origin, RegistryConfig};

use crate::cli::{ClusterModeArg, ConsumeArg, HttpArgs, KafkaArgs, ServeArgs};
use crate::http::HttpLimits;

/// Everything a node needs besides its listeners.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The document store's URL (`sqlite://PATH`, `postgres://...`).
    pub store_url: String,
    /// This node's name: the records' origin in a cluster, the embedded
    /// log's writer otherwise.
    pub node_id: String,
    /// The Kafka settings; `None` runs the node alone on its store.
    pub kafka: Option<KafkaConfig>,
    /// Documents: commit window, snapshots, unloading, batching.
    pub registry: RegistryConfig,
    /// Sessions: frame sizes, queues, heartbeats, origins.
    pub gateway: GatewayConfig,
    /// Admission: sessions per node and per address, upgrade rate.
    pub limits: LimitsConfig,
    /// Who may open which document.
    pub auth: Authenticator,
    /// Deadlines and caps for connections not yet upgraded.
    pub http: HttpLimits,
    /// How long a revocation lives (`--auth-max-token-lifetime`).
    pub max_token_lifetime: Duration,
    /// `wss://` and `https://` (`--tls-cert`, `--tls-key`); `None` serves
    /// plain `ws://` and `http://`.
    pub tls: Option<crate::tls::TlsConfig>,
    /// History (`--version-interval`, `--history-retention`); `None`: none
    /// kept (retention 0).
    pub history: Option<HistorySettings>,
    /// History compaction (`--history-retention`,
    /// `--history-compact-interval`); `None`: none (no history, or a
    /// cluster node: `weft persist` compacts there).
    pub compaction: Option<CompactionSettings>,
    /// Webhooks (`--webhook-*`); `None` without `--webhook-url`.
    pub webhooks: Option<crate::webhooks::WebhookSettings>,
    /// `--cluster-mode ownership`: where this node is reached and the
    /// cluster secret; `None`: any node serves any document.
    pub ownership: Option<crate::ownership::OwnershipConfig>,
}

impl NodeConfig {
    /// Validates `weft serve`'s arguments.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let gateway = gateway_config(args)?;
        let registry = registry_config(args)?;
        let kafka = kafka_config(&args.kafka)?;
        check_heartbeats(args)?;
        if let Some(config) = &kafka
            && gateway.max_message_bytes + weft_kafka::ENVELOPE_OVERHEAD_BYTES
                > config.max_record_bytes
        {
            bail!(
                "--max-message-bytes / WEFT_MAX_MESSAGE_BYTES ({}) plus 64 KiB of envelope must fit --kafka-max-record-bytes / WEFT_KAFKA_MAX_RECORD_BYTES ({}): a client's update could never be published",
                gateway.max_message_bytes,
                config.max_record_bytes
            );
        }
        let auth = crate::idp::authenticator(&args.auth)?;
        let history = (!args.history_retention.is_zero()).then_some(HistorySettings {
            version_interval: args.version_interval,
            retention: args.history_retention,
            automatic: args.kafka.kafka_brokers.is_none(),
        });
        let compaction = history_compaction(args)?;
        if args.auth_max_token_lifetime.is_zero() {
            bail!(
                "--auth-max-token-lifetime / WEFT_AUTH_MAX_TOKEN_LIFETIME must be greater than zero"
            );
        }
        let limits = LimitsConfig {
            max_connections: to_usize(
                args.limits.max_connections,
                "--max-connections / WEFT_MAX_CONNECTIONS",
            )?,
            max_connections_per_ip: to_usize(
                args.limits.max_connections_per_ip,
                "--max-connections-per-ip / WEFT_MAX_CONNECTIONS_PER_IP",
            )?,
            upgrades_per_ip_per_second: args.limits.max_upgrades_per_ip_per_second,
        };
        let ownership = ownership_config(args)?;
        if ownership.is_some() && args.tls.tls_cert.is_some() {
            bail!(
                "--cluster-mode ownership forwards sessions between nodes over plain ws://, which a node serving --tls-cert / WEFT_TLS_CERT does not accept: terminate TLS in front of the nodes instead"
            );
        }
        Ok(Self {
            store_url: args.store.clone(),
            node_id: node_id(&args.kafka),
            kafka,
            registry,
            gateway,
            limits,
            auth,
            http: http_limits(&args.http)?,
            max_token_lifetime: args.auth_max_token_lifetime,
            tls: crate::tls::TlsConfig::from_args(&args.tls)?,
            webhooks: crate::webhooks::settings(
                &args.webhooks,
                history.is_some(),
                args.kafka.kafka_brokers.is_some(),
            )?,
            history,
            compaction,
            ownership,
        })
    }
}

/// History compaction of an embedded node keeping history (`None` in a
/// cluster, where `weft persist` compacts, and without history).
fn history_compaction(args: &ServeArgs) -> anyhow::Result<Option<CompactionSettings>> {
    if args.history_retention.is_zero() {
        return Ok(None);
    }
    if args.history_retention < args.version_interval {
        bail!(
            "--history-retention / WEFT_HISTORY_RETENTION ({:?}) must be at least --version-interval / WEFT_VERSION_INTERVAL ({:?}): history would be compacted before a version is due",
            args.history_retention,
            args.version_interval
        );
    }
    let settings = compaction_settings(args.history_retention, args.history_compact_interval)?;
    Ok(args.kafka.kafka_brokers.is_none().then_some(settings))
}

/// Validated compaction settings (`--history-retention` not zero).
pub fn compaction_settings(
    retention: Duration,
    interval: Duration,
) -> anyhow::Result<CompactionSettings> {
    if interval.is_zero() {
        bail!(
            "--history-compact-interval / WEFT_HISTORY_COMPACT_INTERVAL must be greater than zero"
        );
    }
    Ok(CompactionSettings {
        retention,
        interval,
    })
}

/// Minimum length of `--cluster-secret`.
const MIN_CLUSTER_SECRET_CHARS: usize = 16;

/// `--cluster-mode ownership`'s settings, checked: it needs Kafka (read
/// `held`, so a node reads only what it serves), an address, a secret.
fn ownership_config(args: &ServeArgs) -> anyhow::Result<Option<crate::ownership::OwnershipConfig>> {
    if args.cluster.cluster_mode != ClusterModeArg::Ownership {
        return Ok(None);
    }
    let consume = args
        .kafka
        .kafka_brokers
        .as_ref()
        .map(|_| args.kafka.kafka_consume);
    match consume {
        None => bail!(
            "--cluster-mode ownership / WEFT_CLUSTER_MODE needs --kafka-brokers / WEFT_KAFKA_BROKERS"
        ),
        Some(ConsumeArg::All) => bail!(
            "--cluster-mode ownership / WEFT_CLUSTER_MODE reads only the partitions a node serves: use --kafka-consume held / WEFT_KAFKA_CONSUME"
        ),
        Some(ConsumeArg::Held) => {}
    }
    // Default: the listen address, when it names one interface.
    let listened = (!args.listen.ip().is_unspecified() && args.listen.port() != 0)
        .then(|| args.listen.to_string());
    let Some(advertise_address) = args.cluster.advertise_address.clone().or(listened) else {
        bail!(
            "--cluster-mode ownership needs --advertise-address / WEFT_ADVERTISE_ADDRESS (host:port the other nodes reach this one at) when --listen is a wildcard address or port 0"
        );
    };
    if advertise_address.contains(['@', '/', ' ']) || !advertise_address.contains(':') {
        bail!(
            "--advertise-address / WEFT_ADVERTISE_ADDRESS is host:port, got `{advertise_address}`"
        );
    }
    let Some(secret) = args.cluster.cluster_secret.clone() else {
        bail!(
            "--cluster-mode ownership needs --cluster-secret / WEFT_CLUSTER_SECRET, shared by every node"
        );
    };
    if secret.chars().count() < MIN_CLUSTER_SECRET_CHARS
        || axum::http::HeaderValue::from_str(&secret).is_err()
    {
        bail!(
            "--cluster-secret / WEFT_CLUSTER_SECRET must be at least {MIN_CLUSTER_SECRET_CHARS} visible ASCII characters"
        );
    }
    Ok(Some(crate::ownership::OwnershipConfig {
        advertise_address,
        secret,
    }))
}

fn gateway_config(args: &ServeArgs) -> anyhow::Result<GatewayConfig> {
    if args.heartbeat_timeout <= args.heartbeat_interval {
        bail!(
            "--heartbeat-timeout / WEFT_HEARTBEAT_TIMEOUT ({:?}) must be longer than --heartbeat-interval / WEFT_HEARTBEAT_INTERVAL ({:?})",
            args.heartbeat_timeout,
            args.heartbeat_interval
        );
    }
    if args.heartbeat_interval.is_zero() {
        bail!("--heartbeat-interval / WEFT_HEARTBEAT_INTERVAL must be greater than zero");
    }
    Ok(GatewayConfig {
        max_message_bytes: usize::try_from(args.max_message_bytes)
            .context("--max-message-bytes / WEFT_MAX_MESSAGE_BYTES does not fit this platform")?,
        send_queue_frames: usize::try_from(args.send_queue_frames)
            .context("--send-queue-frames / WEFT_SEND_QUEUE_FRAMES does not fit this platform")?,
        send_queue_bytes: usize::try_from(args.send_queue_bytes)
            .context("--send-queue-bytes / WEFT_SEND_QUEUE_BYTES does not fit this platform")?,
        heartbeat_interval: args.heartbeat_interval,
        heartbeat_timeout: args.heartbeat_timeout,
        idle_timeout: args.idle_timeout,
        max_updates_per_second: args.limits.max_updates_per_second,
        allowed_origins: args
            .limits
            .allowed_origins
            .iter()
            .map(|origin| origin.trim().to_owned())
            .filter(|origin| !origin.is_empty())
            .collect(),
    })
}

fn http_limits(args: &HttpArgs) -> anyhow::Result<HttpLimits> {
    if args.http_header_timeout.is_zero() {
        bail!("--http-header-timeout / WEFT_HTTP_HEADER_TIMEOUT must be greater than zero");
    }
    if args.http_idle_timeout.is_zero() {
        bail!("--http-idle-timeout / WEFT_HTTP_IDLE_TIMEOUT must be greater than zero");
    }
    Ok(HttpLimits {
        header_timeout: args.http_header_timeout,
        idle_timeout: args.http_idle_timeout,
        max_pending: to_usize(
            args.max_pending_connections,
            "--max-pending-connections / WEFT_MAX_PENDING_CONNECTIONS",
        )?,
        max_pending_per_ip: to_usize(
            args.max_pending_connections_per_ip,
            "--max-pending-connections-per-ip / WEFT_MAX_PENDING_CONNECTIONS_PER_IP",
        )?,
    })
}

fn to_usize(value: u64, setting: &str) -> anyhow::Result<usize> {
    usize::try_from(value).with_context(|| format!("{setting} does not fit this platform"))
}

/// `--commit-window` when not set, embedded: each SQLite commit waits for
/// its fsync, so a short window saves transactions for a little latency.
const EMBEDDED_COMMIT_WINDOW: Duration = Duration::from_millis(2);
/// `--commit-window` when not set, in a cluster: batches are pipelined and
/// librdkafka lingers (`--kafka-linger-ms`), so a window would only add
/// latency. Measured against Tansu (fetch wait 1 ms), cross-node p50 at 100
/// updates/s went from 8.4 to 5.2 ms; from 2,000 updates/s up the tail grew
/// (more, smaller produce requests), see docs/OPERATIONS.md.
const CLUSTER_COMMIT_WINDOW: Duration = Duration::ZERO;

fn registry_config(args: &ServeArgs) -> anyhow::Result<RegistryConfig> {
    let clustered = args.kafka.kafka_brokers.is_some();
    Ok(RegistryConfig {
        committer: CommitterConfig {
            window: args.commit_window.unwrap_or(if clustered {
                CLUSTER_COMMIT_WINDOW
            } else {
                EMBEDDED_COMMIT_WINDOW
            }),
            ..CommitterConfig::default()
        },
        unload_grace: args.doc_unload_grace,
        snapshot_debounce: args.snapshot_debounce,
        snapshot_max_delay: args.snapshot_max_delay,
        snapshot_max_updates: args.snapshot_max_updates,
        max_documents: to_usize(
            args.limits.max_documents,
            "--max-documents / WEFT_MAX_DOCUMENTS",
        )?,
        // A cluster's topic is compacted by `weft persist`; an embedded
        // node is its log's only writer and compacts it itself.
        compacts: !clustered,
        broadcast_batching: broadcast_batching(args)?,
        heartbeat_interval: args.node_heartbeat_interval,
        peer_timeout: args.node_timeout,
        ..RegistryConfig::default()
    })
}

/// Longest broadcast batching window accepted: beyond it readers would see
/// edits arrive in visible jumps.
const MAX_BROADCAST_BATCH_WINDOW: Duration = Duration::from_secs(1);

fn broadcast_batching(args: &ServeArgs) -> anyhow::Result<weft_sync::BroadcastBatching> {
    if args.broadcast_batch_window > MAX_BROADCAST_BATCH_WINDOW {
        bail!(
            "--broadcast-batch-window / WEFT_BROADCAST_BATCH_WINDOW: {:?} is longer than the most allowed, {:?}",
            args.broadcast_batch_window,
            MAX_BROADCAST_BATCH_WINDOW
        );
    }
    Ok(weft_sync::BroadcastBatching {
        window: args.broadcast_batch_window,
        min_sessions: to_usize(
            args.broadcast_batch_min_sessions,
            "--broadcast-batch-min-sessions / WEFT_BROADCAST_BATCH_MIN_SESSIONS",
        )?,
    })
}

/// The Kafka settings, if clustering is on.
pub fn kafka_config(args: &KafkaArgs) -> anyhow::Result<Option<KafkaConfig>> {
    let Some(brokers) = &args.kafka_brokers else {
        return Ok(None);
    };
    let config = KafkaConfig {
        brokers: brokers.clone(),
        topic: args.kafka_topic.clone(),
        partitions: args.kafka_partitions,
        replication_factor: args.kafka_replication_factor,
        origin: Origin::new(node_id(args)),
        linger: Duration::from_millis(args.kafka_linger_ms),
        fetch_wait: Duration::from_millis(args.kafka_fetch_wait_ms),
        publish_timeout: args.kafka_publish_timeout,
        max_record_bytes: usize::try_from(args.kafka_max_record_bytes).context(
            "--kafka-max-record-bytes / WEFT_KAFKA_MAX_RECORD_BYTES does not fit this platform",
        )?,
        retention: args.kafka_retention.0,
        consume: match args.kafka_consume {
            ConsumeArg::Held => weft_kafka::ConsumeScope::Held,
            ConsumeArg::All => weft_kafka::ConsumeScope::All,
        },
        security: crate::kafka_security::kafka_security(&args.security)?,
        options: args.kafka_options.clone(),
    };
    config
        .validate()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(Some(config))
}

/// The node heartbeat settings must make sense together.
fn check_heartbeats(args: &ServeArgs) -> anyhow::Result<()> {
    if args.node_heartbeat_interval.is_zero() {
        bail!("--node-heartbeat-interval / WEFT_NODE_HEARTBEAT_INTERVAL must be greater than zero");
    }
    if args.node_timeout <= args.node_heartbeat_interval {
        bail!(
            "--node-timeout / WEFT_NODE_TIMEOUT ({:?}) must be longer than --node-heartbeat-interval / WEFT_NODE_HEARTBEAT_INTERVAL ({:?})",
            args.node_timeout,
            args.node_heartbeat_interval
        );
    }
    Ok(())
}

/// Fails, naming the flag, if the brokers refuse the TLS or SASL settings
/// (a CA that does not sign their certificates, a wrong password). Brokers
/// that do not answer are waited for, as in plaintext.
pub async fn check_kafka_security(config: &KafkaConfig) -> anyhow::Result<()> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || weft_kafka::check_security(&config))
        .await
        .context("check the Kafka TLS/SASL settings")??;
    Ok(())
}

/// The store a `--store` URL names; an error names the setting, never the
/// password the URL may hold.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn weft_sync::EmbeddedLog>> {
    weft_persistence::open_store(url)
        .await
        .with_context(|| format!("--store / WEFT_STORE `{}`", crate::cli::redacted_url(url)))
}

/// [`open_store`] with the store's history side.
pub async fn open_store_with_history(url: &str) -> anyhow::Result<weft_persistence::StoreSides> {
    weft_persistence::open_store_with_history(url)
        .await
        .with_context(|| format!("--store / WEFT_STORE `{}`", crate::cli::redacted_url(url)))
}

/// [`open_store`] with the sides of `topic` (a cluster node's, a worker's).
pub async fn open_topic_sides(
    url: &str,
    topic: &str,
) -> anyhow::Result<weft_persistence::TopicSides> {
    weft_persistence::open_topic_sides(url, topic)
        .await
        .with_context(|| format!("--store / WEFT_STORE `{}`", crate::cli::redacted_url(url)))
}

/// `--node-id`, else the host name, else `weft`.
pub fn node_id(args: &KafkaArgs) -> String {
    if let Some(node_id) = &args.node_id {
        return node_id.clone();
    }
    host_name()
}

/// The host name (the pod name on Kubernetes), else `weft`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "weft".to_owned())
}

#[cfg(test)]
mod ownership_tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["weft", "serve", "--listen", "127.0.0.1:4100"];
        argv.extend_from_slice(extra);
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
            panic!("a serve command");
        };
        *args
    }

    const OWNERS: [&str; 6] = [
        "--kafka-brokers",
        "127.0.0.1:9092",
        "--cluster-mode",
        "ownership",
        "--cluster-secret",
        "0123456789abcdef",
    ];

    #[test]
    fn ownership_advertises_the_listen_address_by_default() {
        let ownership = ownership_config(&serve(&OWNERS))
            .expect("valid")
            .expect("ownership");
        assert_eq!(ownership.advertise_address, "127.0.0.1:4100");
        let mut flags = OWNERS.to_vec();
        flags.extend(["--advertise-address", "10.0.0.7:1234"]);
        let ownership = ownership_config(&serve(&flags))
            .expect("valid")
            .expect("ownership");
        assert_eq!(ownership.advertise_address, "10.0.0.7:1234");
        assert!(
            ownership_config(&serve(&[])).expect("valid").is_none(),
            "any: the default"
        );
    }

    #[test]
    fn ownership_refuses_what_cannot_work_naming_the_flag() {
        let refused = |flags: &[&str]| {
            ownership_config(&serve(flags))
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&["--cluster-mode", "ownership"]).contains("--kafka-brokers"));
        let mut all = OWNERS.to_vec();
        all.extend(["--kafka-consume", "all"]);
        assert!(refused(&all).contains("--kafka-consume held"));
        let short = [&OWNERS[..5], &["short"]].concat();
        assert!(refused(&short).contains("--cluster-secret"));
        let no_secret = &OWNERS[..4];
        assert!(refused(no_secret).contains("--cluster-secret"));
        let mut bad_address = OWNERS.to_vec();
        bad_address.extend(["--advertise-address", "node@x"]);
        assert!(refused(&bad_address).contains("--advertise-address"));
    }
}
