//! A node as a library: [`Node::start`] on listeners the caller bound,
//! [`NodeHandle::shutdown`] with a grace.
//!
//! # Shutdown is a tree
//!
//! One root [`CancellationToken`] per node. Its children are the gateway's
//! draining token ([`Lifecycle::under`]: readiness, upgrades, and the
//! sessions' 1012), the registry's tokens (its committer; its housekeeping
//! and bus task), the Kafka bus's token (its live consumer, replays and
//! other background work) and the HTTP servers' stop. The drain cancels
//! them one at a time, in order; a drain that runs out of grace cancels the
//! root, which stops whatever is left at once. Every task the node spawns
//! is in one [`TaskTracker`]: the HTTP and metrics servers, the registry's
//! tasks, its documents' broadcast flushes and the Kafka bus's tasks.
//! Session tasks are in the gateway's own tracker, because the drain waits
//! for them as a step of its own before the registry stops.
//!
//! # Drain order
//!
//! [`NodeHandle::shutdown`], within its grace:
//! 1. readiness goes false and new upgrades get 503; open sessions are told
//!    to close with 1012 ([`DrainPhase::Draining`]);
//! 2. every session task is awaited ([`DrainPhase::SessionsClosed`]);
//! 3. updates are refused and the committer commits and applies everything
//!    queued ([`DrainPhase::CommitsFlushed`]);
//! 4. housekeeping and the bus task stop, dirty documents are
//!    snapshotted, and the Kafka bus's tasks are told to stop
//!    ([`DrainPhase::SnapshotsWritten`]);
//! 5. the HTTP servers stop and the node's tasks end
//!    ([`DrainPhase::Stopped`]).
//!
//! [`NodeHandle::phases`] reports each phase as it is reached;
//! [`NodeHandle::hold_at`] keeps the drain at one, so a caller (a test)
//! can look at the node and its store between two steps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use weft_gateway::limits::Admission;
use weft_gateway::live::{RevocationLog, Revocations};
use weft_gateway::{AppState, Lifecycle};
use weft_sync::changes::ChangeFeed;
use weft_sync::{LogBus, MessageBus, Registry};

use crate::config::{NodeConfig, check_kafka_security, open_store_with_history, open_topic_sides};
use crate::drain::{DrainHold, DrainPhase, DrainReport, DrainStep};
use crate::listen::Listeners;
use crate::revocations::{StoreRevocations, TopicRevocations};

/// How often [`NodeHandle::ready`] asks again: the bus connects within
/// milliseconds embedded, within seconds in a cluster.
pub const READY_POLL: Duration = Duration::from_millis(50);

/// Starts nodes; see [`Node::start`].
#[derive(Debug)]
pub struct Node;

/// A running node: its addresses, its phase, and the way to stop it.
/// Dropping it without [`NodeHandle::shutdown`] cancels the node's root
/// token: sessions and servers stop at once, nothing is flushed.
#[derive(Debug)]
pub struct NodeHandle {
    /// The root of the node's cancellation tree.
    root: CancellationToken,
    /// Child of `root`: stops the HTTP servers (last step of the drain).
    http_stop: CancellationToken,
    /// Child of `root`: stops the Kafka bus's tasks once the registry no
    /// longer uses the bus.
    bus_stop: CancellationToken,
    /// Child of `root`: the node leaves the owners' group (its partitions
    /// move to the others) as its drain starts.
    owners_stop: CancellationToken,
    /// Every task the node spawned.
    tasks: TaskTracker,
    lifecycle: Lifecycle,
    registry: Registry,
    /// The node's revocations: not ready until the log was read.
    revocations: Revocations,
    /// The main HTTP server, whose outcome the drain reports.
    server: Option<JoinHandle<std::io::Result<()>>>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    phase: watch::Sender<DrainPhase>,
    /// What the drain awaits once it reaches each held phase.
    holds: Vec<(DrainPhase, oneshot::Receiver<()>)>,
}

