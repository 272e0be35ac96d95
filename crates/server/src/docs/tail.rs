//! A cluster's unfolded tail: the records of the updates topic past each
//! document's stored snapshot, which the persistence worker has not
//! folded yet (it lags, or is stopped). An export of a cluster adds them,
//! so it is complete whether or not the worker has caught up.
//!
//! Every partition is read once, from its first retained offset (a
//! document the worker never snapshotted may have records anywhere in
//! it) up to the high watermark taken when the export starts: the
//! export's cut. A record of a selected document at or below its
//! snapshot's offset is skipped undecoded; the others are folded per
//! document as they come, their updates merged every few records, so
//! memory holds one merged update per document with a tail, never the
//! topic. A deletion drops what came before it, the snapshot included.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_kafka::KafkaConfig;
use weft_kafka::tail::{Change, PartitionExtent, read_changes, topic_extent};
use weft_sync::store::EMPTY_UPDATE_V1;
use weft_sync::{EmbeddedLog, RecordKind};

use super::format::{DocEntry, LinePosition};
use super::source;

/// How long reading one partition's retained records may take.
pub const PARTITION_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Updates of one document held unmerged at most...
const MERGE_EVERY_UPDATES: usize = 64;
/// ...and their bytes: past either, they are merged into one.
const MERGE_EVERY_BYTES: usize = 4 * 1024 * 1024;

/// What the topic holds of one document past its snapshot.
#[derive(Debug, Default)]
pub struct DocTail {
    /// Its updates, merged every few records.
    updates: Vec<Vec<u8>>,
    bytes: usize,
    /// A deletion came past the snapshot: the snapshot is gone.
    deleted: bool,
    /// The last record folded.
    last: LinePosition,
}

impl DocTail {
    fn update(&mut self, update: &[u8]) -> anyhow::Result<()> {
        self.bytes += update.len();
        self.updates.push(update.to_vec());
        if self.updates.len() >= MERGE_EVERY_UPDATES || self.bytes >= MERGE_EVERY_BYTES {
            let merged = yrs::merge_updates_v1(&self.updates).context("merge updates")?;
            self.bytes = merged.len();
            self.updates = vec![merged];
        }
        Ok(())
    }

    fn delete(&mut self) {
        self.updates.clear();
        self.bytes = 0;
        self.deleted = true;
    }
}

/// The tails of an export's documents, and how the read went.
#[derive(Debug, Default)]
pub struct Tails {
    docs: BTreeMap<String, DocTail>,
    /// Records read, and those folded (of selected documents, past their
    /// snapshots).
    pub records_read: u64,
    pub records_folded: u64,
    /// Records of selected documents that did not decode (skipped).
    pub malformed: u64,
}

impl Tails {
    /// Documents with records in the topic that are not among `listed`
    /// (never snapshotted, or deleted and written again), by name.
    pub fn topic_only(&self, listed: &[String]) -> Vec<String> {
        self.docs
            .keys()
            .filter(|name| listed.binary_search(name).is_err())
            .cloned()
            .collect()
    }

    /// `doc`'s exported entry: its stored state `stored` (if any) with its
    /// tail folded in. `None` if nothing is left (deleted).
    pub fn apply(
        &mut self,
        log: &str,
        doc: &str,
        stored: Option<DocEntry>,
    ) -> anyhow::Result<Option<DocEntry>> {
        let Some(tail) = self.docs.remove(doc) else {
            return Ok(stored);
        };
        let mut updates: Vec<&[u8]> = Vec::with_capacity(tail.updates.len() + 1);
        if let Some(stored) = stored.as_ref().filter(|_| !tail.deleted) {
            updates.push(&stored.state);
        }
        updates.extend(tail.updates.iter().map(Vec::as_slice));
        if updates.is_empty() {
            return Ok(None);
        }
        let (state, state_vector) =
            source::fold(&updates).with_context(|| format!("fold document {doc:?}"))?;
        if state == EMPTY_UPDATE_V1 {
            return Ok(None);
        }
        Ok(Some(DocEntry {
            doc: doc.to_owned(),
            state,
            state_vector,
            log: log.to_owned(),
            position: Some(tail.last),
        }))
    }

