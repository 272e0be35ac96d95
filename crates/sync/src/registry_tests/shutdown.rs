//! Stopping a registry: its two steps in order, and its tasks on the
//! token and tracker it was given.

use super::*;

/// Upper bound of a wait for the registry's tasks (in paused time, so
/// only a task that never ends reaches it).
const STOPS_WITHIN: Duration = Duration::from_secs(60);

/// A config whose snapshots are never due while a test runs: the only
/// snapshot is the final one.
fn no_snapshots_until_shutdown() -> RegistryConfig {
    RegistryConfig {
        snapshot_debounce: Duration::from_secs(3600),
        snapshot_max_delay: Duration::from_secs(3600),
        unload_grace: Duration::from_secs(3600),
        ..test_config()
    }
}

/// What becomes of an update `client` submits now.
async fn refused(client: &Client) -> Result<LogSeq, PublishError> {
    let ack = client
        .session
        .submit_update(text_update(9, "late"))
        .await
        .expect("a valid update")
        .expect("not empty");
    ack.wait().await
}

#[tokio::test(start_paused = true)]
async fn shutdown_commits_what_is_queued_then_writes_the_snapshot() {
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::embedded(store.clone(), no_snapshots_until_shutdown());
    let alice = join(&registry, "doc", 16).await;
    let queued = alice
        .session
        .submit_update(text_update(1, "last"))
        .await
        .unwrap()
        .expect("not empty");

    registry.flush_commits().await;
    let committed = store.load("doc").await.unwrap();
    assert_eq!(
        committed.updates.len(),
        1,
        "the queued update is in the log"
    );
    assert!(committed.snapshot.is_none(), "no snapshot yet");
    assert_eq!(server_text(&alice), "last", "and applied to its document");
    queued.wait().await.expect("acknowledged as committed");
    assert!(matches!(
        registry
            .join(
                "other",
                SessionOutbox {
                    frames: crate::outbox_channel(1).0,
                    queued: QueuedBytes::new(usize::MAX),
                    overflowed: CancellationToken::new(),
                    deleted: CancellationToken::new(),
                    prefix: bytes::Bytes::new(),
                },
            )
            .await,
        Err(crate::SyncError::ShuttingDown)
    ));
    assert!(
        matches!(refused(&alice).await, Err(PublishError::Stopped)),
        "an update after the first step is refused"
    );

    registry.snapshot_and_stop().await;
    let snapshotted = store.load("doc").await.unwrap();
    let snapshot = snapshotted.snapshot.expect("the final snapshot");
    assert_eq!(text_of(&[snapshot.state]), "last");
    assert!(snapshotted.updates.is_empty(), "it covers the log");
    drop(alice);
}

#[tokio::test(start_paused = true)]
async fn the_registry_runs_its_tasks_on_the_tracker_it_is_given() {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let registry = Registry::start(
        Arc::new(MemoryStore::new()),
        Arc::new(crate::LogBus::new(Arc::new(MemoryStore::new()), "a")),
        test_config(),
        &root,
        &tracker,
    );
    assert_eq!(
        tracker.len(),
        3,
        "the committer, housekeeping, the bus task"
    );
    registry.shutdown().await;
    assert!(tracker.is_empty(), "shutdown waited for every one");
    assert!(
        !root.is_cancelled(),
        "the registry cancels only its own tokens"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_parent_token_stops_every_task() {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let store = Arc::new(MemoryStore::new());
    let registry = Registry::start(
        store.clone(),
        Arc::new(crate::LogBus::new(store, "a")),
        test_config(),
        &root,
        &tracker,
    );
    let alice = join(&registry, "doc", 16).await;
    root.cancel();
    tracker.close();
    tokio::time::timeout(STOPS_WITHIN, tracker.wait())
        .await
        .expect("every task stops once the root is cancelled");
    assert!(matches!(refused(&alice).await, Err(PublishError::Stopped)));
}

#[tokio::test(start_paused = true)]
async fn a_held_broadcast_waits_on_the_nodes_tracker() {
    let tracker = TaskTracker::new();
    let store = Arc::new(MemoryStore::new());
    let config = RegistryConfig {
        broadcast_batching: crate::BroadcastBatching {
            window: Duration::from_millis(50),
            min_sessions: 2,
        },
        ..test_config()
    };
    let registry = Registry::start(
        store.clone(),
        Arc::new(crate::LogBus::new(store, "a")),
        config,
        &CancellationToken::new(),
        &tracker,
    );
    let alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;
    commit(&alice, text_update(1, "a")).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "a");
    assert_eq!(tracker.len(), 3, "nothing held");
    commit(&alice, text_update(2, "b")).await;
    assert!(bob.frames.try_recv().is_err(), "held until the window ends");
    assert_eq!(tracker.len(), 4, "the flush at the window's end is tracked");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "b");
    assert_eq!(tracker.len(), 3, "the flush ended");
    registry.shutdown().await;
}
