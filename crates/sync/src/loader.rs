//! Reading a document's records to load it: embedded, the store's snapshot
//! and the log after it (one read); cluster, the persistence worker's topic
//! snapshot and the document's records after it, replayed from the bus.

use std::sync::Arc;

use tracing::{Instrument as _, debug_span};

use crate::bus::{MessageBus, Position, RecordKind};
use crate::config::NodeMode;
use crate::error::SyncError;
use crate::metrics::SyncMetrics;
use crate::store::{DocStore, LoggedUpdate, Snapshot, StoredDoc, Tombstone};

/// Reads documents for loading (and for reading them again).
#[derive(Debug)]
pub(crate) struct Loader {
    pub(crate) store: Arc<dyn DocStore>,
    pub(crate) bus: Arc<dyn MessageBus>,
    pub(crate) mode: NodeMode,
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
        let topic = match &self.mode {
            NodeMode::Embedded => return self.store.load(doc).await.map_err(SyncError::Load),
            NodeMode::Cluster { topic } => topic,
        };
        let snapshot = self
            .store
            .load_topic_snapshot(topic, doc)
            .await
            .map_err(SyncError::Load)?;
        let after = snapshot.as_ref().map(|snapshot| Position {
            partition: snapshot.partition,
            offset: snapshot.covers_offset,
        });
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
            snapshot: snapshot.map(|snapshot| Snapshot {
                state: snapshot.state,
                state_vector: snapshot.state_vector,
                covers_seq: snapshot.covers_offset,
                tombstone: snapshot.tombstone,
            }),
            updates,
            deletions,
        })
    }
}
