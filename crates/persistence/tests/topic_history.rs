//! A cluster's history on the SQL store (`TopicHistory`, SQLite here; the
//! cluster e2e runs it on PostgreSQL): the worker's per-edit rows, stored
//! once however often a record is folded, answer reads at an instant,
//! activity and the attributed log of one topic only (versions and
//! checkpoints are per document, as a cluster has one topic per store); a version a node
//! took before the rows up to it were stored gets its authors once they are;
//! compaction folds a topic's old rows into a checkpoint.

use std::path::PathBuf;

use weft_persistence::{SqliteStore, TopicHistory};
use weft_sync::compaction::{DocumentCompaction, compact_document};
use weft_sync::history::{EditLog, History, LoggedEdit, NewVersion, VersionKind};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
        let _stale = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        Self(path)
    }

    fn url(&self) -> String {
        format!("sqlite://{}/weft.db", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _already_gone = std::fs::remove_dir_all(&self.0);
    }
}

fn edit(position: i64, update: Vec<u8>, author: &str, at_ms: i64) -> LoggedEdit {
    LoggedEdit {
        doc: "doc".into(),
        position,
        update,
        author: Some(author.into()),
        at_ms: Some(at_ms),
        node: Some("node-0".into()),
    }
}

fn text_of(state: &[u8]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).expect("decodes"))
        .expect("applies");
    text.get_string(&doc.transact())
}

