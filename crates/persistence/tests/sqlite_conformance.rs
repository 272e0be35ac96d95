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
