//! One test suite every store must pass: the
//! [`SnapshotStore`](crate::SnapshotStore) contract per log id, and the
//! [`EmbeddedLog`] it keeps beside it. Each store's crate calls [`run_all`]
//! from its own tests, against a fresh, empty store.

use bytes::Bytes;

use crate::store::{
    EMBEDDED_LOG, EMPTY_UPDATE_V1, EmbeddedLog, NewUpdate, Position, Snapshot, SnapshotWrite,
    Tombstone,
};

mod snapshots;

use snapshots::{
    listed_names, topic_snapshot, topic_snapshots_round_trip_and_are_fenced,
    topic_tombstones_round_trip_and_are_not_listed,
};

fn new_update(doc: &str, byte: u8) -> NewUpdate {
    NewUpdate {
        doc: doc.into(),
        update: Bytes::from(vec![byte; 3]),
        attribution: Default::default(),
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run_all(store: &dyn EmbeddedLog) {
    unknown_document_loads_empty(store).await;
    append_returns_increasing_seqs_and_load_reads_them_in_order(store).await;
    snapshot_prunes_the_log_up_to_its_position(store).await;
    a_read_after_a_position_skips_what_it_covers(store).await;
    stale_snapshot_is_superseded(store).await;
    documents_do_not_see_each_other(store).await;
    topic_snapshots_round_trip_and_are_fenced(store).await;
    topic_snapshots_are_apart_per_topic_and_from_embedded_ones(store).await;
    deletion_leaves_a_tombstone_that_fences_old_snapshots(store).await;
    listing_is_by_name_and_skips_deleted_documents(store).await;
    topic_tombstones_round_trip_and_are_not_listed(store).await;
    revocations_are_kept_once_until_they_end(store).await;
    store
        .check()
        .await
        .expect("check answers on a healthy store");
}

async fn revocations_are_kept_once_until_they_end(store: &dyn EmbeddedLog) {
    store
        .save_revocation("a", b"first", 100)
        .await
        .expect("save");
    store
        .save_revocation("b", b"second", 300)
        .await
        .expect("save");
    store
        .save_revocation("a", b"again", 500)
        .await
        .expect("save again");
    let live = store.load_revocations(50).await.expect("load");
    assert_eq!(
        live,
        vec![b"first".to_vec(), b"second".to_vec()],
        "in order, once each"
    );
    let live = store.load_revocations(100).await.expect("load");
    assert_eq!(
        live,
        vec![b"second".to_vec()],
        "an ended revocation is dropped"
    );
    let live = store.load_revocations(99).await.expect("load");
    assert_eq!(live, vec![b"second".to_vec()], "and stays dropped");
}

async fn unknown_document_loads_empty(store: &dyn EmbeddedLog) {
    let loaded = store.load("conformance/never-written").await.expect("load");
    assert!(loaded.snapshot.is_none());
    assert!(loaded.updates.is_empty());
}

async fn append_returns_increasing_seqs_and_load_reads_them_in_order(store: &dyn EmbeddedLog) {
    let doc = "conformance/append";
    let first = store
        .append(&[new_update(doc, 1), new_update(doc, 2)])
        .await
        .expect("append");
    let second = store.append(&[new_update(doc, 3)]).await.expect("append");
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 1);
    assert!(
        first[0] < first[1] && first[1] < second[0],
        "seqs increase: {first:?} {second:?}"
    );
    let loaded = store.load(doc).await.expect("load");
    let bytes: Vec<u8> = loaded
        .updates
        .iter()
        .map(|logged| logged.update[0])
        .collect();
    assert_eq!(bytes, vec![1, 2, 3]);
    let seqs: Vec<_> = loaded.updates.iter().map(|logged| logged.seq).collect();
    assert_eq!(seqs, vec![first[0], first[1], second[0]]);
}

async fn snapshot_prunes_the_log_up_to_its_position(store: &dyn EmbeddedLog) {
    let doc = "conformance/snapshot";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2), new_update(doc, 3)])
        .await
        .expect("append");
    let snapshot = Snapshot {
        state: vec![9, 9],
        state_vector: vec![0],
        covers: Position::embedded(seqs[1]),
        tombstone: None,
    };
    let written = store
        .save_snapshot(EMBEDDED_LOG, doc, &snapshot)
        .await
        .expect("save snapshot");
    assert_eq!(written, SnapshotWrite::Written);
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.snapshot.as_ref(), Some(&snapshot));
    assert_eq!(
        store
            .load_snapshot(EMBEDDED_LOG, doc)
            .await
            .expect("load snapshot"),
        Some(snapshot.clone()),
        "the embedded log's snapshot is the one its reads start from"
    );
    assert_eq!(
        loaded.updates.len(),
        1,
        "only the update after the snapshot remains"
    );
    assert_eq!(loaded.updates[0].seq, seqs[2]);
}

