//! An in-memory [`DocStore`] for tests. Same contract as the durable stores,
//! no durability.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::{
    DocStore, EMPTY_STATE_VECTOR_V1, EMPTY_UPDATE_V1, ListedDoc, LogSeq, LoggedUpdate, NewUpdate,
    Snapshot, SnapshotWrite, StoreError, StoredDoc, Tombstone, TopicSnapshot,
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
    snapshots: HashMap<String, Snapshot>,
    topic_snapshots: HashMap<(String, String), TopicSnapshot>,
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

#[async_trait]
impl DocStore for MemoryStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        let state = self.inner.lock();
        let snapshot = state.snapshots.get(doc).cloned();
        let after = snapshot.as_ref().map_or(0, |snapshot| snapshot.covers_seq);
        let updates = state
            .log
            .iter()
            .filter(|(seq, name, _)| name == doc && *seq > after)
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

    async fn save_snapshot(
        &self,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        let mut state = self.inner.lock();
        if let Some(existing) = state.snapshots.get(doc)
            && existing.covers_seq >= snapshot.covers_seq
        {
            return Ok(SnapshotWrite::Superseded);
        }
        state.snapshots.insert(doc.to_owned(), snapshot.clone());
        state
            .log
            .retain(|(seq, name, _)| name != doc || *seq > snapshot.covers_seq);
        Ok(SnapshotWrite::Written)
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
            doc.to_owned(),
            Snapshot {
                state: EMPTY_UPDATE_V1.to_vec(),
                state_vector: EMPTY_STATE_VECTOR_V1.to_vec(),
                covers_seq: seq,
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

    async fn list_documents(
        &self,
        topic: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError> {
        let state = self.inner.lock();
        // (name, snapshot bytes): snapshots first, then names only logged.
        let mut candidates: Vec<(&str, usize)> = Vec::new();
        match topic {
            None => {
                for (name, snapshot) in &state.snapshots {
                    if !is_deletion(snapshot.covers_seq, snapshot.tombstone.as_ref()) {
                        candidates.push((name, snapshot.state.len()));
                    }
                }
                for (_, name, _) in &state.log {
                    candidates.push((name, 0));
                }
            }
            Some(topic) => {
                for ((snapshot_topic, name), snapshot) in &state.topic_snapshots {
                    if snapshot_topic == topic
                        && !is_deletion(snapshot.covers_offset, snapshot.tombstone.as_ref())
                    {
                        candidates.push((name, snapshot.state.len()));
                    }
                }
            }
        }
        let mut listed: std::collections::BTreeMap<String, ListedDoc> = Default::default();
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

    async fn load_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
    ) -> Result<Option<TopicSnapshot>, StoreError> {
        let key = (topic.to_owned(), doc.to_owned());
        Ok(self.inner.lock().topic_snapshots.get(&key).cloned())
    }

    async fn save_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
        snapshot: &TopicSnapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        let mut state = self.inner.lock();
        let key = (topic.to_owned(), doc.to_owned());
        if let Some(existing) = state.topic_snapshots.get(&key)
            && existing.partition == snapshot.partition
            && existing.covers_offset >= snapshot.covers_offset
        {
            return Ok(SnapshotWrite::Superseded);
        }
        state.topic_snapshots.insert(key, snapshot.clone());
        Ok(SnapshotWrite::Written)
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Whether a snapshot is a deletion with nothing written after it.
fn is_deletion(covers: LogSeq, tombstone: Option<&Tombstone>) -> bool {
    tombstone.is_some_and(|tombstone| tombstone.position >= covers)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(&super::MemoryStore::new()).await;
    }
}
