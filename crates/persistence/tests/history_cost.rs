//! The cost of history on the SQLite store, measured (ignored by default:
//! run `cargo test --release -p weft-persistence --test history_cost --
//! --ignored --nocapture`): bytes per edit of the attributed log, and the
//! time to read a document at an old version and at an instant with many
//! edits since the nearest checkpoint; what compacting that document frees
//! and how long it takes, and one compaction pass over 1,000 documents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use weft_persistence::SqliteStore;
use weft_sync::compaction::{compact_document, compact_pass};
use weft_sync::history::{History, NewVersion, VersionKind};
use weft_sync::store::{NewUpdate, Position};
use weft_sync::{Attribution, EMBEDDED_LOG, EmbeddedLog, LogSeq, Snapshot, SnapshotStore};
use yrs::updates::encoder::Encode as _;
use yrs::{GetString as _, ReadTxn as _, StateVector, Text as _, Transact as _};

/// Edits after the version.
const EDITS: usize = 100_000;
/// Updates per append (one group commit).
const BATCH: usize = 100;
/// When every edit was accepted (ms since the Unix epoch).
const EDIT_AT_MS: i64 = 1_796_316_456_000;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture, in release"]
async fn bytes_per_edit_and_time_to_read_an_old_version() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("weft-history-cost-{}", std::process::id()));
    let _stale = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the directory");
    let url = format!("sqlite://{}/weft.db", dir.display());
    let store = Arc::new(SqliteStore::open(&url).await.expect("open"));
    let history: Arc<dyn History> = store.clone();
    history.keep_log();
    let writer = yrs::Doc::new();
    let text = writer.get_or_insert_text("t");
    text.insert(&mut writer.transact_mut(), 0, "the version");
    let first = store
        .append(&[edit(
            writer
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )])
        .await
        .expect("append");
    let version_state = writer
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let version = history
        .create_version(NewVersion {
            doc: "doc",
            name: Some("old"),
            kind: VersionKind::Named,
            at_ms: 1,
            covers: first[0],
            state: &version_state,
        })
        .await
        .expect("version");
    let size_before = database_bytes(&dir);
    let mut payload_bytes = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = 0;
    // Each transaction's own update, as a Yjs client's `update` event
    // carries it (only that transaction's deletions).
    let captured = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = captured.clone();
    writer
        .observe_update_v1("measure", move |_: &yrs::TransactionMut, event| {
            if let Ok(mut updates) = sink.lock() {
                updates.push(event.update.clone());
            }
        })
        .expect("observe updates");
    for index in 0..EDITS {
        {
            let mut txn = writer.transact_mut();
            let end = text.len(&txn);
            // Typing: one character per edit, a deletion now and then.
            if index % 10 == 9 {
                text.remove_range(&mut txn, end - 1, 1);
            } else {
                text.insert(&mut txn, end, "x");
            }
        }
        let update = captured
            .lock()
            .expect("no panic while holding it")
            .pop()
            .expect("the edit's update");
        payload_bytes += update.len();
        batch.push(edit(update));
        if batch.len() == BATCH {
            let seqs = store.append(&batch).await.expect("append");
            last = *seqs.last().expect("appended");
            batch.clear();
        }
    }
    let size_after = database_bytes(&dir);
    let per_edit = (size_after - size_before) as f64 / EDITS as f64;
    println!(
        "history cost: {EDITS} one-character edits, Yjs update {:.1} B/edit on average, database growth {per_edit:.1} B/edit (SQLite file + WAL, with author, time and node)",
        payload_bytes as f64 / EDITS as f64
    );
    let started = Instant::now();
    let old = history.read_at("doc", version.covers).await.expect("read");
    let folded = old.fold().expect("fold");
    let version_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(text_of(&folded), "the version");
    println!(
        "read at the old version ({EDITS} edits since): {version_ms:.1} ms (its checkpoint, {} updates replayed)",
        old.updates.len()
    );
    let started = Instant::now();
    let newest = history.read_at("doc", last).await.expect("read");
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let folded = newest.fold().expect("fold");
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(newest.updates.len(), EDITS);
    assert!(text_of(&folded).starts_with("the versionx"));
    println!(
        "read at an instant {EDITS} edits after the nearest checkpoint: {total_ms:.0} ms ({read_ms:.0} ms reading the log, the rest folding it)"
    );
    compact_and_measure(&store, &dir, &writer, last).await;
    store.close().await;
    let _cleaned = std::fs::remove_dir_all(&dir);
}

