//! Loading, snapshotting, unloading, presence, limits.

use super::*;

#[tokio::test(start_paused = true)]
async fn load_is_snapshot_plus_the_log_after_it() {
    let store = Arc::new(MemoryStore::new());
    let first = text_update(1, "a");
    let second = text_update(2, "b");
    let seqs = store
        .append(&[
            NewUpdate {
                doc: "doc".into(),
                update: first.clone().into(),
                attribution: Default::default(),
            },
            NewUpdate {
                doc: "doc".into(),
                update: second.into(),
                attribution: Default::default(),
            },
        ])
        .await
        .unwrap();
    let snapshot = Snapshot {
        state: first,
        state_vector: vec![0],
        covers: Position::embedded(seqs[0]),
        tombstone: None,
    };
    assert_eq!(
        store
            .save_snapshot(EMBEDDED_LOG, "doc", &snapshot)
            .await
            .unwrap(),
        SnapshotWrite::Written
    );

    let registry = Registry::embedded(store.clone(), test_config());
    let client = join(&registry, "doc", 16).await;
    let text = server_text(&client);
    assert_eq!(
        text.len(),
        2,
        "both the snapshot and the logged update: {text}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_document_is_snapshotted_then_unloaded_after_the_grace() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 16).await;
    alice
        .session
        .submit_update(text_update(1, "kept"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    drop(alice);
    assert_eq!(
        registry.loaded_documents(),
        1,
        "still loaded during the grace"
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(registry.loaded_documents(), 0, "unloaded after the grace");
    let stored = store.load("doc").await.unwrap();
    assert!(stored.snapshot.is_some(), "snapshotted before unloading");
    assert!(stored.updates.is_empty(), "log compacted");

    let again = join(&registry, "doc", 16).await;
    assert_eq!(server_text(&again), "kept");
}

#[tokio::test(start_paused = true)]
async fn a_session_rejoining_during_the_grace_keeps_the_document() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    drop(join(&registry, "doc", 16).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _back = join(&registry, "doc", 16).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(registry.loaded_documents(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_send_queue_disconnects_the_session_instead_of_dropping() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let writer = join(&registry, "doc", 16).await;
    let slow = join(&registry, "doc", 1).await;
    for id in 1..=3 {
        writer
            .session
            .submit_update(text_update(id, "x"))
            .await
            .unwrap()
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    assert!(
        slow.overflowed.is_cancelled(),
        "the slow session is told to disconnect"
    );
    assert!(!writer.overflowed.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_byte_bound_is_disconnected_and_one_large_frame_still_fits() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let writer = join(&registry, "doc", 16).await;
    // Room for 16 frames, but only 600 bytes.
    let mut slow = join_bounded(&registry, "doc", 16, 600).await;
    let large = "y".repeat(1000);
    for (id, text) in [(1, large.as_str()), (2, "a"), (3, "b")] {
        writer
            .session
            .submit_update(text_update(id, text))
            .await
            .unwrap()
            .unwrap()
            .wait()
            .await
            .unwrap();
        if id == 1 {
            assert!(
                !slow.overflowed.is_cancelled(),
                "a frame larger than the bound fits an empty queue"
            );
        }
    }
    assert!(
        slow.overflowed.is_cancelled(),
        "the session holding 1,000 bytes is told to disconnect"
    );
    assert!(slow.frames.try_recv().is_ok(), "the large frame was queued");
    assert!(!writer.overflowed.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn awareness_is_relayed_and_removed_when_its_session_leaves() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    let update = weft_protocol::AwarenessUpdate {
        clients: [(
            yrs::block::ClientID::new(42),
            weft_protocol::AwarenessUpdateEntry {
                clock: 1,
                json: Arc::from(r#"{"user":"alice"}"#),
            },
        )]
        .into(),
    };
    alice.session.apply_awareness(update);
    let Ok(Message::Awareness(relayed)) = decode_frame(&bob.frames.try_recv().unwrap()) else {
        panic!("expected awareness");
    };
    assert_eq!(relayed.clients.len(), 1);
    drop(alice);
    let Ok(Message::Awareness(removal)) = decode_frame(&bob.frames.try_recv().unwrap()) else {
        panic!("expected awareness removal");
    };
    let entry = &removal.clients[&yrs::block::ClientID::new(42)];
    assert_eq!(entry.json.as_ref(), "null");
    assert_eq!(entry.clock, 2);
    assert!(
        bob.session.awareness_frame().is_none(),
        "nobody present any more"
    );
}

#[tokio::test(start_paused = true)]
async fn past_max_documents_a_new_document_is_refused_until_one_unloads() {
    let store = Arc::new(MemoryStore::new());
    let config = RegistryConfig {
        max_documents: 2,
        ..test_config()
    };
    let registry = Registry::embedded(store, config);
    let first = join(&registry, "one", 16).await;
    let _second = join(&registry, "two", 16).await;
    let (frames, _receiver) = crate::outbox_channel(16);
    let refused = registry
        .join(
            "three",
            SessionOutbox {
                frames,
                queued: QueuedBytes::new(usize::MAX),
                overflowed: CancellationToken::new(),
                deleted: CancellationToken::new(),
                prefix: bytes::Bytes::new(),
            },
        )
        .await;
    assert!(matches!(refused, Err(crate::SyncError::TooManyDocuments)));
    let _again = join(&registry, "one", 16).await;
    drop(first);
    drop(_again);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _third = join(&registry, "three", 16).await;
}
