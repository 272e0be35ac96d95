//! What the REST API asks of history, through the registry's facade.
//!
//! History is on where the registry was given a [`History`] store
//! ([`Registry::enable_history`]: an embedded node). Versions are taken
//! from the loaded document (its state and the log position it covers);
//! a read at a version or instant folds the store's nearest checkpoint and
//! the log after it ([`HistoryRead::fold`](crate::history::HistoryRead::fold));
//! a restore commits [`restore_update`] through the committer like any
//! client's edit.

use std::sync::Arc;

use tracing::debug_span;

use crate::error::SyncError;
use crate::history::{AuthorActivity, History, Version, VersionKind};
use crate::registry::Registry;
use crate::restore::restore_update;
use crate::store::LogSeq;
use crate::text_runs::{TextRun, text_runs};
use crate::update::ClientUpdate;
use crate::versions::{HistoryError, HistoryHandle, HistorySettings};

/// Most versions [`Registry::authors_between`] reads.
const MAX_VERSIONS_COMPARED: u32 = 1_000;

/// Most logged updates [`Registry::text_runs`] replays (about a second of
/// one core); a diff across more is answered without per-run authors.
const MAX_UPDATES_DIFFED: usize = 100_000;

/// A point in a document's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPoint {
    /// A version, by id.
    Version(i64),
    /// An instant, in milliseconds since the Unix epoch.
    At(i64),
}

impl Registry {
    /// Keeps history in `store` from now on: snapshots stop pruning the
    /// log, versions are taken. Once; later calls change nothing.
    pub fn enable_history(&self, store: Arc<dyn History>, settings: HistorySettings) {
        store.keep_log();
        let _already = self.history_slot().set(Arc::new(HistoryHandle::new(
            store,
            settings,
            self.metrics_arc(),
        )));
    }

    /// The history settings, if history is kept.
    pub fn history_settings(&self) -> Option<HistorySettings> {
        self.history_slot().get().map(|history| history.settings)
    }

    fn history(&self) -> Result<&Arc<HistoryHandle>, HistoryError> {
        self.history_slot().get().ok_or(HistoryError::Disabled)
    }

