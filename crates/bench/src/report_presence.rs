//! The report's presence section: its table, ratios and targets.

use std::fmt::Write as _;

use crate::report_table::{number, spread, table, values};
use crate::results::Results;

/// Issue 17's targets for Weft at the largest size: presence p99, update
/// p99 (ms), server CPU (% of one core).
const TARGETS: [(&str, &str, f64); 3] = [
    ("presence_p99_ms", "presence p99 ms", 250.0),
    ("update_p99_ms", "update p99 ms", 100.0),
    ("server_cpu_pct", "server CPU % of one core", 30.0),
];

/// The presence scenario's section, if it ran.
pub(crate) fn presence_section(out: &mut String, results: &Results) {
    let records = &results.records;
    if !records.iter().any(|record| record.scenario == "presence") {
        return;
    }
    let _ = writeln!(
        out,
        "## 7. Presence at scale\n\nN clients on one document, one endpoint. Each moves its cursor once a second for {} s: \
         an awareness change with the next clock and a cursor state (`{{\"user\":{{\"name\",\"color\"}},\"cursor\":{{\"anchor\",\"head\"}}}}`), \
         client i's changes at i/N s past each second, so the changes are spread in phase. The first {} clients also type, \
         {} stamped updates a second each. Presence may be coalesced: a change counts as seen by another client once \
         that client holds the sender's state at least as new (its clock), so each of the N × (N − 1) × {} (client, \
         change) pairs is timed, from the change's send to the frame that brought it or a newer one. Update latency is \
         send to apply, per update and receiving client. Checked (a failure fails the run): within 15 s of the load \
         every client holds every other client's final state and every update, once and in order, and all replicas \
         have the same state vector; a run where that did not happen in time, or where the server closed clients, is \
         saturated. CPU is user + system over the load (server: its process, from `/proc`; driver: the benchmark's \
         own, which shares the two cores), as a share of one core.\n",
        results.sizes.presence_seconds,
        crate::presence::TYPISTS,
        crate::presence::TYPING_RATE,
        results.sizes.presence_seconds,
    );
    let columns = [
        ("presence_p50_ms", "presence p50 ms"),
        ("presence_p99_ms", "presence p99 ms"),
        ("presence_max_ms", "presence max ms"),
        ("update_p50_ms", "update p50 ms"),
        ("update_p99_ms", "update p99 ms"),
        ("server_cpu_pct", "server CPU %"),
        ("driver_cpu_pct", "driver CPU %"),
        ("quiet_ms", "all final states, ms after the load"),
    ];
    table(
        out,
        records,
        "presence",
        "clients",
        &columns,
        ("server_cpu_pct", "server CPU (lower is better)"),
    );
    let cpu = values(records, "presence", "server_cpu_pct");
    let Some(largest) = cpu.keys().map(|(clients, _)| *clients).max() else {
        return;
    };
    let mut lines = Vec::new();
    for (metric, label, limit) in TARGETS {
        let measured = values(records, "presence", metric)
            .into_iter()
            .find(|((clients, kind), _)| *clients == largest && kind.is_weft())
            .and_then(|(_, values)| spread(&values));
        let Some(measured) = measured else {
            lines.push(format!(
                "- {label}: at most {limit}; no successful run of Weft at {largest} clients"
            ));
            continue;
        };
        let verdict = if measured.median <= limit {
            "met"
        } else {
            "**not met**"
        };
        lines.push(format!(
            "- {label}: at most {}; measured {} ({verdict})",
            number(limit),
            number(measured.median)
        ));
    }
    let _ = writeln!(
        out,
        "Targets (issue 17), Weft at {largest} clients, medians:\n"
    );
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}
