//! An in-memory [`EmbeddedLog`] (and so [`SnapshotStore`]) for tests. Same
//! contract as the durable stores, no durability.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::{
    EMBEDDED_LOG, EMPTY_STATE_VECTOR_V1, EMPTY_UPDATE_V1, EmbeddedLog, ListedDoc, LogSeq,
    LoggedUpdate, NewUpdate, Position, Snapshot, SnapshotStore, SnapshotWrite, StoreError,
    StoredDoc, Tombstone,
};

/// Keeps the log and snapshots in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    next_seq: LogSeq,
    log: Vec<(LogSeq, String, Vec<u8>)>,
    /// Per (log id, document).
    snapshots: HashMap<(String, String), Snapshot>,
    /// Revocation records: id, record, expiry; in the order stored.
    revocations: Vec<(String, Vec<u8>, i64)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of log entries still held (after pruning), for tests.
    pub fn log_len(&self) -> usize {
        self.inner.lock().log.len()
    }
}

fn key(log: &str, doc: &str) -> (String, String) {
    (log.to_owned(), doc.to_owned())
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn load_snapshot(&self, log: &str, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.inner.lock().snapshots.get(&key(log, doc)).cloned())
    }

    async fn save_snapshot(
        &self,
        log: &str,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        let mut state = self.inner.lock();
        let key = key(log, doc);
        if let Some(existing) = state.snapshots.get(&key)
            && existing.covers.partition == snapshot.covers.partition
            && existing.covers.offset >= snapshot.covers.offset
        {
            return Ok(SnapshotWrite::Superseded);
        }
        state.snapshots.insert(key, snapshot.clone());
        if log == EMBEDDED_LOG {
            state
                .log
                .retain(|(seq, name, _)| name != doc || *seq > snapshot.covers.offset);
        }
        Ok(SnapshotWrite::Written)
    }

    async fn list_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError> {
        let state = self.inner.lock();
        // (name, snapshot bytes): snapshots first, then names only logged.
        let mut candidates: Vec<(&str, usize)> = Vec::new();
        for ((snapshot_log, name), snapshot) in &state.snapshots {
            if snapshot_log == log && !is_deletion(snapshot) {
                candidates.push((name, snapshot.state.len()));
            }
        }
        if log == EMBEDDED_LOG {
            for (_, name, _) in &state.log {
                candidates.push((name, 0));
            }
        }
        let mut listed: BTreeMap<String, ListedDoc> = BTreeMap::new();
        for (name, bytes) in candidates {
            if name <= after || listed.contains_key(name) {
                continue;
            }
            listed.insert(
                name.to_owned(),
                ListedDoc {
                    name: name.to_owned(),
                    snapshot_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                    snapshot_at_ms: None,
                },
            );
        }
        Ok(listed
            .into_values()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl EmbeddedLog for MemoryStore {
    async fn load_after(&self, doc: &str, after: LogSeq) -> Result<StoredDoc, StoreError> {
        let state = self.inner.lock();
        let snapshot = state
            .snapshots
            .get(&key(EMBEDDED_LOG, doc))
            .filter(|snapshot| snapshot.covers.offset > after)
            .cloned();
        let log_after = snapshot
            .as_ref()
            .map_or(after, |snapshot| snapshot.covers.offset);
        let updates = state
            .log
            .iter()
            .filter(|(seq, name, _)| name == doc && *seq > log_after)
            .map(|(seq, _, update)| LoggedUpdate {
                seq: *seq,
                update: update.clone(),
            })
            .collect();
        Ok(StoredDoc {
            snapshot,
            updates,
            deletions: Vec::new(),
        })
    }

    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        let mut state = self.inner.lock();
        let mut seqs = Vec::with_capacity(updates.len());
        for new in updates {
            state.next_seq += 1;
            let seq = state.next_seq;
            state
                .log
                .push((seq, new.doc.to_string(), new.update.to_vec()));
            seqs.push(seq);
        }
        Ok(seqs)
    }

    async fn delete_document(
        &self,
        doc: &str,
        tombstone_state_vector: &[u8],
        deleted_at_ms: i64,
    ) -> Result<LogSeq, StoreError> {
        let mut state = self.inner.lock();
        state.next_seq += 1;
        let seq = state.next_seq;
        state.snapshots.insert(
            key(EMBEDDED_LOG, doc),
            Snapshot {
                state: EMPTY_UPDATE_V1.to_vec(),
                state_vector: EMPTY_STATE_VECTOR_V1.to_vec(),
                covers: Position::embedded(seq),
                tombstone: Some(Tombstone {
                    state_vector: tombstone_state_vector.to_vec(),
                    position: seq,
                    deleted_at_ms,
                }),
            },
        );
        state
            .log
            .retain(|(logged, name, _)| name != doc || *logged > seq);
        Ok(seq)
    }

    async fn save_revocation(
        &self,
        id: &str,
        record: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut state = self.inner.lock();
        if !state.revocations.iter().any(|(known, _, _)| known == id) {
            state
                .revocations
                .push((id.to_owned(), record.to_vec(), expires_at));
        }
        Ok(())
    }

    async fn load_revocations(&self, now: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut state = self.inner.lock();
        state
            .revocations
            .retain(|(_, _, expires_at)| *expires_at > now);
        Ok(state
            .revocations
            .iter()
            .map(|(_, record, _)| record.clone())
            .collect())
    }
}

/// Whether a snapshot is a deletion with nothing written after it.
fn is_deletion(snapshot: &Snapshot) -> bool {
    snapshot
        .tombstone
        .as_ref()
        .is_some_and(|tombstone| tombstone.position >= snapshot.covers.offset)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(&super::MemoryStore::new()).await;
    }
}
