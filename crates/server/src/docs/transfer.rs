//! `weft docs export` and `weft docs import`.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use weft_kafka::KafkaConfig;
use weft_sync::store::{EMPTY_UPDATE_V1, NewUpdate};
use weft_sync::{Attribution, EMBEDDED_LOG, EmbeddedLog};

use super::format::{FORMAT, Header, Item, StreamReader, StreamWriter, VERSION, hex};
use super::progress::Progress;
use super::resume::{Checkpoint, ResumeFile, SAVE_EVERY};
use super::{source, tail};

/// The author history shows for imported and migrated states.
pub const IMPORT_AUTHOR: &str = "weft-import";

/// Writes every document of `log` in `store` (matching `glob`) to `out`.
/// With `kafka` (a cluster's topic), each document's stored snapshot gets
/// the topic's records past it folded in, and documents found only in the
/// topic are written too (see [`tail`]). Returns the summary line.
pub async fn export(
    store: &dyn EmbeddedLog,
    log: &str,
    glob: Option<&str>,
    kafka: Option<KafkaConfig>,
    out: impl Write,
) -> anyhow::Result<String> {
    let mut names = source::names(store, log, glob, "").await?;
    let mut tails = match kafka {
        Some(kafka) => Some(tail::read(store, log, glob, &names, kafka).await?),
        None => None,
    };
    if let Some(tails) = &tails {
        names.extend(tails.topic_only(&names));
        names.sort_unstable();
    }
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        export_id: export_id(),
        log: log.to_owned(),
        documents: names.len() as u64,
        created_at_ms: weft_sync::unix_millis(),
    };
    let mut writer = StreamWriter::start(out, &header).context("write the header")?;
    let mut progress = Progress::new("exported", Some(header.documents));
    for name in &names {
        let mut entry = source::current(store, log, name).await?;
        if let Some(tails) = &mut tails {
            entry = tails.apply(log, name, entry)?;
        }
        let Some(entry) = entry else {
            continue;
        };
        let bytes = writer.write(&entry).context("write a document")?;
        progress.add(bytes);
    }
    writer.finish().context("write the trailer")?;
    let mut summary = progress.finish();
    if let Some(tails) = &tails {
        summary.push_str(&format!(
            "; {} records of the topic read, {} past the snapshots folded",
            tails.records_read, tails.records_folded
        ));
        if tails.malformed > 0 {
            summary.push_str(&format!(", {} malformed skipped", tails.malformed));
        }
    }
    Ok(summary)
}

/// Where an import writes and how it resumes.
#[derive(Debug)]
pub struct ImportTarget {
    pub store: Arc<dyn EmbeddedLog>,
    /// Names the target in the progress file, so a file kept from an
    /// import elsewhere is not taken for this one's.
    pub store_url: String,
    pub resume: Option<ResumeFile>,
}

/// Documents appended in one transaction at most...
const BATCH_DOCUMENTS: usize = 32;
/// ...and bytes of state: a few large documents go alone.
const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Applies every document of the stream to the embedded log of
/// `target.store`, as one update each (a CRDT merge with what the store
/// holds), a batch per transaction. Documents read before a damaged or
/// truncated part are applied (each line is whole) and recorded as done,
/// then the error is returned. Returns the summary line.
pub async fn import(input: impl BufRead, target: &ImportTarget) -> anyhow::Result<String> {
    let mut reader = StreamReader::open(input).context("read the stream")?;
    let run = format!(
        "import {} into {}",
        reader.header().export_id,
        store_key(&target.store_url)
    );
    let done_before = match &target.resume {
        Some(resume) => resume
            .load(&run)?
            .map_or(0, |checkpoint| checkpoint.documents),
        None => 0,
    };
    let mut progress = Progress::new("imported", Some(reader.header().documents));
    progress.skip(done_before);
    let mut batch = Batch::default();
    let mut seen = 0u64;
    let read = loop {
        let item = match reader.next_entry() {
            Ok(item) => item,
            Err(error) => break Err(anyhow::Error::new(error).context("read the stream")),
        };
        let Item::Doc(entry, bytes) = item else {
            break Ok(());
        };
        seen += 1;
        if seen <= done_before {
            continue;
        }
        batch.push(entry.doc, entry.state, bytes);
        if batch.is_full() || seen.is_multiple_of(SAVE_EVERY) {
            batch.flush(target.store.as_ref(), &mut progress).await?;
        }
        if seen.is_multiple_of(SAVE_EVERY) {
            save(target, &run, seen)?;
        }
    };
    batch.flush(target.store.as_ref(), &mut progress).await?;
    if let Err(error) = read {
        if seen > done_before {
            save(target, &run, seen)?;
        }
        return Err(error);
    }
    if let Some(resume) = &target.resume {
        resume.remove()?;
    }
    let mut summary = progress.finish();
    if done_before > 0 {
        summary.push_str(&format!(" (resumed after {done_before})"));
    }
    Ok(summary)
}

/// Records that the first `documents` of the stream are applied.
fn save(target: &ImportTarget, run: &str, documents: u64) -> anyhow::Result<()> {
    let Some(resume) = &target.resume else {
        return Ok(());
    };
    resume.save(&Checkpoint {
        run: run.to_owned(),
        documents,
        last_doc: String::new(),
    })
}

/// Documents read and not yet appended.
#[derive(Debug, Default)]
struct Batch {
    updates: Vec<NewUpdate>,
    state_bytes: usize,
    line_bytes: Vec<u64>,
}

impl Batch {
    fn push(&mut self, doc: String, state: Vec<u8>, line_bytes: u64) {
        self.line_bytes.push(line_bytes);
        if state == EMPTY_UPDATE_V1 {
            return;
        }
        self.state_bytes += state.len();
        self.updates.push(NewUpdate {
            doc: Arc::from(doc),
            update: Bytes::from(state),
            attribution: Attribution {
                author: Some(Arc::from(IMPORT_AUTHOR)),
                at_ms: Some(weft_sync::unix_millis()),
                node: None,
            },
        });
    }

    fn is_full(&self) -> bool {
        self.line_bytes.len() >= BATCH_DOCUMENTS || self.state_bytes >= BATCH_BYTES
    }

    /// Appends the batch in one transaction.
    async fn flush(
        &mut self,
        store: &dyn EmbeddedLog,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        if !self.updates.is_empty() {
            let first = self.updates.first().map(|update| update.doc.clone());
            let last = self.updates.last().map(|update| update.doc.clone());
            store
                .append(&self.updates)
                .await
                .with_context(|| format!("import documents {first:?} to {last:?}"))?;
        }
        for bytes in self.line_bytes.drain(..) {
            progress.add(bytes);
        }
        self.updates.clear();
        self.state_bytes = 0;
        Ok(())
    }
}

/// The log a store's documents are exported from: a topic, or the
/// embedded log.
pub fn export_log(topic: Option<&str>) -> &str {
    topic.unwrap_or(EMBEDDED_LOG)
}

/// A store URL without its credentials, for the progress file.
pub fn store_key(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let _user = parsed.set_username("");
            let _password = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// 128 random-enough bits: the time and the process id, hashed.
fn export_id() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(weft_sync::unix_millis().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(format!("{:?}", std::time::Instant::now()).as_bytes());
    hex(&hasher.finalize()[..16])
}
