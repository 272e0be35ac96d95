//! How often a client update is decoded on its way (see `update`): at the
//! door, by the trial apply, and never again by the committer or the apply.

use super::*;
use crate::ycheck::decode_count;

#[tokio::test(start_paused = true)]
async fn a_client_update_is_decoded_at_the_door_only() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store, test_config());
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;

    let update = text_update(1, "hi");
    let before = decode_count::get();
    let ack = alice
        .session
        .submit_update(update)
        .await
        .unwrap()
        .expect("not empty");
    let at_the_door = decode_count::get() - before;
    ack.wait().await.expect("committed");
    let in_all = decode_count::get() - before;

    assert_eq!(at_the_door, 2, "the door's decode and the trial apply's");
    assert_eq!(in_all, 2, "the committer and the apply decode nothing");
    assert!(bob.frames.try_recv().is_ok(), "bob receives the update");
    assert_eq!(server_text(&alice), "hi");

    // A document that was deleted checks every update against its
    // tombstone: with the door's decoded form, not a decode of its own.
    drop((alice, bob));
    registry.delete("doc").await.expect("deleted");
    let carol = join(&registry, "doc", 16).await;
    let before = decode_count::get();
    carol
        .session
        .submit_update(text_update(7, "new"))
        .await
        .unwrap()
        .expect("not empty")
        .wait()
        .await
        .expect("committed");
    assert_eq!(
        decode_count::get() - before,
        2,
        "a tombstone adds no decode"
    );
    assert_eq!(server_text(&carol), "new");
}

#[tokio::test(start_paused = true)]
async fn a_deletion_after_an_update_in_one_batch_decodes_nothing_more() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(
        store,
        RegistryConfig {
            committer: crate::CommitterConfig {
                window: Duration::from_millis(50),
                ..crate::CommitterConfig::default()
            },
            ..test_config()
        },
    );
    let alice = join(&registry, "doc", 16).await;
    alice
        .session
        .submit_update(text_update(1, "old"))
        .await
        .unwrap()
        .unwrap()
        .wait()
        .await
        .unwrap();
    let before = decode_count::get();
    let ack = alice
        .session
        .submit_update(text_update(2, "more"))
        .await
        .unwrap()
        .unwrap();
    let deleted = registry.delete("doc");
    let (acked, deleted) = tokio::join!(ack.wait(), deleted);
    acked.expect("committed");
    assert_eq!(deleted.expect("deleted"), crate::DeleteOutcome::Deleted);
    assert_eq!(
        decode_count::get() - before,
        2,
        "the deletion names the batch's update from its decoded form"
    );
}
