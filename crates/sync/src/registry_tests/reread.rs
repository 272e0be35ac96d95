//! Replicas that hold updates they cannot integrate.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_replica_that_missed_a_record_reads_its_log_again_and_tells_its_sessions() {
    let store = Arc::new(MemoryStore::new());
    let bus = crate::LogBus::new(store.clone(), "a");
    let registry = start(store.clone(), Arc::new(bus), cluster_config());
    let alice = join(&registry, "doc", 64).await;
    let mut bob = join(&registry, "doc", 64).await;
    let (first, second) = chained_updates(9);
    // The log holds the first update (another node's), but this node's
    // replica never got it: a record it missed.
    store
        .append(&[NewUpdate {
            doc: Arc::from("doc"),
            update: bytes::Bytes::from(first),
            attribution: Default::default(),
        }])
        .await
        .unwrap();
    // The second arrives normally and cannot integrate without the first.
    commit(&alice, second).await;
    assert_eq!(
        server_text(&alice),
        "",
        "the second update waits for the first"
    );
    while bob.frames.try_recv().is_ok() {}

    // After the grace the document reads its log again and sends what it
    // gained to every session.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let gained = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[gained]), "ab", "bob gets both updates");
    assert_eq!(server_text(&alice), "ab");
    assert_eq!(registry.metrics().documents_repaired.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_update_whose_dependency_the_log_lacks_too_is_read_again_at_growing_intervals() {
    let store = Arc::new(MemoryStore::new());
    let bus = crate::LogBus::new(store.clone(), "a");
    let registry = start(store.clone(), Arc::new(bus), cluster_config());
    let alice = join(&registry, "doc", 64).await;
    let (_never_sent, second) = chained_updates(9);
    commit(&alice, second).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let rereads = registry.metrics().documents_reread.get();
    assert!(
        (2..=6).contains(&rereads),
        "{rereads} re-reads in a minute: after 10 s, then backing off (5 s, 10 s, 20 s...)"
    );
    assert_eq!(registry.metrics().documents_repaired.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_update_a_document_holds_already_is_not_broadcast_again() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus_a = crate::LogBus::new(store.clone(), "a");
    let bus_b = bus_a.join("b");
    let node_a = start(store.clone(), Arc::new(bus_a), cluster_config());
    let node_b = start(store.clone(), Arc::new(bus_b), cluster_config());
    let alice = join(&node_a, "doc", 64).await;
    let mut bob = join(&node_b, "doc", 64).await;
    let update = text_update(1, "once");
    commit(&alice, update.clone()).await;
    let first = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(first, update);
    // The same update again (a client re-sending what it sent before a
    // lost acknowledgement; this node's own update read back from the
    // log): applied, and nothing sent.
    commit(&alice, update.clone()).await;
    commit(&alice, text_update(2, "then")).await;
    let next = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(text_of(&[next]), "then", "the duplicate was not sent");
    assert_eq!(
        server_text(&bob),
        text_of(&[update, text_update(2, "then")])
    );
}
