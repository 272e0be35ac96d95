//! What keeping a cluster's per-edit history costs the persistence worker,
//! and how long reading a document at an instant takes: `cargo test
//! --release -p weft-server --test history_cost -- --ignored --nocapture`
//! with `WEFT_TEST_KAFKA` (a broker) and `WEFT_MEASURE_STORE` (a PostgreSQL
//! URL of an empty database of its own).
//!
//! The same records (20 documents of 1,000 one-character edits, and one of
//! 10,000, every record attributed) go to two fresh topics; a worker folds
//! the first without history and the second with it, and the test prints
//! records per second and the worker's CPU time for each. Then it reads the
//! 10,000-edit document at its last edit, with no checkpoint before it (the
//! worst case: every edit replayed), through the store a node reads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weft_kafka::edit_history::HistoryKeeping;
use weft_kafka::fold::FoldConfig;
use weft_kafka::worker::{self, WorkerConfig, WorkerStatus};
use weft_kafka::{KafkaBus, KafkaConfig};
use weft_sync::{Interest, MessageBus, Origin, Record, RecordKind};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Text, Transact, Update};

const DOCS: usize = 20;
const EDITS_PER_DOC: usize = 1_000;
const BIG_EDITS: usize = 10_000;
const BATCH: usize = 500;

struct Nothing;

impl Interest for Nothing {
    fn wants(&self, _doc: &str) -> bool {
        false
    }
}

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

/// `count` one-character edits appended to root "t" by one client, each
/// its own update.
fn edits(client: u64, count: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::with_capacity(count);
    for index in 0..count {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, u32::try_from(index).expect("a small index"), "x");
        updates.push(txn.encode_update_v1());
    }
    updates
}

fn records() -> Vec<Record> {
    let record = |doc: String, payload: Vec<u8>, author: &str| Record {
        doc: Arc::from(doc),
        kind: RecordKind::Update,
        payload: payload.into(),
        origin_session: 1,
        author: Some(Arc::from(author)),
        span: tracing::Span::none(),
    };
    let mut all = Vec::new();
    let per_doc: Vec<Vec<Vec<u8>>> = (0..DOCS)
        .map(|doc| edits(doc as u64 + 1, EDITS_PER_DOC))
        .collect();
    for index in 0..EDITS_PER_DOC {
        for (doc, updates) in per_doc.iter().enumerate() {
            let author = if index % 2 == 0 { "alice" } else { "bob" };
            all.push(record(format!("doc-{doc}"), updates[index].clone(), author));
        }
    }
    for update in edits(1_000, BIG_EDITS) {
        all.push(record("big".to_owned(), update, "carol"));
    }
    all
}

/// The process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    cpu_time_of("/proc/self/stat")
}

/// A process's CPU time from its `/proc/PID/stat`.
fn cpu_time_of(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The CPU time of the PostgreSQL backends serving `store_url`'s database
/// now (this run's pool: each run opens its own), read from `/proc`.
fn database_cpu_time(store_url: &str) -> Duration {
    let Ok(output) = std::process::Command::new("psql")
        .args([
            store_url,
            "-qtAc",
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ])
        .output()
    else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        total += cpu_time_of(&format!("/proc/{pid}/stat"));
    }
    total
}

