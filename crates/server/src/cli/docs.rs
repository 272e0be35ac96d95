//! `weft docs`: export, import and migrate documents.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::kafka::KafkaArgs;

/// `weft docs`.
#[derive(Debug, Args)]
pub struct DocsArgs {
    #[command(subcommand)]
    pub command: DocsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Write a store's documents (their current state) to stdout as a
    /// `weft-docs` stream. A cluster's (`--kafka-brokers`): the snapshots
    /// the persistence worker stored plus the topic's records past them,
    /// up to the topic's end when the export starts.
    Export(Box<ExportArgs>),
    /// Read a `weft-docs` stream and merge its documents into a store's
    /// embedded log (what an embedded node serves).
    Import(ImportArgs),
    /// Publish an embedded store's documents to a cluster's topic.
    Migrate(Box<MigrateArgs>),
}

/// `weft docs export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The store to read (`sqlite://PATH`, `postgres://...`).
    #[arg(long, env = "WEFT_STORE")]
    pub store: String,
    /// Only documents whose name matches this glob (`*`, `?`).
    #[arg(long)]
    pub docs: Option<String>,
    /// Export a cluster's documents: those of this topic. Without
    /// `--kafka-brokers`, only the snapshots `weft persist` stored (updates
    /// it has not folded yet are missing; a warning says so). Without
    /// `--topic` and `--kafka-brokers`, the embedded node's documents.
    #[arg(long)]
    pub topic: Option<String>,
    /// A cluster's brokers and topic: with `--kafka-brokers`, the export
    /// also reads the topic (`--topic`, else `--kafka-topic`) up to its end
    /// when the export starts, and folds every record past each stored
    /// snapshot, so it is complete whether or not the persistence worker
    /// has caught up. Documents only in the topic are exported too.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `weft docs import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The store to write (`sqlite://PATH`, `postgres://...`).
    #[arg(long, env = "WEFT_STORE")]
    pub store: String,
    /// The stream to read; stdin when absent or `-`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where progress is kept so that an interrupted import resumes.
    /// Default: `<input>.import-progress` for a file; none for stdin.
    #[arg(long)]
    pub progress_file: Option<PathBuf>,
}

/// `weft docs migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The embedded store to read (`sqlite://PATH`).
    #[arg(long)]
    pub from: String,
    /// Only documents whose name matches this glob (`*`, `?`).
    #[arg(long)]
    pub docs: Option<String>,
    /// Where progress is kept so that an interrupted migration resumes.
    #[arg(long, default_value = "weft-migrate.progress")]
    pub progress_file: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}
