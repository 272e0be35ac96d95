//! History on the SQLite store: a store written before history existed
//! opens with its documents intact, and appends record their attribution.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use weft_persistence::SqliteStore;
use weft_sync::store::{NewUpdate, Position};
use weft_sync::{Attribution, EMBEDDED_LOG, EmbeddedLog, Snapshot, SnapshotStore};

/// A fresh directory for one test, removed when dropped.
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

/// The migrations Weft shipped before history (0001 to 0003), copied into
/// `into` so a migrator runs exactly them.
fn migrations_before_history(into: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    std::fs::create_dir_all(into).expect("create the migrations directory");
    for name in [
        "0001_update_log_and_snapshots.sql",
        "0002_topic_snapshots.sql",
        "0003_tombstones.sql",
    ] {
        std::fs::copy(shipped.join(name), into.join(name)).expect("copy a migration");
    }
}

#[tokio::test]
async fn a_store_written_before_history_opens_with_its_documents() {
    let dir = TempDir::new("pre-history");
    let old_migrations = dir.0.join("old-migrations");
    migrations_before_history(&old_migrations);
    let options = SqliteConnectOptions::new()
        .filename(dir.0.join("weft.db"))
        .create_if_missing(true);
    let old = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open the old store");
    sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .expect("read the old migrations")
        .run(&old)
        .await
        .expect("migrate with the old schema");
    // As the old code wrote them: a snapshot covering seq 1 and a log row
    // after it, without attribution columns.
    let snapshot_state = vec![1_u8, 2, 3];
    sqlx::query("INSERT INTO weft_updates (doc, data) VALUES ('doc', x'0a'), ('doc', x'0b')")
        .execute(&old)
        .await
        .expect("log two updates the old way");
    sqlx::query(
        "INSERT INTO weft_snapshots (doc, state, state_vector, covers_seq, updated_at)
         VALUES ('doc', $1, x'00', 1, 42)",
    )
    .bind(snapshot_state.as_slice())
    .execute(&old)
    .await
    .expect("snapshot the old way");
    sqlx::query("DELETE FROM weft_updates WHERE seq <= 1")
        .execute(&old)
        .await
        .expect("prune the old way");
    old.close().await;

    let store = SqliteStore::open(&dir.url())
        .await
        .expect("the history migration runs on the old store");
    let loaded = store.load("doc").await.expect("load the old document");
    let snapshot = loaded.snapshot.expect("the old snapshot is kept");
    assert_eq!(snapshot.state, snapshot_state);
    assert_eq!(snapshot.covers, Position::embedded(1));
    assert_eq!(loaded.updates.len(), 1, "the old log row after it loads");
    assert_eq!(loaded.updates[0].update, vec![0x0b]);
    // History starts at the old snapshot: it became the first checkpoint.
    let pool = reopen(&dir).await;
    let checkpoint =
        sqlx::query("SELECT covers_seq, state FROM weft_checkpoints WHERE doc = 'doc'")
            .fetch_one(&pool)
            .await
            .expect("the migration checkpoints the old snapshot");
    assert_eq!(checkpoint.get::<i64, _>("covers_seq"), 1);
    assert_eq!(checkpoint.get::<Vec<u8>, _>("state"), snapshot_state);
    // New appends work next to the old rows, and a snapshot still fences.
    store
        .append(&[NewUpdate {
            doc: "doc".into(),
            update: vec![0x0c].into(),
            attribution: Attribution::default(),
        }])
        .await
        .expect("append after migrating");
    let reloaded = store.load("doc").await.expect("load again");
    assert_eq!(reloaded.updates.len(), 2);
    let stale = Snapshot {
        state: vec![9],
        state_vector: vec![0],
        covers: Position::embedded(1),
        tombstone: None,
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, "doc", &stale)
            .await
            .expect("save"),
        weft_sync::store::SnapshotWrite::Superseded
    );
}

