//! The suite's checks of the [`SnapshotStore`] alone: snapshots of topics
//! (any log but the embedded one), which touch no embedded log.

use crate::store::{EMPTY_UPDATE_V1, Position, Snapshot, SnapshotStore, SnapshotWrite, Tombstone};

pub(super) fn topic_snapshot(byte: u8, partition: i32, offset: i64) -> Snapshot {
    Snapshot {
        state: vec![byte; 4],
        state_vector: vec![byte],
        covers: Position { partition, offset },
        tombstone: None,
    }
}

pub(super) async fn topic_snapshots_round_trip_and_are_fenced(store: &dyn SnapshotStore) {
    let (topic, doc) = ("conformance-topic", "conformance/topic-doc");
    assert!(
        store
            .load_snapshot(topic, doc)
            .await
            .expect("load")
            .is_none()
    );
    let first = topic_snapshot(1, 3, 10);
    assert_eq!(
        store.save_snapshot(topic, doc, &first).await.expect("save"),
        SnapshotWrite::Written
    );
    assert_eq!(
        store.load_snapshot(topic, doc).await.expect("load"),
        Some(first.clone())
    );
    for stale in [topic_snapshot(2, 3, 9), topic_snapshot(2, 3, 10)] {
        assert_eq!(
            store.save_snapshot(topic, doc, &stale).await.expect("save"),
            SnapshotWrite::Superseded,
            "an earlier or equal offset never replaces a later one"
        );
    }
    assert_eq!(
        store.load_snapshot(topic, doc).await.expect("load"),
        Some(first)
    );
    let later = topic_snapshot(3, 3, 11);
    assert_eq!(
        store.save_snapshot(topic, doc, &later).await.expect("save"),
        SnapshotWrite::Written
    );
    let moved = topic_snapshot(4, 5, 2);
    assert_eq!(
        store.save_snapshot(topic, doc, &moved).await.expect("save"),
        SnapshotWrite::Written,
        "another partition (the partition count changed) replaces it"
    );
    assert_eq!(
        store.load_snapshot(topic, doc).await.expect("load"),
        Some(moved)
    );
}

/// The names a listing after `prefix` returns that start with it.
pub(super) async fn listed_names(
    store: &dyn SnapshotStore,
    log: &str,
    prefix: &str,
) -> Vec<String> {
    let before_prefix = prefix.strip_suffix(|_: char| true).unwrap_or("");
    store
        .list_documents(log, before_prefix, 10_000)
        .await
        .expect("list")
        .into_iter()
        .map(|doc| doc.name)
        .filter(|name| name.starts_with(prefix))
        .collect()
}

pub(super) async fn topic_tombstones_round_trip_and_are_not_listed(store: &dyn SnapshotStore) {
    let topic = "conformance-tombstones";
    let (live, deleted) = ("conformance/topic/live", "conformance/topic/deleted");
    store
        .save_snapshot(topic, live, &topic_snapshot(1, 2, 7))
        .await
        .expect("save");
    store
        .save_snapshot(topic, deleted, &topic_snapshot(1, 2, 8))
        .await
        .expect("save");
    let tombstone = Tombstone {
        state_vector: vec![1, 4, 2],
        position: 9,
        deleted_at_ms: 42,
    };
    let deletion = Snapshot {
        state: EMPTY_UPDATE_V1.to_vec(),
        state_vector: vec![0],
        covers: Position {
            partition: 2,
            offset: 9,
        },
        tombstone: Some(tombstone.clone()),
    };
    assert_eq!(
        store
            .save_snapshot(topic, deleted, &deletion)
            .await
            .expect("save"),
        SnapshotWrite::Written
    );
    assert_eq!(
        store
            .save_snapshot(topic, deleted, &topic_snapshot(1, 2, 8))
            .await
            .expect("save"),
        SnapshotWrite::Superseded,
        "a late worker's older snapshot does not undo the deletion"
    );
    assert_eq!(
        store.load_snapshot(topic, deleted).await.expect("load"),
        Some(deletion)
    );
    assert_eq!(
        listed_names(store, topic, "conformance/topic/").await,
        vec![live.to_owned()],
        "a topic's listing skips its deleted documents"
    );
}