impl Node {
    /// Opens the store, connects the bus (in the background: readiness
    /// says when it is up), and serves on `listeners`. Fails, naming the
    /// setting, if the store cannot be opened or the Kafka settings cannot
    /// make a client; nothing is spawned then.
    pub async fn start(config: NodeConfig, listeners: Listeners) -> anyhow::Result<NodeHandle> {
        crate::idp::load(&config.auth).await?;
        if let Some(kafka) = &config.kafka {
            check_kafka_security(kafka).await?;
        }
        // A cluster's history is its topic's: the per-edit rows the
        // persistence worker stores, beside the shared versions, and read
        // back in the order stored as its changes (server-sent events). An
        // embedded node's is its own log, which it also reads back as
        // changes (server-sent events, webhooks).
        // A cluster node's webhook replays are requests in the shared store,
        // which the delivering `weft persist` applies.
        let (store, history_store, changes, stored_replays) = match &config.kafka {
            Some(kafka) => {
                let sides = open_topic_sides(&config.store_url, &kafka.topic).await?;
                (
                    sides.log,
                    sides.edits as Arc<dyn weft_sync::history::History>,
                    sides.changes,
                    Some(sides.replays),
                )
            }
            None => {
                let sides = open_store_with_history(&config.store_url).await?;
                (sides.log, sides.history, sides.changes, None)
            }
        };
        let local_addr = listeners
            .http
            .local_addr()
            .context("read the bound address")?;
        let metrics_addr = match &listeners.metrics {
            Some(listener) => Some(
                listener
                    .local_addr()
                    .context("read the bound metrics address")?,
            ),
            None => None,
        };
        // The Kafka bus's own metrics (lag, fetch totals, its counters);
        // the embedded log has none.
        let mut bus_metrics = None;
        let root = CancellationToken::new();
        let tasks = TaskTracker::new();
        let bus_stop = root.child_token();
        let revocation_log: Arc<dyn RevocationLog> = match &config.kafka {
            Some(kafka) => Arc::new(TopicRevocations {
                topic: Arc::new(
                    weft_kafka::RevocationTopic::new(kafka, config.max_token_lifetime)
                        .context("--kafka-* settings")?,
                ),
            }),
            None => Arc::new(StoreRevocations {
                store: store.clone(),
            }),
        };
        let owners_stop = root.child_token();
        let mut membership = None;
        let bus: Arc<dyn MessageBus> = match config.kafka {
            Some(kafka) => {
                if let Some(ownership) = &config.ownership {
                    let owner_tasks = weft_kafka::BusTasks::new(owners_stop.clone(), tasks.clone());
                    let (member, moved) = weft_kafka::Membership::start(
                        &kafka,
                        &config.node_id,
                        &ownership.advertise_address,
                        &owner_tasks,
                    )
                    .context("--cluster-mode ownership")?;
                    membership = Some((member, moved, ownership.secret.clone()));
                }
                info!(brokers = %kafka.brokers, topic = %kafka.topic, node = %kafka.origin, "cluster mode: updates go through Kafka");
                let bus_tasks = weft_kafka::BusTasks::new(bus_stop.clone(), tasks.clone());
                let kafka_bus =
                    weft_kafka::KafkaBus::new(kafka, bus_tasks).context("--kafka-* settings")?;
                bus_metrics = Some(kafka_bus.metrics());
                Arc::new(kafka_bus)
            }
            None => Arc::new(LogBus::new(store.clone(), &config.node_id)),
        };
        let registry = Registry::start(store, bus, config.registry, &root, &tasks);
        if let Some(history) = config.history {
            registry.enable_history(history_store.clone(), history);
            if let Some(settings) = config.compaction {
                // Stopped with the bus: the drain has written its
                // snapshots by then, and a pass stops between documents.
                tasks.spawn(weft_sync::compaction::run_compaction(
                    history_store.clone(),
                    weft_sync::EMBEDDED_LOG.to_owned(),
                    settings,
                    registry.metrics().compaction.clone(),
                    bus_stop.child_token(),
                ));
            }
        }
        let revocations =
            Revocations::new(revocation_log, config.max_token_lifetime, &config.node_id);
        // Stopped with the bus: sessions no longer need it by then.
        revocations.start(&tasks, &bus_stop);

        let http_stop = root.child_token();
        let lifecycle = Lifecycle::under(&root);
        let open = config.auth.is_open();
        let mut metrics = weft_gateway::Metrics::new(registry.clone());
        if let Some(bus_metrics) = bus_metrics {
            metrics.register_collector(Box::new(bus_metrics));
        }
        {
            // The log read back as changes: server-sent events, and (an
            // embedded node's) webhooks when configured; a cluster's
            // webhooks are `weft persist`'s. Stopped with the HTTP servers.
            let feed = ChangeFeed::start(changes.clone(), None, &tasks, http_stop.clone());
            let feed = match stored_replays {
                Some(requests) => {
                    feed.in_cluster()
                        .with_replay(Arc::new(crate::webhooks::StoredReplay::new(
                            changes.clone(),
                            requests,
                        )))
                }
                None => feed,
            };
            let feed = match &config.webhooks {
                Some(settings) => {
                    let webhook_metrics = crate::webhooks::WebhookMetrics::default();
                    webhook_metrics.register(metrics.registry_mut());
                    let webhooks = crate::webhooks::Webhooks::start(
                        settings,
                        changes,
                        Some(history_store.clone()),
                        &feed.end(),
                        webhook_metrics,
                        &tasks,
                        &http_stop,
                    )?;
                    feed.with_replay(webhooks)
                }
                None => feed,
            };
            registry.enable_change_feed(feed);
        }
        let http_metrics = crate::http::HttpMetrics::default();
        http_metrics.register(metrics.registry_mut());
        let http_limits = config.http;
        if let weft_gateway::auth::Authenticator::Jwks(keys) = &config.auth {
            tasks.spawn(keys.clone().refresh_until(http_stop.clone()));
        }
        let ownership = membership.map(|(member, moved, secret)| {
            let routes = crate::ownership::GroupRoutes { membership: member };
            let ownership = weft_gateway::cluster::Ownership::new(Arc::new(routes), &secret);
            tasks.spawn(crate::ownership::close_moved_sessions(
                ownership.clone(),
                moved,
            ));
            ownership
        });
        let state = AppState {
            registry: registry.clone(),
            lifecycle: lifecycle.clone(),
            config: Arc::new(config.gateway),
            auth: config.auth,
            admission: Admission::new(config.limits),
            metrics: Arc::new(metrics),
            revocations: revocations.clone(),
            ownership,
            idempotency: Default::default(),
        };
        if let (Some(listener), Some(address)) = (listeners.metrics, metrics_addr) {
            let router = weft_gateway::metrics_router(state.metrics.clone());
            let stop = http_stop.clone();
            tasks.spawn(async move {
                if let Err(error) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    warn!(error = %error, "metrics listener failed");
                }
            });
            info!(listen = %address, "metrics listening");
        }
        let app = crate::serve::App {
            router: weft_gateway::router(state),
            limits: http_limits,
            metrics: http_metrics,
        };
        let server =
            crate::serve::spawn(listeners.http, config.tls.as_ref(), app, &tasks, &http_stop)?;
        if open {
            warn!(
                "NO AUTHENTICATION: none of --auth-jwt-secret, --auth-jwt-public-key, --auth-jwks-url, --auth-webhook-url is set, so any client can read and write every document"
            );
        }
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!(listen = %local_addr, scheme, store = %crate::cli::redacted_url(&config.store_url), "weft node listening");
        Ok(NodeHandle {
            root,
            http_stop,
            bus_stop,
            owners_stop,
            tasks,
            lifecycle,
            registry,
            revocations,
            server: Some(server),
            local_addr,
            metrics_addr,
            phase: watch::Sender::new(DrainPhase::Serving),
            holds: Vec::new(),
        })
    }
}

