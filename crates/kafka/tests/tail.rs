//! Reading the updates topic outside a node (`weft_kafka::tail`) against a
//! real Apache Kafka broker (`WEFT_TEST_KAFKA`, see `broker.rs`).

mod common;

use common::{broker, fresh_topic, tasks};

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weft_kafka::tail::{Change, read_changes, topic_extent};
use weft_kafka::{KafkaBus, KafkaConfig, partition_for};
use weft_sync::{Interest, MessageBus, Origin, Record, RecordKind};

fn config(brokers: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        partitions: 3,
        replication_factor: 1,
        origin: Origin::new("writer"),
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

#[derive(Debug)]
struct NoDocuments;

impl Interest for NoDocuments {
    fn wants(&self, _doc: &str) -> bool {
        false
    }
}

fn record(doc: &str, kind: RecordKind, payload: &str) -> Record {
    Record {
        doc: Arc::from(doc),
        kind,
        payload: bytes::Bytes::from(payload.to_owned()),
        origin_session: 1,
        author: None,
        span: tracing::Span::none(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_read_up_to_the_cut_decoding_only_the_wanted_documents() {
    let Some(brokers) = broker() else { return };
    let topic = fresh_topic("tail");
    let config = config(&brokers, &topic);
    let writer = KafkaBus::new(config.clone(), tasks()).expect("bus");
    let _deliveries = writer
        .subscribe(Arc::new(NoDocuments))
        .await
        .expect("subscribe");
    let wanted = "tail/wanted";
    let partition = partition_for(wanted, 3);
    let other = (0..)
        .map(|index| format!("tail/other-{index}"))
        .find(|name| partition_for(name, 3) == partition)
        .expect("a name in the same partition");
    let before = [
        record(wanted, RecordKind::Update, "one"),
        record(&other, RecordKind::Update, "not wanted"),
        record(wanted, RecordKind::Delete, ""),
    ];
    for result in writer.publish(&before).await {
        result.expect("published");
    }
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("raw producer");
    raw.send(
        FutureRecord::to(&topic)
            .key(wanted)
            .payload(&b"\xff\xfe not protobuf"[..])
            .partition(partition),
        Duration::from_secs(10),
    )
    .await
    .expect("raw record produced");
    for result in writer
        .publish(&[record(wanted, RecordKind::Update, "two")])
        .await
    {
        result.expect("published");
    }

    let extent_config = config.clone();
    let extents = tokio::task::spawn_blocking(move || topic_extent(&extent_config))
        .await
        .expect("joined")
        .expect("extent");
    assert_eq!(
        extents
            .iter()
            .map(|extent| extent.partition)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let cut = extents[usize::try_from(partition).expect("partition")];
    assert_eq!(cut.high - cut.low, 5, "five records before the cut");
    // Past the cut: not read.
    for result in writer
        .publish(&[record(wanted, RecordKind::Update, "after the cut")])
        .await
    {
        result.expect("published");
    }

    let (seen, changes) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut changes = Vec::new();
        let read = read_changes(
            &config,
            partition,
            cut.low,
            cut.high,
            Duration::from_secs(30),
            |doc, _offset| {
                seen.push(doc.to_owned());
                doc == wanted
            },
            |change| changes.push(change),
        )
        .expect("read");
        assert_eq!(read, 5);
        (seen, changes)
    })
    .await
    .expect("joined");
    assert_eq!(seen.iter().filter(|doc| **doc == other).count(), 1);
    let read: Vec<String> = changes
        .iter()
        .map(|change| match change {
            Change::Record { record, .. } => format!(
                "{:?} {}",
                record.kind,
                String::from_utf8_lossy(&record.payload)
            ),
            Change::Malformed { .. } => "malformed".to_owned(),
        })
        .collect();
    assert_eq!(read, ["Update one", "Delete ", "malformed", "Update two"]);
    let offsets: Vec<i64> = changes
        .iter()
        .map(|change| match change {
            Change::Record { offset, .. } | Change::Malformed { offset, .. } => *offset,
        })
        .collect();
    assert_eq!(offsets, [cut.low, cut.low + 2, cut.low + 3, cut.low + 4]);
}
