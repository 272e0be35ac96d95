//! Several nodes on one log: sharing, loading from topic snapshots, deletions.

use super::*;

#[tokio::test(start_paused = true)]
async fn two_nodes_on_one_log_share_updates_loads_and_presence() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = start(store.clone(), Arc::new(bus_b), cluster_config());

    // Written on node a before node b ever loaded the document: b replays it.
    let alice = join(&node_a, "doc", 64).await;
    alice
        .session
        .submit_update(text_update(1, "early "))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let mut bob = join(&node_b, "doc", 64).await;
    assert_eq!(server_text(&bob), "early ", "node b loaded by replay");

    // Live: a's update reaches b's session.
    alice
        .session
        .submit_update(text_update(2, "live"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let update = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[update]), "live");

    // Presence crosses, and goes when node a falls silent.
    let presence = weft_protocol::AwarenessUpdate {
        clients: [(
            yrs::block::ClientID::new(7),
            weft_protocol::AwarenessUpdateEntry {
                clock: 1,
                json: Arc::from(r#"{"user":"alice"}"#),
            },
        )]
        .into(),
    };
    alice.session.apply_awareness(presence);
    let seen = next_message(&mut bob, |message| match message {
        Message::Awareness(update) => Some(update),
        _ => None,
    })
    .await;
    assert!(seen.clients.contains_key(&yrs::block::ClientID::new(7)));
    node_a.shutdown().await;
    // A crash: no goodbye from alice's session, only silence.
    std::mem::forget(alice);
    let removed = next_message(&mut bob, |message| match message {
        Message::Awareness(update) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(
        removed.clients[&yrs::block::ClientID::new(7)].json.as_ref(),
        "null",
        "a silent node's clients are removed"
    );
    assert!(bob.session.awareness_frame().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_cluster_node_loads_the_topic_snapshot_then_the_records_after_it() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = start(store.clone(), Arc::new(bus_a), cluster_config());
    let alice = join(&node_a, "doc", 64).await;
    let mut positions = Vec::new();
    for (client, text) in [(1, "one "), (2, "two ")] {
        let ack = alice
            .session
            .submit_update(text_update(client, text))
            .await
            .unwrap()
            .unwrap();
        positions.push(ack.wait().await.unwrap());
    }
    // The worker folded the first record, plus something only the snapshot
    // holds (so the test can tell the snapshot was read).
    let folded = Doc::with_client_id(9);
    for update in [text_update(1, "one "), text_update(3, "snap ")] {
        folded
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    }
    let state = folded
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    store
        .save_snapshot(
            EMBEDDED_LOG,
            "doc",
            &Snapshot {
                state,
                state_vector: Vec::new(),
                covers: Position::embedded(positions[0]),
                tombstone: None,
            },
        )
        .await
        .unwrap();

    let node_b = start(store.clone(), Arc::new(bus_b), cluster_config());
    let bob = join(&node_b, "doc", 64).await;
    let text = server_text(&bob);
    assert!(text.contains("snap "), "the snapshot was loaded: {text:?}");
    assert!(
        text.contains("two "),
        "the record after it was replayed: {text:?}"
    );
    assert!(text.contains("one "), "{text:?}");
    assert_eq!(text.len(), "one two snap ".len(), "nothing twice: {text:?}");
}

#[tokio::test(start_paused = true)]
async fn deletion_closes_sessions_refuses_old_history_and_survives_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), test_config());
    let alice = join(&registry, "doc", 64).await;
    let old = text_update(1, "secret");
    alice
        .session
        .submit_update(old.clone())
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let read = registry.read("doc").await.unwrap();
    assert!(read.has_content);
    assert_eq!(read_text(&read), "secret");
    assert_eq!(read.deleted_at_ms, None);
    assert_eq!(
        registry.delete("never-written").await.unwrap(),
        crate::DeleteOutcome::NotFound
    );

    assert_eq!(
        registry.delete("doc").await.unwrap(),
        crate::DeleteOutcome::Deleted
    );
    assert!(alice.deleted.is_cancelled(), "alice's session is told");
    let read = registry.read("doc").await.unwrap();
    assert!(!read.has_content, "nothing is left");
    assert!(read.deleted_at_ms.is_some());
    assert!(
        registry.list("", 100).await.unwrap().is_empty(),
        "a deleted document is not listed"
    );

    // A client that still holds the old history is refused, by its state
    // and by its updates; a fresh one starts the name again.
    let bob = join(&registry, "doc", 64).await;
    let old_state = state_of(&[&old]);
    assert!(matches!(
        bob.session.answer_sync_step1(&old_state),
        Err(crate::SyncError::Deleted)
    ));
    assert!(matches!(
        bob.session.submit_update(old.clone()).await,
        Err(crate::SyncError::Deleted)
    ));
    assert!(matches!(
        registry.apply_update("doc", old.clone()).await,
        Err(crate::SyncError::Deleted)
    ));
    bob.session
        .submit_update(text_update(2, "fresh"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    registry
        .apply_update("doc", text_update(3, "api "))
        .await
        .unwrap();
    assert_eq!(read_text(&registry.read("doc").await.unwrap()), "freshapi ");
    assert_eq!(
        registry
            .list("", 100)
            .await
            .unwrap()
            .iter()
            .map(|doc| doc.name.as_str())
            .collect::<Vec<_>>(),
        vec!["doc"]
    );
    drop(bob);
    registry.shutdown().await;

    // A restart: the tombstone is in the store.
    let restarted = Registry::embedded(store.clone(), test_config());
    assert_eq!(
        read_text(&restarted.read("doc").await.unwrap()),
        "freshapi "
    );
    let carol = join(&restarted, "doc", 64).await;
    assert!(matches!(
        carol.session.answer_sync_step1(&old_state),
        Err(crate::SyncError::Deleted)
    ));
    assert!(
        carol
            .session
            .answer_sync_step1(&StateVector::default())
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_deletion_on_one_node_reaches_the_others() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = start(store.clone(), Arc::new(bus_b), cluster_config());
    let old = text_update(1, "old");
    node_a.apply_update("doc", old.clone()).await.unwrap();
    let bob = join(&node_b, "doc", 64).await;
    assert_eq!(server_text(&bob), "old");

    assert_eq!(
        node_a.delete("doc").await.unwrap(),
        crate::DeleteOutcome::Deleted
    );
    tokio::time::timeout(Duration::from_secs(5), bob.deleted.cancelled())
        .await
        .expect("node b closes its session");
    let read = node_b.read("doc").await.unwrap();
    assert!(!read.has_content, "node b reads it empty");
    let carol = join(&node_b, "doc", 64).await;
    assert!(matches!(
        carol.session.answer_sync_step1(&state_of(&[&old])),
        Err(crate::SyncError::Deleted)
    ));
}
