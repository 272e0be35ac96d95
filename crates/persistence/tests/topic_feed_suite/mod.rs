//! A cluster's change feed (`ChangeLog` for `TopicHistory`), run against
//! every store: the worker's rows read back in the order they were stored
//! across documents (partitions), one cursor for the topic; a record
//! stored twice keeps its first number; other topics' rows are not in it;
//! webhook positions and replay requests are kept per topic.

use weft_sync::changes::{ChangeKind, ChangeLog, ReplayRequest, ReplayRequests};
use weft_sync::history::{EditLog, LoggedEdit};

fn edit(doc: &str, offset: i64, byte: u8, at_ms: i64) -> LoggedEdit {
    LoggedEdit {
        doc: doc.into(),
        position: offset,
        // Not decoded by the feed: any bytes stand for an update; none
        // for a deletion.
        update: vec![byte; usize::from(byte.min(4))],
        author: Some("ann".into()),
        at_ms: Some(at_ms),
        node: Some("node-a".into()),
    }
}

/// Runs the suite on two topics' logs of one empty store.
pub(crate) async fn run<L: EditLog + ChangeLog + ReplayRequests>(feed: &L, other_topic: &L) {
    assert_eq!(feed.log_end().await.expect("store call"), 0);
    assert!(
        feed.changes_after(0, None, 10)
            .await
            .expect("store call")
            .is_empty()
    );

    // Two partitions' batches: offsets are per partition and repeat
    // across documents, the feed's numbers do not.
    feed.append_edits(&[edit("a", 7, 1, 1_000), edit("a", 8, 2, 2_000)])
        .await
        .expect("store call");
    other_topic
        .append_edits(&[edit("a", 1, 9, 1_500)])
        .await
        .expect("store call");
    feed.append_edits(&[edit("b", 7, 3, 3_000), edit("b", 8, 0, 4_000)])
        .await
        .expect("store call");
    // A batch folded again after a crash: stored once, numbers kept.
    feed.append_edits(&[edit("a", 8, 2, 2_000), edit("a", 9, 4, 5_000)])
        .await
        .expect("store call");

    let all = feed.changes_after(0, None, 10).await.expect("store call");
    let seen: Vec<_> = all
        .iter()
        .map(|change| {
            (
                change.position,
                change.doc.as_str(),
                change.kind,
                change.at_ms,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "a", ChangeKind::Changed, Some(1_000)),
            (2, "a", ChangeKind::Changed, Some(2_000)),
            (3, "b", ChangeKind::Changed, Some(3_000)),
            (4, "b", ChangeKind::Deleted, Some(4_000)),
            (6, "a", ChangeKind::Changed, Some(5_000)),
        ],
        "every row once, in the order stored, the other topic's left out"
    );
    assert_eq!(all[0].author.as_deref(), Some("ann"));
    assert_eq!(all[0].update.as_ref(), &[1]);
    assert_eq!(feed.log_end().await.expect("store call"), 6);
    assert_eq!(other_topic.log_end().await.expect("store call"), 1);

    let after = feed.changes_after(2, None, 2).await.expect("store call");
    assert_eq!(
        after
            .iter()
            .map(|change| change.position)
            .collect::<Vec<_>>(),
        vec![3, 4],
        "after a cursor, limited"
    );
    let doc_a = feed
        .changes_after(1, Some("a"), 10)
        .await
        .expect("store call");
    assert_eq!(
        doc_a
            .iter()
            .map(|change| change.position)
            .collect::<Vec<_>>(),
        vec![2, 6]
    );

    assert_eq!(
        feed.position_before_time(3_000).await.expect("store call"),
        2
    );
    assert_eq!(feed.position_before_time(0).await.expect("store call"), 0);
    assert_eq!(
        feed.position_before_time(9_000).await.expect("store call"),
        6
    );

    let target = "http://127.0.0.1:9/hook";
    assert_eq!(
        feed.delivered_position(target).await.expect("store call"),
        None
    );
    feed.save_delivered_position(target, 4)
        .await
        .expect("store call");
    feed.save_delivered_position(target, 6)
        .await
        .expect("store call");
    assert_eq!(
        feed.delivered_position(target).await.expect("store call"),
        Some(6)
    );
    assert_eq!(
        other_topic
            .delivered_position(target)
            .await
            .expect("store call"),
        None,
        "positions are per topic"
    );

    // Replay requests: pending in id order, per topic, until applied.
    assert!(
        feed.pending_replays(10)
            .await
            .expect("store call")
            .is_empty()
    );
    let first = feed.request_replay(1_000, 0).await.expect("store call");
    let second = feed.request_replay(9_000, 6).await.expect("store call");
    assert!(second > first, "ids increase");
    other_topic
        .request_replay(5_000, 1)
        .await
        .expect("store call");
    assert_eq!(
        feed.pending_replays(10).await.expect("store call"),
        vec![
            ReplayRequest {
                id: first,
                from_ms: 1_000,
                after: 0
            },
            ReplayRequest {
                id: second,
                from_ms: 9_000,
                after: 6
            },
        ]
    );
    assert_eq!(feed.pending_replays(1).await.expect("store call").len(), 1);
    feed.finish_replay(first, 10_000).await.expect("store call");
    let pending = feed.pending_replays(10).await.expect("store call");
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![second]
    );
    assert_eq!(
        other_topic
            .pending_replays(10)
            .await
            .expect("store call")
            .len(),
        1,
        "requests are per topic"
    );
}
