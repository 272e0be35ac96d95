//! `weft docs export` and `import` against real SQLite stores: what an
//! import loads is what was exported, importing twice changes nothing, a
//! truncated stream is refused and an interrupted import resumes.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use weft_server::docs::resume::ResumeFile;
use weft_server::docs::source;
use weft_server::docs::transfer::{self, ImportTarget};
use weft_sync::store::NewUpdate;
use weft_sync::{Attribution, EMBEDDED_LOG, EmbeddedLog};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("weft-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create the scratch directory");
    path
}

async fn store(directory: &std::path::Path, name: &str) -> (Arc<dyn EmbeddedLog>, String) {
    let url = format!("sqlite://{}", directory.join(name).display());
    (
        weft_persistence::open_store(&url)
            .await
            .expect("open the store"),
        url,
    )
}

/// An update inserting `text` into the shared text `t` of a fresh client.
fn insert(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let shared = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    shared.insert(&mut txn, 0, text);
    txn.encode_state_as_update_v1(&StateVector::default())
}

async fn write(store: &dyn EmbeddedLog, doc: &str, update: Vec<u8>) {
    store
        .append(&[NewUpdate {
            doc: Arc::from(doc),
            update: Bytes::from(update),
            attribution: Attribution::default(),
        }])
        .await
        .expect("append");
}

/// The text `t` of `doc` as `store` holds it now.
async fn text(store: &dyn EmbeddedLog, doc: &str) -> String {
    let entry = source::current(store, EMBEDDED_LOG, doc)
        .await
        .expect("load")
        .expect("the document exists");
    let loaded = Doc::new();
    let shared = loaded.get_or_insert_text("t");
    let mut txn = loaded.transact_mut();
    txn.apply_update(Update::decode_v1(&entry.state).expect("a v1 update"))
        .expect("apply");
    shared.get_string(&txn)
}

async fn export_all(store: &dyn EmbeddedLog, glob: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    transfer::export(store, EMBEDDED_LOG, glob, None, &mut out)
        .await
        .expect("export");
    out
}

#[tokio::test]
async fn an_import_loads_what_was_exported_and_twice_changes_nothing() {
    let directory = scratch("roundtrip");
    let (source_store, _) = store(&directory, "source.db").await;
    write(source_store.as_ref(), "alpha", insert("hello")).await;
    write(source_store.as_ref(), "alpha", insert("world ")).await;
    write(source_store.as_ref(), "team/b", insert("b")).await;
    let expected_alpha = text(source_store.as_ref(), "alpha").await;
    let stream = export_all(source_store.as_ref(), None).await;

    let (target_store, target_url) = store(&directory, "target.db").await;
    let target = ImportTarget {
        store: target_store.clone(),
        store_url: target_url,
        resume: None,
    };
    transfer::import(stream.as_slice(), &target).await.unwrap();
    transfer::import(stream.as_slice(), &target).await.unwrap();

    assert_eq!(text(target_store.as_ref(), "alpha").await, expected_alpha);
    assert_eq!(text(target_store.as_ref(), "team/b").await, "b");
    let names = source::names(target_store.as_ref(), EMBEDDED_LOG, None, "")
        .await
        .unwrap();
    assert_eq!(names, ["alpha", "team/b"]);
}

#[tokio::test]
async fn an_export_takes_only_the_documents_its_glob_names() {
    let directory = scratch("glob");
    let (source_store, _) = store(&directory, "source.db").await;
    write(source_store.as_ref(), "team-a", insert("a")).await;
    write(source_store.as_ref(), "other", insert("o")).await;
    let stream =
        String::from_utf8(export_all(source_store.as_ref(), Some("team-*")).await).unwrap();
    assert!(stream.contains("\"team-a\""));
    assert!(!stream.contains("\"other\""));
}

#[tokio::test]
async fn a_truncated_stream_is_refused_and_the_import_resumes_from_its_progress() {
    let directory = scratch("resume");
    let (source_store, _) = store(&directory, "source.db").await;
    for index in 0..100 {
        write(
            source_store.as_ref(),
            &format!("doc-{index:03}"),
            insert(&format!("text {index}")),
        )
        .await;
    }
    let stream = export_all(source_store.as_ref(), None).await;
    let (target_store, target_url) = store(&directory, "target.db").await;
    let target = ImportTarget {
        store: target_store.clone(),
        store_url: target_url,
        resume: Some(ResumeFile::new(&directory.join("import.progress"))),
    };

    // Interrupted after 80 documents: the stream stops mid-line.
    let cut = stream
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(81)
        .map(|(index, _)| index + 10)
        .unwrap();
    let error = transfer::import(&stream[..cut], &target).await.unwrap_err();
    assert!(format!("{error:#}").contains("truncated"), "{error:#}");
    assert!(directory.join("import.progress").exists());

    let summary = transfer::import(stream.as_slice(), &target).await.unwrap();
    // Every whole line before the cut was applied and recorded.
    assert!(summary.contains("resumed after 81"), "{summary}");
    assert!(!directory.join("import.progress").exists());
    for index in [0, 63, 64, 80, 81, 99] {
        let doc = format!("doc-{index:03}");
        assert_eq!(
            text(target_store.as_ref(), &doc).await,
            format!("text {index}")
        );
    }
}
