//! Webhooks: every durable change of every document POSTed to each
//! `--webhook-url`, at least once and in order per document.
//!
//! One pipeline per target URL (`pipeline`) reads the log after the
//! target's delivered position (stored in the store, so a restart resumes
//! there: a crash re-delivers, never skips), debounces each document's
//! changes into events (`coalesce`), builds their bodies (`event`), signs
//! them (`sign`) and POSTs them, retrying with jittered exponential
//! backoff for `--webhook-retry-for`, then storing a dead letter. The
//! delivered position moves only past events delivered (a 2xx) or dead
//! letters stored.
//!
//! # Layout
//!
//! - `sign`: the `Weft-Signature` header; `metrics`: the counters (leaves).
//! - `coalesce`: per-document debouncing and ordering (pure).
//! - `event`: an event's JSON body.
//! - `pipeline`: one target's read, send, retry and position loop.
//! - `stored`: a cluster's replays, requested by nodes in the shared store
//!   and applied by the delivering worker.

mod coalesce;
mod event;
mod metrics;
mod pipeline;
mod sign;
mod stored;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_sync::changes::{ChangeLog, ReplayRequests, WebhookReplay};
use weft_sync::history::History;
use weft_sync::{LogSeq, RootKind, StoreError};

use self::coalesce::Timing;
pub use self::metrics::WebhookMetrics;
pub use self::stored::StoredReplay;

/// Replays queued per target before `POST /api/webhooks/replay` waits.
const REPLAY_QUEUE: usize = 8;
/// Stored replays (a cluster's) applied per poll; the rest wait for the next.
const REPLAYS_PER_POLL: u32 = 16;
/// How long applying one stored replay waits for the pipelines to store
/// their rewound positions before leaving it for the next poll.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

/// `--webhook-*`, validated.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The targets (`--webhook-url`, repeatable).
    pub urls: Vec<String>,
    /// The HMAC key (`--webhook-secret`).
    pub secret: String,
    /// `--webhook-debounce`.
    pub debounce: Duration,
    /// `--webhook-max-delay`.
    pub max_delay: Duration,
    /// `--webhook-retry-for`.
    pub retry_for: Duration,
    /// `--webhook-timeout`: one POST's deadline.
    pub timeout: Duration,
    /// `--webhook-roots`: root types added to each body as JSON.
    pub roots: Vec<(RootKind, String)>,
}

/// Validates `--webhook-*`: `None` without a URL.
pub fn settings(
    args: &crate::cli::WebhookArgs,
    history_kept: bool,
    cluster: bool,
) -> anyhow::Result<Option<WebhookSettings>> {
    if args.webhook_url.is_empty() {
        return Ok(None);
    }
    if cluster {
        anyhow::bail!(
            "--webhook-url / WEFT_WEBHOOK_URL: a cluster's webhooks are delivered by `weft persist --webhook-url`, not by its nodes"
        );
    }
    if !history_kept {
        anyhow::bail!(
            "--webhook-url / WEFT_WEBHOOK_URL needs the update log kept: --history-retention / WEFT_HISTORY_RETENTION must not be 0"
        );
    }
    let Some(secret) = args
        .webhook_secret
        .clone()
        .filter(|secret| !secret.is_empty())
    else {
        anyhow::bail!(
            "--webhook-url / WEFT_WEBHOOK_URL needs --webhook-secret / WEFT_WEBHOOK_SECRET (receivers check the signature)"
        );
    };
    for url in &args.webhook_url {
        weft_gateway::auth::https::check_url(url)
            .with_context(|| format!("--webhook-url / WEFT_WEBHOOK_URL `{url}`"))?;
    }
    if args.webhook_timeout.is_zero() {
        anyhow::bail!("--webhook-timeout / WEFT_WEBHOOK_TIMEOUT must be greater than zero");
    }
    if args.webhook_max_delay < args.webhook_debounce {
        anyhow::bail!(
            "--webhook-max-delay / WEFT_WEBHOOK_MAX_DELAY must not be shorter than --webhook-debounce / WEFT_WEBHOOK_DEBOUNCE"
        );
    }
    Ok(Some(WebhookSettings {
        urls: args.webhook_url.clone(),
        secret,
        debounce: args.webhook_debounce,
        max_delay: args.webhook_max_delay,
        retry_for: args.webhook_retry_for,
        timeout: args.webhook_timeout,
        roots: roots(&args.webhook_roots)?,
    }))
}

