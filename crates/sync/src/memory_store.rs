//! An in-memory [`DocStore`] for tests. Same contract as the durable stores,
//! no durability.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::{
    DocStore, LogSeq, LoggedUpdate, NewUpdate, Snapshot, SnapshotWrite, StoreError, StoredDoc,
    TopicSnapshot,
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
        Ok(StoredDoc { snapshot, updates })
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(&super::MemoryStore::new()).await;
    }
}
