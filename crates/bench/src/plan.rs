//! Which scenario runs against which server, at which sizes, how often; and
//! the results file every run is appended to.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::scenarios::{self, Metrics};
use crate::servers::{self, Programs, ServerKind};
use crate::trace::Trace;
use crate::{Mode, RunArgs};

/// One scenario at one size against one server, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) scenario: String,
    pub(crate) server: ServerKind,
    /// The size varied along the x axis (rate, readers, sessions...).
    pub(crate) x: f64,
    pub(crate) repeat: u32,
    pub(crate) ok: bool,
    /// The run failed only because updates were still arriving at its
    /// deadline (saturation), not because of a failed check.
    #[serde(default)]
    pub(crate) saturated: bool,
    pub(crate) error: Option<String>,
    pub(crate) metrics: Metrics,
    /// The `scale` scenario's consume mode and routing (`None` elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<crate::scale::Variant>,
}

impl Record {
    /// The record of one run: its metrics, or why it has none. A run that
    /// only failed to keep up ([`crate::session::DidNotKeepUp`]) is
    /// saturated, not failed.
    pub(crate) fn from_outcome(
        scenario: &str,
        server: ServerKind,
        x: f64,
        repeat: u32,
        variant: Option<crate::scale::Variant>,
        outcome: anyhow::Result<Metrics>,
    ) -> Record {
        let (ok, saturated, error, metrics) = match outcome {
            Ok(metrics) => (true, false, None, metrics),
            Err(error) => {
                let saturated = error
                    .downcast_ref::<crate::session::DidNotKeepUp>()
                    .is_some();
                (false, saturated, Some(format!("{error:#}")), Metrics::new())
            }
        };
        Record {
            scenario: scenario.to_owned(),
            server,
            x,
            repeat,
            ok,
            saturated,
            error,
            metrics,
            variant,
        }
    }
}

/// Everything a report needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) mode: Mode,
    pub(crate) repeats: u32,
    pub(crate) conditions: Vec<(String, String)>,
    pub(crate) sizes: Sizes,
    pub(crate) records: Vec<Record>,
    /// Scenario 5's trace, or why it was skipped (`None` in results written
    /// before scenario 5 existed).
    #[serde(default)]
    pub(crate) trace: Option<TraceInfo>,
    /// The `scale` scenario's sizes (`None` in results written before it existed).
    #[serde(default)]
    pub(crate) scale: Option<crate::scale::ScaleSizes>,
}

/// What scenario 5 replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TraceInfo {
    /// The trace's file name (not its path).
    pub(crate) file: String,
    /// Edits replayed (a prefix in short mode).
    pub(crate) edits: usize,
    /// Transactions replayed (one update each).
    pub(crate) txns: usize,
    /// Edits in the whole trace.
    pub(crate) total_edits: usize,
    /// Characters of the replayed prefix's final text.
    pub(crate) end_chars: usize,
    /// Why scenario 5 did not run, if it did not.
    pub(crate) skipped: Option<String>,
}

/// The sizes of one mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sizes {
    pub(crate) latency_writers: usize,
    pub(crate) latency_readers: usize,
    pub(crate) latency_rates: Vec<f64>,
    pub(crate) latency_seconds: f64,
    pub(crate) fanout_readers: usize,
    pub(crate) fanout_rates: Vec<f64>,
    pub(crate) fanout_seconds: f64,
    pub(crate) throughput_docs: usize,
    pub(crate) throughput_rates: Vec<f64>,
    pub(crate) throughput_seconds: f64,
    pub(crate) idle_sessions: Vec<usize>,
    /// Why a size of `idle_sessions` was lowered (the open files limit).
    #[serde(default)]
    pub(crate) idle_capped: Option<String>,
    /// Weft's `--kafka-fetch-wait-ms` in cluster runs (`None`: its default).
    pub(crate) kafka_fetch_wait_ms: Option<u32>,
    /// Scenario 5 replays at most this many edits of the trace (`None`:
    /// all of it).
    #[serde(default)]
    pub(crate) trace_max_edits: Option<usize>,
    /// Scenario 6: clients connected to the node that is killed, and the
    /// documents they spread over (0 in results written before it existed).
    #[serde(default)]
    pub(crate) storm_clients: usize,
    #[serde(default)]
    pub(crate) storm_docs: usize,
}

