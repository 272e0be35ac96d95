//! The command line. Every flag has a `WEFT_*` environment twin; a flag on
//! the command line wins over its environment variable, which wins over the
//! default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::cluster::{ClusterArgs, ClusterModeArg};
pub use self::docs::{DocsArgs, DocsCommand, ExportArgs, ImportArgs, MigrateArgs};
use self::duration::parse_duration;
pub use self::http::HttpArgs;
pub use self::idp::IdpArgs;
pub use self::kafka::{ConsumeArg, KafkaArgs, Retention};
pub use self::webhooks::WebhookArgs;

mod cluster;
mod docs;
mod duration;
mod http;
mod idp;
mod kafka;
mod webhooks;

/// Weft: a horizontally scalable backend for Yjs collaborative editors.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: WebSocket sessions for y-websocket clients, health and
    /// readiness. Alone on the embedded SQLite store by default; with
    /// `--kafka-brokers`, one node of a cluster sharing a Kafka topic.
    Serve(Box<ServeArgs>),
    /// Run a persistence worker: fold the Kafka topic's updates into
    /// document snapshots in the store, so nodes load documents fast and the
    /// topic's retention can be bounded. Several workers share the
    /// partitions (one consumer group).
    Persist(Box<PersistArgs>),
    /// Export a store's documents as a portable stream, import one into a
    /// store, or migrate an embedded node's documents into a cluster.
    Docs(DocsArgs),
}

/// `weft persist`.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Address for the worker's own `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "WEFT_PERSIST_LISTEN", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    /// Snapshot store URL (`postgres://...` in production; `sqlite://PATH`).
    #[arg(
        long,
        env = "WEFT_STORE",
        default_value = "sqlite://./weft-data/weft.db"
    )]
    pub store: String,

    /// The consumer group the workers of one cluster share.
    #[arg(long, env = "WEFT_PERSIST_GROUP", default_value = "weft-persist")]
    pub group: String,

    /// A changed document is written once it has been quiet this long.
    #[arg(long, env = "WEFT_SNAPSHOT_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub snapshot_debounce: Duration,

    /// A document that keeps changing is written at least this often.
    #[arg(long, env = "WEFT_SNAPSHOT_MAX_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub snapshot_max_delay: Duration,

    /// ...or after this many records, whichever comes first (times one more
    /// for every whole 16 KiB of the document's last snapshot).
    #[arg(long, env = "WEFT_SNAPSHOT_MAX_UPDATES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_max_updates: u64,

    /// Readiness fails while more records than this are not yet inside a
    /// stored snapshot (the worker's lag).
    #[arg(long, env = "WEFT_PERSIST_MAX_LAG", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_lag: i64,

    /// How long SIGTERM may take: write every folded document, commit, exit.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// History: a changed document gets an automatic version after this
    /// much activity...
    #[arg(long, env = "WEFT_VERSION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub version_interval: Duration,

    /// ...or once nobody changed it for this long.
    #[arg(long, env = "WEFT_VERSION_QUIET", default_value = "1m", value_parser = parse_duration)]
    pub version_quiet: Duration,

    /// History: per-edit rows, checkpoints and versions older than this
    /// fold into the newest checkpoint by then (named versions stay). Use
    /// the nodes' value. 0 keeps no per-edit history, takes no automatic
    /// versions and compacts nothing.
    #[arg(long, env = "WEFT_HISTORY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub history_retention: Duration,

    /// History: how often the worker compacts (at start, then this often).
    #[arg(long, env = "WEFT_HISTORY_COMPACT_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub history_compact_interval: Duration,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// A cluster's webhooks: one worker of the topic delivers them.
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Logging.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter, in `tracing` env-filter syntax (e.g. `info,weft_sync=debug`).
    /// Without it, `RUST_LOG` is used, then `info`.
    #[arg(long = "log", env = "WEFT_LOG", global = true)]
    pub filter: Option<String>,
    /// Log line format.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `weft serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:1234")]
    pub listen: SocketAddr,

    /// Also serve `GET /metrics` on this address of its own (e.g. a port
    /// that only the cluster's Prometheus reaches). `/metrics` stays on
    /// `--listen` too.
    #[arg(long, env = "WEFT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Document store URL. `sqlite://PATH` is the embedded store (its
    /// directory is created).
    #[arg(
        long,
        env = "WEFT_STORE",
        default_value = "sqlite://./weft-data/weft.db"
    )]
    pub store: String,

    /// How long SIGTERM may take: close sessions, commit, snapshot, exit.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a document nobody has open stays in memory.
    #[arg(long, env = "WEFT_DOC_UNLOAD_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub doc_unload_grace: Duration,

    /// A changed document is snapshotted once it has been quiet this long.
    #[arg(long, env = "WEFT_SNAPSHOT_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub snapshot_debounce: Duration,

    /// History: a changed document gets an automatic version after this
    /// much activity, and when its last session leaves (embedded nodes; in
    /// a cluster the persistence worker takes them).
    #[arg(long, env = "WEFT_VERSION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub version_interval: Duration,

    /// History: how far back documents can be read and restored; the
    /// embedded log is kept for it. 0 keeps no history (snapshots prune the
    /// log, as before history existed).
    #[arg(long, env = "WEFT_HISTORY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub history_retention: Duration,

    /// History: how often history older than `--history-retention` is
    /// folded into a checkpoint per document (a pass runs at start, then
    /// this often; embedded nodes: in a cluster `weft persist` does it).
    #[arg(long, env = "WEFT_HISTORY_COMPACT_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub history_compact_interval: Duration,

    /// A document that keeps changing is snapshotted at least this often.
    #[arg(long, env = "WEFT_SNAPSHOT_MAX_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub snapshot_max_delay: Duration,

    /// ...or after this many updates, whichever comes first (times one more
    /// for every whole 16 KiB of the document's last snapshot).
    #[arg(long, env = "WEFT_SNAPSHOT_MAX_UPDATES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_max_updates: u64,

    /// Group commit: how long a batch of updates keeps collecting after its
    /// first update before it is committed (one SQLite transaction; in a
    /// cluster, one publish). Default: 2ms embedded, 0 in a cluster. In a
    /// cluster several batches are in flight at once, a batch goes at once
    /// when none is, and the window only bounds how long updates collect
    /// while batches are in flight; the producer's --kafka-linger-ms batches
    /// too. Embedded, 0 commits a lone update at once and what arrives
    /// during a commit forms the next (more, smaller transactions).
    #[arg(long, env = "WEFT_COMMIT_WINDOW", value_parser = parse_duration)]
    pub commit_window: Option<Duration>,

    /// Broadcast batching: a document with at least
    /// --broadcast-batch-min-sessions sessions whose last update broadcast
    /// was less than this long ago holds the next updates and sends them as
    /// one merged update at the end of the window (one frame per reader
    /// instead of one per edit). A lone edit is never delayed. 0 turns it off.
    #[arg(long, env = "WEFT_BROADCAST_BATCH_WINDOW", default_value = "16ms", value_parser = parse_duration)]
    pub broadcast_batch_window: Duration,

    /// Documents with fewer sessions than this broadcast every update at
    /// once (see --broadcast-batch-window).
    #[arg(long, env = "WEFT_BROADCAST_BATCH_MIN_SESSIONS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub broadcast_batch_min_sessions: u64,

    /// Largest WebSocket message accepted; larger closes the session (1009).
    #[arg(long, env = "WEFT_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Frames queued for one client before it is disconnected as too slow.
    #[arg(long, env = "WEFT_SEND_QUEUE_FRAMES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub send_queue_frames: u64,

    /// Bytes queued for one client (not yet written out) before it is
    /// disconnected as too slow (1013). A frame shared by many clients counts
    /// in full against each; a client with nothing queued still takes one
    /// frame of any size up to --max-message-bytes.
    #[arg(long, env = "WEFT_SEND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..=4 * 1024 * 1024 * 1024))]
    pub send_queue_bytes: u64,

    /// How often an idle client is pinged.
    #[arg(long, env = "WEFT_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A client silent this long (no frame, no pong) is dropped. Must exceed
    /// the heartbeat interval.
    #[arg(long, env = "WEFT_HEARTBEAT_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// A session that sends no message (pongs do not count) this long is closed.
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// The longest a token lives (`exp` - `iat`): a revocation
    /// (`POST /api/revocations`) ends this long after it was made, once every
    /// token it could match has expired. Issue tokens shorter than this.
    #[arg(long, env = "WEFT_AUTH_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub auth_max_token_lifetime: Duration,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    #[command(flatten)]
    pub webhooks: WebhookArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// How often this node tells its peers it is alive.
    #[arg(long, env = "WEFT_NODE_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub node_heartbeat_interval: Duration,

    /// A peer silent this long is taken for dead and its clients' cursors
    /// removed. Must exceed the heartbeat interval.
    #[arg(long, env = "WEFT_NODE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub node_timeout: Duration,
}

