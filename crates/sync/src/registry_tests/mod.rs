//! Registry behaviour against the in-memory store, in paused time.
//!
//! Split by what the tests exercise; the helpers shared by all are here.

mod cluster;
mod commit;
mod decodes;
mod documents;
mod joins;
mod pipeline;
mod presence;
mod reread;
mod shutdown;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_protocol::{Message, SyncMessage, decode_frame};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::store::{EMBEDDED_LOG, NewUpdate, Position, SnapshotWrite};
use crate::{
    EmbeddedLog, LogSeq, MemoryStore, MessageBus, Outbound, PublishError, QueuedBytes, Registry,
    RegistryConfig, Session, SessionOutbox, Snapshot, SnapshotStore, StoreError, StoredDoc,
};

/// A registry on `bus` that is the root of its own shutdown tree, as a
/// node of a test cluster.
pub(super) fn start(
    store: Arc<dyn SnapshotStore>,
    bus: Arc<dyn MessageBus>,
    config: RegistryConfig,
) -> Registry {
    Registry::start(
        store,
        bus,
        config,
        &CancellationToken::new(),
        &TaskTracker::new(),
    )
}

pub(super) struct Client {
    pub(super) session: Session,
    pub(super) frames: crate::FrameReceiver,
    pub(super) overflowed: CancellationToken,
    pub(super) deleted: CancellationToken,
}

pub(super) async fn join(registry: &Registry, doc: &str, queue: usize) -> Client {
    join_bounded(registry, doc, queue, usize::MAX).await
}

/// [`join`] with a bound on the bytes queued too.
pub(super) async fn join_bounded(
    registry: &Registry,
    doc: &str,
    queue: usize,
    queue_bytes: usize,
) -> Client {
    let (frames, receiver) = crate::outbox_channel(queue);
    let overflowed = CancellationToken::new();
    let deleted = CancellationToken::new();
    let session = registry
        .join(
            doc,
            SessionOutbox {
                frames,
                queued: QueuedBytes::new(queue_bytes),
                overflowed: overflowed.clone(),
                deleted: deleted.clone(),
                prefix: bytes::Bytes::new(),
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
pub(super) fn text_update(client_id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client_id);
    let root = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// The text of root "t" after applying every update.
pub(super) fn text_of(updates: &[Vec<u8>]) -> String {
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
pub(super) fn server_text(client: &Client) -> String {
    let frame = client
        .session
        .answer_sync_step1(&StateVector::default())
        .unwrap();
    let Ok(Message::Sync(SyncMessage::SyncStep2(update))) = decode_frame(&frame) else {
        panic!("not a SyncStep2");
    };
    text_of(&[update])
}

pub(super) fn test_config() -> RegistryConfig {
    RegistryConfig {
        unload_grace: Duration::from_secs(5),
        ..RegistryConfig::default()
    }
}

pub(super) fn cluster_config() -> RegistryConfig {
    RegistryConfig {
        compacts: false,
        heartbeat_interval: Duration::from_millis(100),
        peer_timeout: Duration::from_millis(500),
        ..test_config()
    }
}

/// Receives frames until one decodes to a message `pick` accepts.
pub(super) async fn next_message<T>(client: &mut Client, pick: impl Fn(Message) -> Option<T>) -> T {
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

/// The state vector of a client holding every update given.
pub(super) fn state_of(updates: &[&[u8]]) -> StateVector {
    let doc = Doc::new();
    for update in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    doc.transact().state_vector()
}

pub(super) fn read_text(read: &crate::DocumentRead) -> String {
    text_of(std::slice::from_ref(&read.state))
}

/// The text (root "t") one broadcast frame carries, its characters sorted:
/// the tests' updates are independent inserts, so order is not theirs.
pub(super) fn frame_chars(frame: &Outbound) -> String {
    let Ok(Message::Sync(SyncMessage::Update(update))) = decode_frame(frame) else {
        panic!("expected an update frame");
    };
    let mut chars: Vec<char> = text_of(&[update]).chars().collect();
    chars.sort_unstable();
    chars.into_iter().collect()
}

pub(super) async fn commit(client: &Client, update: Vec<u8>) {
    let ack = client.session.submit_update(update).await.unwrap();
    ack.expect("not empty").wait().await.expect("committed");
}

pub(super) fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

/// Two updates of one client, the second building on the first.
pub(super) fn chained_updates(client_id: u64) -> (Vec<u8>, Vec<u8>) {
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
