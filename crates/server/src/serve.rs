//! `weft serve`: one node, alone on the embedded store or, with
//! `--kafka-brokers`, one of a cluster sharing a Kafka topic.
//!
//! Shutdown order (SIGTERM or ctrl-c), all within `--shutdown-grace`:
//! 1. readiness goes false and new upgrades get 503 (the listener stays open
//!    so they get an answer rather than a refused connection);
//! 2. open sessions are closed with 1012 and their tasks awaited;
//! 3. the committer commits everything queued; dirty documents are
//!    snapshotted;
//! 4. the HTTP server stops and the process exits 0.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use weft_gateway::auth::{Authenticator, JwtVerifier};
use weft_gateway::limits::{Admission, LimitsConfig};
use weft_gateway::{AppState, GatewayConfig, Lifecycle};
use weft_sync::{CommitterConfig, LogBus, MessageBus, NodeMode, Origin, Registry, RegistryConfig};

use crate::cli::{AuthArgs, KafkaArgs, ServeArgs};

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let gateway_config = gateway_config(&args)?;
    let registry_config = registry_config(&args)?;
    let kafka = kafka_config(&args.kafka)?;
    check_heartbeats(&args)?;
    if let Some(config) = &kafka
        && gateway_config.max_message_bytes + weft_kafka::ENVELOPE_OVERHEAD_BYTES
            > config.max_record_bytes
    {
        bail!(
            "--max-message-bytes / WEFT_MAX_MESSAGE_BYTES ({}) plus 64 KiB of envelope must fit --kafka-max-record-bytes / WEFT_KAFKA_MAX_RECORD_BYTES ({}): a client's update could never be published",
            gateway_config.max_message_bytes,
            config.max_record_bytes
        );
    }
    let auth = authenticator(&args.auth)?;
    let admission = Admission::new(LimitsConfig {
        max_connections: to_usize(
            args.limits.max_connections,
            "--max-connections / WEFT_MAX_CONNECTIONS",
        )?,
        max_connections_per_ip: to_usize(
            args.limits.max_connections_per_ip,
            "--max-connections-per-ip / WEFT_MAX_CONNECTIONS_PER_IP",
        )?,
        upgrades_per_ip_per_second: args.limits.max_upgrades_per_ip_per_second,
    });
    let store = crate::serve::open_store(&args.store).await?;
    let listener = bind_listener(args.listen)
        .with_context(|| format!("--listen / WEFT_LISTEN {}: bind", args.listen))?;
    let local_addr = listener.local_addr().context("read the bound address")?;
    let metrics_listener =
        match args.metrics_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(
                || format!("--metrics-listen / WEFT_METRICS_LISTEN {address}: bind"),
            )?),
            None => None,
        };

    let bus: Arc<dyn MessageBus> = match kafka {
        Some(config) => {
            info!(brokers = %config.brokers, topic = %config.topic, node = %config.origin, "cluster mode: updates go through Kafka");
            Arc::new(weft_kafka::KafkaBus::new(config).context("--kafka-* settings")?)
        }
        None => Arc::new(LogBus::new(store.clone(), &node_id(&args.kafka))),
    };
    let registry = Registry::start(store, bus, registry_config);
    let lifecycle = Lifecycle::new();
    let state = AppState {
        registry: registry.clone(),
        lifecycle: lifecycle.clone(),
        config: Arc::new(gateway_config),
        auth: auth.clone(),
        admission,
        metrics: Arc::new(weft_gateway::Metrics::new(registry.clone())),
    };
    let http_stop = CancellationToken::new();
    if let Some(listener) = metrics_listener {
        let address = listener
            .local_addr()
            .context("read the bound metrics address")?;
        let router = weft_gateway::metrics_router(state.metrics.clone());
        let stop = http_stop.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                warn!(error = %error, "metrics listener failed");
            }
        });
        info!(listen = %address, "metrics listening");
    }
    // Yjs frames are small and latency-bound: without TCP_NODELAY, Nagle's
    // algorithm and the peer's delayed ACK hold a frame back ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(error = %error, "set TCP_NODELAY");
        }
    });
    let server = tokio::spawn(
        axum::serve(
            listener,
            weft_gateway::router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(http_stop.clone().cancelled_owned())
        .into_future(),
    );
    if auth.is_open() {
        warn!(
            "NO AUTHENTICATION: neither --auth-jwt-secret nor --auth-jwt-public-key is set, so any client can read and write every document"
        );
    }
    info!(listen = %local_addr, store = %crate::cli::redacted_url(&args.store), "weft node listening");

    let signal = crate::shutdown::signal().await?;
    info!(signal, grace = ?args.shutdown_grace, "draining");
    let started = Instant::now();
    let drained = tokio::time::timeout(args.shutdown_grace, async {
        lifecycle.start_draining();
        lifecycle.sessions_closed().await;
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sessions closed"
        );
        registry.shutdown().await;
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "updates committed and snapshots written"
        );
        http_stop.cancel();
        server.await
    })
    .await;
    match drained {
        Ok(Ok(Ok(()))) => {
            info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
            Ok(())
        }
        Ok(Ok(Err(error))) => Err(error).context("serve HTTP"),
        Ok(Err(error)) => Err(error).context("join the HTTP server task"),
        Err(_) => bail!(
            "shutdown did not finish within --shutdown-grace ({:?}); committed updates are in the log and are replayed on the next start",
            args.shutdown_grace
        ),
    }
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