async fn stale_snapshot_is_superseded(store: &dyn EmbeddedLog) {
    let doc = "conformance/fence";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2)])
        .await
        .expect("append");
    let newer = Snapshot {
        state: vec![2],
        state_vector: vec![0],
        covers: Position::embedded(seqs[1]),
        tombstone: None,
    };
    let older = Snapshot {
        state: vec![1],
        state_vector: vec![0],
        covers: Position::embedded(seqs[0]),
        tombstone: None,
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &newer)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &older)
            .await
            .expect("save"),
        SnapshotWrite::Superseded
    );
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &newer)
            .await
            .expect("save"),
        SnapshotWrite::Superseded
    );
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.snapshot, Some(newer), "the later snapshot stays");
}

async fn documents_do_not_see_each_other(store: &dyn EmbeddedLog) {
    let seqs = store
        .append(&[
            new_update("conformance/a", 1),
            new_update("conformance/a/b", 2),
        ])
        .await
        .expect("append");
    let snapshot = Snapshot {
        state: vec![1],
        state_vector: vec![0],
        covers: Position::embedded(seqs[1]),
        tombstone: None,
    };
    store
        .save_snapshot(EMBEDDED_LOG, "conformance/a", &snapshot)
        .await
        .expect("save");
    let other = store.load("conformance/a/b").await.expect("load");
    assert!(other.snapshot.is_none());
    assert_eq!(
        other.updates.len(),
        1,
        "a snapshot of one doc prunes no other doc's log"
    );
}

async fn topic_snapshots_are_apart_per_topic_and_from_embedded_ones(store: &dyn EmbeddedLog) {
    let doc = "conformance/shared-name";
    store
        .save_snapshot("topic-a", doc, &topic_snapshot(1, 0, 100))
        .await
        .expect("save");
    assert!(
        store
            .load_snapshot("topic-b", doc)
            .await
            .expect("load")
            .is_none(),
        "topics do not see each other's snapshots"
    );
    let embedded = store.load(doc).await.expect("load");
    assert!(
        embedded.snapshot.is_none() && embedded.updates.is_empty(),
        "a topic snapshot is not an embedded one"
    );
    assert!(
        store
            .load_snapshot(EMBEDDED_LOG, doc)
            .await
            .expect("load")
            .is_none(),
        "nor is it the embedded log's snapshot"
    );
    let seqs = store.append(&[new_update(doc, 1)]).await.expect("append");
    store
        .save_snapshot("topic-a", doc, &topic_snapshot(2, 0, seqs[0] + 100))
        .await
        .expect("save");
    assert_eq!(
        store.load(doc).await.expect("load").updates.len(),
        1,
        "a topic snapshot prunes nothing of the embedded log"
    );
}

async fn deletion_leaves_a_tombstone_that_fences_old_snapshots(store: &dyn EmbeddedLog) {
    let doc = "conformance/deleted";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2)])
        .await
        .expect("append");
    let old = Snapshot {
        state: vec![1],
        state_vector: vec![0],
        covers: Position::embedded(seqs[0]),
        tombstone: None,
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &old)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    let deleted_state_vector = [1_u8, 5, 3];
    let position = store
        .delete_document(doc, &deleted_state_vector, 1234)
        .await
        .expect("delete");
    assert!(position > seqs[1], "a deletion takes a new log position");
    let tombstone = Tombstone {
        state_vector: deleted_state_vector.to_vec(),
        position,
        deleted_at_ms: 1234,
    };
    let loaded = store.load(doc).await.expect("load");
    let snapshot = loaded.snapshot.expect("a deletion is a snapshot");
    assert_eq!(snapshot.state, EMPTY_UPDATE_V1, "the empty document");
    assert_eq!(snapshot.covers.offset, position);
    assert_eq!(snapshot.tombstone, Some(tombstone.clone()));
    assert!(loaded.updates.is_empty(), "the log before it is pruned");

    let late = Snapshot {
        covers: Position::embedded(seqs[1]),
        ..old.clone()
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &late)
            .await
            .expect("save"),
        SnapshotWrite::Superseded,
        "a writer still holding the old content cannot bring it back"
    );
    assert!(
        !listed_names(store, EMBEDDED_LOG, "conformance/deleted")
            .await
            .contains(&doc.to_owned()),
        "a deleted document is not listed"
    );

    // Written again: the document exists anew and keeps its tombstone.
    let again = store.append(&[new_update(doc, 3)]).await.expect("append");
    assert!(again[0] > position);
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.updates.len(), 1, "updates after the deletion stay");
    assert!(
        listed_names(store, EMBEDDED_LOG, "conformance/deleted")
            .await
            .contains(&doc.to_owned()),
        "written after its deletion, it is listed again"
    );
    let carried = Snapshot {
        state: vec![3],
        state_vector: vec![0],
        covers: Position::embedded(again[0]),
        tombstone: Some(tombstone.clone()),
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, doc, &carried)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.snapshot, Some(carried), "later snapshots carry it");
    assert!(loaded.updates.is_empty());

    // Deleted twice: the later tombstone replaces the earlier one.
    let second = store
        .delete_document(doc, &[2, 5, 3, 9, 1], 5678)
        .await
        .expect("delete again");
    assert!(second > again[0]);
    let loaded = store.load(doc).await.expect("load");
    let tombstone = loaded
        .snapshot
        .and_then(|snapshot| snapshot.tombstone)
        .expect("tombstone");
    assert_eq!(tombstone.position, second);
    assert_eq!(tombstone.state_vector, vec![2, 5, 3, 9, 1]);
}