/// Compacts the document at a cutoff after every edit (its snapshot
/// covering them, as after an unload) and prints what it freed.
async fn compact_and_measure(store: &SqliteStore, dir: &Path, writer: &yrs::Doc, last: LogSeq) {
    store
        .save_snapshot(
            EMBEDDED_LOG,
            "doc",
            &Snapshot {
                state: writer
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
                state_vector: writer.transact().state_vector().encode_v1(),
                covers: Position::embedded(last),
                tombstone: None,
            },
        )
        .await
        .expect("snapshot");
    let stats_before = store.history_stats(EMBEDDED_LOG).await.expect("stats");
    let used_before = used_bytes(dir).await;
    let started = Instant::now();
    let compacted = compact_document(store, EMBEDDED_LOG, "doc", EDIT_AT_MS + 1)
        .await
        .expect("compact");
    let compact_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats_after = store.history_stats(EMBEDDED_LOG).await.expect("stats");
    let used_after = used_bytes(dir).await;
    println!(
        "compaction of the {EDITS}-edit document at a cutoff after its last edit: {compacted:?} in {compact_ms:.0} ms; history payload {} -> {} B; database pages in use {used_before} -> {used_after} B (the file keeps its size: freed pages are reused)",
        stats_before.bytes, stats_after.bytes
    );
    assert!(stats_after.bytes < stats_before.bytes / 2);
    let started = Instant::now();
    let read = store.read_at("doc", last).await.expect("read");
    let folded = read.fold().expect("fold");
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(read.updates.is_empty());
    assert!(text_of(&folded).starts_with("the versionx"));
    println!(
        "read at the last edit after compaction: {read_ms:.1} ms (its checkpoint, nothing replayed)"
    );
}

/// Documents in the pass measurement.
const PASS_DOCUMENTS: usize = 1_000;
/// Edits per document there, before the cutoff.
const PASS_EDITS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored --nocapture, in release"]
async fn time_of_one_compaction_pass_over_a_thousand_documents() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("weft-compaction-pass-{}", std::process::id()));
    let _stale = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&format!("sqlite://{}/weft.db", dir.display()))
        .await
        .expect("open");
    store.keep_log();
    for index in 0..PASS_DOCUMENTS {
        let name = format!("doc-{index:04}");
        let writer = yrs::Doc::new();
        let text = writer.get_or_insert_text("t");
        let mut batch = Vec::with_capacity(PASS_EDITS);
        for _ in 0..PASS_EDITS {
            let before = writer.transact().state_vector();
            {
                let mut txn = writer.transact_mut();
                let end = text.len(&txn);
                text.insert(&mut txn, end, "x");
            }
            let mut update = edit(writer.transact().encode_state_as_update_v1(&before));
            update.doc = name.as_str().into();
            batch.push(update);
        }
        let seqs = store.append(&batch).await.expect("append");
        let last = *seqs.last().expect("appended");
        let state = writer
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        store
            .create_version(NewVersion {
                doc: &name,
                name: None,
                kind: VersionKind::Auto,
                at_ms: EDIT_AT_MS,
                covers: seqs[PASS_EDITS / 2],
                state: &state,
            })
            .await
            .expect("version");
        store
            .save_snapshot(
                EMBEDDED_LOG,
                &name,
                &Snapshot {
                    state_vector: writer.transact().state_vector().encode_v1(),
                    state,
                    covers: Position::embedded(last),
                    tombstone: None,
                },
            )
            .await
            .expect("snapshot");
    }
    let closing = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let report = compact_pass(&store, EMBEDDED_LOG, EDIT_AT_MS + 1, &closing).await;
    let pass_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(report.compacted, PASS_DOCUMENTS as u64);
    println!(
        "one compaction pass over {PASS_DOCUMENTS} documents ({PASS_EDITS} edits and an automatic version each, all before the cutoff): {pass_ms:.0} ms, {} rows removed",
        report.removed
    );
    let started = Instant::now();
    let again = compact_pass(&store, EMBEDDED_LOG, EDIT_AT_MS + 1, &closing).await;
    let idle_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(again.compacted, 0);
    println!("the next pass, nothing to compact: {idle_ms:.0} ms");
    store.close().await;
    let _cleaned = std::fs::remove_dir_all(&dir);
}

/// Bytes of the database's pages in use (all pages less the free list).
async fn used_bytes(dir: &Path) -> u64 {
    use sqlx::Connection as _;
    let mut connection =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}/weft.db", dir.display()))
            .await
            .expect("connect");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut connection)
        .await
        .expect("page count");
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut connection)
        .await
        .expect("free pages");
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut connection)
        .await
        .expect("page size");
    u64::try_from((pages - free) * page_size).unwrap_or(0)
}

fn edit(update: Vec<u8>) -> NewUpdate {
    NewUpdate {
        doc: "doc".into(),
        update: update.into(),
        attribution: Attribution {
            author: Some(Arc::from("alice@example.com")),
            at_ms: Some(EDIT_AT_MS),
            node: Some(Arc::from("weft-0")),
        },
    }
}

fn database_bytes(dir: &std::path::Path) -> u64 {
    ["weft.db", "weft.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

fn text_of(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode as _;
    let doc = yrs::Doc::new();
    let root = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(state).expect("decodes"))
        .expect("applies");
    root.get_string(&doc.transact())
}