#[tokio::test]
async fn per_edit_rows_answer_history_for_their_topic_only() {
    let dir = TempDir::new("topic-history");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let history = TopicHistory::new(store.clone(), "topic-a");
    let other = TopicHistory::new(store.clone(), "topic-b");

    let writer = Doc::with_client_id(7);
    let text = writer.get_or_insert_text("text");
    let mut updates = Vec::new();
    for (at, piece) in [(0, "a"), (1, "b"), (2, "c")] {
        let mut txn = writer.transact_mut();
        text.insert(&mut txn, at, piece);
        updates.push(txn.encode_update_v1());
    }
    let after_two = {
        let doc = Doc::new();
        for update in &updates[..2] {
            doc.transact_mut()
                .apply_update(Update::decode_v1(update).expect("decodes"))
                .expect("applies");
        }
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    };

    // A node versions the document at offset 5 before the worker stored
    // anything: no authors yet.
    let version = history
        .create_version(NewVersion {
            doc: "doc",
            name: Some("early"),
            kind: VersionKind::Named,
            at_ms: 2_500,
            covers: 5,
            state: &after_two,
        })
        .await
        .expect("version");
    assert!(version.authors.is_empty());

    let edits = vec![
        edit(3, updates[0].clone(), "alice", 1_000),
        edit(5, updates[1].clone(), "bob", 2_000),
        edit(9, updates[2].clone(), "alice", 3_000),
    ];
    history.append_edits(&edits).await.expect("append");
    history
        .append_edits(&edits[1..])
        .await
        .expect("a record folded twice is stored once");

    let listed = history.versions("doc", None, 10).await.expect("list");
    assert_eq!(
        listed[0].authors,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    let read_again = history.version("doc", version.id).await.expect("read");
    assert_eq!(
        read_again.map(|version| version.authors),
        Some(vec!["alice".to_owned(), "bob".to_owned()])
    );

    assert_eq!(history.position_at("doc", 999).await.expect("at"), None);
    assert_eq!(
        history.position_at("doc", 1_500).await.expect("at"),
        Some(3)
    );
    let then = history.read_at("doc", 3).await.expect("read");
    assert_eq!(text_of(&then.fold().expect("folds")), "a");
    // Past the checkpoint of the version at 5: its state and record 9.
    let position = history.position_at("doc", 3_000).await.expect("at");
    assert_eq!(position, Some(9));
    let latest = history.read_at("doc", 9).await.expect("read");
    assert_eq!(latest.updates.len(), 1, "replayed from the checkpoint at 5");
    assert_eq!(text_of(&latest.fold().expect("folds")), "abc");

    let activity = history
        .activity("doc", 0, i64::MAX)
        .await
        .expect("activity");
    let per_author: Vec<(Option<String>, u64)> = activity
        .into_iter()
        .map(|row| (row.author, row.updates))
        .collect();
    assert_eq!(
        per_author,
        vec![(Some("alice".to_owned()), 2), (Some("bob".to_owned()), 1)]
    );
    let between = history.updates_between("doc", 3, 9).await.expect("log");
    let authors: Vec<Option<String>> = between.into_iter().map(|update| update.author).collect();
    assert_eq!(
        authors,
        vec![Some("bob".to_owned()), Some("alice".to_owned())]
    );

    // Another topic's rows are its own (versions and checkpoints are per
    // document: one cluster per store).
    assert!(
        other
            .updates_between("doc", -1, i64::MAX)
            .await
            .expect("log")
            .is_empty()
    );
    assert!(
        other
            .activity("doc", 0, i64::MAX)
            .await
            .expect("activity")
            .is_empty()
    );

    assert!(history.purge("doc").await.expect("purge"));
    assert_eq!(
        history.position_at("doc", i64::MAX).await.expect("at"),
        None
    );
    assert!(
        history
            .versions("doc", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn compaction_folds_a_topics_per_edit_rows_into_a_checkpoint() {
    let dir = TempDir::new("topic-compaction");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let history = TopicHistory::new(store.clone(), "topic-a");
    let other = TopicHistory::new(store.clone(), "topic-b");

    let writer = Doc::with_client_id(7);
    let text = writer.get_or_insert_text("text");
    let mut edits = Vec::new();
    for (index, (position, at_ms)) in [(3, 1_000), (5, 2_000), (9, 3_000)].into_iter().enumerate() {
        let mut txn = writer.transact_mut();
        text.insert(
            &mut txn,
            u32::try_from(index).expect("small"),
            "abc".get(index..=index).expect("char"),
        );
        edits.push(edit(position, txn.encode_update_v1(), "alice", at_ms));
    }
    history.append_edits(&edits).await.expect("append");
    other
        .append_edits(&edits)
        .await
        .expect("append to the other topic");

    assert_eq!(
        history
            .history_documents("topic-a", "", 10)
            .await
            .expect("list"),
        vec!["doc".to_owned()],
        "a document with per-edit rows and no checkpoint is listed"
    );
    // The cutoff falls between the second and the third edit.
    let compacted = compact_document(&history, "topic-a", "doc", 2_500)
        .await
        .expect("compact");
    assert_eq!(compacted, DocumentCompaction::Compacted { removed: 2 });
    let again = compact_document(&history, "topic-a", "doc", 2_500)
        .await
        .expect("compact again");
    assert_eq!(again, DocumentCompaction::Nothing, "idempotent");

    // The rows up to the cutoff are folded into a checkpoint at offset 5:
    // reads at and after it are unchanged, the rows gone.
    assert_eq!(
        history
            .updates_between("doc", -1, i64::MAX)
            .await
            .expect("log")
            .len(),
        1
    );
    let at_five = history.read_at("doc", 5).await.expect("read");
    assert!(at_five.updates.is_empty(), "the checkpoint alone");
    assert_eq!(text_of(&at_five.fold().expect("folds")), "ab");
    let latest = history.read_at("doc", 9).await.expect("read");
    assert_eq!(text_of(&latest.fold().expect("folds")), "abc");
    // The other topic's rows are its own.
    assert_eq!(
        other
            .updates_between("doc", -1, i64::MAX)
            .await
            .expect("log")
            .len(),
        3
    );
    let stats = history.history_stats("topic-a").await.expect("stats");
    assert!(stats.bytes > 0);
}

mod topic_feed_suite;

#[tokio::test]
async fn a_topic_feed_reads_the_stored_rows_in_one_order() {
    let dir = TempDir::new("topic-feed");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let feed = TopicHistory::new(store.clone(), "weft-updates");
    let other = TopicHistory::new(store, "other-updates");
    topic_feed_suite::run(&feed, &other).await;
}
