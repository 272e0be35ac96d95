//! The document state machine alone: no sessions, no store, paused time.

use std::sync::Arc;

use yrs::{GetString, Text};

use super::*;
use crate::store::{LoggedUpdate, Tombstone};

fn name() -> DocName {
    Arc::from("doc")
}

/// An update of a fresh doc of `client` inserting `text` into root "t".
fn insert(client: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let root = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// Two updates of one client, the second building on the first.
fn chained(client: u64) -> (Vec<u8>, Vec<u8>) {
    let doc = Doc::with_client_id(client);
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

fn text(replica: &Replica) -> String {
    let doc = Doc::new();
    let root = doc.get_or_insert_text("t");
    let state = replica.read_state().state;
    ycheck::apply_contained(&doc, &state).expect("a replica's state applies");
    root.get_string(&doc.transact())
}

fn committed(position: LogSeq, bytes: &[u8]) -> CommittedUpdate {
    CommittedUpdate::from_log(position, bytes.to_vec())
}

#[tokio::test(start_paused = true)]
async fn applying_tells_news_from_what_it_holds_and_owes_a_snapshot() {
    let now = Instant::now();
    let mut replica = Replica::new(name());
    replica.load(StoredDoc::default(), Vec::new(), now);
    assert!(replica.snapshot().is_none(), "nothing applied");

    let update = insert(1, "hi");
    assert_eq!(
        replica.apply(&mut committed(1, &update), now),
        Applied::News
    );
    assert_eq!(
        replica.apply(&mut committed(2, &update), now),
        Applied::Known
    );
    assert_eq!(text(&replica), "hi");
    assert_eq!(replica.dirty().map(|dirty| dirty.updates), Some(1));

    let snapshot = replica.snapshot().expect("a snapshot is owed");
    assert_eq!(snapshot.covers.offset, 2);
    replica.snapshot_saved(snapshot.covers.offset, snapshot.state.len());
    assert!(replica.dirty().is_none());
    assert!(replica.snapshot().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_load_applies_the_snapshot_the_log_and_then_what_arrived_meanwhile() {
    let now = Instant::now();
    let mut first = Replica::new(name());
    first.apply(&mut committed(1, &insert(1, "a")), now);
    let snapshot = first.snapshot().expect("owed");

    let mut replica = Replica::new(name());
    let stored = StoredDoc {
        snapshot: Some(snapshot),
        updates: vec![LoggedUpdate {
            seq: 2,
            update: insert(2, "b"),
        }],
        deletions: Vec::new(),
    };
    let buffered = vec![DocRecord::Update(committed(3, &insert(3, "c")))];
    replica.load(stored, buffered, now);
    let mut chars: Vec<char> = text(&replica).chars().collect();
    chars.sort_unstable();
    assert_eq!(chars, ['a', 'b', 'c']);
    assert_eq!(replica.snapshot().map(|owed| owed.covers.offset), Some(3));
    assert_eq!(replica.dirty().map(|dirty| dirty.updates), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_tombstone_refuses_what_came_before_and_what_builds_on_it() {
    let now = Instant::now();
    let old = insert(1, "old");
    let mut deleted = Replica::new(name());
    deleted.apply(&mut committed(1, &old), now);
    let tombstone_state_vector = deleted.deletion_state_vector();

    let mut replica = Replica::new(name());
    let stored = StoredDoc {
        snapshot: None,
        updates: vec![LoggedUpdate {
            seq: 1,
            update: old,
        }],
        deletions: vec![Tombstone {
            state_vector: tombstone_state_vector.encode_v1(),
            position: 2,
            deleted_at_ms: 7,
        }],
    };
    replica.load(stored, Vec::new(), now);
    assert!(
        !replica.has_content(),
        "the update before the deletion is gone"
    );
    assert_eq!(replica.read_state().deleted_at_ms, Some(7));
    assert!(replica.refuses_state(&tombstone_state_vector));

    let more = insert(1, "more");
    assert_eq!(
        replica.apply(&mut committed(3, &more), now),
        Applied::Refused
    );
    let fresh = insert(2, "new");
    assert_eq!(replica.apply(&mut committed(4, &fresh), now), Applied::News);
    assert_eq!(text(&replica), "new");
    let named = replica.deletion_state_vector();
    assert!(
        named.get(&yrs::block::ClientID::new(1)) > 0,
        "the old tombstone is kept"
    );
    assert!(named.get(&yrs::block::ClientID::new(2)) > 0);
}

#[tokio::test(start_paused = true)]
async fn a_missing_dependency_is_noted_and_a_reread_of_the_log_fills_it() {
    let start = Instant::now();
    let (first, second) = chained(5);
    let mut replica = Replica::new(name());
    replica.load(StoredDoc::default(), Vec::new(), start);
    assert_eq!(
        replica.apply(&mut committed(2, &second), start),
        Applied::News,
        "pending: its sessions may hold what it waits for"
    );
    assert_eq!(replica.missing_since(), Some(start));

    let later = start + Duration::from_secs(11);
    let stored = StoredDoc {
        snapshot: None,
        updates: vec![LoggedUpdate {
            seq: 1,
            update: first,
        }],
        deletions: Vec::new(),
    };
    let (outcome, diff) = replica.merge_log(stored, later);
    assert!(outcome.gained);
    assert!(!outcome.still_missing);
    assert_eq!(outcome.waited, Duration::from_secs(11));
    assert_eq!(outcome.gained_at, vec![1]);
    assert!(diff.is_some());
    assert_eq!(replica.missing_since(), None);
    assert_eq!(text(&replica), "ab");
}

#[tokio::test(start_paused = true)]
async fn bytes_that_do_not_decode_are_skipped_and_sent_on() {
    let now = Instant::now();
    let mut replica = Replica::new(name());
    replica.load(StoredDoc::default(), Vec::new(), now);
    assert_eq!(
        replica.apply(&mut committed(1, b"\xff\xff\xff"), now),
        Applied::News
    );
    assert!(!replica.has_content());
}

#[tokio::test(start_paused = true)]
async fn a_deletion_empties_the_replica_and_its_tombstone_names_everything_deleted() {
    let now = Instant::now();
    let mut replica = Replica::new(name());
    replica.apply(&mut committed(1, &insert(1, "held")), now);
    let seen = Doc::with_client_id(2);
    seen.get_or_insert_text("t")
        .insert(&mut seen.transact_mut(), 0, "seen");
    replica.delete(3, &seen.transact().state_vector().encode_v1(), 42, now);
    assert_eq!(text(&replica), "", "the content is gone");
    let tombstone = replica.tombstone().expect("a tombstone");
    assert_eq!((tombstone.position, tombstone.deleted_at_ms), (3, 42));
    assert_eq!(tombstone.state_vector.get(&yrs::block::ClientID::new(1)), 4);
    assert_eq!(tombstone.state_vector.get(&yrs::block::ClientID::new(2)), 4);
    let snapshot = replica.snapshot().expect("the deletion is owed");
    assert_eq!(snapshot.covers.offset, 3);
    assert_eq!(snapshot.tombstone.map(|stored| stored.position), Some(3));
}

#[tokio::test(start_paused = true)]
async fn folding_refuses_deleted_history_says_why_and_keeps_no_position() {
    let now = Instant::now();
    // A tombstone naming client 1, at a position above the records': a
    // fold refuses deleted history, not positions.
    let mut replica = Replica::new(name());
    let mut stale = Replica::new(name());
    stale.apply(&mut committed(1, &insert(1, "old")), now);
    replica.restore_tombstone(Some(TombstoneState {
        state_vector: stale.state_vector(),
        position: 9,
        deleted_at_ms: 0,
    }));
    assert!(matches!(
        replica.fold(&mut committed(2, &insert(1, "stale"))),
        Err(Skipped::DeletedHistory)
    ));
    assert_eq!(
        replica
            .fold(&mut committed(2, &insert(2, "new")))
            .expect("a fresh client's update folds"),
        Applied::News
    );
    assert!(matches!(
        replica.fold(&mut committed(3, b"\xff\xff\xff")),
        Err(Skipped::Invalid(_))
    ));
    assert_eq!(text(&replica), "new");
    assert!(replica.snapshot().is_none(), "a fold moves no position");
    let at = crate::store::Position {
        partition: 2,
        offset: 7,
    };
    assert_eq!(replica.snapshot_at(at).covers, at);
}

/// Decodes a v1 update for [`Replica::holds`].
fn decoded(bytes: &[u8]) -> yrs::Update {
    crate::update::decode_v1(bytes).expect("a test update decodes")
}

#[tokio::test(start_paused = true)]
async fn it_holds_what_it_applied_and_not_what_adds_an_insertion_or_a_deletion() {
    let now = Instant::now();
    let mut replica = Replica::new(name());
    replica.load(StoredDoc::default(), Vec::new(), now);
    let (first, second) = chained(1);
    assert!(
        replica.holds(&decoded(yrs::Update::EMPTY_V1)),
        "an empty update brings nothing"
    );
    assert!(!replica.holds(&decoded(&first)), "an insertion it lacks");
    replica.apply(&mut committed(1, &first), now);
    assert!(replica.holds(&decoded(&first)));
    assert!(
        !replica.holds(&decoded(&second)),
        "a later insertion of the same client"
    );
    assert!(
        !replica.holds(&decoded(&insert(2, "a"))),
        "another client's insertion"
    );

    // A peer that holds the same content and deletes some of it: the
    // deletion is news until the document has it too.
    let peer = Doc::with_client_id(3);
    let root = peer.get_or_insert_text("t");
    ycheck::apply_contained(&peer, &first).expect("the first update applies");
    let deletion = {
        let mut txn = peer.transact_mut();
        root.remove_range(&mut txn, 0, 1);
        txn.encode_update_v1()
    };
    assert!(!replica.holds(&decoded(&deletion)), "a deletion it lacks");
    replica.apply(&mut committed(2, &deletion), now);
    assert!(replica.holds(&decoded(&deletion)));
    let whole = peer
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    assert!(
        replica.holds(&decoded(&whole)),
        "the peer's whole state, deletion included"
    );
}