impl NodeHandle {
    /// The address WebSocket and HTTP clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the `/metrics`-only listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's phase, as it changes: `Serving` until a drain starts,
    /// then each step of the drain in order.
    pub fn phases(&self) -> watch::Receiver<DrainPhase> {
        self.phase.subscribe()
    }

    /// Holds the drain once it reaches `phase` (after [`NodeHandle::phases`]
    /// reported it) until the returned hold is released or dropped, so a
    /// caller can look at the node between two steps. The grace keeps
    /// running; a hold at [`DrainPhase::Serving`] never holds.
    pub fn hold_at(&mut self, phase: DrainPhase) -> DrainHold {
        let (hold, released) = DrainHold::new();
        self.holds.push((phase, released));
        hold
    }

    /// What `/readyz` answers, without HTTP: `Err` says which part is not
    /// ready (draining, the bus, the store, the revocations).
    pub async fn check_ready(&self) -> Result<(), String> {
        if self.lifecycle.is_draining() {
            return Err("this node is shutting down".to_owned());
        }
        self.registry.check_ready().await?;
        if !self.revocations.is_loaded() {
            return Err("the revocations are still being read".to_owned());
        }
        Ok(())
    }

    /// Resolves once the node is ready (what `/readyz` answers 200 to);
    /// fails if it starts draining first. The registry answers readiness
    /// as a check rather than an event, so this asks again every
    /// [`READY_POLL`]; bound it with a timeout.
    pub async fn ready(&self) -> Result<(), String> {
        let mut phases = self.phases();
        loop {
            match self.check_ready().await {
                Ok(()) => return Ok(()),
                Err(reason) if self.lifecycle.is_draining() => return Err(reason),
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(READY_POLL) => {}
                _ = phases.changed() => {}
            }
        }
    }

