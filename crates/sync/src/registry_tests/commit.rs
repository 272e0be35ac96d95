//! The commit path: commit, broadcast, refusals, failures, shutdown.

use super::*;

#[tokio::test(start_paused = true)]
async fn update_is_committed_then_broadcast_to_others_only() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let mut alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;

    let ack = alice
        .session
        .submit_update(text_update(1, "hi"))
        .await
        .unwrap()
        .expect("not empty");
    let seq = ack.wait().await.expect("committed");

    assert_eq!(
        store.load("doc").await.unwrap().updates.last().unwrap().seq,
        seq
    );
    let frame = bob.frames.try_recv().expect("bob receives the update");
    let Ok(Message::Sync(SyncMessage::Update(update))) = decode_frame(&frame) else {
        panic!("expected an update frame");
    };
    assert_eq!(text_of(&[update]), "hi");
    assert!(alice.frames.try_recv().is_err(), "no echo to the origin");
    assert_eq!(server_text(&alice), "hi");
}

#[tokio::test(start_paused = true)]
async fn malformed_update_is_refused_and_nothing_changes() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let mut alice = join(&registry, "doc", 16).await;
    alice
        .session
        .submit_update(text_update(1, "ok"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let before = store.log_len();

    let refused = alice.session.submit_update(vec![0xff, 0xff, 0xff]).await;
    assert!(matches!(refused, Err(crate::SyncError::InvalidUpdate(_))));
    assert_eq!(store.log_len(), before, "nothing was logged");
    assert_eq!(server_text(&alice), "ok");
    assert!(alice.frames.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn empty_update_needs_no_commit() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    let empty = Doc::new()
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(alice.session.submit_update(empty).await.unwrap().is_none());
    assert_eq!(store.log_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_commits_queued_updates_and_snapshots() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    let ack = alice
        .session
        .submit_update(text_update(1, "last"))
        .await
        .unwrap()
        .unwrap();
    registry.shutdown().await;
    ack.wait()
        .await
        .expect("queued update committed during shutdown");
    let stored = store.load("doc").await.unwrap();
    assert!(stored.snapshot.is_some());
    assert!(stored.updates.is_empty());
    drop(alice);
}

/// A store whose appends fail while `failing` is set.
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
    ) -> Result<Vec<crate::store::ListedDoc>, StoreError> {
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

#[tokio::test(start_paused = true)]
async fn a_failed_commit_is_reported_and_nothing_is_applied() {
    let store = Arc::new(FlakyStore::default());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    store.failing.store(true, Ordering::SeqCst);
    let failed = alice
        .session
        .submit_update(text_update(1, "lost?"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await;
    assert!(matches!(failed, Err(PublishError::Failed(_))));
    assert_eq!(server_text(&alice), "", "not applied");
    assert!(bob.frames.try_recv().is_err(), "not broadcast");
}

/// Inputs the `apply_update` fuzz target found. Each must be refused or
/// applied without a panic and without a large allocation.
#[tokio::test(start_paused = true)]
async fn fuzz_regressions_are_refused_or_harmless() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;

    // Declares 2^28 clients in five bytes: yrs would reserve a hash table
    // for all of them before noticing the input is short.
    let bomb = vec![0x80, 0x80, 0x80, 0x80, 0x01];
    let refused = alice.session.submit_update(bomb).await;
    assert!(matches!(
        refused,
        Err(crate::SyncError::InvalidUpdate(
            crate::InvalidUpdate::Implausible(_)
        ))
    ));
    let bomb_with_tail = hex("ffffffffffffff0900616300");
    assert!(alice.session.submit_update(bomb_with_tail).await.is_err());

    // A delete range whose clock + length overflows u32: decodes, must not
    // panic when applied (yrs wraps it), and the document stays usable.
    let overflow = vec![0x00, 0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    if let Ok(Some(ack)) = alice.session.submit_update(overflow).await {
        ack.wait().await.expect("committed");
    }
    let longer =
        hex("01010762610002010414000074ff1400ffffffffffffffffffff010706c4070407050261620107010132");
    if let Ok(Some(ack)) = alice.session.submit_update(longer).await {
        ack.wait().await.expect("committed");
    }
    alice
        .session
        .submit_update(text_update(7, "still fine"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(server_text(&alice).contains("still fine"));
}

fn commit_seconds() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new([0.001, 0.01])
}

#[tokio::test(start_paused = true)]
async fn an_update_submitted_to_a_window_is_committed_broadcast_and_frees_its_place() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    let window = crate::AckWindow::new(1, commit_seconds());

    let submitted = alice
        .session
        .submit_update_to(text_update(1, "hi"), &window)
        .await
        .expect("accepted");
    assert!(submitted);
    assert!(!window.has_room(), "its place is taken until it commits");
    let frame = tokio::time::timeout(Duration::from_secs(5), bob.frames.recv())
        .await
        .expect("bob receives the update in time")
        .expect("bob's outbox is open");
    let Ok(Message::Sync(SyncMessage::Update(update))) = decode_frame(&frame) else {
        panic!("expected an update frame");
    };
    assert_eq!(text_of(&[update]), "hi");
    assert!(window.has_room(), "the place is free once it is durable");
    assert_eq!(store.load("doc").await.unwrap().updates.len(), 1);
    let not_failed = tokio::time::timeout(Duration::from_secs(1), window.failed()).await;
    assert!(not_failed.is_err(), "a success trips no failure");
}

#[tokio::test(start_paused = true)]
async fn a_window_reports_a_failed_commit_and_nothing_is_applied() {
    let store = Arc::new(FlakyStore::default());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    let window = crate::AckWindow::new(4, commit_seconds());
    store.failing.store(true, Ordering::SeqCst);
    let submitted = alice
        .session
        .submit_update_to(text_update(1, "lost?"), &window)
        .await
        .expect("accepted at the door");
    assert!(submitted);
    let failure = tokio::time::timeout(Duration::from_secs(5), window.failed())
        .await
        .expect("the failure is reported");
    assert!(matches!(failure, PublishError::Failed(_)));
    assert_eq!(server_text(&alice), "", "not applied");
    assert!(bob.frames.try_recv().is_err(), "not broadcast");
}