impl Sizes {
    fn for_mode(mode: Mode, kafka_fetch_wait_ms: Option<u32>) -> Sizes {
        match mode {
            Mode::Short => Sizes {
                latency_writers: 2,
                latency_readers: 2,
                latency_rates: vec![50.0, 200.0],
                latency_seconds: 3.0,
                fanout_readers: 100,
                fanout_rates: vec![50.0],
                fanout_seconds: 3.0,
                throughput_docs: 10,
                throughput_rates: vec![500.0],
                throughput_seconds: 3.0,
                idle_sessions: vec![1_000],
                idle_capped: None,
                kafka_fetch_wait_ms,
                trace_max_edits: Some(20_000),
                storm_clients: 100,
                storm_docs: 10,
            },
            Mode::Full => Sizes {
                latency_writers: 4,
                latency_readers: 4,
                latency_rates: vec![100.0, 500.0, 1_000.0, 2_000.0, 4_000.0],
                latency_seconds: 10.0,
                fanout_readers: 1_000,
                fanout_rates: vec![20.0, 100.0, 200.0, 400.0, 800.0],
                fanout_seconds: 10.0,
                throughput_docs: 50,
                throughput_rates: vec![1_000.0, 4_000.0],
                throughput_seconds: 10.0,
                // Capped by the open files limit when run (see
                // `Sizes::fit_idle_to_fd_limit`).
                idle_sessions: vec![1_000, 10_000, 50_000],
                idle_capped: None,
                kafka_fetch_wait_ms,
                trace_max_edits: None,
                storm_clients: 1_000,
                storm_docs: 100,
            },
        }
    }
}

/// Open files the idle scenario leaves for everything but its sessions
/// (the server's listeners, store and logs; the driver's runtime).
const IDLE_FD_MARGIN: u64 = 1_000;

impl Sizes {
    /// Lowers idle session counts the open files limit cannot hold: the
    /// server holds one descriptor per session, and so does the driver. A
    /// lowered size becomes the largest whole thousand that fits, and
    /// `idle_capped` says why, for the report.
    fn fit_idle_to_fd_limit(&mut self, fd_limit: u64) {
        let fits = fd_limit.saturating_sub(IDLE_FD_MARGIN) / 1_000 * 1_000;
        let fits = usize::try_from(fits).unwrap_or(usize::MAX);
        let wanted: Vec<usize> = self.idle_sessions.clone();
        let mut capped: Vec<usize> = wanted
            .iter()
            .map(|&n| n.min(fits))
            .filter(|&n| n > 0)
            .collect();
        capped.dedup();
        if capped != wanted {
            let lowered: Vec<String> = wanted
                .iter()
                .filter(|&&n| n > fits)
                .map(usize::to_string)
                .collect();
            self.idle_capped = Some(format!(
                "{} sessions need that many open files in one server process (and in the driver); \
                 the open files limit here is {fd_limit} (`ulimit -Hn`; raising it needs CAP_SYS_RESOURCE), \
                 so the largest run is {fits} sessions",
                lowered.join(", ")
            ));
        }
        self.idle_sessions = capped;
    }
}

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
        _ => &[
            ServerKind::Weft,
            ServerKind::YWebsocket,
            ServerKind::Hocuspocus,
        ],
    }
}