#[tokio::test]
async fn appends_record_who_when_and_through_which_node() {
    let dir = TempDir::new("attribution");
    let store = SqliteStore::open(&dir.url()).await.expect("open");
    let attributed = NewUpdate {
        doc: "doc".into(),
        update: vec![1].into(),
        attribution: Attribution {
            author: Some(Arc::from("alice")),
            at_ms: Some(1_700_000_000_123),
            node: Some(Arc::from("node-a")),
        },
    };
    let unattributed = NewUpdate {
        doc: "doc".into(),
        update: vec![2].into(),
        attribution: Attribution::default(),
    };
    // A batch large enough for several statement sizes.
    let mut batch = vec![attributed.clone(); 3];
    batch.push(unattributed);
    let seqs = store.append(&batch).await.expect("append");
    assert_eq!(seqs.len(), 4);
    let pool = reopen(&dir).await;
    let rows = sqlx::query("SELECT author, at_ms, node FROM weft_updates ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("read the log");
    assert_eq!(rows.len(), 4);
    for row in &rows[..3] {
        assert_eq!(
            row.get::<Option<String>, _>("author").as_deref(),
            Some("alice")
        );
        assert_eq!(row.get::<Option<i64>, _>("at_ms"), Some(1_700_000_000_123));
        assert_eq!(
            row.get::<Option<String>, _>("node").as_deref(),
            Some("node-a")
        );
    }
    assert_eq!(rows[3].get::<Option<String>, _>("author"), None);
    assert_eq!(rows[3].get::<Option<i64>, _>("at_ms"), None);
}

async fn reopen(dir: &TempDir) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(dir.0.join("weft.db")))
        .await
        .expect("open the store file directly")
}

/// A Yjs v1 update from `client` inserting `text` at the end of the text
/// root "t", given the document so far.
fn typed(doc: &yrs::Doc, text: &str) -> Vec<u8> {
    use yrs::{GetString as _, ReadTxn as _, Text as _, Transact as _};
    let root = doc.get_or_insert_text("t");
    let before = doc.transact().state_vector();
    let mut txn = doc.transact_mut();
    let end = root.get_string(&txn).len() as u32;
    root.insert(&mut txn, end, text);
    drop(txn);
    doc.transact().encode_state_as_update_v1(&before)
}

fn text_of(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode as _;
    use yrs::{GetString as _, Transact as _};
    let doc = yrs::Doc::new();
    let root = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).expect("decodes"))
        .expect("applies");
    root.get_string(&doc.transact())
}

fn by(author: &str, at_ms: i64, update: Vec<u8>) -> NewUpdate {
    NewUpdate {
        doc: "doc".into(),
        update: update.into(),
        attribution: Attribution {
            author: Some(Arc::from(author)),
            at_ms: Some(at_ms),
            node: Some(Arc::from("node-a")),
        },
    }
}

