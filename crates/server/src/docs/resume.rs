//! The progress file that lets an interrupted `weft docs import` or
//! `migrate` resume: a small JSON file, replaced atomically (written
//! beside, then renamed), naming the run it belongs to and how far it got.
//! Re-doing a document is harmless (its state is a CRDT update, applied
//! again), so the file is written every few documents, not after each.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Documents between two writes of the file: a resume repeats at most
/// this many.
pub const SAVE_EVERY: u64 = 64;

/// What a run has done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Which run: the export id and the target for an import, the source
    /// and the topic for a migration.
    pub run: String,
    /// Documents done, in stream order (import).
    pub documents: u64,
    /// The last document done, by name (migrate: documents go in name
    /// order).
    pub last_doc: String,
}

/// A progress file.
#[derive(Debug)]
pub struct ResumeFile {
    path: PathBuf,
}

impl ResumeFile {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// What an earlier run of `run` got done, if this file holds it.
    pub fn load(&self, run: &str) -> anyhow::Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("read {}", self.path.display()));
            }
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .with_context(|| format!("read {}: not a progress file", self.path.display()))?;
        Ok((checkpoint.run == run).then_some(checkpoint))
    }

    /// Records `checkpoint` durably.
    pub fn save(&self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let mut beside = self.path.clone().into_os_string();
        beside.push(".tmp");
        let beside = PathBuf::from(beside);
        let bytes = serde_json::to_vec(checkpoint).context("encode progress")?;
        let file = std::fs::File::create(&beside)
            .with_context(|| format!("write {}", beside.display()))?;
        std::io::Write::write_all(&mut &file, &bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", beside.display()))?;
        std::fs::rename(&beside, &self.path)
            .with_context(|| format!("write {}", self.path.display()))?;
        Ok(())
    }

    /// Removes the file once the run is complete.
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error).with_context(|| format!("remove {}", self.path.display())),
        }
    }
}