    fn fold(&mut self, partition: i32, offset: i64, kind: RecordKind, doc: &str, update: &[u8]) {
        let tail = self.docs.entry(doc.to_owned()).or_default();
        tail.last = LinePosition { partition, offset };
        self.records_folded += 1;
        match kind {
            RecordKind::Delete => tail.delete(),
            _ => {
                if let Err(error) = tail.update(update) {
                    // A record the nodes refused too: skip it like one
                    // that does not decode.
                    tracing::warn!(doc, partition, offset, error = %error, "skipping an update that does not merge");
                    self.malformed += 1;
                }
            }
        }
    }
}

/// Whether the record of `doc` at `offset` of `partition` is past its
/// snapshot (`covers`): not in the stored state. A snapshot of another
/// partition (the topic's partition count changed since) covers nothing
/// here.
fn past_snapshot(
    covers: &HashMap<String, LinePosition>,
    doc: &str,
    partition: i32,
    offset: i64,
) -> bool {
    covers
        .get(doc)
        .is_none_or(|covered| covered.partition != partition || offset > covered.offset)
}

/// Reads the topic of `kafka` up to its current end and folds every record
/// of a document matching `glob` past that document's snapshot in `store`
/// (`listed`: the documents with one, by name).
pub async fn read(
    store: &dyn EmbeddedLog,
    log: &str,
    glob: Option<&str>,
    listed: &[String],
    kafka: KafkaConfig,
) -> anyhow::Result<Tails> {
    let kafka = Arc::new(kafka);
    let config = kafka.clone();
    let extents: Vec<PartitionExtent> = tokio::task::spawn_blocking(move || topic_extent(&config))
        .await
        .context("read the topic's partitions")?
        .with_context(|| format!("--kafka-brokers: read the partitions of topic {log}"))?;
    // Where each listed document's snapshot stands: its records at or
    // below it are in the stored state.
    let mut covers: HashMap<String, LinePosition> = HashMap::with_capacity(listed.len());
    for name in listed {
        if let Some(snapshot) = store
            .load_snapshot(log, name)
            .await
            .context("load snapshot")?
        {
            covers.insert(
                name.clone(),
                LinePosition {
                    partition: snapshot.covers.partition,
                    offset: snapshot.covers.offset,
                },
            );
        }
    }
    let covers = Arc::new(covers);
    let glob: Option<Arc<str>> = glob.map(Arc::from);
    let mut tails = Tails::default();
    for extent in extents {
        let (kafka, covers, glob) = (kafka.clone(), covers.clone(), glob.clone());
        let partition = extent.partition;
        let read = tokio::task::spawn_blocking(move || {
            let mut malformed = 0;
            let read = read_changes(
                &kafka,
                partition,
                extent.low,
                extent.high,
                PARTITION_READ_TIMEOUT,
                |doc, offset| {
                    glob.as_deref()
                        .is_none_or(|pattern| source::glob_matches(pattern, doc))
                        && past_snapshot(&covers, doc, partition, offset)
                },
                |change| match change {
                    Change::Record { offset, record } => tails.fold(
                        partition,
                        offset,
                        record.kind,
                        &record.doc,
                        &record.payload,
                    ),
                    Change::Malformed { offset, error } => {
                        tracing::warn!(partition, offset, error = %error, "skipping a record that does not decode");
                        malformed += 1;
                    }
                },
            );
            tails.malformed += malformed;
            (read, tails)
        })
        .await
        .context("read the topic")?;
        let records;
        (records, tails) = read;
        tails.records_read +=
            records.with_context(|| format!("read partition {partition} of topic {log}"))?;
    }
    Ok(tails)
}

#[cfg(test)]
#[path = "tail_tests.rs"]
mod tests;