    /// The document's versions, newest first, below id `before`.
    pub async fn versions(
        &self,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Version>, HistoryError> {
        Ok(self.history()?.store.versions(name, before, limit).await?)
    }

    /// One version of the document.
    pub async fn version(&self, name: &str, id: i64) -> Result<Version, HistoryError> {
        self.history()?
            .store
            .version(name, id)
            .await?
            .ok_or(HistoryError::UnknownVersion(id))
    }

    /// Who wrote the versions after `after` up to `upto` (ids), in order
    /// of their first version; at most the 1,000 versions up to `upto`
    /// are looked at.
    pub async fn authors_between(
        &self,
        name: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<String>, HistoryError> {
        let versions = self
            .history()?
            .store
            .versions(name, upto.checked_add(1), MAX_VERSIONS_COMPARED)
            .await?;
        let mut authors: Vec<String> = Vec::new();
        for version in versions.into_iter().rev() {
            if version.id <= after {
                continue;
            }
            for author in version.authors {
                if !authors.contains(&author) {
                    authors.push(author);
                }
            }
        }
        Ok(authors)
    }

    /// Per root in `roots`, the runs of text that changed from version
    /// `from` to the later version `to`, and who made each; `None` when
    /// more than 100,000 updates lie between them.
    pub async fn text_runs(
        &self,
        name: &str,
        from: &Version,
        to: &Version,
        roots: Vec<String>,
    ) -> Result<Option<Vec<Vec<TextRun>>>, HistoryError> {
        let history = self.history()?;
        let earlier = history.store.read_at(name, from.covers).await?;
        let updates = history
            .store
            .updates_between(name, from.covers, to.covers)
            .await?;
        if updates.len() > MAX_UPDATES_DIFFED {
            return Ok(None);
        }
        // Replaying is CPU work: off the runtime.
        let runs = tokio::task::spawn_blocking(move || {
            let earlier = earlier.fold()?;
            text_runs(&earlier, &updates, &roots)
        })
        .await
        .map_err(|error| HistoryError::Store(crate::StoreError::new("diff text", error)))??;
        Ok(Some(runs))
    }

    /// Takes a version of the document as it is now.
    pub async fn create_version(
        &self,
        name: &str,
        version_name: Option<&str>,
        kind: VersionKind,
    ) -> Result<Version, HistoryError> {
        let history = self.history()?;
        let document = self.loaded(name).await?;
        history.take_version(&document, version_name, kind).await
    }

    /// The document at `point`, as one Yjs v1 update.
    pub async fn read_history(
        &self,
        name: &str,
        point: HistoryPoint,
    ) -> Result<Vec<u8>, HistoryError> {
        let history = self.history()?;
        let covers = self.position_of(history, name, point).await?;
        let started = std::time::Instant::now();
        let read = history.store.read_at(name, covers).await?;
        if read.checkpoint.is_none() && read.updates.is_empty() {
            return Err(HistoryError::NothingThen);
        }
        let state = read.fold()?;
        history
            .metrics
            .history_read_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(state)
    }

    async fn position_of(
        &self,
        history: &HistoryHandle,
        name: &str,
        point: HistoryPoint,
    ) -> Result<LogSeq, HistoryError> {
        match point {
            HistoryPoint::Version(id) => history
                .store
                .version(name, id)
                .await?
                .map(|version| version.covers)
                .ok_or(HistoryError::UnknownVersion(id)),
            HistoryPoint::At(at_ms) => {
                let retention =
                    i64::try_from(history.settings.retention.as_millis()).unwrap_or(i64::MAX);
                if at_ms < crate::unix_millis().saturating_sub(retention) {
                    return Err(HistoryError::BeforeRetention);
                }
                history
                    .store
                    .position_at(name, at_ms)
                    .await?
                    .ok_or(HistoryError::NothingThen)
            }
        }
    }

    /// Restores the document to `point` as a new forward update by
    /// `author`, committed like a client's edit, and returns the version
    /// it leaves. Restoring to content equal to the current one commits
    /// nothing (and returns the latest version if it covers the document
    /// as it is).
    pub async fn restore(
        &self,
        name: &str,
        point: HistoryPoint,
        author: Arc<str>,
    ) -> Result<Version, HistoryError> {
        let history = self.history()?;
        let target = self.read_history(name, point).await?;
        let document = self.loaded(name).await?;
        let current = document.read_state();
        match restore_update(&current.state, &target)? {
            Some(update) => {
                let update = ClientUpdate::decode(update)?.with_author(author);
                let span = debug_span!("restore", doc = %name);
                let origin = self.fresh_session_id();
                let pending = self
                    .publisher()
                    .submit_update(&document, update, origin, span)
                    .await?;
                if let Some(pending) = pending {
                    pending.wait().await.map_err(SyncError::from)?;
                }
                history.metrics.history_restores.inc();
            }
            None => {
                let latest = history.store.versions(name, None, 1).await?;
                if let Some(version) = latest.into_iter().next()
                    && version.covers == current.covers
                {
                    return Ok(version);
                }
            }
        }
        history
            .take_version(&document, None, VersionKind::Restore)
            .await
    }

    /// Brings a deleted document back as it was just before its deletion:
    /// its content inserted anew by `author` (fresh client ids, which the
    /// tombstone does not refuse) through the committer, then a `restore`
    /// version.
    pub async fn undelete(&self, name: &str, author: Arc<str>) -> Result<Version, HistoryError> {
        let history = self.history()?;
        let document = self.loaded(name).await?;
        let current = document.read_state();
        let (Some(deleted), false) = (current.deleted_position, current.has_content) else {
            return Err(HistoryError::NotDeleted);
        };
        let before = history
            .store
            .position_before(name, deleted)
            .await?
            .ok_or(HistoryError::NothingThen)?;
        let target = history.store.read_at(name, before).await?.fold()?;
        let Some(update) = restore_update(&current.state, &target)? else {
            return Err(HistoryError::NothingThen);
        };
        let update = ClientUpdate::decode(update)?.with_author(author);
        let span = debug_span!("undelete", doc = %name);
        let origin = self.fresh_session_id();
        let pending = self
            .publisher()
            .submit_update(&document, update, origin, span)
            .await?;
        if let Some(pending) = pending {
            pending.wait().await.map_err(SyncError::from)?;
        }
        history.metrics.history_restores.inc();
        history
            .take_version(&document, None, VersionKind::Restore)
            .await
    }

    /// Removes the document's history for good (see [`History::purge`]).
    pub async fn purge_history(&self, name: &str) -> Result<bool, HistoryError> {
        Ok(self.history()?.store.purge(name).await?)
    }

    /// Per author, the document's updates accepted from `from_ms` to
    /// `to_ms`.
    pub async fn activity(
        &self,
        name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<AuthorActivity>, HistoryError> {
        Ok(self.history()?.store.activity(name, from_ms, to_ms).await?)
    }
}
