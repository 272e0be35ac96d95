//! The Kafka bus against a real Apache Kafka broker.
//!
//! `make test` starts one (Apache Kafka) and sets `WEFT_TEST_KAFKA` to its
//! address; each test uses fresh topics. Without the variable the tests
//! are skipped locally and fail under CI, so a missing broker cannot pass
//! for a green run.

mod common;

use common::{broker, fresh_topic, tasks};

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_kafka::{BusTasks, KafkaBus, KafkaConfig, partition_for};
use weft_sync::{Delivery, Interest, MessageBus, Origin, Record, RecordKind};

fn config(brokers: &str, topic: &str, node: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        partitions: 3,
        replication_factor: 1,
        origin: Origin::new(node),
        linger: Duration::from_millis(1),
        fetch_wait: Duration::from_millis(10),
        publish_timeout: Duration::from_secs(10),
        max_record_bytes: 17 * 1024 * 1024,
        retention: None,
        consume: weft_kafka::ConsumeScope::Held,
        security: weft_kafka::KafkaSecurity::default(),
        options: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_passes_the_bus_conformance_suite() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("conformance");
    let a = KafkaBus::new(config(&brokers, &topic, "a"), tasks()).expect("bus a");
    let b = KafkaBus::new(config(&brokers, &topic, "b"), tasks()).expect("bus b");
    weft_sync::bus_conformance::run_all(&a, &b).await;
}

/// The bus runs its tasks on the tracker it was given (a node's), and
/// they end once its token is cancelled: the live consumer loop (its
/// deliveries channel closes) and the replays' passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_runs_its_tasks_on_the_given_tracker_until_stopped() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("tracked");
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let bus = KafkaBus::new(
        config(&brokers, &topic, "tracked"),
        BusTasks::new(stop.clone(), tracker.clone()),
    )
    .expect("bus");
    assert!(tracker.is_empty(), "nothing runs before the bus subscribes");
    let mut deliveries = bus.subscribe(Arc::new(All)).await.expect("subscribe");
    assert!(
        !tracker.is_empty(),
        "the live consumer loop is on the given tracker"
    );
    bus.replay("doc", None)
        .await
        .expect("a replay before the stop");

    stop.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(20), tracker.wait())
        .await
        .expect("the bus's tasks end once its token is cancelled");
    assert!(tracker.is_empty());
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while deliveries.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the live consumer loop dropped its sender");
    assert!(
        bus.replay("doc", None).await.is_err(),
        "a stopped bus replays nothing"
    );
}

struct All;

impl Interest for All {
    fn wants(&self, _doc: &str) -> bool {
        true
    }
}

async fn next(deliveries: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), deliveries.recv())
        .await
        .expect("a delivery in time")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_counted_and_skipped() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("malformed");
    // Every partition: this checks decoding, not which partitions are read.
    let mut node_config = config(&brokers, &topic, "node");
    node_config.consume = weft_kafka::ConsumeScope::All;
    let node = KafkaBus::new(node_config, tasks()).expect("bus");
    let writer = KafkaBus::new(config(&brokers, &topic, "writer"), tasks()).expect("bus");
    let mut deliveries = node.subscribe(Arc::new(All)).await.expect("subscribe");
    // Connect the writer (creates nothing new: the topics exist).
    let _writer_deliveries = writer.subscribe(Arc::new(All)).await.expect("subscribe");

    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("raw producer");
    let doc = "bad/doc";
    let partition = partition_for(doc, 3);
    for value in [&b"\xff\xfe not protobuf"[..], b""] {
        raw.send(
            FutureRecord::to(&topic)
                .key(doc)
                .payload(value)
                .partition(partition),
            Duration::from_secs(10),
        )
        .await
        .expect("raw record produced");
    }
    let results = writer
        .publish(&[Record {
            doc: Arc::from(doc),
            kind: RecordKind::Update,
            payload: bytes::Bytes::from_static(b"good"),
            origin_session: 1,
            span: tracing::Span::none(),
        }])
        .await;
    assert!(results[0].is_ok());

    // Heartbeats of the writer may come first; the first update must be
    // the good one, after the two bad records were skipped.
    let good = loop {
        let delivery = next(&mut deliveries).await;
        if delivery.record.kind == RecordKind::Update {
            break delivery;
        }
    };
    assert_eq!(good.record.payload.as_ref(), b"good");
    assert_eq!(node.malformed_records(), 2, "both bad records counted");

    let replayed = node.replay(doc, None).await.expect("replay");
    assert_eq!(replayed.len(), 1, "replay skips them too");
    assert_eq!(replayed[0].update.as_ref(), b"good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_before_the_broker_answers_fails_cleanly() {
    // A port nothing listens on: the bus never connects.
    let bus = KafkaBus::new(
        config("127.0.0.1:1", &fresh_topic("down"), "lonely"),
        tasks(),
    )
    .expect("bus");
    let results = bus
        .publish(&[Record {
            doc: Arc::from("doc"),
            kind: RecordKind::Update,
            payload: bytes::Bytes::from_static(b"x"),
            origin_session: 1,
            span: tracing::Span::none(),
        }])
        .await;
    assert!(matches!(results[0], Err(weft_sync::BusError::NotConnected)));
    assert!(bus.check().await.is_err());
    assert!(matches!(
        bus.replay("doc", None).await,
        Err(weft_sync::BusError::NotConnected)
    ));
}

