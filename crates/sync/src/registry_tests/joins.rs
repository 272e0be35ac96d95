//! Joins: the whole document is encoded once per version and shared.

use super::*;

/// Submits `update` through `client` and waits until it is durable,
/// applied and broadcast.
async fn commit(client: &Client, update: Vec<u8>) {
    client
        .session
        .submit_update(update)
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
}

fn full_state(client: &Client) -> Outbound {
    client
        .session
        .answer_sync_step1(&StateVector::default())
        .unwrap()
}

fn text_in(frame: &[u8]) -> String {
    let Ok(Message::Sync(SyncMessage::SyncStep2(update))) = decode_frame(frame) else {
        panic!("not a SyncStep2");
    };
    text_of(&[update])
}

#[tokio::test(start_paused = true)]
async fn joins_of_one_version_share_one_encoding_and_an_update_makes_a_new_one() {
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), test_config());
    let writer = join(&registry, "doc", 16).await;
    commit(&writer, text_update(1, "first")).await;

    let alice = join(&registry, "doc", 16).await;
    let bob = join(&registry, "doc", 16).await;
    let for_alice = full_state(&alice);
    let for_bob = full_state(&bob);
    assert_eq!(text_in(&for_alice), "first");
    assert_eq!(
        for_alice.as_ptr(),
        for_bob.as_ptr(),
        "the same bytes, not an encode per join"
    );

    commit(&writer, text_update(2, "second")).await;
    let after = full_state(&bob);
    assert_ne!(after.as_ptr(), for_alice.as_ptr(), "a new version");
    let both = text_of(&[text_update(1, "first"), text_update(2, "second")]);
    assert_eq!(text_in(&after), both);
    assert_eq!(full_state(&alice).as_ptr(), after.as_ptr());
}

#[tokio::test(start_paused = true)]
async fn a_deletion_alone_makes_a_new_version() {
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), test_config());
    let writer = join(&registry, "doc", 16).await;
    let doc = Doc::with_client_id(1);
    let root = doc.get_or_insert_text("t");
    let inserted = {
        let mut txn = doc.transact_mut();
        root.insert(&mut txn, 0, "keep drop");
        txn.encode_update_v1()
    };
    commit(&writer, inserted).await;
    let before = full_state(&writer);
    assert_eq!(text_in(&before), "keep drop");

    // The state vector stays as it was: only the delete set changes.
    let deleted = {
        let mut txn = doc.transact_mut();
        root.remove_range(&mut txn, 4, 5);
        txn.encode_update_v1()
    };
    commit(&writer, deleted).await;
    assert_eq!(text_in(&full_state(&writer)), "keep");
}

#[tokio::test(start_paused = true)]
async fn a_client_holding_part_of_the_document_gets_only_what_it_lacks() {
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), test_config());
    let writer = join(&registry, "doc", 16).await;
    let first = text_update(1, "first");
    commit(&writer, first.clone()).await;
    let second = text_update(2, "second");
    commit(&writer, second.clone()).await;
    let shared = full_state(&writer);

    let client_doc = Doc::new();
    client_doc
        .transact_mut()
        .apply_update(Update::decode_v1(&first).unwrap())
        .unwrap();
    let client_state = client_doc.transact().state_vector();
    let diff = writer.session.answer_sync_step1(&client_state).unwrap();
    assert_ne!(diff.as_ptr(), shared.as_ptr());
    assert!(
        diff.len() < shared.len(),
        "{} of {}",
        diff.len(),
        shared.len()
    );
    let Ok(Message::Sync(SyncMessage::SyncStep2(update))) = decode_frame(&diff) else {
        panic!("not a SyncStep2");
    };
    assert_eq!(text_of(&[first.clone(), update]), text_of(&[first, second]));
}