fn authenticator(args: &AuthArgs) -> anyhow::Result<Authenticator> {
    if let Some(secret) = &args.auth_jwt_secret {
        let verifier = JwtVerifier::hs256(secret.as_bytes())
            .context("--auth-jwt-secret / WEFT_AUTH_JWT_SECRET")?;
        return Ok(Authenticator::Jwt(Arc::new(verifier)));
    }
    if let Some(path) = &args.auth_jwt_public_key {
        let pem = std::fs::read(path).with_context(|| {
            format!(
                "--auth-jwt-public-key / WEFT_AUTH_JWT_PUBLIC_KEY: read {}",
                path.display()
            )
        })?;
        let verifier = JwtVerifier::from_public_key_pem(&pem).with_context(|| {
            format!(
                "--auth-jwt-public-key / WEFT_AUTH_JWT_PUBLIC_KEY: {}",
                path.display()
            )
        })?;
        return Ok(Authenticator::Jwt(Arc::new(verifier)));
    }
    Ok(Authenticator::Open)
}

fn to_usize(value: u64, setting: &str) -> anyhow::Result<usize> {
    usize::try_from(value).with_context(|| format!("{setting} does not fit this platform"))
}

/// `--commit-window` when not set, embedded: each SQLite commit waits for
/// its fsync, so a short window saves transactions for a little latency.
const EMBEDDED_COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);
/// `--commit-window` when not set, in a cluster: batches are pipelined and
/// librdkafka lingers (`--kafka-linger-ms`), so a window would only add
/// latency. Measured against Tansu (fetch wait 1 ms), cross-node p50 at 100
/// updates/s went from 8.4 to 5.2 ms; from 2,000 updates/s up the tail grew
/// (more, smaller produce requests), see docs/OPERATIONS.md.
const CLUSTER_COMMIT_WINDOW: std::time::Duration = std::time::Duration::ZERO;

fn registry_config(args: &ServeArgs) -> anyhow::Result<RegistryConfig> {
    Ok(RegistryConfig {
        committer: CommitterConfig {
            window: args
                .commit_window
                .unwrap_or(if args.kafka.kafka_brokers.is_some() {
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
        mode: if args.kafka.kafka_brokers.is_some() {
            NodeMode::Cluster {
                topic: Arc::from(args.kafka.kafka_topic.as_str()),
            }
        } else {
            NodeMode::Embedded
        },
        broadcast_batching: broadcast_batching(args)?,
        heartbeat_interval: args.node_heartbeat_interval,
        peer_timeout: args.node_timeout,
        ..RegistryConfig::default()
    })
}

/// Longest broadcast batching window accepted: beyond it readers would see
/// edits arrive in visible jumps.
const MAX_BROADCAST_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

fn broadcast_batching(args: &ServeArgs) -> anyhow::Result<weft_sync::BroadcastBatching> {
    if args.broadcast_batch_window > MAX_BROADCAST_BATCH_WINDOW {
        anyhow::bail!(
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
pub(crate) fn kafka_config(args: &KafkaArgs) -> anyhow::Result<Option<weft_kafka::KafkaConfig>> {
    let Some(brokers) = &args.kafka_brokers else {
        return Ok(None);
    };
    let config = weft_kafka::KafkaConfig {
        brokers: brokers.clone(),
        topic: args.kafka_topic.clone(),
        partitions: args.kafka_partitions,
        replication_factor: args.kafka_replication_factor,
        origin: Origin::new(node_id(args)),
        linger: std::time::Duration::from_millis(args.kafka_linger_ms),
        fetch_wait: std::time::Duration::from_millis(args.kafka_fetch_wait_ms),
        publish_timeout: args.kafka_publish_timeout,
        max_record_bytes: usize::try_from(args.kafka_max_record_bytes).context(
            "--kafka-max-record-bytes / WEFT_KAFKA_MAX_RECORD_BYTES does not fit this platform",
        )?,
        retention: args.kafka_retention.0,
        consume: match args.kafka_consume {
            crate::cli::ConsumeArg::Held => weft_kafka::ConsumeScope::Held,
            crate::cli::ConsumeArg::All => weft_kafka::ConsumeScope::All,
        },
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

/// The store `--store` names; an error names the setting, never the
/// password the URL may hold.
pub(crate) async fn open_store(url: &str) -> anyhow::Result<Arc<dyn weft_sync::DocStore>> {
    weft_persistence::open_store(url)
        .await
        .with_context(|| format!("--store / WEFT_STORE `{}`", crate::cli::redacted_url(url)))
}

/// `--node-id`, else the host name, else `weft`.
pub(crate) fn node_id(args: &KafkaArgs) -> String {
    if let Some(node_id) = &args.node_id {
        return node_id.clone();
    }
    host_name()
}

/// The host name (the pod name on Kubernetes), else `weft`.
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "weft".to_owned())
}

/// Connections the kernel queues for the WebSocket listener before they
/// are accepted (capped by `net.core.somaxconn`, 4096 on recent Linux).
/// When a node dies, its clients all reconnect to the others at once: with
/// tokio's default of 1,024, a storm of 1,000 reconnects overflowed the
/// queue of the node taking them over, and each dropped connection waited
/// for TCP's 1 s SYN retry.
const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `address`, as `TcpListener::bind` makes one (address
/// reuse on Unix) but with [`LISTEN_BACKLOG`].
pub(crate) fn bind_listener(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