#[test]
fn bad_settings_name_the_flag() {
    let mut bad = config("127.0.0.1:9092", "has space", "n");
    let error = KafkaBus::new(bad.clone(), tasks()).expect_err("bad topic");
    assert!(error.to_string().contains("--kafka-topic"), "{error}");
    bad.topic = "ok".to_owned();
    bad.partitions = 0;
    let error = KafkaBus::new(bad.clone(), tasks()).expect_err("bad partitions");
    assert!(error.to_string().contains("--kafka-partitions"), "{error}");
    bad.partitions = 1;
    bad.brokers = " ".to_owned();
    let error = KafkaBus::new(bad, tasks()).expect_err("no brokers");
    assert!(error.to_string().contains("--kafka-brokers"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_loading_at_once_share_passes_over_their_partition() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("coalesced");
    let writer = KafkaBus::new(config(&brokers, &topic, "writer"), tasks()).expect("bus");
    let reader = Arc::new(KafkaBus::new(config(&brokers, &topic, "reader"), tasks()).expect("bus"));
    let _writer_deliveries = writer.subscribe(Arc::new(All)).await.expect("subscribe");
    let _reader_deliveries = reader.subscribe(Arc::new(All)).await.expect("subscribe");
    const DOCS: usize = 30;
    let docs: Vec<String> = (0..DOCS)
        .map(|index| format!("storm/doc-{index}"))
        .collect();
    // Two updates per document, interleaved across documents.
    let records: Vec<Record> = (0..2)
        .flat_map(|round| {
            docs.iter().map(move |doc| Record {
                doc: Arc::from(doc.as_str()),
                kind: RecordKind::Update,
                payload: bytes::Bytes::from(format!("{doc}#{round}")),
                origin_session: 1,
                span: tracing::Span::none(),
            })
        })
        .collect();
    for result in writer.publish(&records).await {
        result.expect("published");
    }
    // Every document loads at once, as when a dead node's clients arrive.
    let mut loads = tokio::task::JoinSet::new();
    for doc in docs.clone() {
        let reader = reader.clone();
        loads.spawn(async move {
            let replayed = reader.replay(&doc, None).await;
            (doc, replayed)
        });
    }
    let mut loaded = 0;
    while let Some(joined) = loads.join_next().await {
        let (doc, replayed) = joined.expect("load task");
        let updates: Vec<String> = replayed
            .expect("replayed")
            .iter()
            .map(|record| String::from_utf8(record.update.to_vec()).expect("UTF-8"))
            .collect();
        assert_eq!(
            updates,
            [format!("{doc}#0"), format!("{doc}#1")],
            "{doc}: its own updates, in order, once"
        );
        loaded += 1;
    }
    assert_eq!(loaded, DOCS);
    let passes = reader.replay_passes();
    assert!(
        passes <= DOCS as u64 / 2,
        "{passes} passes over 3 partitions for {DOCS} documents: replays were not shared"
    );
}

/// The documents a test node has loaded.
#[derive(Default)]
struct Loaded(parking_lot::Mutex<std::collections::HashSet<String>>);

impl Interest for Loaded {
    fn wants(&self, doc: &str) -> bool {
        self.0.lock().contains(doc)
    }
}

fn update(doc: &str, payload: String) -> Record {
    Record {
        doc: Arc::from(doc),
        kind: RecordKind::Update,
        payload: bytes::Bytes::from(payload),
        origin_session: 1,
        span: tracing::Span::none(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_loaded_after_the_live_consumer_passed_its_records_gets_them_all() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("handover");
    let writer = KafkaBus::new(config(&brokers, &topic, "writer"), tasks()).expect("bus");
    let mut reader_config = config(&brokers, &topic, "reader");
    reader_config.consume = weft_kafka::ConsumeScope::All;
    let reader = KafkaBus::new(reader_config, tasks()).expect("bus");
    let loaded = Arc::new(Loaded::default());
    let _writer_deliveries = writer.subscribe(Arc::new(All)).await.expect("subscribe");
    let mut deliveries = reader.subscribe(loaded.clone()).await.expect("subscribe");
    // Two documents of one partition; the reader holds only the second.
    let doc = "handover/late";
    let partition = partition_for(doc, 3);
    let marker = (0..)
        .map(|index| format!("handover/marker-{index}"))
        .find(|name| partition_for(name, 3) == partition)
        .expect("a name in the same partition");
    loaded.0.lock().insert(marker.clone());
    let records: Vec<Record> = (0..5)
        .map(|index| update(doc, format!("{doc}#{index}")))
        .chain([update(&marker, "marker".to_owned())])
        .collect();
    for result in writer.publish(&records).await {
        result.expect("published");
    }
    // Once the marker is delivered, the live consumer has processed (and
    // skipped: not loaded) every record of the document before it.
    let delivered = next(&mut deliveries).await;
    assert_eq!(delivered.record.doc.as_ref(), marker.as_str());

    // Loading: registered, then replayed. Only the replay can bring them.
    loaded.0.lock().insert(doc.to_owned());
    let replayed: Vec<String> = reader
        .replay(doc, None)
        .await
        .expect("replayed")
        .iter()
        .map(|record| String::from_utf8(record.update.to_vec()).expect("UTF-8"))
        .collect();
    assert_eq!(
        replayed,
        (0..5)
            .map(|index| format!("{doc}#{index}"))
            .collect::<Vec<_>>()
    );
    // And live from here on.
    for result in writer.publish(&[update(doc, "live".to_owned())]).await {
        result.expect("published");
    }
    let live = next(&mut deliveries).await;
    assert_eq!(live.record.payload.as_ref(), b"live");
    assert_eq!(reader.live_gaps(), 0, "no offset skipped");
}
