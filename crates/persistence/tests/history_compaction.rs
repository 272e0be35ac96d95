//! History compaction on both stores: history older than the cutoff folds
//! into one checkpoint, the document and every read after the cutoff stay
//! as they were, named versions stay readable, and a second run changes
//! nothing.

use std::sync::Arc;

use weft_persistence::SqliteStore;
use weft_sync::compaction::{DocumentCompaction, compact_document};
use weft_sync::history::{Compacted, Compaction, History, NewVersion, VersionKind};
use weft_sync::store::{NewUpdate, Position};
use weft_sync::{Attribution, EMBEDDED_LOG, EmbeddedLog, LogSeq, Snapshot, SnapshotStore};
use yrs::updates::decoder::Decode as _;
use yrs::updates::encoder::Encode as _;
use yrs::{GetString as _, ReadTxn as _, StateVector, Text as _, Transact as _};

/// The edits' times: long before the cutoff, then after it.
const OLD_MS: i64 = 1_000_000;
const CUTOFF_MS: i64 = 2_000_000;
const NEW_MS: i64 = 3_000_000;

/// A writer whose edits are appended one per update.
struct Writer {
    doc: yrs::Doc,
}

impl Writer {
    fn new() -> Self {
        Self {
            doc: yrs::Doc::new(),
        }
    }

    /// Appends `text` at the end, as one logged update at `at_ms`.
    async fn type_text(&self, store: &dyn EmbeddedLog, text: &str, at_ms: i64) -> LogSeq {
        let root = self.doc.get_or_insert_text("t");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let end = root.len(&txn);
            root.insert(&mut txn, end, text);
        }
        let update = self.doc.transact().encode_state_as_update_v1(&before);
        let seqs = store
            .append(&[NewUpdate {
                doc: "doc".into(),
                update: update.into(),
                attribution: Attribution {
                    author: Some(Arc::from("alice")),
                    at_ms: Some(at_ms),
                    node: Some(Arc::from("weft-0")),
                },
            }])
            .await
            .expect("append");
        seqs[0]
    }

    fn state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }
}

fn text_of(state: &[u8]) -> String {
    let doc = yrs::Doc::new();
    let root = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).expect("decodes"))
        .expect("applies");
    root.get_string(&doc.transact())
}

async fn text_at(history: &dyn History, covers: LogSeq) -> String {
    let read = history.read_at("doc", covers).await.expect("read");
    text_of(&read.fold().expect("fold"))
}