#[tokio::test]
async fn versions_and_reads_at_any_point_within_the_kept_log() {
    use weft_sync::history::{NewVersion, VersionKind};

    let dir = TempDir::new("versions");
    let store = Arc::new(SqliteStore::open(&dir.url()).await.expect("open"));
    let history: Arc<dyn weft_sync::history::History> = store.clone();
    history.keep_log();
    let writer = yrs::Doc::new();
    let first = store
        .append(&[
            by("alice", 1_000, typed(&writer, "a")),
            by("bob", 2_000, typed(&writer, "b")),
        ])
        .await
        .expect("append");
    let state_ab = {
        use yrs::{ReadTxn as _, Transact as _};
        writer
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default())
    };
    let v1 = history
        .create_version(NewVersion {
            doc: "doc",
            name: Some("draft"),
            kind: VersionKind::Named,
            at_ms: 2_500,
            covers: first[1],
            state: &state_ab,
        })
        .await
        .expect("version");
    assert_eq!(v1.authors, vec!["alice".to_owned(), "bob".to_owned()]);
    // A snapshot after the version prunes nothing while history keeps the log.
    let later = store
        .append(&[
            by("carol", 3_000, typed(&writer, "c")),
            by("alice", 4_000, typed(&writer, "d")),
        ])
        .await
        .expect("append");
    let snapshot = Snapshot {
        state: vec![0, 0],
        state_vector: vec![0],
        covers: Position::embedded(later[1]),
        tombstone: None,
    };
    store
        .save_snapshot(EMBEDDED_LOG, "doc", &snapshot)
        .await
        .expect("snapshot");
    let v2 = history
        .create_version(NewVersion {
            doc: "doc",
            name: None,
            kind: VersionKind::Auto,
            at_ms: 4_500,
            covers: later[1],
            state: &[0, 0],
        })
        .await
        .expect("version");
    assert_eq!(v2.authors, vec!["carol".to_owned(), "alice".to_owned()]);
    let listed = history.versions("doc", None, 10).await.expect("list");
    assert_eq!(listed, vec![v2.clone(), v1.clone()], "newest first");
    let page = history
        .versions("doc", Some(v2.id), 10)
        .await
        .expect("page");
    assert_eq!(page, vec![v1.clone()]);
    assert_eq!(
        history.version("doc", v1.id).await.expect("read"),
        Some(v1.clone())
    );
    assert_eq!(history.version("other", v1.id).await.expect("read"), None);
    // The version reads from its checkpoint; an instant replays the log.
    let at_v1 = history.read_at("doc", v1.covers).await.expect("read at v1");
    assert!(at_v1.updates.is_empty(), "a version is a checkpoint");
    assert_eq!(text_of(&at_v1.fold().expect("fold")), "ab");
    let position = history.position_at("doc", 3_500).await.expect("position");
    assert_eq!(position, Some(later[0]));
    let at_3500 = history.read_at("doc", later[0]).await.expect("read");
    assert_eq!(at_3500.updates.len(), 1);
    assert_eq!(text_of(&at_3500.fold().expect("fold")), "abc");
    assert_eq!(
        history.position_at("doc", 500).await.expect("position"),
        None
    );
    let at_start = history.read_at("doc", first[0]).await.expect("read");
    assert_eq!(text_of(&at_start.fold().expect("fold")), "a");
    let activity = history.activity("doc", 0, 3_000).await.expect("activity");
    let summary: Vec<_> = activity
        .iter()
        .map(|row| {
            (
                row.author.as_deref(),
                row.updates,
                row.first_ms,
                row.last_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("alice"), 1, 1_000, 1_000),
            (Some("bob"), 1, 2_000, 2_000),
            (Some("carol"), 1, 3_000, 3_000)
        ]
    );
}

#[tokio::test]
async fn a_soft_deleted_document_keeps_its_history_until_purged() {
    let dir = TempDir::new("soft-delete");
    let store = Arc::new(SqliteStore::open(&dir.url()).await.expect("open"));
    let history: Arc<dyn weft_sync::history::History> = store.clone();
    history.keep_log();
    let writer = yrs::Doc::new();
    let seqs = store
        .append(&[by("alice", 1_000, typed(&writer, "kept"))])
        .await
        .expect("append");
    let deleted = store
        .delete_document("doc", &[0], 2_000)
        .await
        .expect("delete");
    let listed = store
        .list_documents(EMBEDDED_LOG, "", 10)
        .await
        .expect("list");
    assert!(
        listed.is_empty(),
        "a deleted document is not listed: {listed:?}"
    );
    let loaded = store.load("doc").await.expect("load");
    assert!(
        loaded.updates.is_empty(),
        "a load starts after the deletion"
    );
    let before = history
        .position_before("doc", deleted)
        .await
        .expect("position");
    assert_eq!(before, Some(seqs[0]));
    let then = history.read_at("doc", seqs[0]).await.expect("read");
    assert_eq!(text_of(&then.fold().expect("fold")), "kept");
    // The deletion marker is no point of history.
    assert_eq!(
        history
            .position_at("doc", i64::MAX)
            .await
            .expect("position"),
        Some(seqs[0])
    );
    assert!(history.purge("doc").await.expect("purge"));
    assert_eq!(
        history
            .position_before("doc", deleted)
            .await
            .expect("position"),
        None
    );
    assert!(
        !history.purge("doc").await.expect("purge again"),
        "nothing left"
    );
}
