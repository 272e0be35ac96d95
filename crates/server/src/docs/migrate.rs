//! `weft docs migrate`: an embedded node's documents into a cluster. Each
//! document's current state is published to the cluster's topic as one
//! update record, acknowledged by every in-sync replica (the producer's
//! `acks=all`), so the nodes and the persistence worker fold it like any
//! edit. Publishing a state again is a CRDT no-op, so a migration re-run
//! or resumed after a failure is harmless.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_kafka::{BusTasks, KafkaBus, KafkaConfig};
use weft_sync::{EMBEDDED_LOG, EmbeddedLog, Interest, MessageBus, Record, RecordKind};

use super::progress::Progress;
use super::resume::{Checkpoint, ResumeFile};
use super::source;
use super::transfer::{IMPORT_AUTHOR, store_key};

/// Documents published per batch: the records of a batch are in flight
/// together, and the progress file is written after each.
const BATCH: usize = 32;
/// How long the bus's tasks get to stop once the migration is done.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A migration's source and target.
#[derive(Debug)]
pub struct Migration {
    pub from: Arc<dyn EmbeddedLog>,
    pub from_url: String,
    pub kafka: KafkaConfig,
    pub glob: Option<String>,
    pub resume: Option<ResumeFile>,
}

/// The migration reads nothing from the topic: it only publishes.
#[derive(Debug)]
struct NoDocuments;

impl Interest for NoDocuments {
    fn wants(&self, _doc: &str) -> bool {
        false
    }
}

/// Publishes every document of the embedded log of `migration.from`.
/// Returns the summary line.
pub async fn migrate(migration: Migration) -> anyhow::Result<String> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let topic = migration.kafka.topic.clone();
    let bus = KafkaBus::new(
        migration.kafka,
        BusTasks::new(stop.clone(), tracker.clone()),
    )
    .context("--kafka-* settings")?;
    let outcome = publish_all(
        &bus,
        &migration.from,
        &migration.from_url,
        &topic,
        migration.glob.as_deref(),
        migration.resume.as_ref(),
    )
    .await;
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(STOP_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?STOP_GRACE, "the Kafka client took long to stop");
    }
    outcome
}

async fn publish_all(
    bus: &KafkaBus,
    from: &Arc<dyn EmbeddedLog>,
    from_url: &str,
    topic: &str,
    glob: Option<&str>,
    resume: Option<&ResumeFile>,
) -> anyhow::Result<String> {
    let _live = bus
        .subscribe(Arc::new(NoDocuments))
        .await
        .context("connect to the cluster")?;
    let run = format!("migrate {} to {topic}", store_key(from_url));
    let after = match resume {
        Some(resume) => resume.load(&run)?.map(|checkpoint| checkpoint.last_doc),
        None => None,
    };
    let names = source::names(
        from.as_ref(),
        EMBEDDED_LOG,
        glob,
        after.as_deref().unwrap_or(""),
    )
    .await?;
    let mut progress = Progress::new("migrated", Some(names.len() as u64));
    for batch in names.chunks(BATCH) {
        let mut records = Vec::with_capacity(batch.len());
        for name in batch {
            let Some(entry) = source::current(from.as_ref(), EMBEDDED_LOG, name).await? else {
                continue;
            };
            records.push(Record {
                doc: Arc::from(name.as_str()),
                kind: RecordKind::Update,
                payload: Bytes::from(entry.state),
                origin_session: 0,
                author: Some(Arc::from(IMPORT_AUTHOR)),
                span: tracing::Span::none(),
            });
        }
        let results = bus.publish(&records).await;
        for (record, result) in records.iter().zip(results) {
            result.with_context(|| format!("publish document {:?}", record.doc))?;
            progress.add(record.payload.len() as u64);
        }
        if let (Some(resume), Some(last)) = (resume, batch.last()) {
            resume.save(&Checkpoint {
                run: run.clone(),
                documents: 0,
                last_doc: last.clone(),
            })?;
        }
    }
    if let Some(resume) = resume {
        resume.remove()?;
    }
    let mut summary = progress.finish();
    if let Some(after) = after {
        summary.push_str(&format!(" (resumed after {after:?})"));
    }
    Ok(summary)
}
