//! The change log's contract, run against every store: the log read back
//! in order with authors, times and kinds; positions by time; webhook
//! positions and dead letters.

use std::sync::Arc;

use bytes::Bytes;
use weft_sync::EmbeddedLog;
use weft_sync::changes::{ChangeKind, ChangeLog, DeadLetter};
use weft_sync::history::{History, NewVersion, VersionKind};
use weft_sync::store::{Attribution, NewUpdate};

fn update(doc: &str, byte: u8, author: &str, at_ms: i64) -> NewUpdate {
    NewUpdate {
        doc: doc.into(),
        // Not decoded by the store: any bytes stand for an update.
        update: Bytes::from(vec![byte; 4]),
        attribution: Attribution {
            author: Some(Arc::from(author)),
            at_ms: Some(at_ms),
            node: Some(Arc::from("node-a")),
        },
    }
}

/// Runs the suite on an empty store.
pub(crate) async fn run<S: EmbeddedLog + ChangeLog + History>(store: &S) {
    store.keep_log();
    assert_eq!(store.log_end().await.expect("store call"), 0);
    assert!(
        store
            .changes_after(0, None, 10)
            .await
            .expect("store call")
            .is_empty()
    );

    let positions = store
        .append(&[
            update("a", 1, "ann", 1_000),
            update("b", 2, "bob", 2_000),
            update("a", 3, "bob", 3_000),
        ])
        .await
        .expect("store call");
    assert_eq!(store.log_end().await.expect("store call"), positions[2]);
    let all = store.changes_after(0, None, 10).await.expect("store call");
    let seen: Vec<_> = all
        .iter()
        .map(|change| {
            (
                change.position,
                change.doc.as_str(),
                change.kind,
                change.author.as_deref(),
                change.at_ms,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                positions[0],
                "a",
                ChangeKind::Changed,
                Some("ann"),
                Some(1_000)
            ),
            (
                positions[1],
                "b",
                ChangeKind::Changed,
                Some("bob"),
                Some(2_000)
            ),
            (
                positions[2],
                "a",
                ChangeKind::Changed,
                Some("bob"),
                Some(3_000)
            ),
        ]
    );
    assert_eq!(all[1].update, Bytes::from(vec![2_u8; 4]));
    // After a position, one document, a limit.
    let of_a = store
        .changes_after(positions[0], Some("a"), 10)
        .await
        .expect("store call");
    assert_eq!(of_a.len(), 1);
    assert_eq!(of_a[0].position, positions[2]);
    assert_eq!(
        store
            .changes_after(0, None, 2)
            .await
            .expect("store call")
            .len(),
        2
    );

    // A restore is the update a restore version covers exactly.
    let restored = store
        .append(&[update("a", 4, "cat", 4_000)])
        .await
        .expect("store call");
    store
        .create_version(NewVersion {
            doc: "a",
            name: None,
            kind: VersionKind::Restore,
            at_ms: 4_000,
            covers: restored[0],
            state: &[0, 0],
        })
        .await
        .expect("store call");
    // A deletion is the log's empty marker.
    let deleted = store
        .delete_document("b", &[0], 5_000)
        .await
        .expect("store call");
    let tail = store
        .changes_after(positions[2], None, 10)
        .await
        .expect("store call");
    let kinds: Vec<_> = tail
        .iter()
        .map(|change| (change.position, change.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (restored[0], ChangeKind::Restored),
            (deleted, ChangeKind::Deleted)
        ]
    );
    assert!(tail[1].update.is_empty());
    assert_eq!(tail[1].at_ms, Some(5_000));

    // Positions by time: the last accepted before the instant.
    assert_eq!(
        store.position_before_time(1).await.expect("store call"),
        positions[0] - 1
    );
    assert_eq!(
        store.position_before_time(1_000).await.expect("store call"),
        positions[0] - 1
    );
    assert_eq!(
        store.position_before_time(9_000).await.expect("store call"),
        deleted
    );
    assert_eq!(
        store.position_before_time(2_500).await.expect("store call"),
        positions[2] - 1
    );

    // Delivered positions, per target.
    assert_eq!(
        store
            .delivered_position("https://a.example/hook")
            .await
            .expect("store call"),
        None
    );
    store
        .save_delivered_position("https://a.example/hook", 7)
        .await
        .expect("store call");
    store
        .save_delivered_position("https://a.example/hook", 3)
        .await
        .expect("store call");
    store
        .save_delivered_position("https://b.example/hook", 9)
        .await
        .expect("store call");
    assert_eq!(
        store
            .delivered_position("https://a.example/hook")
            .await
            .expect("store call"),
        Some(3)
    );
    assert_eq!(
        store
            .delivered_position("https://b.example/hook")
            .await
            .expect("store call"),
        Some(9)
    );

    store
        .save_dead_letter(&DeadLetter {
            target: "https://a.example/hook",
            delivery: "1-3",
            doc: "a",
            from: 1,
            to: 3,
            body: b"{}",
            reason: "answered 500 Internal Server Error",
            attempts: 3,
            at_ms: 6_000,
        })
        .await
        .expect("store call");
}
