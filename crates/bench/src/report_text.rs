//! The fixed prose of `docs/BENCHMARKS.md` and the targets summary.

use std::fmt::Write as _;

use crate::report_table::median;
use crate::results::Record;
use crate::servers::ServerKind;

/// The report's opening: what was run and how to run it again.
pub(crate) const INTRO: &str = "# Benchmarks

Written by `make bench` (`BENCH_MODE=short`, the default, takes a few
minutes; `make test` runs it as `make bench-check`, writing under `target/`;
`BENCH_MODE=full` is the published run, by hand).
Do not edit by hand: run it again.

The load driver is `weft-bench` (crates/bench), a Rust binary that speaks
y-sync itself: every client holds a yrs document and applies what it
receives. Writers stamp each update with its send time, so readers measure
latency. **Every run is checked**: every reader received every update once
and in order, all replicas' state vectors are equal, and a fresh client of
every node loads the same state; a run that fails its check is listed under
Failed runs, and a failed run of Weft fails `make bench` (a peer's only warns). Every server is started fresh for every
run, on 127.0.0.1.

Cells are the median over the repeats, with the minimum–maximum in brackets
when they differ. The machine is shared and noisy (2 cores, other work
running), so prefer the ratios and the CPU times (user + system of the
server processes, from /proc/PID/stat) over the absolute numbers.
";

/// What the report does not cover yet.
pub(crate) const MISSING: &str = "## Not measured yet

- Scenario 6 against the peers measures recovery from the clients'
  replicas: without a persistence extension a peer's new node starts
  empty, so a peer deployment that must survive a crash with no client
  online would lose the documents; Weft's node B loads them from the log.
- Scenario 5 has no cold load for the peers: they would need a persistence
  extension (Hocuspocus's database extension, y-leveldb), which this setup
  does not configure.
- 50,000 idle sessions, where the open files limit is below that (the
  measuring machine allows a process at most 20,000, a hard limit not
  raisable without CAP_SYS_RESOURCE): the bench then runs the largest whole
  thousand that fits (scenario 4 says so) instead.
- The peers run without persistence (no Hocuspocus database extension, no
  y-leveldb): Weft's numbers include durable storage, theirs do not.
- The presence scenario's saturated runs (the peers at 500 and 1,500
  clients) report no latency or CPU: a run that fails its check records
  none. A cheaper driver (it applies every update in 1,500 replicas) and
  a machine to itself would tell the server's share of Weft's tail at
  1,500 clients from the driver's.
- Deliveries per server CPU second at a light load include each server's
  fixed costs (timers, heartbeats, the commit loop), so they understate
  capacity; the largest rate is the better estimate.
- Two Hocuspocus nodes with the Redis extension lose each other when a
  document is loaded before the extension's Redis connections are ready
  (ioredis: 'Connection in subscriber mode, only subscriber commands may
  be used'; the readers on the second node then never receive an update).
  The launcher (bench/peers/hocuspocus.mjs) waits for both connections
  before it listens, as a warmed-up deployment would.
";

fn largest_x(records: &[Record], scenario: &str) -> Option<f64> {
    records
        .iter()
        .filter(|r| r.scenario == scenario && r.ok)
        .map(|r| r.x)
        .max_by(f64::total_cmp)
}

/// Every size at which both servers completed: `(x, a, b)` medians,
/// smallest first.
fn common_sizes(
    records: &[Record],
    scenario: &str,
    metric: &str,
    servers: (ServerKind, ServerKind),
) -> Vec<(f64, f64, f64)> {
    let mut xs: Vec<f64> = records
        .iter()
        .filter(|r| r.scenario == scenario)
        .map(|r| r.x)
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .filter_map(|x| {
            let a = median(records, scenario, servers.0, Some(x), metric)?;
            let b = median(records, scenario, servers.1, Some(x), metric)?;
            Some((x, a, b))
        })
        .collect()
}

/// The sizes at which `server` saturated in every run of `scenario` (it
/// could not keep up with the offered rate), smallest first.
fn saturated_sizes(records: &[Record], scenario: &str, server: ServerKind) -> Vec<f64> {
    let mut xs: Vec<f64> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.server == server)
        .map(|r| r.x)
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.retain(|&x| {
        records
            .iter()
            .filter(|r| r.scenario == scenario && r.server == server && r.x == x)
            .all(|r| r.saturated)
    });
    xs
}

/// The highest median of `metric` over the sizes `server` completed, and
/// that size.
fn best_completed(
    records: &[Record],
    scenario: &str,
    server: ServerKind,
    metric: &str,
) -> Option<(f64, f64)> {
    let mut xs: Vec<f64> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.server == server && r.ok)
        .map(|r| r.x)
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .filter_map(|x| median(records, scenario, server, Some(x), metric).map(|m| (x, m)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn list(xs: &[f64]) -> String {
    xs.iter().map(f64::to_string).collect::<Vec<_>>().join(", ")
}

/// The largest size at which both servers completed: `(x, a, b)` medians.
fn largest_common(
    records: &[Record],
    scenario: &str,
    metric: &str,
    servers: (ServerKind, ServerKind),
) -> Option<(f64, f64, f64)> {
    common_sizes(records, scenario, metric, servers).pop()
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The targets, each with the measurement it is judged on.
pub(crate) fn targets(records: &[Record]) -> String {
    let mut out =
        String::from("\n## Targets\n\n| target | measured | verdict |\n| --- | --- | --- |\n");
    // Cross-node p99, over one broker and over three (RF 3): at the highest
    // rate both completed, and which rates meet it.
    for weft in [ServerKind::WeftCluster, ServerKind::WeftClusterReplicated] {
        let servers = (weft, ServerKind::HocuspocusRedis);
        // Cross-node p99: at the highest rate both completed, and which rates
        // meet it.
        let mut met_at = Vec::new();
        let mut missed_at = Vec::new();
        for (x, w, p) in common_sizes(records, "latency", "p99_ms", servers) {
            if w <= p / 2.0 {
                met_at.push(x.to_string())
            } else {
                missed_at.push(x.to_string())
            }
        }
        let (text, met) = match largest_common(records, "latency", "p99_ms", servers) {
            Some((x, w, p)) => (
                format!(
                    "at {x} updates/s: {} {w:.2} ms, Hocuspocus + Redis {p:.2} ms (ratio {:.3}); met at {} updates/s, not at {}",
                    weft.label(),
                    w / p,
                    if met_at.is_empty() {
                        "none".to_owned()
                    } else {
                        met_at.join(", ")
                    },
                    if missed_at.is_empty() {
                        "none".to_owned()
                    } else {
                        missed_at.join(", ")
                    },
                ),
                Some(w <= p / 2.0),
            ),
            None => ("incomplete".to_owned(), None),
        };
        // Rates where the peer saturated and Weft kept up meet the target too
        // (the peer's p99 there is unbounded).
        let peer_saturated: Vec<f64> =
            saturated_sizes(records, "latency", ServerKind::HocuspocusRedis)
                .into_iter()
                .filter(|&x| median(records, "latency", weft, Some(x), "p99_ms").is_some())
                .collect();
        let text = if peer_saturated.is_empty() {
            text
        } else {
            format!(
                "{text}; at {} updates/s Hocuspocus + Redis saturated while Weft kept up",
                list(&peer_saturated)
            )
        };
        let _ = writeln!(
            out,
            "| cross-node p99 ≤ ½ of Hocuspocus + Redis at the same load, {} | {text} | {} |",
            weft.label(),
            if missed_at.is_empty() {
                verdict(met.or((!peer_saturated.is_empty()).then_some(true)))
            } else if met_at.is_empty() && peer_saturated.is_empty() {
                verdict(met)
            } else {
                "**met only from the load where Hocuspocus + Redis falls behind**"
            }
        );
    }
    // Fan-out capacity: at the highest rate both completed.
    let servers = (ServerKind::Weft, ServerKind::Hocuspocus);
    let (text, met) = match largest_common(records, "fanout", "deliveries_per_cpu_s", servers) {
        Some((x, w, p)) => (
            format!(
                "deliveries per server CPU second at {x} updates/s: Weft {w:.0}, Hocuspocus {p:.0} ({:.1}×)",
                w / p
            ),
            Some(w >= 5.0 * p),
        ),
        None => ("incomplete".to_owned(), None),
    };
    let _ = writeln!(
        out,
        "| same-node fan-out ≥ 5× Hocuspocus (per CPU) | {text} | {} |",
        verdict(met)
    );
    // Fan-out capacity: the most deliveries per second each sustained.
    let weft = best_completed(records, "fanout", ServerKind::Weft, "deliveries_per_s");
    let peer = best_completed(
        records,
        "fanout",
        ServerKind::Hocuspocus,
        "deliveries_per_s",
    );
    let weft_saturated = saturated_sizes(records, "fanout", ServerKind::Weft);
    let peer_saturated = saturated_sizes(records, "fanout", ServerKind::Hocuspocus);
    let (text, met) = match (weft, peer) {
        (Some((wx, w)), Some((px, p))) => {
            let mut text = format!(
                "most deliveries/s sustained: Weft {w:.0} (at {wx} updates/s), Hocuspocus {p:.0} (at {px} updates/s): {:.1}×",
                w / p
            );
            if !peer_saturated.is_empty() {
                let _ = write!(
                    text,
                    "; Hocuspocus saturated at {} updates/s",
                    list(&peer_saturated)
                );
            }
            if weft_saturated.is_empty() {
                text.push_str(
                    "; Weft kept up at every offered rate, so its capacity is higher than shown",
                );
            } else {
                let _ = write!(
                    text,
                    "; Weft saturated at {} updates/s",
                    list(&weft_saturated)
                );
            }
            (text, Some(w >= 5.0 * p))
        }
        _ => ("incomplete".to_owned(), None),
    };
    let capacity_verdict = match met {
        Some(false) if weft_saturated.is_empty() => "**not shown** (Weft not saturated)",
        other => verdict(other),
    };
    let _ = writeln!(
        out,
        "| same-node fan-out ≥ 5× Hocuspocus (capacity) | {text} | {capacity_verdict} |"
    );
    let mut rates: Vec<f64> = records
        .iter()
        .filter(|r| r.scenario == "fanout")
        .map(|r| r.x)
        .collect();
    rates.dedup();
    let weft_best = rates
        .into_iter()
        .filter_map(|x| {
            median(
                records,
                "fanout",
                ServerKind::Weft,
                Some(x),
                "deliveries_per_cpu_s",
            )
        })
        .max_by(f64::total_cmp);
    let (text, met) = match weft_best {
        Some(w) => (
            format!("{w:.0} deliveries per server CPU second (best median over the rates)"),
            Some(w >= 100_000.0),
        ),
        None => ("incomplete".to_owned(), None),
    };
    let _ = writeln!(
        out,
        "| ≥ 100k deliveries per second per core | {text} | {} |",
        verdict(met)
    );
    let sessions = largest_x(records, "idle");
    let weft = sessions.and_then(|x| {
        median(
            records,
            "idle",
            ServerKind::Weft,
            Some(x),
            "kib_per_session",
        )
    });
    let (text, met) = match (weft, sessions) {
        (Some(w), Some(x)) => (format!("{w:.1} KiB at {x} sessions"), Some(w <= 16.0)),
        _ => ("incomplete".to_owned(), None),
    };
    let _ = writeln!(
        out,
        "| ≤ 16 KiB RSS per idle session | {text} | {} |",
        verdict(met)
    );
    out
}
