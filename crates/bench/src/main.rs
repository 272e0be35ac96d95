//! `weft-bench`: the load driver behind `make bench`.
//!
//! It starts each server under test fresh (Weft, `@y/websocket-server`,
//! Hocuspocus alone and as two nodes over Redis), drives it with clients
//! that speak y-sync themselves (Rust, so the driver is not the
//! bottleneck), checks every run (every update delivered once and in order,
//! all replicas and a fresh client converge) and writes the results as JSON
//! and as `docs/BENCHMARKS.md` with SVG plots.
//!
//! Layout:
//! - `client`: one simulated editor (socket, yrs doc, both dialects);
//! - `session`: a timed session among many clients and its check;
//! - `scenarios`: the scenarios, each a function to named metrics;
//! - `servers`: starting and stopping the servers under test; `processes`:
//!   the programs, their command lines and readiness waits;
//! - `trace`: scenario 5's editing trace (parse, prefix, apply);
//! - `storm`: scenario 6, the reconnect storm after a node is killed;
//!   `storm_editor`: one client's side of it;
//! - `presence`: many clients moving their cursors once a second while a
//!   few type; `presence_client`: one client's side of it;
//! - `joinstorm`: scenario 7, many clients joining one large document at
//!   once, warm and cold; `joinstorm_doc`: its document;
//! - `maxrate`: the highest durable update rate one node sustains, found
//!   by a bounded search (a fresh server per step);
//! - `scale`: the scaling-out scenario, 1 to 4 Weft nodes under one load;
//!   `scale_plan`: its sizes, cells and node pickers;
//! - `plan`: which scenario runs against which server at which sizes;
//!   `sizes`: the sizes of each mode; `conditions`: the machine and
//!   versions a run names;
//! - `results`: the results file's records, written by `plan`, read by
//!   `report`;
//! - `report`, `plot`: the markdown and the SVGs; `report_sections`,
//!   `report_presence`, `report_table`, `report_text`: its later sections, its tables' pieces
//!   and its fixed prose;
//! - `procstat`, `clock`: CPU, RSS and the driver's one clock.

mod client;
mod clock;
mod conditions;
mod joinstorm;
mod joinstorm_doc;
mod maxrate;
mod plan;
mod plot;
mod presence;
mod presence_client;
mod processes;
mod procstat;
mod prom;
mod report;
mod report_cost;
mod report_maxrate;
mod report_presence;
mod report_sections;
mod report_stalled;
mod report_table;
mod report_text;
mod results;
mod scale;
mod scale_owners;
mod scale_plan;
mod scenarios;
mod servers;
mod session;
mod sizes;
mod stalled;
mod storm;
mod storm_editor;
mod trace;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "weft-bench", about = "Benchmarks Weft against its peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios, write the results JSON, then the report.
    Run(Box<RunArgs>),
    /// Write the report from an existing results JSON.
    Report(ReportArgs),
}

/// Sizes: `short` is what CI can afford (two to three minutes), `full` is the
/// published run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub(crate) enum Mode {
    Short,
    Full,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value_t = Mode::Short)]
    mode: Mode,
    /// Runs of each scenario against each server (default: 1 short, 3 full).
    #[arg(long)]
    repeats: Option<u32>,
    /// The weft binary (a release build).
    #[arg(long)]
    weft: PathBuf,
    /// Node.js, for the peers.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The folder where `npm ci` installed the peers (bench/peers).
    #[arg(long)]
    peers_dir: PathBuf,
    /// The Apache Kafka launcher (tests/kafka/kafka.sh), for Weft's
    /// cluster runs: it starts fresh brokers for each run.
    #[arg(long)]
    kafka: Option<PathBuf>,
    /// redis-server, for Hocuspocus's two-node runs.
    #[arg(long)]
    redis_server: Option<PathBuf>,
    /// Weft's `--kafka-fetch-wait-ms` in cluster runs (default: Weft's own).
    #[arg(long)]
    kafka_fetch_wait_ms: Option<u32>,
    /// Only these scenarios (comma-separated: latency,fanout,throughput,maxrate,idle,stalled,trace,storm,presence,scale,joinstorm).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these servers (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<servers::ServerKind>,
    /// Scenario 5's editing trace (gzip JSON, the editing-traces format);
    /// without it, or if it is missing, scenario 5 is skipped.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Scenario 5 replays at most this many edits of the trace (whole
    /// transactions), in place of the mode's own prefix (short: 20,000;
    /// full: all of it).
    #[arg(long)]
    trace_edits: Option<usize>,
    /// Where servers keep their files and logs during a run.
    #[arg(long, default_value = "target/bench/work")]
    scratch: PathBuf,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct ReportArgs {
    /// The results JSON (written by `run`, read by `report`).
    #[arg(long, default_value = "target/bench/results.json")]
    results: PathBuf,
    /// The markdown report.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    markdown: PathBuf,
    /// Folder of the SVG plots (linked relative to the markdown).
    #[arg(long, default_value = "docs/bench")]
    plots: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("build runtime")?;
            let results = runtime.block_on(plan::run_all(&args))?;
            // Saturation is a result; a failed check is not. A peer's failed
            // run (say, a peer that did not start in time) is listed in the
            // report but fails only Weft's own runs' bench.
            let failed = |weft: bool| {
                results
                    .records
                    .iter()
                    .filter(|record| !record.ok && !record.saturated)
                    .filter(|record| record.server.is_weft() == weft)
                    .count()
            };
            report::write(&results, &args.report)?;
            let peers_failed = failed(false);
            if peers_failed > 0 {
                eprintln!(
                    "warning: {peers_failed} runs of the peers failed; they are listed in the report"
                );
            }
            let weft_failed = failed(true);
            if weft_failed > 0 {
                anyhow::bail!(
                    "{weft_failed} runs of Weft failed their check; see the report and the log above"
                );
            }
            Ok(())
        }
        Command::Report(args) => {
            let text = std::fs::read_to_string(&args.results)
                .with_context(|| format!("read {}", args.results.display()))?;
            let results = serde_json::from_str(&text).context("parse results")?;
            report::write(&results, &args)
        }
    }
}
