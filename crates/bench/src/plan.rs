//! Which scenario runs against which server, at which sizes, how often; and
//! the results file every run is appended to.

use std::path::Path;

use anyhow::Context;

use crate::conditions::conditions;
use crate::processes::Programs;
use crate::results::{Record, Results, TraceInfo};
use crate::scale_plan::{ScaleSizes, cells};
use crate::scenarios;
use crate::servers::{self, ServerKind};
use crate::sizes::Sizes;
use crate::trace::Trace;
use crate::{Mode, RunArgs};

/// The scenarios and the servers each is run against.
fn scenario_servers(scenario: &str) -> &'static [ServerKind] {
    match scenario {
        // Cross-node: y-websocket-server has no clustering.
        "latency" => &[
            ServerKind::WeftCluster,
            ServerKind::WeftClusterReplicated,
            ServerKind::HocuspocusRedis,
        ],
        "storm" => crate::storm::SERVERS,
        "joinstorm" => crate::joinstorm::SERVERS,
        _ => &[
            ServerKind::Weft,
            ServerKind::YWebsocket,
            ServerKind::Hocuspocus,
        ],
    }
}

const SCENARIOS: [&str; 11] = [
    "latency",
    "fanout",
    "throughput",
    "maxrate",
    "idle",
    "stalled",
    "trace",
    "storm",
    "presence",
    "scale",
    "joinstorm",
];

/// Message of a skipped scenario 5 when no trace file was found.
pub(crate) const TRACE_NOT_FOUND: &str = "trace not found; set BENCH_TRACE";

/// Loads scenario 5's trace (a prefix of it in short mode). Never fails:
/// a missing or unreadable trace skips the scenario, with the reason.
fn load_trace(path: Option<&Path>, max_edits: Option<usize>) -> (Option<Trace>, TraceInfo) {
    let file = path
        .and_then(Path::file_name)
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let skipped = |reason: String| TraceInfo {
        file: file.clone(),
        edits: 0,
        txns: 0,
        total_edits: 0,
        end_chars: 0,
        skipped: Some(reason),
    };
    let Some(path) = path.filter(|path| path.is_file()) else {
        return (None, skipped(TRACE_NOT_FOUND.to_owned()));
    };
    let loaded = Trace::load(path).and_then(|whole| {
        let total = whole.edits();
        let replayed = match max_edits {
            Some(max) => whole.prefix(max)?,
            None => whole,
        };
        Ok((total, replayed))
    });
    match loaded {
        Ok((total_edits, trace)) => {
            let info = TraceInfo {
                file: file.clone(),
                edits: trace.edits(),
                txns: trace.txns.len(),
                total_edits,
                end_chars: trace.end_content.chars().count(),
                skipped: None,
            };
            (Some(trace), info)
        }
        Err(error) => (None, skipped(format!("trace unreadable: {error:#}"))),
    }
}