async fn listing_is_by_name_and_skips_deleted_documents(store: &dyn EmbeddedLog) {
    let seqs = store
        .append(&[
            new_update("conformance/list/c", 1),
            new_update("conformance/list/a", 1),
            new_update("conformance/list/a", 2),
        ])
        .await
        .expect("append");
    store
        .save_snapshot(
            EMBEDDED_LOG,
            "conformance/list/b",
            &Snapshot {
                state: vec![7; 10],
                state_vector: vec![0],
                covers: Position::embedded(seqs[2]),
                tombstone: None,
            },
        )
        .await
        .expect("save");
    store
        .append(&[new_update("conformance/list/d", 1)])
        .await
        .expect("append");
    store
        .delete_document("conformance/list/d", &[0], 1)
        .await
        .expect("delete");
    let all = store
        .list_documents(EMBEDDED_LOG, "conformance/list/", 10)
        .await
        .expect("list");
    let names: Vec<&str> = all.iter().map(|doc| doc.name.as_str()).collect();
    assert_eq!(
        &names[..3],
        [
            "conformance/list/a",
            "conformance/list/b",
            "conformance/list/c"
        ],
        "by name, once each, without the deleted one"
    );
    assert!(!names.contains(&"conformance/list/d"));
    let b = &all[1];
    assert_eq!(b.snapshot_bytes, 10, "a snapshot's size is listed");
    let page = store
        .list_documents(EMBEDDED_LOG, "conformance/list/", 1)
        .await
        .expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].name, "conformance/list/a");
    let next = store
        .list_documents(EMBEDDED_LOG, "conformance/list/a", 1)
        .await
        .expect("list");
    assert_eq!(next[0].name, "conformance/list/b", "`after` is exclusive");
    assert!(
        listed_names(store, "conformance-list-topic", "conformance/list/")
            .await
            .is_empty(),
        "embedded documents are not in a topic's listing"
    );
}

async fn a_read_after_a_position_skips_what_it_covers(store: &dyn EmbeddedLog) {
    let doc = "conformance/after";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2), new_update(doc, 3)])
        .await
        .expect("append");
    let snapshot = Snapshot {
        state: vec![9],
        state_vector: vec![0],
        covers: Position::embedded(seqs[1]),
        tombstone: None,
    };
    store
        .save_snapshot(EMBEDDED_LOG, doc, &snapshot)
        .await
        .expect("save");
    let before = store.load_after(doc, seqs[0]).await.expect("load");
    assert_eq!(
        before.snapshot,
        Some(snapshot),
        "it covers more: it is read"
    );
    let seqs_of = |read: &crate::store::StoredDoc| -> Vec<i64> {
        read.updates.iter().map(|logged| logged.seq).collect()
    };
    assert_eq!(seqs_of(&before), vec![seqs[2]]);
    let from_it = store.load_after(doc, seqs[1]).await.expect("load");
    assert!(
        from_it.snapshot.is_none(),
        "it covers nothing more: skipped"
    );
    assert_eq!(seqs_of(&from_it), vec![seqs[2]]);
    let past = store.load_after(doc, seqs[2]).await.expect("load");
    assert!(past.snapshot.is_none() && past.updates.is_empty());
}
