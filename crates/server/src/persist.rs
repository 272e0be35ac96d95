//! `weft persist`: the persistence worker process.
//!
//! Runs the worker loop of `weft_kafka::worker` against the store named by
//! `--store`, and serves its own `/healthz`, `/readyz` and `/metrics` on
//! `--listen` (so several workers can share a host).
//!
//! Readiness: the consumer joined its group, the store answers, and the lag
//! (records of owned partitions not yet inside a stored snapshot) is at
//! most `--max-lag`. The topic must retain records for longer than the
//! worker can lag; `docs/OPERATIONS.md` says how to size it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weft_kafka::fold::FoldConfig;
use weft_kafka::worker::{self, WorkerConfig, WorkerStatus};
use weft_sync::DocStore;

use crate::cli::PersistArgs;

/// How often the worker writes due snapshots and commits.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Clone)]
struct HttpState {
    status: Arc<WorkerStatus>,
    store: Arc<dyn DocStore>,
    max_lag: i64,
    draining: CancellationToken,
}

pub(crate) async fn run(args: PersistArgs) -> anyhow::Result<()> {
    let Some(kafka) = crate::serve::kafka_config(&args.kafka)? else {
        bail!("--kafka-brokers / WEFT_KAFKA_BROKERS is required: the worker folds the Kafka topic");
    };
    let store = crate::serve::open_store(&args.store).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen / WEFT_PERSIST_LISTEN {}: bind", args.listen))?;
    let status = Arc::new(WorkerStatus::default());
    let stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let state = HttpState {
        status: status.clone(),
        store: store.clone(),
        max_lag: args.max_lag,
        draining: stop.clone(),
    };
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let http = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(http_stop.clone().cancelled_owned())
            .into_future(),
    );
    let config = WorkerConfig {
        kafka,
        group: args.group.clone(),
        fold: FoldConfig {
            debounce: args.snapshot_debounce,
            max_delay: args.snapshot_max_delay,
            max_updates: args.snapshot_max_updates,
            ..FoldConfig::default()
        },
        tick: TICK,
    };
    info!(listen = %args.listen, store = %crate::cli::redacted_url(&args.store), group = %args.group, topic = %config.kafka.topic, "persistence worker starting");
    let worker = tokio::spawn(worker::run(config, store, status, stop.clone()));

    let signal = crate::shutdown::signal().await?;
    info!(signal, grace = ?args.shutdown_grace, "draining: writing folded documents and committing");
    let started = Instant::now();
    stop.cancel();
    let finished = tokio::time::timeout(args.shutdown_grace, worker).await;
    http_stop.cancel();
    let _http_done = http.await;
    match finished {
        Ok(Ok(Ok(()))) => {
            info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
            Ok(())
        }
        Ok(Ok(Err(error))) => Err(error).context("run the worker's consumer"),
        Ok(Err(error)) => Err(error).context("join the worker"),
        Err(_) => bail!(
            "shutdown did not finish within --shutdown-grace ({:?}); uncommitted records are folded again by the next worker",
            args.shutdown_grace
        ),
    }
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
