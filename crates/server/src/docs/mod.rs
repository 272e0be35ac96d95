//! `weft docs`: documents out of a store and into another, or into a
//! cluster.
//!
//! Layout, leaves first:
//! - [`format`](mod@format): the `weft-docs` stream (header, one line
//!   per document, trailer with a checksum), pure;
//! - [`progress`]: the progress line on a terminal;
//! - [`resume`]: the progress file an interrupted run resumes from;
//! - [`source`]: a store's documents and their current state;
//! - [`tail`]: a cluster topic's records past the stored snapshots;
//! - [`transfer`]: export and import;
//! - [`migrate`](mod@migrate): an embedded store into a cluster's topic.

pub mod format;
pub mod migrate;
pub mod progress;
pub mod resume;
pub mod source;
pub mod tail;
pub mod transfer;

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;

use self::resume::ResumeFile;
use crate::cli::{DocsArgs, DocsCommand, ExportArgs, ImportArgs, MigrateArgs};

/// Runs `weft docs ...`; the summary goes to stderr, the stream (export)
/// to stdout.
pub async fn run(args: DocsArgs) -> anyhow::Result<()> {
    let summary = match args.command {
        DocsCommand::Export(args) => export(*args).await?,
        DocsCommand::Import(args) => import(args).await?,
        DocsCommand::Migrate(args) => migrate(*args).await?,
    };
    eprintln!("weft: {summary}");
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<String> {
    let kafka = crate::config::kafka_config(&args.kafka)?;
    // `--topic` names the cluster's topic; with `--kafka-brokers` alone,
    // `--kafka-topic` does.
    let topic = match (&args.topic, &kafka) {
        (Some(topic), _) => Some(topic.clone()),
        (None, Some(kafka)) => Some(kafka.topic.clone()),
        (None, None) => None,
    };
    let kafka = kafka.map(|mut kafka| {
        if let Some(topic) = &topic {
            kafka.topic.clone_from(topic);
        }
        kafka
    });
    if let (Some(topic), None) = (&topic, &kafka) {
        eprintln!(
            "weft: warning: exporting topic {topic} from its stored snapshots only: updates the persistence worker has not folded yet are missing; pass --kafka-brokers to read them from the topic"
        );
    }
    let store = weft_persistence::open_store(&args.store)
        .await
        .context("--store: open")?;
    let log = transfer::export_log(topic.as_deref()).to_owned();
    let stdout = std::io::stdout().lock();
    let out = std::io::BufWriter::new(stdout);
    transfer::export(store.as_ref(), &log, args.docs.as_deref(), kafka, out).await
}

async fn import(args: ImportArgs) -> anyhow::Result<String> {
    let store = weft_persistence::open_store(&args.store)
        .await
        .context("--store: open")?;
    let file = args.input.as_ref().filter(|path| path.as_os_str() != "-");
    let progress_file = args.progress_file.clone().or_else(|| {
        file.map(|path| {
            let mut beside = path.clone().into_os_string();
            beside.push(".import-progress");
            PathBuf::from(beside)
        })
    });
    let target = transfer::ImportTarget {
        store,
        store_url: args.store.clone(),
        resume: progress_file.as_deref().map(ResumeFile::new),
    };
    match file {
        Some(path) => {
            let input = std::fs::File::open(path)
                .with_context(|| format!("--input {}: open", path.display()))?;
            transfer::import(BufReader::new(input), &target).await
        }
        None => transfer::import(std::io::stdin().lock(), &target).await,
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<String> {
    let Some(kafka) = crate::config::kafka_config(&args.kafka)? else {
        anyhow::bail!("weft docs migrate needs --kafka-brokers");
    };
    let from = weft_persistence::open_store(&args.from)
        .await
        .context("--from: open")?;
    migrate::migrate(migrate::Migration {
        from,
        from_url: args.from.clone(),
        kafka,
        glob: args.docs.clone(),
        resume: Some(ResumeFile::new(&args.progress_file)),
    })
    .await
}
