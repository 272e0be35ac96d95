//! Registry behaviour against the in-memory store, in paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weft_protocol::{Message, SyncMessage, decode_frame};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::store::{NewUpdate, SnapshotWrite};
use crate::{
    DocStore, LogSeq, MemoryStore, Outbound, PublishError, Registry, RegistryConfig, Session,
    SessionOutbox, Snapshot, StoreError, StoredDoc,
};

struct Client {
    session: Session,
    frames: mpsc::Receiver<Outbound>,
    overflowed: CancellationToken,
    deleted: CancellationToken,
}

async fn join(registry: &Registry, doc: &str, queue: usize) -> Client {
    let (frames, receiver) = mpsc::channel(queue);
    let overflowed = CancellationToken::new();
    let deleted = CancellationToken::new();
    let session = registry
        .join(
            doc,
            SessionOutbox {
                frames,
                overflowed: overflowed.clone(),
                deleted: deleted.clone(),
            },
        )
        .await
        .expect("join");
    Client {
        session,
        frames: receiver,
        overflowed,
        deleted,
    }
}

/// An update inserting `text` at the start of the root text "t" of a fresh
/// doc with the given client id.
fn text_update(client_id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client_id);
    let root = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// The text of root "t" after applying every update.
fn text_of(updates: &[Vec<u8>]) -> String {
    let doc = Doc::new();
    let root = doc.get_or_insert_text("t");
    for update in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    root.get_string(&doc.transact())
}

/// The whole document as seen by a client answering the server's greeting.
fn server_text(client: &Client) -> String {
    let frame = client
        .session
        .answer_sync_step1(&StateVector::default())
        .unwrap();
    let Ok(Message::Sync(SyncMessage::SyncStep2(update))) = decode_frame(&frame) else {
        panic!("not a SyncStep2");
    };
    text_of(&[update])
}

