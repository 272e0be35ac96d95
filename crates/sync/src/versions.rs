//! History on a registry: the [`History`] store, its settings, and the
//! automatic versions housekeeping takes ([`HistoryHandle::tend`]): a
//! changed document gets one after `--version-interval` of activity, and
//! once no session holds it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use thiserror::Error;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::document::Document;
use crate::error::SyncError;
use crate::frames::DocName;
use crate::history::{History, NewVersion, Version, VersionKind};
use crate::metrics::SyncMetrics;
use crate::store::StoreError;
use crate::update::InvalidUpdate;

/// How history is kept.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    /// A changed document gets an automatic version after this much
    /// activity (`--version-interval`), and when its last session leaves.
    pub version_interval: Duration,
    /// How far back a document can be read (`--history-retention`).
    pub retention: Duration,
    /// Whether housekeeping takes automatic versions: an embedded node's
    /// does; a cluster's nodes do not (every node holding a document would
    /// take one): there the persistence worker takes them.
    pub automatic: bool,
}

/// Why a history request was not answered.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// This node keeps no history (`--history-retention 0`).
    #[error("history is not kept on this node")]
    Disabled,
    /// The document has no version of that id.
    #[error("no version {0} of this document")]
    UnknownVersion(i64),
    /// The instant is older than `--history-retention`.
    #[error("the instant is before the history retention")]
    BeforeRetention,
    /// The document had no content at that point (or has none now).
    #[error("the document had no content then")]
    NothingThen,
    /// The document is not deleted (or was written again since its
    /// deletion): nothing to undelete.
    #[error("the document is not deleted")]
    NotDeleted,
    /// Loading or committing failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The history store failed.
    #[error("history store")]
    Store(#[from] StoreError),
    /// Stored history does not decode.
    #[error("stored history does not decode")]
    Corrupt(#[from] InvalidUpdate),
}

/// A registry's history: the store, the settings, and per loaded document
/// when it last got a version.
#[derive(Debug)]
pub(crate) struct HistoryHandle {
    pub(crate) metrics: Arc<SyncMetrics>,
    pub(crate) store: Arc<dyn History>,
    pub(crate) settings: HistorySettings,
    clocks: Mutex<HashMap<DocName, VersionClock>>,
}

/// Whether a loaded document changed since its last version.
#[derive(Debug, Clone, Copy)]
struct VersionClock {
    /// When the last version was taken (or the document first seen).
    taken: Instant,
    /// When the first change after it was seen, if one was.
    changed_since: Option<Instant>,
}

impl HistoryHandle {
    /// History in `store`, kept as `settings` say.
    pub(crate) fn new(
        store: Arc<dyn History>,
        settings: HistorySettings,
        metrics: Arc<SyncMetrics>,
    ) -> Self {
        Self {
            metrics,
            store,
            settings,
            clocks: Mutex::new(HashMap::new()),
        }
    }

    /// Notes a change of `document` since its last version and takes an
    /// automatic version once one is due: after `version_interval` of
    /// activity, or once no session holds the changed document. Called by
    /// housekeeping on every tick, before the document may be snapshotted.
    pub(crate) async fn tend(&self, document: &Arc<Document>, now: Instant) {
        if !self.settings.automatic || !document.is_loaded() || document.is_deleted() {
            return;
        }
        let due = {
            let mut clocks = self.clocks.lock();
            // First seen: changes it already holds that no snapshot covers
            // (edits between its load and this tick, or a log the last run
            // did not snapshot) count as changes since a version.
            let clock = clocks
                .entry(document.name_arc())
                .or_insert_with(|| VersionClock {
                    taken: now,
                    changed_since: document.dirty().map(|_| now),
                });
            if clock.changed_since.is_none()
                && document
                    .dirty()
                    .is_some_and(|dirty| dirty.last > clock.taken)
            {
                clock.changed_since = Some(now);
            }
            clock.changed_since.is_some_and(|since| {
                document.session_count() == 0
                    || now.duration_since(since) >= self.settings.version_interval
            })
        };
        if !due {
            return;
        }
        match self.take_version(document, None, VersionKind::Auto).await {
            Ok(version) => {
                info!(doc = %document.name(), version = version.id, covers = version.covers, "automatic version");
            }
            Err(error) => {
                warn!(doc = %document.name(), error = %error, "automatic version failed; retried on the next tick");
            }
        }
    }

    /// Forgets documents no longer in memory.
    pub(crate) fn retain(&self, loaded: &[DocName]) {
        self.clocks
            .lock()
            .retain(|name, _| loaded.iter().any(|doc| doc == name));
    }

    pub(crate) async fn take_version(
        &self,
        document: &Arc<Document>,
        name: Option<&str>,
        kind: VersionKind,
    ) -> Result<Version, HistoryError> {
        let read = document.read_state();
        if !read.has_content {
            return Err(HistoryError::NothingThen);
        }
        let taken = Instant::now();
        let version = self
            .store
            .create_version(NewVersion {
                doc: document.name(),
                name,
                kind,
                at_ms: crate::unix_millis(),
                covers: read.covers,
                state: &read.state,
            })
            .await?;
        self.metrics.history_versions.inc();
        self.clocks.lock().insert(
            document.name_arc(),
            VersionClock {
                taken,
                changed_since: None,
            },
        );
        Ok(version)
    }
}
