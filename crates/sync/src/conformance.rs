//! One test suite every [`DocStore`] must pass. Each store's crate calls
//! [`run_all`] from its own tests, against a fresh, empty store.

use bytes::Bytes;

use crate::store::{DocStore, NewUpdate, Snapshot, SnapshotWrite, TopicSnapshot};

fn new_update(doc: &str, byte: u8) -> NewUpdate {
    NewUpdate {
        doc: doc.into(),
        update: Bytes::from(vec![byte; 3]),
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn run_all(store: &dyn DocStore) {
    unknown_document_loads_empty(store).await;
    append_returns_increasing_seqs_and_load_reads_them_in_order(store).await;
    snapshot_prunes_the_log_up_to_its_position(store).await;
    stale_snapshot_is_superseded(store).await;
    documents_do_not_see_each_other(store).await;
    topic_snapshots_round_trip_and_are_fenced(store).await;
    topic_snapshots_are_apart_per_topic_and_from_embedded_ones(store).await;
    store
        .check()
        .await
        .expect("check answers on a healthy store");
}

async fn unknown_document_loads_empty(store: &dyn DocStore) {
    let loaded = store.load("conformance/never-written").await.expect("load");
    assert!(loaded.snapshot.is_none());
    assert!(loaded.updates.is_empty());
}

async fn append_returns_increasing_seqs_and_load_reads_them_in_order(store: &dyn DocStore) {
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

async fn snapshot_prunes_the_log_up_to_its_position(store: &dyn DocStore) {
    let doc = "conformance/snapshot";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2), new_update(doc, 3)])
        .await
        .expect("append");
    let snapshot = Snapshot {
        state: vec![9, 9],
        state_vector: vec![0],
        covers_seq: seqs[1],
    };
    let written = store
        .save_snapshot(doc, &snapshot)
        .await
        .expect("save snapshot");
    assert_eq!(written, SnapshotWrite::Written);
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.snapshot.as_ref(), Some(&snapshot));
    assert_eq!(
        loaded.updates.len(),
        1,
        "only the update after the snapshot remains"
    );
    assert_eq!(loaded.updates[0].seq, seqs[2]);
}

async fn stale_snapshot_is_superseded(store: &dyn DocStore) {
    let doc = "conformance/fence";
    let seqs = store
        .append(&[new_update(doc, 1), new_update(doc, 2)])
        .await
        .expect("append");
    let newer = Snapshot {
        state: vec![2],
        state_vector: vec![0],
        covers_seq: seqs[1],
    };
    let older = Snapshot {
        state: vec![1],
        state_vector: vec![0],
        covers_seq: seqs[0],
    };
    assert_eq!(
        store.save_snapshot(doc, &newer).await.expect("save"),
        SnapshotWrite::Written
    );
    assert_eq!(
        store.save_snapshot(doc, &older).await.expect("save"),
        SnapshotWrite::Superseded
    );
    assert_eq!(
        store.save_snapshot(doc, &newer).await.expect("save"),
        SnapshotWrite::Superseded
    );
    let loaded = store.load(doc).await.expect("load");
    assert_eq!(loaded.snapshot, Some(newer), "the later snapshot stays");
}

async fn documents_do_not_see_each_other(store: &dyn DocStore) {
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
        covers_seq: seqs[1],
    };
    store
        .save_snapshot("conformance/a", &snapshot)
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

fn topic_snapshot(byte: u8, partition: i32, covers_offset: i64) -> TopicSnapshot {
    TopicSnapshot {
        state: vec![byte; 4],
        state_vector: vec![byte],
        partition,
        covers_offset,
    }
}

async fn topic_snapshots_round_trip_and_are_fenced(store: &dyn DocStore) {
    let (topic, doc) = ("conformance-topic", "conformance/topic-doc");
    assert!(
        store
            .load_topic_snapshot(topic, doc)
            .await
            .expect("load")
            .is_none()
    );
    let first = topic_snapshot(1, 3, 10);
    assert_eq!(
        store
            .save_topic_snapshot(topic, doc, &first)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    assert_eq!(
        store.load_topic_snapshot(topic, doc).await.expect("load"),
        Some(first.clone())
    );
    for stale in [topic_snapshot(2, 3, 9), topic_snapshot(2, 3, 10)] {
        assert_eq!(
            store
                .save_topic_snapshot(topic, doc, &stale)
                .await
                .expect("save"),
            SnapshotWrite::Superseded,
            "an earlier or equal offset never replaces a later one"
        );
    }
    assert_eq!(
        store.load_topic_snapshot(topic, doc).await.expect("load"),
        Some(first)
    );
    let later = topic_snapshot(3, 3, 11);
    assert_eq!(
        store
            .save_topic_snapshot(topic, doc, &later)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    let moved = topic_snapshot(4, 5, 2);
    assert_eq!(
        store
            .save_topic_snapshot(topic, doc, &moved)
            .await
            .expect("save"),
        SnapshotWrite::Written,
        "another partition (the partition count changed) replaces it"
    );
    assert_eq!(
        store.load_topic_snapshot(topic, doc).await.expect("load"),
        Some(moved)
    );
}

async fn topic_snapshots_are_apart_per_topic_and_from_embedded_ones(store: &dyn DocStore) {
    let doc = "conformance/shared-name";
    store
        .save_topic_snapshot("topic-a", doc, &topic_snapshot(1, 0, 100))
        .await
        .expect("save");
    assert!(
        store
            .load_topic_snapshot("topic-b", doc)
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
}
