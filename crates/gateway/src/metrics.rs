//! The node's Prometheus metrics, served at `GET /metrics` in the Prometheus
//! text format (`prometheus-client`).
//!
//! Counters the gateway owns are updated where things happen (upgrades,
//! frames, closes, acknowledgements). The registry's documents loaded are
//! read at scrape time by a collector; the sync layer's metrics are
//! registered beside the gateway's. A layer the gateway does not know (the
//! Kafka bus) hands the node a collector of its own, which the node adds
//! with [`Metrics::register_collector`].

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricsRegistry;
use weft_sync::Registry;

use crate::close::{CloseCounter, CloseReason};

/// The `status` label of an upgrade attempt (101 when it succeeded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status answered.
    pub status: u16,
}

/// The `code` label of a session close.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The WebSocket close code sent.
    pub code: u16,
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// Open WebSocket sessions.
    pub connections: Gauge,
    /// Upgrade attempts by answered status.
    pub upgrades: Family<StatusLabel, Counter>,
    /// WebSocket messages received from clients.
    pub messages_received: Counter,
    /// Bytes of those messages.
    pub bytes_received: Counter,
    /// WebSocket messages sent to clients.
    pub messages_sent: Counter,
    /// Bytes of those messages.
    pub bytes_sent: Counter,
    /// Sessions closed by the server, by close code (1013: send queue
    /// overflow; 1008: update rate; 1011: publish failed; ...).
    pub closes: Family<CodeLabel, Counter>,
    /// Seconds from a client's update to its durable acknowledgement (the
    /// group commit or the broker's `acks=all`, then apply and broadcast).
    pub update_commit_seconds: Histogram,
    /// Sessions closed because their send queue was full (1013).
    pub send_queue_overflows: Counter,
    /// Sessions closed for sending more updates per second than allowed
    /// (1008).
    pub rate_limit_closes: Counter,
    /// Sessions this node relays to their document's owner now
    /// (`--cluster-mode ownership`).
    pub forwarded_sessions: Gauge,
    /// Sessions forwarded to an owner since the start.
    pub forwards: Counter,
    /// Bytes of WebSocket messages relayed between clients and owners, both
    /// ways.
    pub forwarded_bytes: Counter,
    /// Sessions served here because their owner could not be reached.
    pub forward_fallbacks: Counter,
}

/// Start of the commit-latency buckets: 100 µs, doubling 16 times (to ~3 s).
const COMMIT_BUCKET_START_SECONDS: f64 = 0.000_1;
const COMMIT_BUCKETS: u16 = 16;

impl Metrics {
    /// Registers every metric; `documents` answers the scrape-time values.
    pub fn new(documents: Registry) -> Self {
        let mut registry = MetricsRegistry::with_prefix("weft");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket sessions",
            connections.clone(),
        );
        let upgrades = Family::<StatusLabel, Counter>::default();
        registry.register(
            "upgrades",
            "WebSocket upgrade attempts by answered status (101: accepted)",
            upgrades.clone(),
        );
        let messages_received = Counter::default();
        registry.register(
            "messages_received",
            "WebSocket messages received from clients",
            messages_received.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "Bytes of WebSocket messages received from clients",
            bytes_received.clone(),
        );
        let messages_sent = Counter::default();
        registry.register(
            "messages_sent",
            "WebSocket messages sent to clients",
            messages_sent.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "sent_bytes",
            "Bytes of WebSocket messages sent to clients",
            bytes_sent.clone(),
        );
        let closes = Family::<CodeLabel, Counter>::default();
        registry.register(
            "session_closes",
            "Sessions closed by the server, by close code",
            closes.clone(),
        );
        let update_commit_seconds = Histogram::new(exponential_buckets(
            COMMIT_BUCKET_START_SECONDS,
            2.0,
            COMMIT_BUCKETS,
        ));
        registry.register(
            "update_commit_seconds",
            "Seconds from a client's update to its durable acknowledgement",
            update_commit_seconds.clone(),
        );
        let send_queue_overflows = Counter::default();
        registry.register(
            "send_queue_overflows",
            "Sessions closed (1013) because their send queue was full",
            send_queue_overflows.clone(),
        );
        let rate_limit_closes = Counter::default();
        registry.register(
            "rate_limit_closes",
            "Sessions closed (1008) for sending more updates per second than allowed",
            rate_limit_closes.clone(),
        );
        let forwarded_sessions = Gauge::default();
        registry.register(
            "forwarded_sessions",
            "Sessions this node relays to their document's owner now",
            forwarded_sessions.clone(),
        );
        let forwards = Counter::default();
        registry.register(
            "forwards",
            "Sessions forwarded to their document's owner",
            forwards.clone(),
        );
        let forwarded_bytes = Counter::default();
        registry.register(
            "forwarded_bytes",
            "Bytes of WebSocket messages relayed between clients and owners, both ways",
            forwarded_bytes.clone(),
        );
        let forward_fallbacks = Counter::default();
        registry.register(
            "forward_fallbacks",
            "Sessions served here because their document's owner could not be reached",
            forward_fallbacks.clone(),
        );
        documents.metrics().register(&mut registry);
        registry.register_collector(Box::new(ScrapeTime { documents }));
        Self {
            registry,
            connections,
            upgrades,
            messages_received,
            bytes_received,
            messages_sent,
            bytes_sent,
            closes,
            update_commit_seconds,
            send_queue_overflows,
            rate_limit_closes,
            forwarded_sessions,
            forwards,
            forwarded_bytes,
            forward_fallbacks,
        }
    }

    /// Adds a collector of another layer's metrics (read at each scrape;
    /// names get the `weft_` prefix), such as the Kafka bus's.
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The registry, for another layer to register its own metrics in
    /// (names get the `weft_` prefix), such as the HTTP server's.
    pub fn registry_mut(&mut self) -> &mut MetricsRegistry {
        &mut self.registry
    }

    /// Records a close the server sent.
    pub fn closed(&self, reason: CloseReason) {
        self.closes
            .get_or_create(&CodeLabel {
                code: reason.code(),
            })
            .inc();
        match reason.counter() {
            Some(CloseCounter::SendQueueOverflow) => self.send_queue_overflows.inc(),
            Some(CloseCounter::RateLimit) => self.rate_limit_closes.inc(),
            None => 0,
        };
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Values the registry keeps, read at each scrape (names get the `weft_`
/// prefix of the registry).
#[derive(Debug)]
struct ScrapeTime {
    documents: Registry,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loaded = i64::try_from(self.documents.loaded_documents()).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(loaded);
        gauge.encode(encoder.encode_descriptor(
            "documents_loaded",
            "Documents held in memory",
            None,
            gauge.metric_type(),
        )?)
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
