//! Reading a document's records to load it, the same for every log: the
//! snapshot folded from the bus's log (by whoever compacts it: an embedded
//! node itself, or the persistence worker), then the document's records
//! after the position it covers, replayed from the bus.

use std::sync::Arc;

use tracing::{Instrument as _, debug_span};

use crate::bus::{MessageBus, RecordKind};
use crate::error::SyncError;
use crate::metrics::SyncMetrics;
use crate::store::{LoggedUpdate, SnapshotStore, StoredDoc, Tombstone};

/// Reads documents for loading (and for reading them again).
#[derive(Debug)]
pub(crate) struct Loader {
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) bus: Arc<dyn MessageBus>,
    pub(crate) metrics: Arc<SyncMetrics>,
}

impl Loader {
    /// What a loading document starts from, timed as a load.
    pub(crate) async fn load(&self, doc: &str) -> Result<StoredDoc, SyncError> {
        let started = std::time::Instant::now();
        let loaded = self
            .read(doc)
            .instrument(debug_span!("load", doc = %doc))
            .await;
        self.metrics
            .load_seconds
            .observe(started.elapsed().as_secs_f64());
        loaded
    }

    /// What a loading document starts from.
    pub(crate) async fn read(&self, doc: &str) -> Result<StoredDoc, SyncError> {
        let snapshot = self
            .store
            .load_snapshot(self.bus.log_id(), doc)
            .await
            .map_err(SyncError::Load)?;
        let after = snapshot.as_ref().map(|snapshot| snapshot.covers);
        let replayed = self
            .bus
            .replay(doc, after)
            .await
            .map_err(SyncError::Replay)?;
        let mut updates = Vec::with_capacity(replayed.len());
        let mut deletions = Vec::new();
        for record in replayed {
            match record.kind {
                RecordKind::Delete => deletions.push(Tombstone {
                    state_vector: record.update.to_vec(),
                    position: record.position.offset,
                    deleted_at_ms: 0,
                }),
                _ => updates.push(LoggedUpdate {
                    seq: record.position.offset,
                    update: record.update.to_vec(),
                }),
            }
        }
        Ok(StoredDoc {
            snapshot,
            updates,
            deletions,
        })
    }
}