const SCENARIOS: [&str; 7] = [
    "latency",
    "fanout",
    "throughput",
    "idle",
    "trace",
    "storm",
    "scale",
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
            let scale_sizes = crate::scale::ScaleSizes::for_mode(args.mode);
            results.scale = Some(scale_sizes.clone());
            for repeat in 0..repeats {
                for cell in crate::scale::cells(&scale_sizes) {
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
            "trace" => match &trace {
                Some(trace) => vec![trace.edits() as f64],
                None => continue,
            },
            "storm" => vec![sizes.storm_clients as f64],
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
            "storm" => {
                crate::storm::storm(&mut server, programs, x as usize, sizes.storm_docs).await
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

/// The exact conditions of the run, for the report.
fn conditions(programs: &Programs, mode: Mode, repeats: u32) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let peer_version = |package: &str| {
        let path = programs
            .peers_dir
            .join("node_modules")
            .join(package)
            .join("package.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not installed".to_owned())
    };
    let fd_limit = command_output("sh", &["-c", "ulimit -n"]);
    vec![
        (
            "date (UTC)".into(),
            command_output("date", &["-u", "+%Y-%m-%d %H:%M"]),
        ),
        (
            "mode".into(),
            format!("{mode:?} ({repeats} run(s) of each cell)"),
        ),
        ("CPU".into(), cpu_model),
        ("cores".into(), cores.to_string()),
        ("kernel".into(), kernel.trim().to_owned()),
        ("open files limit".into(), fd_limit),
        (
            "Weft".into(),
            command_output(&programs.weft.to_string_lossy(), &["--version"]),
        ),
        (
            "Node.js".into(),
            command_output(&programs.node.to_string_lossy(), &["--version"]),
        ),
        (
            "@y/websocket-server".into(),
            peer_version("@y/websocket-server"),
        ),
        (
            "@hocuspocus/server".into(),
            peer_version("@hocuspocus/server"),
        ),
        (
            "@hocuspocus/extension-redis".into(),
            peer_version("@hocuspocus/extension-redis"),
        ),
        (
            "redis-server".into(),
            programs
                .redis_server
                .as_ref()
                .map_or("not given".into(), |path| {
                    command_output(&path.to_string_lossy(), &["--version"])
                }),
        ),
        ("Kafka broker".into(), kafka_broker(programs)),
        (
            "Weft --kafka-fetch-wait-ms".into(),
            programs
                .kafka_fetch_wait_ms
                .map_or_else(|| "Weft's default".to_owned(), |ms| ms.to_string()),
        ),
    ]
}

/// The broker Weft's cluster runs use, as the conditions name it.
fn kafka_broker(programs: &Programs) -> String {
    let Some(launcher) = &programs.kafka else {
        return "not given".into();
    };
    let version = command_output(&launcher.to_string_lossy(), &["version"]);
    let java = Command::new("java")
        .arg("-version")
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|error| format!("unavailable ({error})"));
    format!(
        "Apache Kafka {version} (KRaft, combined broker and controller; jars from Maven Central) on {java}; \
         one broker, or three with topics at RF 3 and min.insync.replicas=2; producer acks=all, idempotent; \
         data on the local disk, no fsync per append (Kafka's default); broker settings in tests/kafka/kafka.sh"
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(error) => format!("unavailable ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Mode, Sizes};

    #[test]
    fn idle_sizes_fit_the_open_files_limit() {
        let mut sizes = Sizes::for_mode(Mode::Full, None);
        sizes.fit_idle_to_fd_limit(20_000);
        assert_eq!(sizes.idle_sessions, vec![1_000, 10_000, 19_000]);
        let reason = sizes.idle_capped.as_deref().expect("a reason");
        assert!(
            reason.contains("50000") && reason.contains("20000"),
            "{reason}"
        );

        let mut roomy = Sizes::for_mode(Mode::Full, None);
        roomy.fit_idle_to_fd_limit(100_000);
        assert_eq!(roomy.idle_sessions, vec![1_000, 10_000, 50_000]);
        assert!(roomy.idle_capped.is_none());

        let mut tight = Sizes::for_mode(Mode::Full, None);
        tight.fit_idle_to_fd_limit(5_000);
        assert_eq!(tight.idle_sessions, vec![1_000, 4_000]);
    }
}
