//! The persistence worker against a real Kafka-API broker (`WEFT_TEST_KAFKA`,
//! set by `make test`): it folds every record into snapshots, commits only
//! what they cover, and a second worker of the group finds nothing left.
//! Prints the fold throughput (records per second) it measured.

mod common;

use common::{broker, fresh_topic, tasks};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weft_kafka::fold::FoldConfig;
use weft_kafka::worker::{self, WorkerConfig, WorkerStatus};
use weft_kafka::{KafkaBus, KafkaConfig};
use weft_sync::store::SnapshotStore;
use weft_sync::{Interest, MemoryStore, MessageBus, Origin, Record, RecordKind};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

const DOCS: usize = 40;
const UPDATES_PER_DOC: usize = 500;
const BATCH: usize = 500;

fn kafka_config(brokers: &str, topic: &str, node: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        partitions: 4,
        replication_factor: 1,
        origin: Origin::new(node),
        linger: Duration::from_millis(5),
        fetch_wait: Duration::from_millis(10),
        publish_timeout: Duration::from_secs(30),
        max_record_bytes: 17 * 1024 * 1024,
        retention: None,
        consume: weft_kafka::ConsumeScope::Held,
        security: weft_kafka::KafkaSecurity::default(),
        options: Vec::new(),
    }
}

struct Nothing;

impl Interest for Nothing {
    fn wants(&self, _doc: &str) -> bool {
        false
    }
}

/// One token inserted at the start of root text "t" by its own client.
fn token_update(client: u64) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, "x");
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

async fn wait_caught_up(status: &WorkerStatus, folded: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if status.folded.load(Ordering::Relaxed) >= folded
            && status.joined.load(Ordering::Relaxed)
            && status.lag.load(Ordering::Relaxed) == 0
            && status.partitions.load(Ordering::Relaxed) > 0
        {
            return;
        }
        // External state (the worker's counters): polled, bounded.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: not caught up within 120 s (folded {}, lag {})",
        status.folded.load(Ordering::Relaxed),
        status.lag.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_folds_every_record_and_commits_only_what_snapshots_cover() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("worker");

    // A node's bus publishes DOCS x UPDATES_PER_DOC updates.
    let writer = KafkaBus::new(kafka_config(&brokers, &topic, "writer"), tasks()).expect("bus");
    let _deliveries = writer.subscribe(Arc::new(Nothing)).await.expect("connect");
    let mut records = Vec::with_capacity(DOCS * UPDATES_PER_DOC);
    for update in 0..UPDATES_PER_DOC {
        for doc in 0..DOCS {
            records.push(Record {
                doc: Arc::from(format!("doc-{doc}")),
                kind: RecordKind::Update,
                payload: token_update((doc * UPDATES_PER_DOC + update + 1) as u64).into(),
                origin_session: 1,
                author: None,
                span: tracing::Span::none(),
            });
        }
    }
    for batch in records.chunks(BATCH) {
        for result in writer.publish(batch).await {
            result.expect("published");
        }
    }
    let total = records.len() as u64;

    let store = Arc::new(MemoryStore::new());
    let group = format!("group-{topic}");
    let config = WorkerConfig {
        kafka: kafka_config(&brokers, &topic, "worker"),
        group: group.clone(),
        fold: FoldConfig {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..FoldConfig::default()
        },
        tick: Duration::from_millis(50),
        history: None,
    };
    let status = Arc::new(WorkerStatus::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker::run(
        config.clone(),
        store.clone(),
        None,
        status.clone(),
        stop.clone(),
    ));
    // Throughput: from the first record folded to the last (counters
    // polled every 5 ms), then until every snapshot is stored (lag 0).
    let mut first_folded = None;
    let mut all_folded = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while all_folded.is_none() && Instant::now() < deadline {
        let folded = status.folded.load(Ordering::Relaxed);
        if folded > 0 && first_folded.is_none() {
            first_folded = Some(Instant::now());
        }
        if folded >= total {
            all_folded = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (Some(first_folded), Some(all_folded)) = (first_folded, all_folded) else {
        panic!("the worker did not fold {total} records within 120 s");
    };
    let folding = all_folded - first_folded;
    wait_caught_up(&status, total, "first worker").await;
    println!(
        "[measure] worker folded {total} records of {DOCS} documents in {} ms: {:.0} records/s; start to all snapshots stored (lag 0, group join included) {} ms",
        folding.as_millis(),
        total as f64 / folding.as_secs_f64().max(0.001),
        started.elapsed().as_millis()
    );
    stop.cancel();
    running.await.expect("join").expect("worker ran");

    for doc in 0..DOCS {
        let snapshot = store
            .load_snapshot(&topic, &format!("doc-{doc}"))
            .await
            .expect("load")
            .expect("every document has a snapshot");
        let folded = Doc::new();
        let text = folded.get_or_insert_text("t");
        folded
            .transact_mut()
            .apply_update(Update::decode_v1(&snapshot.state).expect("decodes"))
            .expect("applies");
        assert_eq!(
            text.get_string(&folded.transact()).len(),
            UPDATES_PER_DOC,
            "doc-{doc} holds every update once"
        );
    }
    assert!(status.snapshots_written.load(Ordering::Relaxed) >= DOCS as u64);

    // The next worker of the group starts at the committed offsets: the
    // stored snapshots cover everything, so it folds nothing.
    let second = Arc::new(WorkerStatus::default());
    let stop_second = CancellationToken::new();
    let running = tokio::spawn(worker::run(
        WorkerConfig {
            kafka: kafka_config(&brokers, &topic, "worker-2"),
            ..config
        },
        store.clone(),
        None,
        second.clone(),
        stop_second.clone(),
    ));
    wait_caught_up(&second, 0, "second worker").await;
    assert_eq!(
        second.folded.load(Ordering::Relaxed),
        0,
        "everything before the committed offsets was inside stored snapshots"
    );
    stop_second.cancel();
    running.await.expect("join").expect("worker ran");
}
