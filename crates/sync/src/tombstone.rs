//! Deleted documents: what a tombstone names and what it refuses.
//!
//! Deleting a document keeps the v1 state vector of everything it held: the
//! tombstone. Yjs identifies every change by `(client, clock)`, and a client
//! id is chosen at random per `Y.Doc`, so content made after the deletion
//! (by a fresh `Y.Doc`) never carries a client id the tombstone names. A
//! client that still holds the deleted history does: its state vector
//! (SyncStep1) names those clients, and so does any update it builds on
//! that history. Both are refused, which is what keeps deleted content from
//! coming back through a client that was offline during the deletion.
//!
//! The check is by client id rather than by clock range: a client that
//! held deleted content and keeps editing produces clocks above the
//! tombstone's, but its changes still point at deleted items, so they are
//! refused too.
//!
//! What a tombstone names is worked out here alone
//! ([`deleted_state_vector`]), wherever a deletion is met: when it is
//! committed (its payload), when the persistence worker folds it
//! ([`crate::Replica::delete`]), and when a document loads from records
//! that hold deletions (`of_records`).

use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::store::Tombstone;
use crate::update::DocRecord;

/// A tombstone, decoded for checks.
#[derive(Debug, Clone, Default)]
pub struct TombstoneState {
    /// Every deleted `(client, clock)` is below this.
    pub state_vector: StateVector,
    /// The deletion's log position.
    pub position: crate::LogSeq,
    /// When it happened (ms since the Unix epoch; 0 if unknown).
    pub deleted_at_ms: i64,
}

impl TombstoneState {
    /// Decodes a stored tombstone; a state vector that does not decode
    /// (it was written by this code, so it should) counts as empty.
    pub fn from_stored(stored: &Tombstone) -> Self {
        Self {
            state_vector: decode_state_vector(&stored.state_vector),
            position: stored.position,
            deleted_at_ms: stored.deleted_at_ms,
        }
    }

    /// The stored form.
    pub fn to_stored(&self) -> Tombstone {
        use yrs::updates::encoder::Encode;
        Tombstone {
            state_vector: self.state_vector.encode_v1(),
            position: self.position,
            deleted_at_ms: self.deleted_at_ms,
        }
    }

    /// Whether a client with this state vector holds deleted history.
    pub fn refuses_state(&self, client_state: &StateVector) -> bool {
        refuses_state(&self.state_vector, client_state)
    }

    /// Whether an update creates or deletes anything of a deleted client.
    pub fn refuses_update(&self, update: &Update) -> bool {
        refuses_update(&self.state_vector, update)
    }

    /// [`TombstoneState::refuses_update`] on encoded (v1) bytes; bytes
    /// that do not decode are not refused here (applying them fails and is
    /// logged where they are applied).
    pub fn refuses_update_v1(&self, update: &[u8]) -> bool {
        weft_protocol::check_update_v1(update).is_ok()
            && Update::decode_v1(update).is_ok_and(|decoded| self.refuses_update(&decoded))
    }
}

/// Decodes a v1 state vector, empty if it does not decode.
pub fn decode_state_vector(bytes: &[u8]) -> StateVector {
    if weft_protocol::check_state_vector_v1(bytes).is_err() {
        return StateVector::default();
    }
    StateVector::decode_v1(bytes).unwrap_or_default()
}

/// Whether `client_state` names a client the tombstone `deleted` names.
pub fn refuses_state(deleted: &StateVector, client_state: &StateVector) -> bool {
    client_state
        .iter()
        .any(|(client, clock)| *clock > 0 && deleted.get(client) > 0)
}

/// Whether `update` inserts or deletes anything of a client `deleted`
/// names.
pub fn refuses_update(deleted: &StateVector, update: &Update) -> bool {
    if deleted.is_empty() {
        return false;
    }
    let named = |client: yrs::block::ClientID| deleted.get(&client) > 0;
    update.insertions(true).client_ids().any(named) || update.delete_set().client_ids().any(named)
}

/// Everything a deletion deletes: the union of the state vectors it names
/// (the deleter's view as published; where it is applied, the document's
/// state and any earlier tombstone; on a load, every deletion's own) and
/// of what the updates `before` it insert (updates committed or logged
/// before the deletion that were never applied where this is worked out,
/// such as a record a node read only after the deletion).
pub fn deleted_state_vector<'a>(
    named: impl IntoIterator<Item = &'a StateVector>,
    before: impl IntoIterator<Item = &'a Update>,
) -> StateVector {
    let mut deleted = StateVector::default();
    for state_vector in named {
        merge(&mut deleted, state_vector);
    }
    for update in before {
        include_update(&mut deleted, update);
    }
    deleted
}

