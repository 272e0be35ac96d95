//! What a session (or the REST API) sends towards the log: client updates
//! and deletions through the committer, awareness and stateless messages
//! straight to the bus.
//!
//! The door of the edit path: [`Publisher::submit_update`] checks a client
//! update once (it decodes, it is not refused by a tombstone, `yrs` takes
//! it) before anything is queued.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::Span;
use weft_protocol::AwarenessUpdate;
use yrs::updates::encoder::Encode;

use crate::ack::{AckTo, AckWindow};
use crate::bus::{MessageBus, Record, RecordKind};
use crate::committer::{Committer, Submitted};
use crate::document::Document;
use crate::error::{PublishError, SyncError};
use crate::frames::{DocName, SessionId};
use crate::store::LogSeq;
use crate::update::ClientUpdate;

/// Resolves once a submitted update is durable and applied.
#[derive(Debug)]
pub struct PendingAck(oneshot::Receiver<Result<LogSeq, PublishError>>);

impl PendingAck {
    /// Waits for the update to be committed (or to fail).
    pub async fn wait(self) -> Result<LogSeq, PublishError> {
        self.0.await.unwrap_or(Err(PublishError::Stopped))
    }
}

/// The sending side of a node: its committer and its bus.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    committer: Committer,
    bus: Arc<dyn MessageBus>,
}

impl Publisher {
    pub(crate) fn new(committer: Committer, bus: Arc<dyn MessageBus>) -> Self {
        Self { committer, bus }
    }

    /// The committer (for its readiness answer).
    pub(crate) fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Checks a client's (or a service's) update, decoded at the door, for
    /// `document` and submits it.
    ///
    /// Refuses an update `yrs` cannot apply, leaving the document
    /// untouched, and ([`SyncError::Deleted`]) an update that builds on
    /// content of a deleted document. An empty update needs no commit and
    /// yields `None`. Otherwise the returned [`PendingAck`] resolves once
    /// the update is durable, applied, and broadcast.
    pub(crate) async fn submit_update(
        &self,
        document: &Document,
        update: ClientUpdate,
        origin: SessionId,
        span: Span,
    ) -> Result<Option<PendingAck>, SyncError> {
        if !check_update(document, &update)? {
            return Ok(None);
        }
        let receiver = self
            .committer
            .submit(document.name_arc(), Submitted::Update(update), origin, span)
            .await;
        Ok(Some(PendingAck(receiver)))
    }

    /// As [`Publisher::submit_update`], with the outcome going to a place
    /// in `window` (waiting for one if all are taken) instead of a
    /// [`PendingAck`]. Returns whether the update was submitted (`false`:
    /// empty, nothing to commit).
    pub(crate) async fn submit_update_to(
        &self,
        document: &Document,
        update: ClientUpdate,
        origin: SessionId,
        span: Span,
        window: &Arc<AckWindow>,
    ) -> Result<bool, SyncError> {
        if !check_update(document, &update)? {
            return Ok(false);
        }
        let place = window.place().await;
        self.committer
            .submit_to(
                document.name_arc(),
                Submitted::Update(update),
                origin,
                span,
                AckTo::Window(place),
            )
            .await;
        Ok(true)
    }

    /// Submits the deletion of `document`, naming what it holds.
    pub(crate) async fn submit_delete(
        &self,
        document: &Document,
        origin: SessionId,
        span: Span,
    ) -> PendingAck {
        let seen = Bytes::from(document.deletion_state_vector().encode_v1());
        let receiver = self
            .committer
            .submit(document.name_arc(), Submitted::Delete(seen), origin, span)
            .await;
        PendingAck(receiver)
    }

    /// Tells the other nodes about a stateless message of a local session.
    pub(crate) fn publish_stateless(&self, doc: &DocName, payload: &str, session: SessionId) {
        self.bus.publish_ephemeral(Record {
            doc: doc.clone(),
            kind: RecordKind::Stateless,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            origin_session: session.raw(),
            author: None,
            span: Span::none(),
        });
    }

    /// Tells the other nodes about an awareness change of a local session.
    pub(crate) fn publish_awareness(
        &self,
        doc: &DocName,
        update: &AwarenessUpdate,
        session: SessionId,
    ) {
        self.bus.publish_ephemeral(Record {
            doc: doc.clone(),
            kind: RecordKind::Awareness,
            payload: Bytes::from(update.encode_v1()),
            origin_session: session.raw(),
            author: None,
            span: Span::none(),
        });
    }
}

/// The door's checks of a client update for `document`: refused if it
/// builds on deleted history or `yrs` cannot apply it; `false` if it is
/// empty (nothing to commit).
fn check_update(document: &Document, update: &ClientUpdate) -> Result<bool, SyncError> {
    if document.refuses_update(update.decoded()) {
        return Err(SyncError::Deleted);
    }
    if update.is_empty() {
        return Ok(false);
    }
    update.trial().map_err(SyncError::InvalidUpdate)?;
    Ok(true)
}