/// Runs every selected scenario against every server `repeats` times,
/// rewriting the results file after each run.
pub(crate) async fn run_all(args: &RunArgs) -> anyhow::Result<Results> {
    let repeats = args.repeats.unwrap_or(match args.mode {
        Mode::Short => 1,
        Mode::Full => 3,
    });
    let programs = Programs {
        weft: args.weft.clone(),
        node: args.node.clone(),
        peers_dir: args.peers_dir.clone(),
        kafka: args.kafka.clone(),
        redis_server: args.redis_server.clone(),
        kafka_fetch_wait_ms: args.kafka_fetch_wait_ms,
        weft_extra_args: Vec::new(),
    };
    let mut sizes = Sizes::for_mode(args.mode, args.kafka_fetch_wait_ms);
    if let Some(edits) = args.trace_edits {
        sizes.trace_max_edits = Some(edits);
    }
    sizes.fit_idle_to_fd_limit(crate::procstat::open_files_limit()?);
    if let Some(reason) = &sizes.idle_capped {
        eprintln!("idle       capped: {reason}");
    }
    let mut results = Results {
        mode: args.mode,
        repeats,
        conditions: conditions(&programs, args.mode, repeats),
        sizes: sizes.clone(),
        records: Vec::new(),
        trace: None,
        scale: None,
    };
    let selected =
        |scenario: &str| args.only.is_empty() || args.only.iter().any(|name| name == scenario);
    let mut trace = None;
    if selected("trace") {
        let (loaded, info) = load_trace(args.trace.as_deref(), sizes.trace_max_edits);
        if let Some(reason) = &info.skipped {
            eprintln!("trace      skipped: {reason}");
        }
        trace = loaded;
        results.trace = Some(info);
    }
    std::fs::create_dir_all(&args.scratch).context("create scratch dir")?;
    let setup = Setup {
        sizes: &sizes,
        programs: &programs,
        args,
        trace: trace.as_ref(),
    };
    for scenario in SCENARIOS {
        if !selected(scenario) {
            continue;
        }
        if scenario == "scale" {
            let scale_sizes = ScaleSizes::for_mode(args.mode);
            results.scale = Some(scale_sizes.clone());
            for repeat in 0..repeats {
                for cell in cells(&scale_sizes) {
                    let record = crate::scale::run_cell(
                        cell,
                        repeat,
                        &scale_sizes,
                        &programs,
                        &args.scratch,
                    )
                    .await;
                    let status = record
                        .error
                        .as_deref()
                        .map_or("ok".to_owned(), |error| format!("FAILED: {error}"));
                    eprintln!(
                        "scale      {} nodes, {:<16} #{repeat} {status} {:?}",
                        cell.nodes,
                        cell.variant.label(),
                        record.metrics
                    );
                    results.records.push(record);
                    save(&results, &args.report.results)?;
                }
            }
            continue;
        }
        let xs: Vec<f64> = match scenario {
            "latency" => sizes.latency_rates.clone(),
            "fanout" => sizes.fanout_rates.clone(),
            "throughput" => sizes.throughput_rates.clone(),
            "maxrate" => vec![sizes.maxrate_docs as f64],
            "trace" => match &trace {
                Some(trace) => vec![trace.edits() as f64],
                None => continue,
            },
            "storm" => vec![sizes.storm_clients as f64],
            "presence" => sizes.presence_clients.iter().map(|n| *n as f64).collect(),
            "stalled" => vec![sizes.stalled_readers as f64],
            "joinstorm" => vec![sizes.joinstorm_clients as f64],
            _ => sizes.idle_sessions.iter().map(|n| *n as f64).collect(),
        };
        // Repeats outermost, so a burst of noise on the machine spreads
        // over servers instead of hitting one server's every run.
        for repeat in 0..repeats {
            for &server in scenario_servers(scenario) {
                if !args.servers.is_empty() && !args.servers.contains(&server) {
                    continue;
                }
                // Rates ascend: once a server saturated at one, a higher one
                // would only wait out its deadline, so it is not run.
                let mut saturated_at: Option<f64> = None;
                for &x in &xs {
                    let record = match saturated_at {
                        Some(lower) if rated(scenario) => Record::from_outcome(
                            scenario,
                            server,
                            x,
                            repeat,
                            None,
                            Err(crate::session::DidNotKeepUp(format!(
                                "not run: saturated at {lower} updates/s in this repeat"
                            ))
                            .into()),
                        ),
                        _ => run_one(scenario, server, x, repeat, &setup).await,
                    };
                    if record.saturated && saturated_at.is_none() {
                        saturated_at = Some(x);
                    }
                    let status = match (&record.error, record.saturated) {
                        (None, _) => "ok".to_owned(),
                        (Some(error), true) => format!("SATURATED: {error}"),
                        (Some(error), false) => format!("FAILED: {error}"),
                    };
                    eprintln!(
                        "{scenario:<10} {:<28} x={x:<7} #{repeat} {status} {:?}",
                        server.label(),
                        record.metrics
                    );
                    results.records.push(record);
                    save(&results, &args.report.results)?;
                }
            }
        }
    }
    Ok(results)
}

/// Scenarios whose x is an offered rate, run in ascending order.
fn rated(scenario: &str) -> bool {
    matches!(scenario, "latency" | "fanout" | "throughput")
}

/// What every run shares.
#[derive(Clone, Copy)]
struct Setup<'a> {
    sizes: &'a Sizes,
    programs: &'a Programs,
    args: &'a RunArgs,
    trace: Option<&'a Trace>,
}

async fn run_one(
    scenario: &str,
    server_kind: ServerKind,
    x: f64,
    repeat: u32,
    setup: &Setup<'_>,
) -> Record {
    let Setup {
        sizes,
        programs,
        args,
        trace,
    } = *setup;
    if scenario == "maxrate" {
        // A search of many steps, each on a server of its own.
        let outcome = crate::maxrate::search(server_kind, sizes, programs, &args.scratch).await;
        return Record::from_outcome(scenario, server_kind, x, repeat, None, outcome);
    }
    let storm_programs;
    let programs = if scenario == "storm" {
        storm_programs = crate::storm::programs(programs);
        &storm_programs
    } else {
        programs
    };
    let outcome = async {
        let mut server = servers::start(server_kind, programs, &args.scratch)?;
        let measured = match scenario {
            "latency" => {
                scenarios::latency(
                    &server,
                    sizes.latency_writers,
                    sizes.latency_readers,
                    x,
                    sizes.latency_seconds,
                )
                .await
            }
            "fanout" => {
                scenarios::fanout(&server, sizes.fanout_readers, x, sizes.fanout_seconds).await
            }
            "throughput" => {
                scenarios::throughput(&server, sizes.throughput_docs, x, sizes.throughput_seconds)
                    .await
            }
            "idle" => scenarios::idle(&server, x as usize).await,
            "presence" => {
                crate::presence::presence(&server, x as usize, sizes.presence_seconds).await
            }
            "stalled" => {
                let weft = server_kind == ServerKind::Weft;
                crate::stalled::stalled(&server, x as usize, sizes.stalled_seconds, weft).await
            }
            "storm" => {
                crate::storm::storm(&mut server, programs, x as usize, sizes.storm_docs).await
            }
            "joinstorm" => {
                crate::joinstorm::join_storm(
                    &mut server,
                    programs,
                    x as usize,
                    sizes.joinstorm_doc_bytes,
                )
                .await
            }
            _ => match trace {
                Some(trace) => scenarios::trace_replay(&mut server, programs, trace).await,
                None => Err(anyhow::anyhow!("no trace loaded")),
            },
        };
        server.with_logs(measured)
    }
    .await;
    Record::from_outcome(scenario, server_kind, x, repeat, None, outcome)
}

fn save(results: &Results, path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).context("create results dir")?;
    }
    let text = serde_json::to_string_pretty(results).context("encode results")?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
