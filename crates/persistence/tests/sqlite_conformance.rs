//! The SQLite store against the shared store suite, plus what only a
//! file-backed store can show: data survives reopening.

use std::path::PathBuf;

use weft_persistence::SqliteStore;
use weft_sync::store::NewUpdate;
use weft_sync::{EmbeddedLog, SnapshotStore};

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
        let _stale = std::fs::remove_dir_all(&path);
        Self(path)
    }

    fn url(&self) -> String {
        format!("sqlite://{}/nested/weft.db", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _already_gone = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = TempDir::new("conformance");
    let store = SqliteStore::open(&dir.url())
        .await
        .expect("open creates the directory");
    weft_sync::conformance::run_all(&store).await;
}

#[tokio::test]
async fn appended_updates_survive_reopening() {
    let dir = TempDir::new("reopen");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let update = NewUpdate {
        doc: "doc".into(),
        update: vec![1, 2, 3].into(),
        attribution: Default::default(),
    };
    let seqs = store.append(&[update]).await.expect("append");
    store.close().await;
    let reopened = SqliteStore::open(&dir.url())
        .await
        .expect("reopen runs migrations again");
    let loaded = reopened.load("doc").await.expect("load");
    assert_eq!(loaded.updates.len(), 1);
    assert_eq!(loaded.updates[0].seq, seqs[0]);
    assert_eq!(loaded.updates[0].update, vec![1, 2, 3]);
}

#[tokio::test]
async fn sequence_numbers_are_not_reused_after_pruning() {
    let dir = TempDir::new("seq");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let update = NewUpdate {
        doc: "doc".into(),
        update: vec![1].into(),
        attribution: Default::default(),
    };
    let first = store
        .append(std::slice::from_ref(&update))
        .await
        .expect("append");
    let snapshot = weft_sync::Snapshot {
        state: vec![0],
        state_vector: vec![0],
        covers: weft_sync::store::Position::embedded(first[0]),
        tombstone: None,
    };
    store
        .save_snapshot(weft_sync::EMBEDDED_LOG, "doc", &snapshot)
        .await
        .expect("snapshot prunes the only row");
    let second = store.append(&[update]).await.expect("append");
    assert!(
        second[0] > first[0],
        "a pruned seq is never handed out again"
    );
}

#[tokio::test]
async fn unusable_path_fails_to_open_with_the_cause() {
    let error = weft_persistence::open_store("sqlite:///proc/weft-cannot-create/weft.db")
        .await
        .expect_err("cannot create a directory under /proc");
    let message = format!("{error}");
    assert!(message.contains("create directory"), "{message}");
}

#[tokio::test]
async fn unknown_scheme_is_refused() {
    let error = weft_persistence::open_store("mysql://localhost/weft")
        .await
        .expect_err("no mysql store");
    assert!(format!("{error}").contains("mysql"));
}

/// Two processes (here: two pools) opening one new database at once both
/// start: the migrations take turns instead of the second failing on a
/// table the first just created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_opens_of_a_new_database_at_once_both_succeed() {
    for round in 0..5 {
        let dir = TempDir::new(&format!("concurrent-open-{round}"));
        let url = dir.url();
        let (first, second) = tokio::join!(SqliteStore::open(&url), SqliteStore::open(&url));
        first.expect("first open");
        second.expect("second open");
    }
}

#[tokio::test]
async fn snapshots_stored_in_the_tables_weft_has_always_written_read_back_by_log_id() {
    use sqlx::Connection as _;
    use weft_sync::store::Position;

    let dir = TempDir::new("tables");
    SqliteStore::open(&dir.url())
        .await
        .expect("open creates the schema")
        .close()
        .await;
    // Rows as a store written before the snapshot store was keyed by log
    // id holds them: the embedded log's snapshots and a topic's, each in
    // its own table.
    let mut connection = sqlx::SqliteConnection::connect(&dir.url())
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at)
         VALUES ('embedded-doc', x'0000', x'00', 7, 1)",
    )
    .execute(&mut connection)
    .await
    .expect("insert an embedded snapshot");
    sqlx::query(
        "INSERT INTO weft_topic_snapshots
             (topic, doc, state, state_vector, partition_id, covers_offset, updated_at)
         VALUES ('weft-updates', 'topic-doc', x'0000', x'00', 3, 42, 1)",
    )
    .execute(&mut connection)
    .await
    .expect("insert a topic snapshot");
    connection.close().await.expect("close");

    let store = SqliteStore::open(&dir.url()).await.expect("reopen");
    let embedded = store
        .load_snapshot(weft_sync::EMBEDDED_LOG, "embedded-doc")
        .await
        .expect("read")
        .expect("the embedded log's snapshot");
    assert_eq!(embedded.covers, Position::embedded(7));
    let topic = store
        .load_snapshot("weft-updates", "topic-doc")
        .await
        .expect("read")
        .expect("the topic's snapshot");
    assert_eq!(
        topic.covers,
        Position {
            partition: 3,
            offset: 42
        }
    );
    let listed = |log: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_documents(log, "", 10)
                .await
                .expect("list")
                .into_iter()
                .map(|doc| doc.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(weft_sync::EMBEDDED_LOG).await, vec!["embedded-doc"]);
    assert_eq!(listed("weft-updates").await, vec!["topic-doc"]);
}

/// A batch larger than one statement's rows (256), of a size that is not a
/// power of two, over two documents: every row keeps its document, its
/// bytes and its place, and the sequence numbers come back in the order of
/// the batch.
#[tokio::test]
async fn a_large_batch_keeps_every_row_in_order() {
    let dir = TempDir::new("large-batch");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let batch: Vec<NewUpdate> = (0..301_u16)
        .map(|index| NewUpdate {
            doc: if index % 3 == 0 { "three" } else { "other" }.into(),
            update: index.to_le_bytes().to_vec().into(),
            attribution: Default::default(),
        })
        .collect();
    let seqs = store.append(&batch).await.expect("append");
    assert_eq!(seqs.len(), batch.len());
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "sequence numbers increase in batch order"
    );
    for doc in ["three", "other"] {
        let loaded = store.load(doc).await.expect("load");
        let expected: Vec<(i64, Vec<u8>)> = batch
            .iter()
            .zip(&seqs)
            .filter(|(new, _)| new.doc.as_ref() == doc)
            .map(|(new, seq)| (*seq, new.update.to_vec()))
            .collect();
        let got: Vec<(i64, Vec<u8>)> = loaded
            .updates
            .iter()
            .map(|logged| (logged.seq, logged.update.clone()))
            .collect();
        assert_eq!(got, expected, "{doc}");
    }
}
