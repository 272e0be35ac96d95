//! The node's live revocations: an indexed list every socket watches, the
//! durable log behind it, and the task that follows that log.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::facts::{TokenFacts, unix_now};
use super::rules::{Limit, Revocation, RevocationRequest, RevokedAccess, Rule};

/// Most live revocations a node keeps; past it, new ones are refused (429)
/// until old ones end. Each costs a few hundred bytes on every node.
pub const MAX_LIVE_REVOCATIONS: usize = 100_000;

/// Records the follower may hand over before the list takes them.
const FOLLOW_QUEUE: usize = 1024;

/// Why the log could not take or give a record.
#[derive(Debug, thiserror::Error)]
#[error("revocation log: {0}")]
pub struct RevocationLogError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where revocations are made durable and how every node learns of them:
/// the embedded store alone, or a Kafka topic of its own in a cluster.
/// Records are the JSON of a [`Revocation`].
pub trait RevocationLog: Send + Sync + fmt::Debug + 'static {
    /// Stores `record` durably; resolves once it is.
    fn append(&self, record: Vec<u8>) -> BoxFuture<'_, Result<(), RevocationLogError>>;

    /// Sends every stored record to `records`, resolves `loaded` once all
    /// that were stored before the call went, then keeps sending new ones
    /// (from any node) until `stop`.
    fn follow(
        self: Arc<Self>,
        records: mpsc::Sender<Vec<u8>>,
        loaded: oneshot::Sender<()>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}

/// The live revocations, indexed by what they name.
#[derive(Debug, Default)]
pub struct RevocationList {
    /// Rules naming a `jti` (whatever else they name), by it.
    by_jti: HashMap<String, Vec<Arc<Rule>>>,
    /// Rules naming a `sub` and no `jti`, by it.
    by_sub: HashMap<String, Vec<Arc<Rule>>>,
    /// Every rule, oldest first.
    all: Vec<Arc<Rule>>,
}

impl RevocationList {
    fn build(rules: Vec<Arc<Rule>>) -> Self {
        let mut list = Self::default();
        for rule in rules {
            let index = match (&rule.record.jti, &rule.record.sub) {
                (Some(jti), _) => list.by_jti.entry(jti.clone()),
                (None, Some(sub)) => list.by_sub.entry(sub.clone()),
                (None, None) => continue,
            };
            index.or_default().push(rule.clone());
            list.all.push(rule);
        }
        list
    }

    /// The strongest limit the revocations live at `now` put on `token`'s
    /// access to `doc`; `None` if none matches. Two hash lookups and the
    /// rules found there.
    pub fn limit(&self, token: &TokenFacts, doc: &str, now: u64) -> Option<Limit> {
        self.limit_where(token, doc, now, |_| true)
    }

    /// Whether a revocation live at `now` takes all of `token`'s access to
    /// every document (one without `docs`, with access `none`): such a
    /// token is refused on the REST API too.
    pub fn revokes_all(&self, token: &TokenFacts, now: u64) -> bool {
        self.limit_where(token, "", now, |rule| rule.record.docs.is_none()) == Some(Limit::Closed)
    }

    /// The strongest limit of the matching rules that `keep` keeps.
    fn limit_where(
        &self,
        token: &TokenFacts,
        doc: &str,
        now: u64,
        keep: impl Fn(&Rule) -> bool,
    ) -> Option<Limit> {
        let by_jti = token
            .jti
            .as_ref()
            .and_then(|jti| self.by_jti.get(jti))
            .into_iter()
            .flatten();
        let by_sub = self.by_sub.get(&token.sub).into_iter().flatten();
        by_jti
            .chain(by_sub)
            .filter(|rule| keep(rule))
            .filter_map(|rule| rule.limit(token, doc, now))
            .max()
    }

    /// The revocations live at `now`, oldest first.
    pub fn live(&self, now: u64) -> Vec<Revocation> {
        self.all
            .iter()
            .filter(|rule| rule.live(now))
            .map(|rule| rule.record.clone())
            .collect()
    }

    /// How many revocations the list holds (some may have ended).
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A record read from the log; `None` (logged) if it does not parse.
fn parse(bytes: &[u8]) -> Option<Revocation> {
    serde_json::from_slice(bytes)
        .map_err(|error| warn!(error = %error, "skipping a revocation record that does not parse"))
        .ok()
}

/// Why a revocation was not made.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request is not a revocation; why, for a 400.
    #[error("{0}")]
    Invalid(String),
    /// [`MAX_LIVE_REVOCATIONS`] are live.
    #[error("too many live revocations")]
    Full,
    /// The log did not store it.
    #[error(transparent)]
    Log(#[from] RevocationLogError),
    /// No log (a node built without one: revocations are off).
    #[error("revocations are not enabled on this node")]
    Disabled,
}

/// The node's revocations: the live list (watched by every socket), the
/// log, and how long a revocation lives.
#[derive(Debug, Clone)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    list: watch::Sender<Arc<RevocationList>>,
    log: Option<Arc<dyn RevocationLog>>,
    lifetime: Duration,
    /// Whether the log was read up to its end once (readiness).
    loaded: watch::Sender<bool>,
    /// Names this node's revocations apart (with the node id and the time).
    made: AtomicU64,
    node: String,
}

impl Revocations {
    /// Revocations kept in `log`, each living for `lifetime` (the longest a
    /// token may live); `node` names this node in revocation ids. Not
    /// loaded until [`Revocations::start`] has read the log.
    pub fn new(log: Arc<dyn RevocationLog>, lifetime: Duration, node: &str) -> Self {
        Self::build(Some(log), lifetime, node)
    }

    /// No revocations and no log (tests, tools): loaded, and every
    /// revocation request is refused.
    pub fn disabled() -> Self {
        let revocations = Self::build(None, Duration::ZERO, "");
        revocations.inner.loaded.send_replace(true);
        revocations
    }