/// The suite, on a fresh store.
async fn compaction_suite<S>(store: &S)
where
    S: EmbeddedLog + SnapshotStore + History,
{
    store.keep_log();
    let writer = Writer::new();
    let first = writer.type_text(store, "a", OLD_MS).await;
    let named = store
        .create_version(NewVersion {
            doc: "doc",
            name: Some("keep"),
            kind: VersionKind::Named,
            at_ms: OLD_MS,
            covers: first,
            state: &writer.state(),
        })
        .await
        .expect("named version");
    let second = writer.type_text(store, "b", OLD_MS).await;
    let automatic = store
        .create_version(NewVersion {
            doc: "doc",
            name: None,
            kind: VersionKind::Auto,
            at_ms: OLD_MS,
            covers: second,
            state: &writer.state(),
        })
        .await
        .expect("automatic version");
    let third = writer.type_text(store, "c", OLD_MS + 1).await;
    let last_old = writer.type_text(store, "d", CUTOFF_MS - 1).await;
    let newest = writer.type_text(store, "e", NEW_MS).await;
    // The snapshot covers everything: a load reads no log.
    let state = writer.state();
    store
        .save_snapshot(
            EMBEDDED_LOG,
            "doc",
            &Snapshot {
                state_vector: writer.doc.transact().state_vector().encode_v1(),
                state: state.clone(),
                covers: Position::embedded(newest),
                tombstone: None,
            },
        )
        .await
        .expect("snapshot");
    assert_eq!(text_at(store, third).await, "abc");
    let bytes_before = store.history_stats(EMBEDDED_LOG).await.expect("stats");
    assert_eq!(bytes_before.versions, 2);

    let compacted = compact_document(store, EMBEDDED_LOG, "doc", CUTOFF_MS)
        .await
        .expect("compact");
    // Log rows a, b, c, d; the automatic version and its checkpoint.
    assert_eq!(compacted, DocumentCompaction::Compacted { removed: 6 });

    // The log before the cutoff is gone; the edit after it stays.
    let activity = store.activity("doc", 0, CUTOFF_MS).await.expect("activity");
    assert!(
        activity.is_empty(),
        "log rows before the cutoff: {activity:?}"
    );
    let activity = store.activity("doc", 0, NEW_MS).await.expect("activity");
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].updates, 1);
    // The document loads as it was.
    let loaded = store.load("doc").await.expect("load");
    let snapshot = loaded.snapshot.expect("snapshot kept");
    assert_eq!(text_of(&snapshot.state), "abcde");
    assert!(loaded.updates.is_empty());
    // Reads at and after the cutoff's position are unchanged.
    assert_eq!(
        store.position_at("doc", CUTOFF_MS).await.expect("position"),
        Some(last_old)
    );
    assert_eq!(text_at(store, last_old).await, "abcd");
    assert_eq!(
        store.position_at("doc", NEW_MS).await.expect("position"),
        Some(newest)
    );
    assert_eq!(text_at(store, newest).await, "abcde");
    // Before the cutoff, only what a named version holds is left.
    assert_eq!(text_at(store, third).await, "a");
    // The named version stays and reads as it was; the automatic is gone.
    let kept = store.version("doc", named.id).await.expect("read version");
    assert_eq!(kept.as_ref().map(|version| version.covers), Some(first));
    assert_eq!(text_at(store, first).await, "a");
    assert!(
        store
            .version("doc", automatic.id)
            .await
            .expect("read version")
            .is_none()
    );
    let bytes_after = store.history_stats(EMBEDDED_LOG).await.expect("stats");
    assert_eq!(bytes_after.versions, 1);
    assert!(
        bytes_after.bytes < bytes_before.bytes,
        "{bytes_after:?} after, {bytes_before:?} before"
    );

    // Idempotent: nothing left to remove.
    let again = compact_document(store, EMBEDDED_LOG, "doc", CUTOFF_MS)
        .await
        .expect("compact again");
    assert_eq!(again, DocumentCompaction::Nothing);
    assert_eq!(
        store.history_stats(EMBEDDED_LOG).await.expect("stats"),
        bytes_after
    );
    assert_eq!(text_at(store, newest).await, "abcde");

    // The pass lists the document, loaded or not.
    let listed = store
        .history_documents(EMBEDDED_LOG, "", 10)
        .await
        .expect("list");
    assert_eq!(listed, vec!["doc".to_owned()]);

    // A topic's history (no log in the store): older checkpoints and
    // versions go, the newest by the cutoff stays.
    let later = store
        .create_version(NewVersion {
            doc: "doc",
            name: None,
            kind: VersionKind::Restore,
            at_ms: NEW_MS,
            covers: newest,
            state: &state,
        })
        .await
        .expect("version");
    let topic = compact_document(store, "weft-updates", "doc", NEW_MS)
        .await
        .expect("compact the topic's history");
    assert_eq!(topic, DocumentCompaction::Compacted { removed: 1 });
    assert_eq!(text_at(store, first).await, "a", "the named version stays");
    assert!(
        store
            .version("doc", later.id)
            .await
            .expect("read")
            .is_some()
    );
    // A fold made stale by a purge writes nothing: the purged history
    // does not come back.
    let writer = Writer::new();
    writer.type_text(store, "x", NEW_MS).await;
    let doomed = writer.type_text(store, "y", NEW_MS).await;
    store
        .save_snapshot(
            EMBEDDED_LOG,
            "doc",
            &Snapshot {
                state_vector: writer.doc.transact().state_vector().encode_v1(),
                state: writer.state(),
                covers: Position::embedded(doomed),
                tombstone: None,
            },
        )
        .await
        .expect("snapshot");
    let plan = store
        .compaction_plan(EMBEDDED_LOG, "doc", NEW_MS + 1)
        .await
        .expect("plan")
        .expect("history before the cutoff");
    let folded = plan.read.fold().expect("fold");
    assert!(store.purge("doc").await.expect("purge"));
    let stale = store
        .compact(
            EMBEDDED_LOG,
            Compaction {
                doc: "doc",
                covers: plan.covers,
                basis: plan.basis,
                folded_updates: plan.read.updates.len() as u64,
                state: Some(&folded),
                at_ms: NEW_MS + 1,
            },
        )
        .await
        .expect("compact");
    assert_eq!(stale, Compacted::Stale);
    let read = store.read_at("doc", doomed).await.expect("read");
    assert!(
        read.checkpoint.is_none() && read.updates.is_empty(),
        "purged for good"
    );
    assert!(
        store
            .versions("doc", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// The log of a document whose snapshot lags stays for its load.
async fn a_log_no_snapshot_covers_stays<S>(store: &S)
where
    S: EmbeddedLog + SnapshotStore + History,
{
    store.keep_log();
    let writer = Writer::new();
    writer.type_text(store, "a", OLD_MS).await;
    let seq = writer.type_text(store, "b", OLD_MS).await;
    let compacted = compact_document(store, EMBEDDED_LOG, "doc", CUTOFF_MS)
        .await
        .expect("compact");
    assert_eq!(
        compacted,
        DocumentCompaction::Nothing,
        "no snapshot: the log is the document"
    );
    let loaded = store.load("doc").await.expect("load");
    assert_eq!(loaded.updates.len(), 2);
    assert_eq!(text_at(store, seq).await, "ab");
}

#[tokio::test]
async fn sqlite_compaction_folds_history_before_the_cutoff() {
    let dir = std::env::temp_dir().join(format!("weft-compaction-{}", std::process::id()));
    let _stale = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&format!("sqlite://{}/weft.db", dir.display()))
        .await
        .expect("open");
    compaction_suite(&store).await;
    store.close().await;
    let other = dir.join("other");
    let store = SqliteStore::open(&format!("sqlite://{}/weft.db", other.display()))
        .await
        .expect("open");
    a_log_no_snapshot_covers_stays(&store).await;
    store.close().await;
    let _cleaned = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::{SystemTime, UNIX_EPOCH};

    use sqlx::Connection as _;
    use weft_persistence::PostgresStore;

    fn admin_url() -> Option<String> {
        match std::env::var("WEFT_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some() => {
                panic!("WEFT_TEST_POSTGRES_URL is not set: `make test` provides a PostgreSQL")
            }
            _ => {
                eprintln!("skipped: set WEFT_TEST_POSTGRES_URL (make test does)");
                None
            }
        }
    }

    /// Creates a database of its own and returns its URL and name.
    async fn create_database(admin: &str, label: &str) -> (String, String) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let name = format!("weft_test_{label}_{}_{nanos}", std::process::id());
        let mut connection = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect admin");
        // The name is ours (letters, digits, underscores): safe to splice.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        let (base, _database) = admin.rsplit_once('/').expect("a URL with a database");
        let query = admin
            .split_once('?')
            .map_or(String::new(), |(_, query)| format!("?{query}"));
        (format!("{base}/{name}{query}"), name)
    }

    async fn drop_database(admin: &str, name: &str) {
        let mut connection = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect admin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await
        .expect("drop test database");
    }

    #[tokio::test]
    async fn postgres_compaction_folds_history_before_the_cutoff() {
        let Some(admin) = admin_url() else { return };
        for (label, lagging) in [("compaction", false), ("compaction_lag", true)] {
            let (url, name) = create_database(&admin, label).await;
            let store = PostgresStore::open(&url).await.expect("open");
            if lagging {
                super::a_log_no_snapshot_covers_stays(&store).await;
            } else {
                super::compaction_suite(&store).await;
            }
            store.close().await;
            drop_database(&admin, &name).await;
        }
    }
}