fn test_config() -> RegistryConfig {
    RegistryConfig {
        unload_grace: Duration::from_secs(5),
        ..RegistryConfig::default()
    }
}

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
async fn load_is_snapshot_plus_the_log_after_it() {
    let store = Arc::new(MemoryStore::new());
    let first = text_update(1, "a");
    let second = text_update(2, "b");
    let seqs = store
        .append(&[
            NewUpdate {
                doc: "doc".into(),
                update: first.clone().into(),
            },
            NewUpdate {
                doc: "doc".into(),
                update: second.into(),
            },
        ])
        .await
        .unwrap();
    let snapshot = Snapshot {
        state: first,
        state_vector: vec![0],
        covers_seq: seqs[0],
        tombstone: None,
    };
    assert_eq!(
        store.save_snapshot("doc", &snapshot).await.unwrap(),
        SnapshotWrite::Written
    );

    let registry = Registry::embedded(store.clone(), test_config());
    let client = join(&registry, "doc", 16).await;
    let text = server_text(&client);
    assert_eq!(
        text.len(),
        2,
        "both the snapshot and the logged update: {text}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_document_is_snapshotted_then_unloaded_after_the_grace() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    alice
        .session
        .submit_update(text_update(1, "kept"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    drop(alice);
    assert_eq!(
        registry.loaded_documents(),
        1,
        "still loaded during the grace"
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(registry.loaded_documents(), 0, "unloaded after the grace");
    let stored = store.load("doc").await.unwrap();
    assert!(stored.snapshot.is_some(), "snapshotted before unloading");
    assert!(stored.updates.is_empty(), "log compacted");

    let again = join(&registry, "doc", 16).await;
    assert_eq!(server_text(&again), "kept");
}

#[tokio::test(start_paused = true)]
async fn a_session_rejoining_during_the_grace_keeps_the_document() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    drop(join(&registry, "doc", 16).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _back = join(&registry, "doc", 16).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(registry.loaded_documents(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_send_queue_disconnects_the_session_instead_of_dropping() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let writer = join(&registry, "doc", 16).await;
    let slow = join(&registry, "doc", 1).await;
    for id in 1..=3 {
        writer
            .session
            .submit_update(text_update(id, "x"))
            .await
            .unwrap()
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    assert!(
        slow.overflowed.is_cancelled(),
        "the slow session is told to disconnect"
    );
    assert!(!writer.overflowed.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn awareness_is_relayed_and_removed_when_its_session_leaves() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    let update = weft_protocol::AwarenessUpdate {
        clients: [(
            yrs::block::ClientID::new(42),
            weft_protocol::AwarenessUpdateEntry {
                clock: 1,
                json: Arc::from(r#"{"user":"alice"}"#),
            },
        )]
        .into(),
    };
    alice.session.apply_awareness(update);
    let Ok(Message::Awareness(relayed)) = decode_frame(&bob.frames.try_recv().unwrap()) else {
        panic!("expected awareness");
    };
    assert_eq!(relayed.clients.len(), 1);
    drop(alice);
    let Ok(Message::Awareness(removal)) = decode_frame(&bob.frames.try_recv().unwrap()) else {
        panic!("expected awareness removal");
    };
    let entry = &removal.clients[&yrs::block::ClientID::new(42)];
    assert_eq!(entry.json.as_ref(), "null");
    assert_eq!(entry.clock, 2);
    assert!(
        bob.session.awareness_frame().is_none(),
        "nobody present any more"
    );
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
impl DocStore for FlakyStore {
    async fn load(&self, doc: &str) -> Result<StoredDoc, StoreError> {
        self.inner.load(doc).await
    }
    async fn append(&self, updates: &[NewUpdate]) -> Result<Vec<LogSeq>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new("append updates", "disk full"));
        }
        self.inner.append(updates).await
    }
    async fn save_snapshot(
        &self,
        doc: &str,
        snapshot: &Snapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        self.inner.save_snapshot(doc, snapshot).await
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
    async fn list_documents(
        &self,
        topic: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<crate::store::ListedDoc>, StoreError> {
        self.inner.list_documents(topic, after, limit).await
    }
    async fn load_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
    ) -> Result<Option<crate::store::TopicSnapshot>, StoreError> {
        self.inner.load_topic_snapshot(topic, doc).await
    }
    async fn save_topic_snapshot(
        &self,
        topic: &str,
        doc: &str,
        snapshot: &crate::store::TopicSnapshot,
    ) -> Result<SnapshotWrite, StoreError> {
        self.inner.save_topic_snapshot(topic, doc, snapshot).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
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

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn past_max_documents_a_new_document_is_refused_until_one_unloads() {
    let store = Arc::new(MemoryStore::new());
    let config = RegistryConfig {
        max_documents: 2,
        ..test_config()
    };
    let registry = Registry::embedded(store, config);
    let first = join(&registry, "one", 16).await;
    let _second = join(&registry, "two", 16).await;
    let (frames, _receiver) = mpsc::channel(16);
    let refused = registry
        .join(
            "three",
            SessionOutbox {
                frames,
                overflowed: CancellationToken::new(),
                deleted: CancellationToken::new(),
            },
        )
        .await;
    assert!(matches!(refused, Err(crate::SyncError::TooManyDocuments)));
    let _again = join(&registry, "one", 16).await;
    drop(first);
    drop(_again);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _third = join(&registry, "three", 16).await;
}

fn cluster_config() -> RegistryConfig {
    RegistryConfig {
        mode: crate::NodeMode::Cluster {
            topic: Arc::from("test-topic"),
        },
        heartbeat_interval: Duration::from_millis(100),
        peer_timeout: Duration::from_millis(500),
        ..test_config()
    }
}

/// Receives frames until one decodes to a message `pick` accepts.
async fn next_message<T>(client: &mut Client, pick: impl Fn(Message) -> Option<T>) -> T {
    for _ in 0..100 {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.frames.recv())
            .await
            .expect("a frame in time")
            .expect("session open");
        if let Some(found) = decode_frame(&frame).ok().and_then(&pick) {
            return found;
        }
    }
    panic!("no matching frame among 100");
}

#[tokio::test(start_paused = true)]
async fn two_nodes_on_one_log_share_updates_loads_and_presence() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = Registry::start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = Registry::start(store.clone(), Arc::new(bus_b), cluster_config());

    // Written on node a before node b ever loaded the document: b replays it.
    let alice = join(&node_a, "doc", 64).await;
    alice
        .session
        .submit_update(text_update(1, "early "))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let mut bob = join(&node_b, "doc", 64).await;
    assert_eq!(server_text(&bob), "early ", "node b loaded by replay");

    // Live: a's update reaches b's session.
    alice
        .session
        .submit_update(text_update(2, "live"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let update = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[update]), "live");

    // Presence crosses, and goes when node a falls silent.
    let presence = weft_protocol::AwarenessUpdate {
        clients: [(
            yrs::block::ClientID::new(7),
            weft_protocol::AwarenessUpdateEntry {
                clock: 1,
                json: Arc::from(r#"{"user":"alice"}"#),
            },
        )]
        .into(),
    };
    alice.session.apply_awareness(presence);
    let seen = next_message(&mut bob, |message| match message {
        Message::Awareness(update) => Some(update),
        _ => None,
    })
    .await;
    assert!(seen.clients.contains_key(&yrs::block::ClientID::new(7)));
    node_a.shutdown().await;
    // A crash: no goodbye from alice's session, only silence.
    std::mem::forget(alice);
    let removed = next_message(&mut bob, |message| match message {
        Message::Awareness(update) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(
        removed.clients[&yrs::block::ClientID::new(7)].json.as_ref(),
        "null",
        "a silent node's clients are removed"
    );
    assert!(bob.session.awareness_frame().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_cluster_node_loads_the_topic_snapshot_then_the_records_after_it() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = Registry::start(store.clone(), Arc::new(bus_a), cluster_config());
    let alice = join(&node_a, "doc", 64).await;
    let mut positions = Vec::new();
    for (client, text) in [(1, "one "), (2, "two ")] {
        let ack = alice
            .session
            .submit_update(text_update(client, text))
            .await
            .unwrap()
            .unwrap();
        positions.push(ack.wait().await.unwrap());
    }
    // The worker folded the first record, plus something only the snapshot
    // holds (so the test can tell the snapshot was read).
    let folded = Doc::with_client_id(9);
    for update in [text_update(1, "one "), text_update(3, "snap ")] {
        folded
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    }
    let state = folded
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    store
        .save_topic_snapshot(
            "test-topic",
            "doc",
            &crate::store::TopicSnapshot {
                state,
                state_vector: Vec::new(),
                partition: 0,
                covers_offset: positions[0],
                tombstone: None,
            },
        )
        .await
        .unwrap();

    let node_b = Registry::start(store.clone(), Arc::new(bus_b), cluster_config());
    let bob = join(&node_b, "doc", 64).await;
    let text = server_text(&bob);
    assert!(text.contains("snap "), "the snapshot was loaded: {text:?}");
    assert!(
        text.contains("two "),
        "the record after it was replayed: {text:?}"
    );
    assert!(text.contains("one "), "{text:?}");
    assert_eq!(text.len(), "one two snap ".len(), "nothing twice: {text:?}");
}

/// The state vector of a client holding every update given.
fn state_of(updates: &[&[u8]]) -> StateVector {
    let doc = Doc::new();
    for update in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    doc.transact().state_vector()
}

fn read_text(read: &crate::DocumentRead) -> String {
    text_of(std::slice::from_ref(&read.state))
}

#[tokio::test(start_paused = true)]
async fn deletion_closes_sessions_refuses_old_history_and_survives_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 64).await;
    let old = text_update(1, "secret");
    alice
        .session
        .submit_update(old.clone())
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let read = registry.read("doc").await.unwrap();
    assert!(read.has_content);
    assert_eq!(read_text(&read), "secret");
    assert_eq!(read.deleted_at_ms, None);
    assert_eq!(
        registry.delete("never-written").await.unwrap(),
        crate::DeleteOutcome::NotFound
    );

    assert_eq!(
        registry.delete("doc").await.unwrap(),
        crate::DeleteOutcome::Deleted
    );
    assert!(alice.deleted.is_cancelled(), "alice's session is told");
    let read = registry.read("doc").await.unwrap();
    assert!(!read.has_content, "nothing is left");
    assert!(read.deleted_at_ms.is_some());
    assert!(
        registry.list("", 100).await.unwrap().is_empty(),
        "a deleted document is not listed"
    );

    // A client that still holds the old history is refused, by its state
    // and by its updates; a fresh one starts the name again.
    let bob = join(&registry, "doc", 64).await;
    let old_state = state_of(&[&old]);
    assert!(matches!(
        bob.session.answer_sync_step1(&old_state),
        Err(crate::SyncError::Deleted)
    ));
    assert!(matches!(
        bob.session.submit_update(old.clone()).await,
        Err(crate::SyncError::Deleted)
    ));
    assert!(matches!(
        registry.apply_update("doc", old.clone()).await,
        Err(crate::SyncError::Deleted)
    ));
    bob.session
        .submit_update(text_update(2, "fresh"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    registry
        .apply_update("doc", text_update(3, "api "))
        .await
        .unwrap();
    assert_eq!(read_text(&registry.read("doc").await.unwrap()), "freshapi ");
    assert_eq!(
        registry
            .list("", 100)
            .await
            .unwrap()
            .iter()
            .map(|doc| doc.name.as_str())
            .collect::<Vec<_>>(),
        vec!["doc"]
    );
    drop(bob);
    registry.shutdown().await;

    // A restart: the tombstone is in the store.
    let restarted = Registry::embedded(store.clone(), test_config());
    assert_eq!(
        read_text(&restarted.read("doc").await.unwrap()),
        "freshapi "
    );
    let carol = join(&restarted, "doc", 64).await;
    assert!(matches!(
        carol.session.answer_sync_step1(&old_state),
        Err(crate::SyncError::Deleted)
    ));
    assert!(
        carol
            .session
            .answer_sync_step1(&StateVector::default())
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_deletion_on_one_node_reaches_the_others() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = Registry::start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = Registry::start(store.clone(), Arc::new(bus_b), cluster_config());
    let old = text_update(1, "old");
    node_a.apply_update("doc", old.clone()).await.unwrap();
    let bob = join(&node_b, "doc", 64).await;
    assert_eq!(server_text(&bob), "old");

    assert_eq!(
        node_a.delete("doc").await.unwrap(),
        crate::DeleteOutcome::Deleted
    );
    tokio::time::timeout(Duration::from_secs(5), bob.deleted.cancelled())
        .await
        .expect("node b closes its session");
    let read = node_b.read("doc").await.unwrap();
    assert!(!read.has_content, "node b reads it empty");
    let carol = join(&node_b, "doc", 64).await;
    assert!(matches!(
        carol.session.answer_sync_step1(&state_of(&[&old])),
        Err(crate::SyncError::Deleted)
    ));
}

/// The text (root "t") one broadcast frame carries, its characters sorted:
/// the tests' updates are independent inserts, so order is not theirs.
fn frame_chars(frame: &Outbound) -> String {
    let Ok(Message::Sync(SyncMessage::Update(update))) = decode_frame(frame) else {
        panic!("expected an update frame");
    };
    let mut chars: Vec<char> = text_of(&[update]).chars().collect();
    chars.sort_unstable();
    chars.into_iter().collect()
}

async fn commit(client: &Client, update: Vec<u8>) {
    let ack = client.session.submit_update(update).await.unwrap();
    ack.expect("not empty").wait().await.expect("committed");
}

#[tokio::test(start_paused = true)]
async fn a_busy_document_batches_its_broadcasts_and_skips_each_origin() {
    let config = RegistryConfig {
        broadcast_batching: crate::BroadcastBatching {
            window: Duration::from_millis(50),
            min_sessions: 3,
        },
        ..test_config()
    };
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), config);
    let mut alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;

    // Two sessions: under the threshold, every update goes out at once.
    commit(&alice, text_update(1, "x")).await;
    commit(&alice, text_update(2, "y")).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "x");
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "y");

    let mut carol = join(&registry, "doc", 16).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    // The first update after a quiet window goes out at once...
    commit(&alice, text_update(3, "a")).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "a");
    assert_eq!(frame_chars(&carol.frames.try_recv().unwrap()), "a");
    // ...the next ones within the window are held...
    commit(&alice, text_update(4, "b")).await;
    commit(&bob, text_update(5, "c")).await;
    assert!(
        carol.frames.try_recv().is_err(),
        "held until the window ends"
    );
    assert!(bob.frames.try_recv().is_err());
    assert!(alice.frames.try_recv().is_err());

    // ...and then sent as one merged update, without each origin's own.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(frame_chars(&carol.frames.try_recv().unwrap()), "bc");
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "b");
    assert_eq!(frame_chars(&alice.frames.try_recv().unwrap()), "c");
    for client in [&mut alice, &mut bob, &mut carol] {
        assert!(client.frames.try_recv().is_err(), "one frame per window");
    }
    let mut all: Vec<char> = server_text(&carol).chars().collect();
    all.sort_unstable();
    assert_eq!(all.into_iter().collect::<String>(), "abcxy");
}

/// A bus that takes several batches at once (as Kafka does): it records
/// what it was handed when a publish is first polled, then holds each batch
/// until the test lets one through, then appends it to a real log.
#[derive(Debug)]
struct GatedBus {
    inner: crate::LogBus,
    handed: tokio::sync::watch::Sender<Vec<Vec<u8>>>,
    gate: tokio::sync::Semaphore,
}

impl GatedBus {
    /// Waits until the bus was handed `count` records.
    async fn handed(&self, count: usize) {
        let mut handed = self.handed.subscribe();
        tokio::time::timeout(
            Duration::from_secs(5),
            handed.wait_for(|records| records.len() >= count),
        )
        .await
        .unwrap_or_else(|_| panic!("the bus was not handed {count} records"))
        .expect("the bus is alive");
    }
}

#[async_trait]
impl crate::MessageBus for GatedBus {
    fn origin(&self) -> &crate::Origin {
        self.inner.origin()
    }

    async fn publish(
        &self,
        records: &[crate::Record],
    ) -> Vec<Result<crate::Position, crate::BusError>> {
        self.handed.send_modify(|handed| {
            handed.extend(records.iter().map(|record| record.payload.to_vec()));
        });
        let Ok(permit) = self.gate.acquire().await else {
            return records
                .iter()
                .map(|_| Err(crate::BusError::NotConnected))
                .collect();
        };
        permit.forget();
        self.inner.publish(records).await
    }

    fn publish_depth(&self) -> usize {
        4
    }

    fn publish_ephemeral(&self, record: crate::Record) {
        self.inner.publish_ephemeral(record);
    }

    async fn subscribe(
        &self,
        interest: Arc<dyn crate::Interest>,
    ) -> Result<mpsc::Receiver<crate::Delivery>, crate::BusError> {
        self.inner.subscribe(interest).await
    }

    async fn replay(
        &self,
        doc: &str,
        after: Option<crate::Position>,
    ) -> Result<Vec<crate::Replayed>, crate::BusError> {
        self.inner.replay(doc, after).await
    }

    async fn check(&self) -> Result<(), crate::BusError> {
        self.inner.check().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_pipelined_bus_gets_the_next_batch_before_the_first_is_acknowledged() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus = Arc::new(GatedBus {
        inner: crate::LogBus::new(store.clone(), "a"),
        handed: tokio::sync::watch::Sender::new(Vec::new()),
        gate: tokio::sync::Semaphore::new(0),
    });
    let node = Registry::start(store.clone(), bus.clone(), cluster_config());
    let alice = join(&node, "doc", 64).await;
    let mut bob = join(&node, "doc", 64).await;

    let first = text_update(1, "a");
    let second = text_update(2, "b");
    let first_ack = alice
        .session
        .submit_update(first.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(1).await;
    let second_ack = alice
        .session
        .submit_update(second.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(2).await;
    assert_eq!(
        *bus.handed.borrow(),
        vec![first.clone(), second.clone()],
        "handed in order, the second before the first was acknowledged"
    );
    assert!(
        bob.frames.try_recv().is_err(),
        "nothing is broadcast before it is durable"
    );

    bus.gate.add_permits(2);
    first_ack.wait().await.expect("first committed");
    second_ack.wait().await.expect("second committed");
    let mut received = Vec::new();
    for _ in 0..2 {
        received.push(
            next_message(&mut bob, |message| match message {
                Message::Sync(SyncMessage::Update(update)) => Some(update),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(
        received,
        vec![first.clone(), second.clone()],
        "applied and broadcast in order"
    );
    assert_eq!(server_text(&bob), text_of(&[first, second]));
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_updates_wait_for_the_bus_is_not_ready_until_they_are_acknowledged() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus = Arc::new(GatedBus {
        inner: crate::LogBus::new(store.clone(), "a"),
        handed: tokio::sync::watch::Sender::new(Vec::new()),
        gate: tokio::sync::Semaphore::new(0),
    });
    let node = Registry::start(store.clone(), bus.clone(), cluster_config());
    let alice = join(&node, "doc", 64).await;
    let mut bob = join(&node, "doc", 64).await;
    node.check_ready()
        .await
        .expect("ready before anything waits");

    let update = text_update(1, "a");
    let ack = alice
        .session
        .submit_update(update.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(1).await;
    // A broker that holds the update without acknowledging it: a short
    // wait is a failover, not a reason to leave the load balancer.
    tokio::time::sleep(crate::registry::PUBLISH_STALL_NOT_READY / 2).await;
    node.check_ready()
        .await
        .expect("still ready after a short wait");
    tokio::time::sleep(crate::registry::PUBLISH_STALL_NOT_READY).await;
    let reason = node.check_ready().await.expect_err("not ready");
    assert!(
        reason.contains("has not acknowledged updates for 7 s"),
        "{reason}"
    );
    assert!(
        bob.frames.try_recv().is_err(),
        "nothing is broadcast before it is durable"
    );

    // The broker comes back: the waiting update goes through, readiness
    // returns.
    bus.gate.add_permits(1);
    ack.wait().await.expect("committed once the bus answers");
    node.check_ready().await.expect("ready again");
    let received = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(received, update);
    node.shutdown().await;
}

/// Two updates of one client, the second building on the first.
fn chained_updates(client_id: u64) -> (Vec<u8>, Vec<u8>) {
    let doc = Doc::with_client_id(client_id);
    let root = doc.get_or_insert_text("t");
    let first = {
        let mut txn = doc.transact_mut();
        root.insert(&mut txn, 0, "a");
        txn.encode_update_v1()
    };
    let second = {
        let mut txn = doc.transact_mut();
        root.insert(&mut txn, 1, "b");
        txn.encode_update_v1()
    };
    (first, second)
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_missed_a_record_reads_its_log_again_and_tells_its_sessions() {
    let store = Arc::new(MemoryStore::new());
    let bus = crate::LogBus::new(store.clone(), "a");
    let registry = Registry::start(store.clone(), Arc::new(bus), cluster_config());
    let alice = join(&registry, "doc", 64).await;
    let mut bob = join(&registry, "doc", 64).await;
    let (first, second) = chained_updates(9);
    // The log holds the first update (another node's), but this node's
    // replica never got it: a record it missed.
    store
        .append(&[NewUpdate {
            doc: Arc::from("doc"),
            update: bytes::Bytes::from(first),
        }])
        .await
        .unwrap();
    // The second arrives normally and cannot integrate without the first.
    commit(&alice, second).await;
    assert_eq!(
        server_text(&alice),
        "",
        "the second update waits for the first"
    );
    while bob.frames.try_recv().is_ok() {}

    // After the grace the document reads its log again and sends what it
    // gained to every session.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let gained = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[gained]), "ab", "bob gets both updates");
    assert_eq!(server_text(&alice), "ab");
    assert_eq!(registry.metrics().documents_repaired.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_update_whose_dependency_the_log_lacks_too_is_read_again_at_growing_intervals() {
    let store = Arc::new(MemoryStore::new());
    let bus = crate::LogBus::new(store.clone(), "a");
    let registry = Registry::start(store.clone(), Arc::new(bus), cluster_config());
    let alice = join(&registry, "doc", 64).await;
    let (_never_sent, second) = chained_updates(9);
    commit(&alice, second).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let rereads = registry.metrics().documents_reread.get();
    assert!(
        (2..=6).contains(&rereads),
        "{rereads} re-reads in a minute: after 10 s, then backing off (5 s, 10 s, 20 s...)"
    );
    assert_eq!(registry.metrics().documents_repaired.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_update_a_document_holds_already_is_not_broadcast_again() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = Registry::start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = Registry::start(store.clone(), Arc::new(bus_b), cluster_config());
    let alice = join(&node_a, "doc", 64).await;
    let mut bob = join(&node_b, "doc", 64).await;
    let update = text_update(1, "once");
    commit(&alice, update.clone()).await;
    let first = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(first, update);
    // The same update again (a client re-sending what it sent before a
    // lost acknowledgement; this node's own update read back from the
    // log): applied, and nothing sent.
    commit(&alice, update.clone()).await;
    commit(&alice, text_update(2, "then")).await;
    let next = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[next]), "then", "the duplicate was not sent");
    assert_eq!(
        server_text(&bob),
        text_of(&[update, text_update(2, "then")])
    );
}