/// `--webhook-roots`: `KIND:NAME` each.
fn roots(given: &[String]) -> anyhow::Result<Vec<(RootKind, String)>> {
    let mut roots = Vec::with_capacity(given.len());
    for root in given {
        let parsed = root.split_once(':').and_then(|(kind, name)| {
            let kind = match kind {
                "text" => RootKind::Text,
                "map" => RootKind::Map,
                "array" => RootKind::Array,
                "xml" => RootKind::XmlFragment,
                _ => return None,
            };
            (!name.is_empty()).then(|| (kind, name.to_owned()))
        });
        let Some(parsed) = parsed else {
            anyhow::bail!(
                "--webhook-roots / WEFT_WEBHOOK_ROOTS `{root}`: KIND:NAME, KIND one of text, map, array, xml"
            );
        };
        roots.push(parsed);
    }
    Ok(roots)
}

/// The running pipelines; replays go to each.
#[derive(Debug)]
pub struct Webhooks {
    log: Arc<dyn ChangeLog>,
    replays: Vec<mpsc::Sender<pipeline::Rewind>>,
}

impl Webhooks {
    /// Starts one pipeline per URL on `tasks`, until `stop`; `history`
    /// reads documents for `--webhook-roots` (without it, events carry no
    /// roots).
    pub fn start(
        settings: &WebhookSettings,
        log: Arc<dyn ChangeLog>,
        history: Option<Arc<dyn History>>,
        end: &watch::Receiver<LogSeq>,
        metrics: WebhookMetrics,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let client = weft_gateway::auth::https::client(None, settings.timeout)
            .context("--webhook-url: build the HTTP client")?;
        let metrics = Arc::new(metrics);
        let secret: Arc<[u8]> = Arc::from(settings.secret.as_bytes());
        let timing = Timing {
            debounce: settings.debounce,
            max_delay: settings.max_delay,
        };
        let mut replays = Vec::with_capacity(settings.urls.len());
        for url in &settings.urls {
            let (sender, receiver) = mpsc::channel(REPLAY_QUEUE);
            replays.push(sender);
            let target = Arc::new(pipeline::Target {
                url: url.clone(),
                client: client.clone(),
                secret: secret.clone(),
                timing,
                retry_for: settings.retry_for,
                log: log.clone(),
                roots: settings.roots.clone(),
                history: history.clone(),
                metrics: metrics.clone(),
            });
            tasks.spawn(pipeline::run(target, end.clone(), receiver, stop.clone()));
        }
        Ok(Arc::new(Self { log, replays }))
    }

    /// Applies the pending requests, oldest first; returns how many were
    /// applied. A request whose rewind does not finish within
    /// `REWIND_TIMEOUT` (a pipeline stopped, the store fails) stays pending,
    /// and so do the ones after it.
    pub async fn apply_stored_replays(
        &self,
        requests: &dyn ReplayRequests,
    ) -> Result<usize, StoreError> {
        let pending = requests.pending_replays(REPLAYS_PER_POLL).await?;
        let mut applied = 0;
        for request in pending {
            let rewound = tokio::time::timeout(REWIND_TIMEOUT, self.rewind(request.after)).await;
            if !matches!(rewound, Ok(true)) {
                tracing::warn!(
                    request = request.id,
                    position = request.after,
                    "webhooks: a replay was not applied in time; retrying"
                );
                break;
            }
            requests.finish_replay(request.id, stored::now_ms()).await?;
            tracing::info!(
                request = request.id,
                from_ms = request.from_ms,
                position = request.after,
                "webhooks: stored replay applied"
            );
            applied += 1;
        }
        Ok(applied)
    }