    fn build(log: Option<Arc<dyn RevocationLog>>, lifetime: Duration, node: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                list: watch::Sender::new(Arc::default()),
                log,
                lifetime,
                loaded: watch::Sender::new(false),
                made: AtomicU64::new(0),
                node: node.to_owned(),
            }),
        }
    }

    /// Follows the log in a task on `tasks` until `stop`: reads every
    /// stored revocation (then [`Revocations::is_loaded`]), then new ones.
    pub fn start(&self, tasks: &TaskTracker, stop: &CancellationToken) {
        let Some(log) = self.inner.log.clone() else {
            return;
        };
        let (records, mut received) = mpsc::channel(FOLLOW_QUEUE);
        let (loaded, read) = oneshot::channel();
        tasks.spawn(log.follow(records, loaded, stop.clone()));
        let this = self.clone();
        tasks.spawn(async move {
            let mut read = read;
            // What the log held at start goes into the list at once: one
            // rebuild, not one per record.
            let mut stored = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    record = received.recv() => match record {
                        Some(record) => stored.extend(parse(&record)),
                        None => {
                            // The follower ended (a log that is read once):
                            // loaded if it said so first.
                            if (&mut read).await.is_ok() {
                                this.apply_all(std::mem::take(&mut stored));
                                this.mark_loaded();
                            }
                            return;
                        }
                    },
                    outcome = &mut read => {
                        if outcome.is_err() {
                            // The follower stopped before the end of the log.
                            return;
                        }
                        // Records sent before `loaded` are all queued.
                        while let Ok(record) = received.try_recv() {
                            stored.extend(parse(&record));
                        }
                        this.apply_all(std::mem::take(&mut stored));
                        this.mark_loaded();
                        break;
                    }
                }
            }
            while let Some(record) = received.recv().await {
                if let Some(record) = parse(&record) {
                    this.apply(record);
                }
            }
        });
    }

    fn mark_loaded(&self) {
        self.inner.loaded.send_replace(true);
        info!(revocations = self.current().len(), "revocations loaded");
    }

    /// Whether every revocation stored when the node started is known.
    pub fn is_loaded(&self) -> bool {
        *self.inner.loaded.borrow()
    }

    /// Resolves once [`Revocations::is_loaded`].
    pub async fn loaded(&self) {
        let mut loaded = self.inner.loaded.subscribe();
        // The sender lives as long as `self`.
        let _loaded = loaded.wait_for(|loaded| *loaded).await;
    }

    /// The live list now.
    pub fn current(&self) -> Arc<RevocationList> {
        self.inner.list.borrow().clone()
    }

    /// Watches the list (a socket re-checks its sessions on each change).
    pub fn subscribe(&self) -> watch::Receiver<Arc<RevocationList>> {
        self.inner.list.subscribe()
    }

    /// Makes a revocation: stores it in the log (every node follows it),
    /// then applies it here at once.
    pub async fn revoke(&self, request: RevocationRequest) -> Result<Revocation, RevokeError> {
        request.validate().map_err(RevokeError::Invalid)?;
        let Some(log) = &self.inner.log else {
            return Err(RevokeError::Disabled);
        };
        let now = unix_now();
        if self.current().live(now).len() >= MAX_LIVE_REVOCATIONS {
            return Err(RevokeError::Full);
        }
        let made = self.inner.made.fetch_add(1, Ordering::Relaxed);
        let record = Revocation {
            id: format!("{}-{now}-{made}", self.inner.node),
            sub: request.sub,
            jti: request.jti,
            docs: request.docs,
            access: request.access.unwrap_or(RevokedAccess::None),
            revoked_at: now,
            expires_at: now.saturating_add(self.inner.lifetime.as_secs()),
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|error| RevocationLogError(Box::new(error)))?;
        log.append(bytes).await?;
        self.apply(record.clone());
        Ok(record)
    }

    /// Adds `records` to the live list in one rebuild (the log's records
    /// at start), skipping ids already known and revocations that ended.
    pub fn apply_all(&self, records: Vec<Revocation>) {
        let now = unix_now();
        self.inner.list.send_modify(|list| {
            let mut known: HashSet<String> =
                list.all.iter().map(|rule| rule.record.id.clone()).collect();
            let mut rules: Vec<Arc<Rule>> = list
                .all
                .iter()
                .filter(|rule| rule.live(now))
                .cloned()
                .collect();
            for record in records {
                if known.contains(&record.id) {
                    continue;
                }
                match Rule::new(record) {
                    Some(rule) if rule.live(now) => {
                        known.insert(rule.record.id.clone());
                        rules.push(Arc::new(rule));
                    }
                    Some(_) => {}
                    None => warn!(
                        "skipping a revocation that names neither sub nor jti, or has a bad glob"
                    ),
                }
            }
            *list = Arc::new(RevocationList::build(rules));
        });
    }

    /// Adds `record` to the live list (once: a record read back from the
    /// log is already there), dropping the revocations that ended.
    pub fn apply(&self, record: Revocation) {
        let now = unix_now();
        let Some(rule) = Rule::new(record) else {
            warn!("skipping a revocation that names neither sub nor jti, or has a bad glob");
            return;
        };
        if !rule.live(now) {
            return;
        }
        self.inner.list.send_if_modified(|list| {
            if list
                .all
                .iter()
                .any(|known| known.record.id == rule.record.id)
            {
                return false;
            }
            let mut rules: Vec<Arc<Rule>> = list
                .all
                .iter()
                .filter(|known| known.live(now))
                .cloned()
                .collect();
            rules.push(Arc::new(rule));
            *list = Arc::new(RevocationList::build(rules));
            true
        });
    }
}
