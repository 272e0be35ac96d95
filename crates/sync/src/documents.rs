//! The loaded documents by name: the map the registry, its tasks and the
//! committer share.
//!
//! The committer reaches it only as a [`CommitTarget`]; the bus asks it
//! as an [`Interest`] which records to deliver.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use weft_protocol::StateVector;

use crate::batching::BroadcastBatching;
use crate::bus::{Interest, MessageBus};
use crate::committer::CommitTarget;
use crate::document::Document;
use crate::frames::{DocName, SessionId};
use crate::store::LogSeq;
use crate::update::CommittedUpdate;

/// The documents in memory (loaded or loading).
#[derive(Debug)]
pub(crate) struct Documents {
    loaded: parking_lot::Mutex<HashMap<DocName, Arc<Document>>>,
    /// Every document's broadcast batching.
    batching: BroadcastBatching,
    /// The node's tracker, given to every document for its broadcast
    /// flushes.
    tasks: TaskTracker,
    /// The node's bus, given to every document for its awareness ticks.
    bus: Arc<dyn MessageBus>,
}

impl Documents {
    pub(crate) fn new(
        batching: BroadcastBatching,
        tasks: TaskTracker,
        bus: Arc<dyn MessageBus>,
    ) -> Self {
        Self {
            loaded: parking_lot::Mutex::default(),
            batching,
            tasks,
            bus,
        }
    }

    /// Hands a durable update to its document, if loaded. A document that
    /// is not loaded will read it from the log when it loads.
    pub(crate) fn deliver(&self, doc: &str, update: CommittedUpdate, origin: Option<SessionId>) {
        if let Some(document) = self.get(doc) {
            document.deliver(update, origin);
        }
    }

    /// A durable deletion of `doc` at `seq`: a loaded document closes its
    /// sessions and is dropped (the next join loads it afresh); a loading
    /// one keeps the deletion in order with its other records. Returns
    /// whether the document left memory (the bus may then release it).
    pub(crate) fn delete(&self, doc: &str, seq: LogSeq, deleted_state_vector: &[u8]) -> bool {
        let mut loaded = self.loaded.lock();
        let Some(document) = loaded.get(doc).cloned() else {
            return false;
        };
        let dropped = document.delete(seq, deleted_state_vector);
        if dropped {
            loaded.remove(doc);
        }
        dropped
    }

    /// The document named `doc`, if loaded (or loading).
    pub(crate) fn get(&self, doc: &str) -> Option<Arc<Document>> {
        self.loaded.lock().get(doc).cloned()
    }

    /// The names of the documents in memory.
    pub(crate) fn names(&self) -> Vec<DocName> {
        self.loaded.lock().keys().cloned().collect()
    }

    /// Number of documents in memory.
    pub(crate) fn len(&self) -> usize {
        self.loaded.lock().len()
    }

    /// The loaded document, or a new one if fewer than `max` are loaded.
    pub(crate) fn get_or_insert(&self, name: &str, max: usize) -> Option<Arc<Document>> {
        let mut loaded = self.loaded.lock();
        if let Some(document) = loaded.get(name) {
            return Some(document.clone());
        }
        if loaded.len() >= max {
            return None;
        }
        let name: DocName = Arc::from(name);
        let document = Arc::new(Document::new(
            name.clone(),
            self.batching,
            self.tasks.clone(),
            self.bus.clone(),
        ));
        loaded.insert(name, document.clone());
        Some(document)
    }

    /// Every document in memory.
    pub(crate) fn all(&self) -> Vec<Arc<Document>> {
        self.loaded.lock().values().cloned().collect()
    }

    /// Drops `document` if it is still the loaded instance and still idle
    /// since `idle_since`.
    pub(crate) fn remove_if_idle(&self, document: &Arc<Document>, idle_since: Instant) -> bool {
        let mut loaded = self.loaded.lock();
        let still_ours = loaded
            .get(document.name())
            .is_some_and(|current| Arc::ptr_eq(current, document));
        if still_ours && document.idle_since() == Some(idle_since) {
            loaded.remove(document.name());
            return true;
        }
        false
    }
}

impl Interest for Documents {
    fn wants(&self, doc: &str) -> bool {
        self.loaded.lock().contains_key(doc)
    }
}

impl CommitTarget for Documents {
    fn deletion_state_vector(&self, doc: &str) -> Option<StateVector> {
        self.get(doc)
            .map(|document| document.deletion_state_vector())
    }

    fn apply(&self, doc: &str, update: CommittedUpdate, origin: SessionId) {
        self.deliver(doc, update, Some(origin));
    }

    fn delete(&self, doc: &str, position: LogSeq, deleted_state_vector: &[u8]) -> bool {
        Documents::delete(self, doc, position, deleted_state_vector)
    }
}