    /// Moves every pipeline back to `position` (a cluster's stored replay)
    /// and resolves once each has stored a delivered position at or before
    /// it; `false` if a pipeline stopped first (the replay is not applied
    /// for sure: try again).
    pub async fn rewind(&self, position: LogSeq) -> bool {
        let mut answers = Vec::with_capacity(self.replays.len());
        for target in &self.replays {
            let (stored, answer) = oneshot::channel();
            let rewind = pipeline::Rewind {
                position,
                stored: Some(stored),
            };
            if target.send(rewind).await.is_err() {
                return false;
            }
            answers.push(answer);
        }
        for answer in answers {
            if answer.await.is_err() {
                return false;
            }
        }
        true
    }
}

#[async_trait]
impl WebhookReplay for Webhooks {
    async fn replay_from(&self, from_ms: i64) -> Result<LogSeq, StoreError> {
        let position = self.log.position_before_time(from_ms).await?;
        for target in &self.replays {
            // A pipeline that stopped (the node drains) takes no replay.
            let rewind = pipeline::Rewind {
                position,
                stored: None,
            };
            let _stopped = target.send(rewind).await;
        }
        Ok(position)
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod replay_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::WebhookArgs;

    fn args(urls: &[&str], secret: Option<&str>) -> WebhookArgs {
        WebhookArgs {
            webhook_url: urls.iter().map(|url| (*url).to_owned()).collect(),
            webhook_secret: secret.map(str::to_owned),
            webhook_debounce: Duration::from_secs(2),
            webhook_max_delay: Duration::from_secs(10),
            webhook_timeout: Duration::from_secs(10),
            webhook_roots: vec!["text:content".to_owned(), "map:meta".to_owned()],
            webhook_retry_for: Duration::from_secs(86_400),
        }
    }

    fn refusal(args: &WebhookArgs, history_kept: bool, cluster: bool) -> String {
        match settings(args, history_kept, cluster) {
            Ok(settings) => panic!("accepted: {settings:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn settings_are_checked_at_start() {
        assert!(settings(&args(&[], None), true, false).unwrap().is_none());
        let ok = settings(
            &args(&["https://hooks.example/weft"], Some("s")),
            true,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ok.roots,
            vec![
                (RootKind::Text, "content".to_owned()),
                (RootKind::Map, "meta".to_owned())
            ]
        );
        let loopback = args(&["http://127.0.0.1:9000/hook"], Some("s"));
        assert!(settings(&loopback, true, false).unwrap().is_some());
        let with_secret = args(&["https://hooks.example/weft"], Some("s"));
        assert!(refusal(&with_secret, true, true).contains("weft persist --webhook-url"));
        assert!(refusal(&with_secret, false, false).contains("--history-retention"));
        let no_secret = args(&["https://hooks.example/weft"], None);
        assert!(refusal(&no_secret, true, false).contains("--webhook-secret"));
        let plain = args(&["http://hooks.example/weft"], Some("s"));
        assert!(refusal(&plain, true, false).contains("loopback"));
        let mut bad_root = with_secret;
        bad_root.webhook_roots = vec!["tree:content".to_owned()];
        assert!(refusal(&bad_root, true, false).contains("KIND:NAME"));
    }

    /// The retry schedule: each pause between its delay and twice it, the
    /// delay doubling from 1 s and capped at 5 min.
    #[test]
    fn retries_back_off_exponentially_with_jitter() {
        let mut pauses =
            weft_sync::backoff::Pauses::new(pipeline::FIRST_RETRY_DELAY, pipeline::MAX_RETRY_DELAY);
        let mut delay = pipeline::FIRST_RETRY_DELAY;
        for _ in 0..14 {
            let pause = pauses.next_pause();
            assert!(
                pause >= delay && pause <= delay * 2,
                "{pause:?} for a delay of {delay:?}"
            );
            delay = (delay * 2).min(pipeline::MAX_RETRY_DELAY);
        }
    }
}
