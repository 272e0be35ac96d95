//! An update the log does not take closes its y-websocket session (1011),
//! so the client re-sends it when it reconnects; a y-websocket session's
//! durable updates are acknowledged without any frame.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::TestServer;
use weft_gateway::GatewayConfig;
use weft_gateway::error::close_code;
use weft_sync::store::{ListedDoc, NewUpdate, SnapshotWrite};
use weft_sync::{
    EmbeddedLog, LogSeq, MemoryStore, Registry, RegistryConfig, Snapshot, SnapshotStore,
    StoreError, StoredDoc,
};

/// A memory store whose appends fail while `failing` is set.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl SnapshotStore for FlakyStore {
    async fn load_snapshot(&self, log: &str, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(log, doc).await
    }
    async fn save_snapshot(
        &self,
        log: &str,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        self.inner.save_snapshot(log, doc, snapshot).await
    }
    async fn list_documents(
        &self,
        log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<ListedDoc>, StoreError> {
        self.inner.list_documents(log, after, limit).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl EmbeddedLog for FlakyStore {
    async fn load_after(&self, doc: &str, after: LogSeq) -> Result<StoredDoc, StoreError> {
        self.inner.load_after(doc, after).await
    }
    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new("append updates", "disk full"));
        }
        self.inner.append(updates).await
    }
    async fn delete_document(
        &self,
        doc: &str,
        tombstone_state_vector: &[u8],
        deleted_at_ms: i64,
    ) -> Result<LogSeq, StoreError> {
        self.inner
            .delete_document(doc, tombstone_state_vector, deleted_at_ms)
            .await
    }
    async fn save_revocation(
        &self,
        id: &str,
        record: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner.save_revocation(id, record, expires_at).await
    }
    async fn load_revocations(&self, now: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.load_revocations(now).await
    }
}

#[tokio::test]
async fn a_durable_update_is_broadcast_and_a_failed_one_closes_its_session() {
    let store = Arc::new(FlakyStore::default());
    let registry = Registry::embedded(store.clone(), RegistryConfig::default());
    let server = TestServer::with_registry(registry, GatewayConfig::default()).await;
    let mut writer = server.join("/flaky", 1).await;
    let mut reader = server.join("/flaky", 2).await;

    writer.append("kept").await;
    reader.apply_next_update().await;
    assert_eq!(reader.text(), "kept");

    store.failing.store(true, Ordering::SeqCst);
    writer.append(" lost").await;
    assert_eq!(
        writer.client.expect_close().await,
        close_code::INTERNAL_ERROR,
        "an update the log refused closes its session"
    );
    let loaded = store.inner.load_after("flaky", 0).await.expect("load");
    assert_eq!(loaded.updates.len(), 1, "only the first update is stored");
}