/// Authentication of upgrades. Without a key, Weft runs open.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct AuthArgs {
    /// Verify HS256 JWTs with this shared secret.
    #[arg(long, env = "WEFT_AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,

    /// Verify JWTs with this PEM public key file (RSA: RS256, EC P-256:
    /// ES256, Ed25519: EdDSA).
    #[arg(long, env = "WEFT_AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<PathBuf>,

    #[command(flatten)]
    pub idp: IdpArgs,
}

/// Admission and rate limits.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Sessions this node holds at once; past it upgrades get 503.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Sessions one client address holds at once; past it upgrades get 429.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_ip: u64,

    /// Upgrade attempts per second from one address (burst twice that);
    /// past it upgrades get 429 with Retry-After.
    #[arg(long, env = "WEFT_MAX_UPGRADES_PER_IP_PER_SECOND", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_upgrades_per_ip_per_second: u32,

    /// Updates one session may send per second (burst twice that); past it
    /// the session is closed with 1008 and re-syncs on reconnect. 0: no limit.
    #[arg(long, env = "WEFT_MAX_UPDATES_PER_SECOND", default_value_t = 200)]
    pub max_updates_per_second: u32,

    /// Documents held in memory at once; an upgrade that would load one more
    /// gets 503 with Retry-After.
    #[arg(long, env = "WEFT_MAX_DOCUMENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_documents: u64,

    /// Origins allowed to open sessions (comma-separated exact values of the
    /// Origin header, e.g. https://app.example.com). Unset: any origin.
    #[arg(long, env = "WEFT_ALLOWED_ORIGINS", value_delimiter = ',')]
    // The doc comment is `--help` text too, where a bare URL reads best.
    #[allow(rustdoc::bare_urls)]
    pub allowed_origins: Vec<String>,
}

/// `url` with its password (if any) replaced by `***`, for logs and error
/// messages: a store URL may carry the database password.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some("***")).is_ok() {
                parsed.to_string()
            } else {
                "<a URL with a password>".to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redacted_url;

    #[test]
    fn a_password_never_reaches_the_log() {
        assert_eq!(
            redacted_url("postgres://weft:s3cret@db:5432/weft"),
            "postgres://weft:***@db:5432/weft"
        );
        assert_eq!(
            redacted_url("sqlite://./weft-data/weft.db"),
            "sqlite://./weft-data/weft.db"
        );
        assert_eq!(
            redacted_url("postgres://weft@db/weft"),
            "postgres://weft@db/weft"
        );
    }
}
