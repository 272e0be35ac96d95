//! The worker's own HTTP surface: `/healthz`, `/readyz` and `/metrics`.
//!
//! Readiness: the consumer joined its group, the store answers, and the lag
//! (records of owned partitions not yet inside a stored snapshot) is at
//! most `--max-lag`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use weft_kafka::worker::WorkerStatus;
use weft_sync::SnapshotStore;
use weft_sync::compaction::CompactionMetrics;

/// What the worker's HTTP handlers share.
#[derive(Clone)]
pub(super) struct HttpState {
    pub(super) status: Arc<WorkerStatus>,
    pub(super) store: Arc<dyn SnapshotStore>,
    pub(super) max_lag: i64,
    /// The worker's stop token: cancelled, the worker is draining.
    pub(super) draining: CancellationToken,
    /// History compaction's metrics (`weft_persist_history_*`).
    pub(super) compaction: CompactionMetrics,
    /// The webhooks' metrics (`weft_persist_webhook_*`), if configured.
    pub(super) webhooks: Option<crate::webhooks::WebhookMetrics>,
}

/// The worker's router.
pub(super) fn router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let lag = state.status.lag.load(Ordering::Relaxed);
    let reason = if state.draining.is_cancelled() {
        Some("the worker is shutting down".to_owned())
    } else if !state.status.joined.load(Ordering::Acquire) {
        Some("the consumer has not joined its group yet".to_owned())
    } else if lag > state.max_lag {
        Some(format!(
            "lag {lag} records is over --max-lag {}",
            state.max_lag
        ))
    } else if let Err(error) = state.store.check().await {
        warn!(error = %error, "store check failed");
        Some("the snapshot store does not answer".to_owned())
    } else {
        None
    };
    match reason {
        None => axum::Json(serde_json::json!({ "status": "ready", "lag": lag })).into_response(),
        Some(details) => weft_gateway::ApiError::unavailable("not ready", details).into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let status = &state.status;
    let mut registry = MetricsRegistry::with_prefix("weft_persist");
    let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
    registry.register(
        "lag_records",
        "Records of owned partitions not yet inside a stored snapshot",
        ConstGauge::new(status.lag.load(Ordering::Relaxed)),
    );
    registry.register(
        "partitions",
        "Partitions this worker owns",
        ConstGauge::new(
            i64::try_from(status.partitions.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ),
    );
    registry.register(
        "documents",
        "Documents held in memory",
        ConstGauge::new(
            i64::try_from(status.documents.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        ),
    );
    registry.register(
        "records_folded",
        "Update records folded into documents",
        ConstCounter::new(load(&status.folded)),
    );
    registry.register(
        "snapshots_written",
        "Snapshots written to the store",
        ConstCounter::new(load(&status.snapshots_written)),
    );
    registry.register(
        "snapshots_superseded",
        "Snapshot writes refused because a snapshot covering more was stored",
        ConstCounter::new(load(&status.snapshots_superseded)),
    );
    registry.register(
        "snapshot_failures",
        "Snapshot writes that failed (retried)",
        ConstCounter::new(load(&status.snapshot_failures)),
    );
    registry.register(
        "records_malformed",
        "Records skipped because they are not document updates",
        ConstCounter::new(load(&status.malformed)),
    );
    if let Some(webhooks) = &state.webhooks {
        // weft_persist_webhook_*: the same counters as a node's.
        webhooks.register(&mut registry);
    }
    registry.register(
        "edits_stored",
        "Per-edit history rows stored (history on)",
        ConstCounter::new(load(&status.history.edits_stored)),
    );
    registry.register(
        "edit_failures",
        "Per-edit history writes that failed (retried; the records stay uncommitted)",
        ConstCounter::new(load(&status.history.edit_failures)),
    );
    registry.register(
        "versions_taken",
        "Automatic versions taken",
        ConstCounter::new(load(&status.history.versions_taken)),
    );
    registry.register(
        "snapshot_seconds",
        "Seconds to write a document snapshot",
        status.timings.snapshot_seconds.clone(),
    );
    registry.register(
        "snapshot_bytes",
        "Bytes of each document snapshot written",
        status.timings.snapshot_bytes.clone(),
    );
    state.compaction.register(&mut registry);
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &registry) {
        warn!(error = %error, "encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
