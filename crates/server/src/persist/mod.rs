//! `weft persist`: the persistence worker as a library.
//!
//! [`Worker::start`] runs the worker loop of `weft_kafka::worker` against
//! the store named by `--store`, and serves the worker's own `/healthz`,
//! `/readyz` and `/metrics` on a listener the caller bound (so several
//! workers can share a host). [`WorkerHandle::shutdown`] writes every
//! folded document, commits, and stops.
//!
//! The topic must retain records for longer than the worker can lag;
//! `docs/OPERATIONS.md` says how to size it.
//!
//! One root token: the worker's stop and the HTTP server's stop are its
//! children, cancelled in that order; both tasks are in one tracker.

mod compaction;
mod dead_letters;
mod http;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use weft_kafka::edit_history::HistoryKeeping;
use weft_kafka::fold::FoldConfig;
use weft_kafka::worker::{self, WorkerConfig, WorkerStatus};

use crate::cli::PersistArgs;
use weft_sync::compaction::{CompactionMetrics, CompactionSettings};
use weft_sync::history::History;

use crate::config::{check_kafka_security, compaction_settings, kafka_config, open_topic_sides};

/// How often the worker writes due snapshots and commits.
const TICK: Duration = Duration::from_millis(250);

/// A worker's validated settings.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// The snapshot store's URL.
    pub store_url: String,
    /// The consumer, the group, when folded documents are written.
    pub worker: WorkerConfig,
    /// Readiness fails above this lag, in records.
    pub max_lag: i64,
    /// History compaction of the shared store (`--history-retention`,
    /// `--history-compact-interval`); `None` with a retention of 0.
    pub compaction: Option<CompactionSettings>,
    /// The topic's webhooks (`--webhook-*`); `None` without
    /// `--webhook-url`.
    pub webhooks: Option<crate::webhooks::WebhookSettings>,
}

impl PersistConfig {
    /// Validates `weft persist`'s arguments.
    pub fn from_args(args: &PersistArgs) -> anyhow::Result<Self> {
        let Some(kafka) = kafka_config(&args.kafka)? else {
            bail!(
                "--kafka-brokers / WEFT_KAFKA_BROKERS is required: the worker folds the Kafka topic"
            );
        };
        Ok(Self {
            store_url: args.store.clone(),
            worker: WorkerConfig {
                kafka,
                group: args.group.clone(),
                fold: FoldConfig {
                    debounce: args.snapshot_debounce,
                    max_delay: args.snapshot_max_delay,
                    max_updates: args.snapshot_max_updates,
                    ..FoldConfig::default()
                },
                tick: TICK,
                history: (!args.history_retention.is_zero()).then_some(HistoryKeeping {
                    version_interval: args.version_interval,
                    version_quiet: args.version_quiet,
                }),
            },
            max_lag: args.max_lag,
            // The worker delivers from its per-edit rows: they are kept
            // only with history.
            webhooks: crate::webhooks::settings(
                &args.webhooks,
                !args.history_retention.is_zero(),
                false,
            )?,
            compaction: if args.history_retention.is_zero() {
                None
            } else {
                Some(compaction_settings(
                    args.history_retention,
                    args.history_compact_interval,
                )?)
            },
        })
    }
}

/// Starts workers; see [`Worker::start`].
#[derive(Debug)]
pub struct Worker;

/// A running worker. Dropping it without [`WorkerHandle::shutdown`]
/// cancels its root token: the worker and its server stop.
#[derive(Debug)]
pub struct WorkerHandle {
    root: CancellationToken,
    /// Child of `root`: the worker writes what it folded, commits, ends.
    worker_stop: CancellationToken,
    /// Child of `root`: the HTTP server stops (after the worker).
    http_stop: CancellationToken,
    tasks: TaskTracker,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
    local_addr: SocketAddr,
}

impl Worker {
    /// Opens the store and starts the worker and its HTTP server.
    pub async fn start(
        config: PersistConfig,
        listener: TcpListener,
    ) -> anyhow::Result<WorkerHandle> {
        check_kafka_security(&config.worker.kafka).await?;
        let sides = open_topic_sides(&config.store_url, &config.worker.kafka.topic).await?;
        let (store, history) = (sides.log, sides.edits);
        let local_addr = listener.local_addr().context("read the bound address")?;
        let status = Arc::new(WorkerStatus::default());
        let root = CancellationToken::new();
        let worker_stop = root.child_token();
        let http_stop = root.child_token();
        let tasks = TaskTracker::new();
        let compaction_metrics = CompactionMetrics::default();
        let webhook_metrics = crate::webhooks::WebhookMetrics::default();
        let router = http::router(http::HttpState {
            status: status.clone(),
            store: store.clone(),
            max_lag: config.max_lag,
            draining: worker_stop.clone(),
            compaction: compaction_metrics.clone(),
            webhooks: config.webhooks.is_some().then(|| webhook_metrics.clone()),
        });
        let stop = http_stop.clone();
        tasks.spawn(async move {
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %error, "worker HTTP listener failed");
            }
        });
        info!(listen = %local_addr, store = %crate::cli::redacted_url(&config.store_url), group = %config.worker.group, topic = %config.worker.kafka.topic, "persistence worker starting");
        compaction::start(
            history.clone() as Arc<dyn History>,
            &config.worker.kafka.topic,
            config.compaction,
            &compaction_metrics,
            &tasks,
            worker_stop.child_token(),
        );
        if let Some(settings) = config.webhooks {
            // Stopped with the HTTP server, after the worker: what it
            // stored last is delivered by the next holder if not by this one.
            let topic = weft_kafka::dead_letters::DeadLetterTopic::new(&config.worker.kafka)
                .context("--webhook-url: the dead-letter topic's producer")?;
            let changes = Arc::new(dead_letters::TopicDeadLetters {
                changes: sides.changes,
                topic: Arc::new(topic),
            });
            let delivery = webhooks::Delivery {
                settings,
                changes,
                lock: sides.delivery,
                replays: sides.replays,
                history: history.clone() as Arc<dyn History>,
                metrics: webhook_metrics,
            };
            tasks.spawn(webhooks::run(delivery, tasks.clone(), http_stop.clone()));
        }
        let history = config.worker.history.is_some().then_some(history);
        let consume = worker::run(
            config.worker,
            store.clone(),
            history,
            status,
            worker_stop.clone(),
        );
        let worker = tasks.spawn(async move { consume.await.context("run the worker's consumer") });
        Ok(WorkerHandle {
            root,
            worker_stop,
            http_stop,
            tasks,
            worker: Some(worker),
            local_addr,
        })
    }
}

impl WorkerHandle {
    /// The address of the worker's HTTP surface.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the worker (it writes every folded document and commits),
    /// then its HTTP server. Fails if that takes longer than `grace`;
    /// records not committed are folded again by the next worker.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        self.worker_stop.cancel();
        let finished = match self.worker.take() {
            Some(worker) => tokio::time::timeout(grace, worker).await,
            None => Ok(Ok(Ok(()))),
        };
        self.http_stop.cancel();
        self.tasks.close();
        if finished.is_err() {
            // The worker is stuck: stop everything, wait for nothing more.
            self.root.cancel();
        } else {
            self.tasks.wait().await;
        }
        match finished {
            Ok(Ok(Ok(()))) => {
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                info!(elapsed_ms, "stopped");
                Ok(())
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(error)) => Err(error).context("join the worker"),
            Err(_) => bail!(
                "shutdown did not finish within --shutdown-grace ({grace:?}); uncommitted records are folded again by the next worker"
            ),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.root.cancel();
    }
}