async fn fold_topic(
    brokers: &str,
    topic: &str,
    store_url: &str,
    history: Option<HistoryKeeping>,
    total: u64,
) -> (Duration, Duration, Duration) {
    let (store, edit_log) = weft_persistence::open_store_with_topic_history(store_url, topic)
        .await
        .expect("open the store");
    let config = WorkerConfig {
        kafka: kafka_config(brokers, topic, "worker"),
        group: format!("group-{topic}"),
        fold: FoldConfig {
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            ..FoldConfig::default()
        },
        tick: Duration::from_millis(250),
        history,
    };
    let status = Arc::new(WorkerStatus::default());
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker::run(
        config,
        store,
        history.map(|_| edit_log),
        status.clone(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut started = None;
    while Instant::now() < deadline {
        let folded = status.folded.load(Ordering::Relaxed);
        if folded > 0 && started.is_none() {
            started = Some((Instant::now(), cpu_time()));
        }
        let stored = status.history.edits_stored.load(Ordering::Relaxed);
        if folded >= total && (history.is_none() || stored >= total) {
            break;
        }
        // The worker's counters are external state: polled, bounded.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (wall_start, cpu_start) = started.expect("the worker folded something");
    let result = (
        wall_start.elapsed(),
        cpu_time().saturating_sub(cpu_start),
        database_cpu_time(store_url),
    );
    assert!(
        status.folded.load(Ordering::Relaxed) >= total,
        "every record folded"
    );
    stop.cancel();
    running.await.expect("join").expect("worker ran");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
async fn keeping_history_while_folding_and_reading_at_an_instant() {
    let (Ok(brokers), Ok(store_url)) = (
        std::env::var("WEFT_TEST_KAFKA"),
        std::env::var("WEFT_MEASURE_STORE"),
    ) else {
        eprintln!("skipped: set WEFT_TEST_KAFKA and WEFT_MEASURE_STORE");
        return;
    };
    let records = records();
    let total = records.len() as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let topics = [
        format!("cost-plain-{nanos}"),
        format!("cost-history-{nanos}"),
    ];
    for topic in &topics {
        let writer = KafkaBus::new(
            kafka_config(&brokers, topic, "writer"),
            weft_kafka::BusTasks::new(
                CancellationToken::new(),
                tokio_util::task::TaskTracker::new(),
            ),
        )
        .expect("bus");
        let _deliveries = writer.subscribe(Arc::new(Nothing)).await.expect("connect");
        for batch in records.chunks(BATCH) {
            for result in writer.publish(batch).await {
                result.expect("published");
            }
        }
    }
    let keeping = HistoryKeeping {
        version_interval: Duration::from_secs(3_600),
        version_quiet: Duration::from_secs(3_600),
    };
    for (topic, history) in topics.iter().zip([None, Some(keeping)]) {
        let (wall, cpu, database_cpu) =
            fold_topic(&brokers, topic, &store_url, history, total).await;
        let what = if history.is_some() {
            "with history: records folded and their edit rows stored"
        } else {
            "without history: records folded"
        };
        println!(
            "[measure] worker {what}: {total} in {} ms, {:.0} records/s; worker (test process) CPU {} ms ({:.1} us/record), PostgreSQL backends CPU {} ms",
            wall.as_millis(),
            total as f64 / wall.as_secs_f64(),
            cpu.as_millis(),
            cpu.as_secs_f64() * 1e6 / total as f64,
            database_cpu.as_millis(),
        );
    }

    let (_, history) = weft_persistence::open_store_with_topic_history(&store_url, &topics[1])
        .await
        .expect("open the store");
    let upto = history
        .position_at("big", i64::MAX)
        .await
        .expect("position")
        .expect("the document has edits");
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let position = history
            .position_at("big", i64::MAX)
            .await
            .expect("position");
        assert_eq!(position, Some(upto));
        let read = history.read_at("big", upto).await.expect("read");
        let read_ms = started.elapsed();
        let state = read.fold().expect("folds");
        times.push((started.elapsed(), read_ms, read.updates.len()));
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        doc.transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decodes"))
            .expect("applies");
        assert_eq!(text.get_string(&doc.transact()).len(), BIG_EDITS);
    }
    times.sort();
    let (total_time, read_time, replayed) = times[times.len() / 2];
    println!(
        "[measure] ?at= on a cluster document {replayed} edits after the nearest checkpoint (none): {} ms (median of 5; {} ms finding the position and reading the rows, the rest applying them)",
        total_time.as_millis(),
        read_time.as_millis()
    );
}