    /// The tracker every task of the node is on (sessions aside, see the
    /// module documentation): closed, and empty, once
    /// [`NodeHandle::shutdown`] returned.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.lifecycle.open_sessions()
    }

    /// Drains the node (see the module documentation for the order) and
    /// stops it. If the drain does not finish within `grace`, whatever is
    /// left is cancelled and an error says so; everything committed is in
    /// the log and is replayed by the next start.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<DrainReport> {
        let started = Instant::now();
        let drained = tokio::time::timeout(grace, self.drain(started)).await;
        match drained {
            Ok(outcome) => outcome,
            Err(_) => {
                self.root.cancel();
                bail!(
                    "shutdown did not finish within --shutdown-grace ({grace:?}); committed updates are in the log and are replayed on the next start"
                )
            }
        }
    }

    async fn drain(&mut self, started: Instant) -> anyhow::Result<DrainReport> {
        let mut report = DrainReport::default();
        self.lifecycle.start_draining();
        self.owners_stop.cancel();
        self.reached(DrainPhase::Draining, started, &mut report)
            .await;
        self.lifecycle.sessions_closed().await;
        info!(elapsed_ms = elapsed_ms(started), "sessions closed");
        self.reached(DrainPhase::SessionsClosed, started, &mut report)
            .await;
        self.registry.flush_commits().await;
        info!(elapsed_ms = elapsed_ms(started), "updates committed");
        self.reached(DrainPhase::CommitsFlushed, started, &mut report)
            .await;
        self.registry.snapshot_and_stop().await;
        // The registry no longer uses the bus: its tasks may stop (the
        // tracker awaits them below).
        self.bus_stop.cancel();
        info!(
            elapsed_ms = elapsed_ms(started),
            "updates committed and snapshots written"
        );
        self.reached(DrainPhase::SnapshotsWritten, started, &mut report)
            .await;
        self.http_stop.cancel();
        let served = match self.server.take() {
            Some(server) => server.await,
            None => Ok(Ok(())),
        };
        self.tasks.close();
        self.tasks.wait().await;
        match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error).context("serve HTTP"),
            Err(error) => return Err(error).context("join the HTTP server task"),
        }
        info!(elapsed_ms = elapsed_ms(started), "stopped");
        self.reached(DrainPhase::Stopped, started, &mut report)
            .await;
        Ok(report)
    }

    /// Reports `phase`, then waits for any hold taken for it.
    async fn reached(&mut self, phase: DrainPhase, started: Instant, report: &mut DrainReport) {
        report.steps.push(DrainStep {
            phase,
            elapsed: started.elapsed(),
        });
        self.phase.send_replace(phase);
        let (held, others) = std::mem::take(&mut self.holds)
            .into_iter()
            .partition(|(held_at, _)| *held_at == phase);
        self.holds = others;
        for (_, released) in held {
            // Released or dropped: either way the drain goes on.
            let _released = released.await;
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
