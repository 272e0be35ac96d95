//! What the REST API asks of the registry: read a document as clients see
//! it, apply a service's update, delete a document, list documents.
//!
//! Each goes through the same paths as a session: a read loads the
//! document like a join (so it sees every durable update, including the
//! log's records not yet in a snapshot) but attaches no session, so the
//! document is unloaded after the usual grace; an update and a deletion go
//! through the committer and the bus, and return once durable and applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bus::RecordKind;
use crate::error::SyncError;
use crate::registry::Registry;
use crate::update::ClientUpdate;

/// A document as clients see it.
#[derive(Debug, Clone)]
pub struct DocumentRead {
    /// The whole document as one Yjs v1 update.
    pub state: Vec<u8>,
    /// Whether it holds anything. A document that was never written, or
    /// was deleted and not written since, holds nothing.
    pub has_content: bool,
    /// When it was last deleted (ms since the Unix epoch, 0 if unknown), if
    /// it ever was.
    pub deleted_at_ms: Option<i64>,
}

/// What [`Registry::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The deletion is durable and every node closes the document's
    /// sessions.
    Deleted,
    /// The document holds nothing: there is nothing to delete.
    NotFound,
}

/// One entry of a document listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDocument {
    /// The document's name.
    pub name: String,
    /// Whether this node holds it in memory.
    pub loaded: bool,
    /// Bytes of its stored snapshot, if the store lists it.
    pub snapshot_bytes: Option<i64>,
}

/// The shared type a JSON read asks for, by root name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// `Y.Text`, read as its string.
    Text,
    /// `Y.Map`, read as a JSON object.
    Map,
    /// `Y.Array`, read as a JSON array.
    Array,
    /// `Y.XmlFragment` (e.g. ProseMirror's, TipTap's), read as its XML
    /// string.
    XmlFragment,
}

/// A document's root types as plain values, from its state (a v1 update,
/// see [`DocumentRead::state`]), in the order asked. `None` if `yrs` could
/// not read them (a root read as a type it does not hold panics `yrs`; the
/// panic is contained).
pub fn read_roots(state: &[u8], roots: &[(RootKind, String)]) -> Option<Vec<yrs::Any>> {
    use yrs::types::ToJson;
    use yrs::{GetString, Transact};
    // One document per kind: a root is then read as one type only, even
    // when the same name is asked for as two.
    let kinds = [
        RootKind::Text,
        RootKind::Map,
        RootKind::Array,
        RootKind::XmlFragment,
    ];
    let mut docs = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let doc = yrs::Doc::new();
        if roots.iter().any(|(asked, _)| *asked == kind) {
            crate::ycheck::apply_contained(&doc, state).ok()?;
        }
        docs.push((kind, doc));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut values = Vec::with_capacity(roots.len());
        for (kind, name) in roots {
            let Some((_, doc)) = docs.iter().find(|(of, _)| of == kind) else {
                continue;
            };
            let value = match kind {
                RootKind::Text => {
                    let text = doc.get_or_insert_text(name.as_str());
                    yrs::Any::from(text.get_string(&doc.transact()))
                }
                RootKind::Map => {
                    let map = doc.get_or_insert_map(name.as_str());
                    map.to_json(&doc.transact())
                }
                RootKind::Array => {
                    let array = doc.get_or_insert_array(name.as_str());
                    array.to_json(&doc.transact())
                }
                RootKind::XmlFragment => {
                    let fragment = doc.get_or_insert_xml_fragment(name.as_str());
                    yrs::Any::from(fragment.get_string(&doc.transact()))
                }
            };
            values.push(value);
        }
        values
    }))
    .ok()
}

impl Registry {
    /// The document `name` as clients see it, loaded if needed.
    pub async fn read(&self, name: &str) -> Result<DocumentRead, SyncError> {
        let document = self.loaded(name).await?;
        let read = document.read_state();
        Ok(DocumentRead {
            state: read.state,
            has_content: read.has_content,
            deleted_at_ms: read.deleted_at_ms,
        })
    }

    /// Applies an update from a service, validated like a client's, through
    /// the committer and the bus. Returns once it is durable and applied
    /// (broadcast to every session of the document, on every node).
    pub async fn apply_update(&self, name: &str, update: Vec<u8>) -> Result<(), SyncError> {
        self.apply_update_as(name, update, Arc::from(crate::store::ANONYMOUS))
            .await
    }

    /// [`Registry::apply_update`], attributed to `author` in history.
    pub async fn apply_update_as(
        &self,
        name: &str,
        update: Vec<u8>,
        author: Arc<str>,
    ) -> Result<(), SyncError> {
        let update = ClientUpdate::decode(update)
            .map_err(SyncError::InvalidUpdate)?
            .with_author(author);
        let document = self.loaded(name).await?;
        // Its own trace, like a client's update; a child of the request's
        // span if the caller has one.
        let span = tracing::debug_span!("update", doc = %document.name(), bytes = update.bytes().len(), source = "api", kind = ?RecordKind::Update);
        // A fresh id matches no session, so every session receives it.
        let origin = self.fresh_session_id();
        let pending = self
            .publisher()
            .submit_update(&document, update, origin, span)
            .await?;
        if let Some(pending) = pending {
            pending.wait().await?;
        }
        Ok(())
    }

    /// Deletes `name` on every node: a durable delete record through the
    /// committer and the bus. Every node closes the document's sessions;
    /// a client holding its old history is refused from then on.
    pub async fn delete(&self, name: &str) -> Result<DeleteOutcome, SyncError> {
        let document = self.loaded(name).await?;
        if !document.has_content() {
            return Ok(DeleteOutcome::NotFound);
        }
        let span = tracing::debug_span!("update", doc = %document.name(), source = "api", kind = ?RecordKind::Delete);
        let origin = self.fresh_session_id();
        self.publisher()
            .submit_delete(&document, origin, span)
            .await
            .wait()
            .await?;
        Ok(DeleteOutcome::Deleted)
    }

    /// Documents by name after `after`, at most `limit`: those the store
    /// lists (embedded: snapshots and logged updates; cluster: the
    /// persistence worker's snapshots) and those this node holds, minus
    /// those this node holds empty (deleted, not written since).
    pub async fn list(&self, after: &str, limit: u32) -> Result<Vec<ListedDocument>, SyncError> {
        let stored = self.stored_documents(after, limit).await?;
        let mut listing: BTreeMap<String, ListedDocument> = BTreeMap::new();
        for doc in stored {
            listing.insert(
                doc.name.clone(),
                ListedDocument {
                    name: doc.name,
                    loaded: false,
                    snapshot_bytes: Some(doc.snapshot_bytes),
                },
            );
        }
        for name in self.loaded_names() {
            if name.as_ref() <= after {
                continue;
            }
            let Some(document) = self.in_memory(&name) else {
                continue;
            };
            if !document.is_loaded() {
                continue;
            }
            if !document.has_content() {
                listing.remove(name.as_ref());
                continue;
            }
            listing
                .entry(name.to_string())
                .or_insert_with(|| ListedDocument {
                    name: name.to_string(),
                    loaded: true,
                    snapshot_bytes: None,
                })
                .loaded = true;
        }
        Ok(listing
            .into_values()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }
}