/// Adds to `into` every `(client, clock)` that `update` inserts.
fn include_update(into: &mut StateVector, update: &Update) {
    for (client, ranges) in update.insertions(true).iter() {
        for range in ranges.iter() {
            into.set_max(*client, range.end);
        }
    }
}

/// The union (per client, the larger clock) of two state vectors.
fn merge(into: &mut StateVector, other: &StateVector) {
    for (client, clock) in other.iter() {
        into.set_max(*client, *clock);
    }
}

/// The latest deletion among a loading document's records, with a state
/// vector naming everything deleted: every deletion's own, plus whatever
/// the records before the latest one insert (a record this node read only
/// after the deletion was published, from another node). Decodes those
/// records once; applying them reuses the decoded form.
pub(crate) fn of_records(records: &mut [DocRecord]) -> Option<TombstoneState> {
    let (position, deleted_at_ms) = records
        .iter()
        .filter_map(|record| match record {
            DocRecord::Delete {
                position,
                deleted_at_ms,
                ..
            } => Some((*position, *deleted_at_ms)),
            DocRecord::Update(_) => None,
        })
        .max_by_key(|(position, _)| *position)?;
    let mut named = Vec::new();
    for record in records.iter_mut() {
        match record {
            DocRecord::Delete {
                state_vector: deleted,
                ..
            } => named.push(decode_state_vector(deleted)),
            DocRecord::Update(update) if update.position < position => {
                // Decoded here once; one that does not decode inserts
                // nothing (applying it fails, and is logged, later).
                let _decoded = update.decode();
            }
            DocRecord::Update(_) => {}
        }
    }
    let before = records.iter().filter_map(|record| match record {
        DocRecord::Update(update) if update.position < position => update.decoded(),
        _ => None,
    });
    Some(TombstoneState {
        state_vector: deleted_state_vector(&named, before),
        position,
        deleted_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, ReadTxn, Text, Transact};

    use super::*;

    fn edit(client: u64, text: &str) -> Doc {
        let doc = Doc::with_client_id(client);
        let root = doc.get_or_insert_text("t");
        root.insert(&mut doc.transact_mut(), 0, text);
        doc
    }

    #[test]
    fn refuses_the_deleted_history_and_nothing_else() {
        let old = edit(1, "old");
        let deleted = old.transact().state_vector();
        assert!(refuses_state(&deleted, &old.transact().state_vector()));
        let fresh = edit(2, "new");
        assert!(!refuses_state(&deleted, &fresh.transact().state_vector()));
        assert!(!refuses_state(&deleted, &StateVector::default()));

        // The old client keeps editing: clocks above the tombstone's, same
        // client: refused.
        let root = old.get_or_insert_text("t");
        let before = old.transact().state_vector();
        root.insert(&mut old.transact_mut(), 0, "more");
        let more = old.transact().encode_state_as_update_v1(&before);
        assert!(refuses_update(&deleted, &Update::decode_v1(&more).unwrap()));
        let fresh_update = fresh
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(!refuses_update(
            &deleted,
            &Update::decode_v1(&fresh_update).unwrap()
        ));
    }

    #[test]
    fn a_deletion_names_what_was_seen_loaded_and_committed_before_it() {
        let seen = edit(1, "a").transact().state_vector();
        let loaded = edit(2, "bb").transact().state_vector();
        let earlier = edit(3, "ccc")
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let earlier = Update::decode_v1(&earlier).unwrap();
        let deleted = deleted_state_vector([&seen, &loaded], std::iter::once(&earlier));
        assert_eq!(deleted.get(&yrs::block::ClientID::new(1)), 1);
        assert_eq!(deleted.get(&yrs::block::ClientID::new(2)), 2);
        assert_eq!(deleted.get(&yrs::block::ClientID::new(3)), 3);
        let alone = deleted_state_vector([&seen], std::iter::empty());
        assert_eq!(alone, seen);
        assert!(deleted_state_vector([], std::iter::empty()).is_empty());
    }

    #[test]
    fn an_update_adds_what_it_inserts_to_a_tombstone() {
        let doc = edit(7, "hello");
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let tombstone =
            deleted_state_vector([], std::iter::once(&Update::decode_v1(&update).unwrap()));
        assert_eq!(tombstone.get(&yrs::block::ClientID::new(7)), 5);
        let round_trip = decode_state_vector(&tombstone.encode_v1());
        assert_eq!(round_trip.get(&yrs::block::ClientID::new(7)), 5);
        assert!(decode_state_vector(b"\xff\xff\xff\xff\xff").is_empty());
    }
}
