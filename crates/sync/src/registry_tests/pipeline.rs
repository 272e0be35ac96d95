//! Broadcast batching and the pipelined committer.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_busy_document_batches_its_broadcasts_and_skips_each_origin() {
    let config = RegistryConfig {
        broadcast_batching: crate::BroadcastBatching {
            window: Duration::from_millis(50),
            min_sessions: 3,
        },
        ..test_config()
    };
    let registry = Registry::embedded(Arc::new(MemoryStore::new()), config);
    let mut alice = join(&registry, "doc", 16).await;
    let mut bob = join(&registry, "doc", 16).await;

    // Two sessions: under the threshold, every update goes out at once.
    commit(&alice, text_update(1, "x")).await;
    commit(&alice, text_update(2, "y")).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "x");
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "y");

    let mut carol = join(&registry, "doc", 16).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    // The first update after a quiet window goes out at once...
    commit(&alice, text_update(3, "a")).await;
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "a");
    assert_eq!(frame_chars(&carol.frames.try_recv().unwrap()), "a");
    // ...the next ones within the window are held...
    commit(&alice, text_update(4, "b")).await;
    commit(&bob, text_update(5, "c")).await;
    assert!(
        carol.frames.try_recv().is_err(),
        "held until the window ends"
    );
    assert!(bob.frames.try_recv().is_err());
    assert!(alice.frames.try_recv().is_err());

    // ...and then sent as one merged update, without each origin's own.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(frame_chars(&carol.frames.try_recv().unwrap()), "bc");
    assert_eq!(frame_chars(&bob.frames.try_recv().unwrap()), "b");
    assert_eq!(frame_chars(&alice.frames.try_recv().unwrap()), "c");
    for client in [&mut alice, &mut bob, &mut carol] {
        assert!(client.frames.try_recv().is_err(), "one frame per window");
    }
    let mut all: Vec<char> = server_text(&carol).chars().collect();
    all.sort_unstable();
    assert_eq!(all.into_iter().collect::<String>(), "abcxy");
}

/// A bus that takes several batches at once (as Kafka does): it records
/// what it was handed when a publish is first polled, then holds each batch
/// until the test lets one through, then appends it to a real log.
#[derive(Debug)]
struct GatedBus {
    inner: crate::LogBus,
    handed: tokio::sync::watch::Sender<Vec<Vec<u8>>>,
    gate: tokio::sync::Semaphore,
}

impl GatedBus {
    /// Waits until the bus was handed `count` records.
    async fn handed(&self, count: usize) {
        let mut handed = self.handed.subscribe();
        tokio::time::timeout(
            Duration::from_secs(5),
            handed.wait_for(|records| records.len() >= count),
        )
        .await
        .unwrap_or_else(|_| panic!("the bus was not handed {count} records"))
        .expect("the bus is alive");
    }
}

#[async_trait]
impl crate::MessageBus for GatedBus {
    fn origin(&self) -> &crate::Origin {
        self.inner.origin()
    }

    fn log_id(&self) -> &str {
        self.inner.log_id()
    }

    async fn publish(
        &self,
        records: &[crate::Record],
    ) -> Vec<Result<crate::Position, crate::BusError>> {
        self.handed.send_modify(|handed| {
            handed.extend(records.iter().map(|record| record.payload.to_vec()));
        });
        let Ok(permit) = self.gate.acquire().await else {
            return records
                .iter()
                .map(|_| Err(crate::BusError::NotConnected))
                .collect();
        };
        permit.forget();
        self.inner.publish(records).await
    }

    fn publish_depth(&self) -> usize {
        4
    }

    fn publish_ephemeral(&self, record: crate::Record) {
        self.inner.publish_ephemeral(record);
    }

    async fn subscribe(
        &self,
        interest: Arc<dyn crate::Interest>,
    ) -> Result<mpsc::Receiver<crate::Delivery>, crate::BusError> {
        self.inner.subscribe(interest).await
    }

    async fn replay(
        &self,
        doc: &str,
        after: Option<crate::Position>,
    ) -> Result<Vec<crate::Replayed>, crate::BusError> {
        self.inner.replay(doc, after).await
    }

    async fn check(&self) -> Result<(), crate::BusError> {
        self.inner.check().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_pipelined_bus_gets_the_next_batch_before_the_first_is_acknowledged() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus = Arc::new(GatedBus {
        inner: crate::LogBus::new(store.clone(), "a"),
        handed: tokio::sync::watch::Sender::new(Vec::new()),
        gate: tokio::sync::Semaphore::new(0),
    });
    let node = start(store.clone(), bus.clone(), cluster_config());
    let alice = join(&node, "doc", 64).await;
    let mut bob = join(&node, "doc", 64).await;

    let first = text_update(1, "a");
    let second = text_update(2, "b");
    let first_ack = alice
        .session
        .submit_update(first.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(1).await;
    let second_ack = alice
        .session
        .submit_update(second.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(2).await;
    assert_eq!(
        *bus.handed.borrow(),
        vec![first.clone(), second.clone()],
        "handed in order, the second before the first was acknowledged"
    );
    assert!(
        bob.frames.try_recv().is_err(),
        "nothing is broadcast before it is durable"
    );

    bus.gate.add_permits(2);
    first_ack.wait().await.expect("first committed");
    second_ack.wait().await.expect("second committed");
    let mut received = Vec::new();
    for _ in 0..2 {
        received.push(
            next_message(&mut bob, |message| match message {
                Message::Sync(SyncMessage::Update(update)) => Some(update),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(
        received,
        vec![first.clone(), second.clone()],
        "applied and broadcast in order"
    );
    assert_eq!(server_text(&bob), text_of(&[first, second]));
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_updates_wait_for_the_bus_is_not_ready_until_they_are_acknowledged() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let bus = Arc::new(GatedBus {
        inner: crate::LogBus::new(store.clone(), "a"),
        handed: tokio::sync::watch::Sender::new(Vec::new()),
        gate: tokio::sync::Semaphore::new(0),
    });
    let node = start(store.clone(), bus.clone(), cluster_config());
    let alice = join(&node, "doc", 64).await;
    let mut bob = join(&node, "doc", 64).await;
    node.check_ready()
        .await
        .expect("ready before anything waits");

    let update = text_update(1, "a");
    let ack = alice
        .session
        .submit_update(update.clone())
        .await
        .unwrap()
        .unwrap();
    bus.handed(1).await;
    // A broker that holds the update without acknowledging it: a short
    // wait is a failover, not a reason to leave the load balancer.
    tokio::time::sleep(crate::PUBLISH_STALL_NOT_READY / 2).await;
    node.check_ready()
        .await
        .expect("still ready after a short wait");
    tokio::time::sleep(crate::PUBLISH_STALL_NOT_READY).await;
    let reason = node.check_ready().await.expect_err("not ready");
    assert!(
        reason.contains("has not acknowledged updates for 7 s"),
        "{reason}"
    );
    assert!(
        bob.frames.try_recv().is_err(),
        "nothing is broadcast before it is durable"
    );

    // The broker comes back: the waiting update goes through, readiness
    // returns.
    bus.gate.add_permits(1);
    ack.wait().await.expect("committed once the bus answers");
    node.check_ready().await.expect("ready again");
    let received = next_message(&mut bob, |message| match message {
        Message::Sync(SyncMessage::Update(update)) => Some(update),
        _ => None,
    })
    .await;
    assert_eq!(received, update);
    node.shutdown().await;
}
