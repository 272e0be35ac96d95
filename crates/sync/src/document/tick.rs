//! A document's awareness tick: the changes held for a tick, encoded once
//! and offered to every session, and this node's own share published to
//! the others (see [`crate::awareness_tick`]).

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Span;
use weft_protocol::AwarenessUpdate;
use yrs::updates::encoder::Encode;

use super::{Document, LiveState};
use crate::bus::{Record, RecordKind};
use crate::frames::{SessionId, awareness_frame};

impl Document {
    /// Sends the awareness changes held for this tick.
    pub(super) fn flush_awareness(&self) {
        let mut state = self.state.lock();
        let local = self.send_awareness_tick(&mut state, Instant::now());
        drop(state);
        self.publish_awareness(local);
    }

    /// Encodes the current entries of the clients held for this tick once
    /// and offers the same bytes to every session (but the sender, if one
    /// session sent them all). Returns this node's own clients' entries and
    /// their one session, if one, for the other nodes.
    pub(super) fn send_awareness_tick(
        &self,
        state: &mut LiveState,
        now: Instant,
    ) -> Option<(AwarenessUpdate, Option<SessionId>)> {
        let clients = state.awareness_tick.take(now);
        if clients.is_empty() || state.deleted {
            return None;
        }
        let coalesced = state.awareness.coalesce(&clients)?;
        let outbound = awareness_frame(coalesced.all);
        state
            .sessions
            .broadcast(&self.name, &outbound, coalesced.only_session);
        coalesced.local.map(|local| (local, coalesced.only_session))
    }

    /// Publishes one tick of this node's clients' awareness to the others.
    pub(super) fn publish_awareness(&self, local: Option<(AwarenessUpdate, Option<SessionId>)>) {
        let Some((update, session)) = local else {
            return;
        };
        self.bus.publish_ephemeral(Record {
            doc: self.name.clone(),
            kind: RecordKind::Awareness,
            payload: Bytes::from(update.encode_v1()),
            origin_session: session.map_or(0, SessionId::raw),
            author: None,
            span: Span::none(),
        });
    }
}
