//! The report's summary of issue 17's cost targets: each target, what this
//! run measured for Weft and for the peers, and whether it is met.
//!
//! Every row reads the records of the scenario that measures it; a target
//! whose scenario did not run (or where Weft failed) says "not measured".
//! Where the comparison needs a peer that did not keep up, the row says so
//! instead of a ratio.

use std::fmt::Write as _;

use crate::report_table::{median, number};
use crate::results::Record;
use crate::servers::ServerKind;

/// Weft's default `--send-queue-bytes` (4 MiB, `DEFAULT_SEND_QUEUE_BYTES` in
/// weft-gateway's config) in KiB, which the bench runs with: target 9's
/// bound per stalled reader.
const SEND_QUEUE_KIB: f64 = 4.0 * 1024.0;

/// The largest size of `scenario` that Weft completed.
fn largest_weft(records: &[Record], scenario: &str) -> Option<f64> {
    records
        .iter()
        .filter(|r| r.ok && r.scenario == scenario && r.server == ServerKind::Weft)
        .map(|r| r.x)
        .max_by(f64::total_cmp)
}

/// Whether `server` ran `scenario` at `x` and every run failed.
fn failed_every_run(records: &[Record], scenario: &str, server: ServerKind, x: f64) -> bool {
    let mut runs = records
        .iter()
        .filter(|r| r.scenario == scenario && r.server == server && r.x == x)
        .peekable();
    runs.peek().is_some() && runs.all(|r| !r.ok)
}

/// One row: the target, Weft's figure, the peers', the verdict.
struct Row {
    target: &'static str,
    weft: String,
    peers: String,
    met: Option<bool>,
}

const PEERS: [ServerKind; 2] = [ServerKind::YWebsocket, ServerKind::Hocuspocus];

/// "y-websocket 52, Hocuspocus 60" for the peers that completed, "did not
/// keep up" for those that ran and failed every run.
fn peer_cells(
    records: &[Record],
    scenario: &str,
    x: Option<f64>,
    metric: &str,
    unit: &str,
) -> String {
    let mut cells = Vec::new();
    for peer in PEERS {
        match median(records, scenario, peer, x, metric) {
            Some(value) => cells.push(format!("{} {}{unit}", peer.label(), number(value))),
            None if x.is_some_and(|x| failed_every_run(records, scenario, peer, x)) => {
                cells.push(format!("{} did not keep up", peer.label()));
            }
            None => {}
        }
    }
    if cells.is_empty() {
        "—".to_owned()
    } else {
        cells.join(", ")
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The section, or nothing if none of its scenarios ran.
pub(crate) fn cost_targets(records: &[Record]) -> String {
    let rows = [
        update_cpu(records),
        max_rate(records),
        trace(records),
        fanout(records, 20.0),
        fanout(records, 100.0),
        idle(records),
        two_nodes(records),
        presence(records),
        join_storm(records),
        stalled(records),
        reader_p99(records),
    ];
    if rows.iter().all(|row| row.met.is_none()) {
        return String::new();
    }
    let mut out = String::from(
        "\n## Cost targets (issue 17)\n\nMedians of this run; peers from the same run. \
         docs/PROFILE.md says, for each target not met, where the time or memory goes and what bounds it.\n\n\
         | target | Weft | peers | verdict |\n| --- | --- | --- | --- |\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.target,
            row.weft,
            row.peers,
            verdict(row.met)
        );
    }
    out
}

fn not_measured(target: &'static str) -> Row {
    Row {
        target,
        weft: "—".to_owned(),
        peers: "—".to_owned(),
        met: None,
    }
}

/// Target 1: CPU per durable update at 4,000 updates/s (scenario 3).
fn update_cpu(records: &[Record]) -> Row {
    const TARGET: &str =
        "1. server CPU per durable update, one node, 4,000 updates/s (scenario 3): at most 20 µs";
    let x = Some(4_000.0);
    let Some(weft) = median(
        records,
        "throughput",
        ServerKind::Weft,
        x,
        "cpu_us_per_update",
    ) else {
        return not_measured(TARGET);
    };
    Row {
        target: TARGET,
        weft: format!("{} µs", number(weft)),
        peers: peer_cells(records, "throughput", x, "cpu_us_per_update", " µs"),
        met: Some(weft <= 20.0),
    }
}

/// Target 2: the highest durable rate, at least 5× the best peer's.
fn max_rate(records: &[Record]) -> Row {
    const TARGET: &str = "2. highest rate one node sustains (maxrate): at least 5× the best peer";
    let Some(weft) = median(records, "maxrate", ServerKind::Weft, None, "max_rate") else {
        return not_measured(TARGET);
    };
    let best = PEERS
        .into_iter()
        .filter_map(|peer| median(records, "maxrate", peer, None, "max_rate"))
        .max_by(f64::total_cmp);
    Row {
        target: TARGET,
        weft: match best {
            Some(best) if best > 0.0 => {
                format!("{}/s ({:.1}× the best peer)", number(weft), weft / best)
            }
            _ => format!("{}/s", number(weft)),
        },
        peers: peer_cells(records, "maxrate", None, "max_rate", "/s"),
        met: best.map(|best| weft >= 5.0 * best),
    }
}

/// Target 3: trace replay CPU at most a quarter of y-websocket's.
fn trace(records: &[Record]) -> Row {
    const TARGET: &str = "3. trace replay, server CPU (scenario 5): at most ¼ of y-websocket's";
    let weft = median(records, "trace", ServerKind::Weft, None, "server_cpu_s");
    let reference = median(
        records,
        "trace",
        ServerKind::YWebsocket,
        None,
        "server_cpu_s",
    );
    let Some(weft) = weft else {
        return not_measured(TARGET);
    };
    Row {
        target: TARGET,
        weft: match reference {
            Some(reference) if reference > 0.0 => format!(
                "{} s ({} of y-websocket's)",
                number(weft),
                number(weft / reference)
            ),
            _ => format!("{} s", number(weft)),
        },
        peers: peer_cells(records, "trace", None, "server_cpu_s", " s"),
        met: reference.map(|reference| weft <= reference / 4.0),
    }
}

/// Target 4: fan-out deliveries per server CPU second at `rate`, at least
/// 5× Hocuspocus's.
fn fanout(records: &[Record], rate: f64) -> Row {
    let target = if rate == 20.0 {
        "4. fan-out, 1,000 readers at 20 updates/s, deliveries per server CPU second: at least 5× Hocuspocus"
    } else {
        "4. same at 100 updates/s"
    };
    let x = Some(rate);
    let metric = "deliveries_per_cpu_s";
    let Some(weft) = median(records, "fanout", ServerKind::Weft, x, metric) else {
        return not_measured(target);
    };
    let peer = median(records, "fanout", ServerKind::Hocuspocus, x, metric);
    let weft_text = match peer {
        Some(peer) if peer > 0.0 => format!("{} ({:.1}× Hocuspocus)", number(weft), weft / peer),
        _ => number(weft),
    };
    Row {
        target,
        weft: weft_text,
        peers: peer_cells(records, "fanout", x, metric, ""),
        // A Hocuspocus that did not keep up has no figure to divide by:
        // no verdict then, the row says why.
        met: peer.map(|peer| weft >= 5.0 * peer),
    }
}

/// Target 5: RSS per idle session at the largest size run.
fn idle(records: &[Record]) -> Row {
    const TARGET: &str = "5. RSS per idle synced session, largest size run: at most 4 KiB";
    let Some(x) = largest_weft(records, "idle") else {
        return not_measured(TARGET);
    };
    let Some(weft) = median(
        records,
        "idle",
        ServerKind::Weft,
        Some(x),
        "kib_per_session",
    ) else {
        return not_measured(TARGET);
    };
    Row {
        target: TARGET,
        weft: format!("{} KiB at {} sessions", number(weft), number(x)),
        peers: peer_cells(records, "idle", Some(x), "kib_per_session", " KiB"),
        met: Some(weft <= 4.0),
    }
}

/// Target 6: two nodes over Kafka at 1,000 updates/s (scenario 1).
fn two_nodes(records: &[Record]) -> Row {
    const TARGET: &str = "6. two nodes over Kafka, 1,000 updates/s (scenario 1), server CPU per update: at most 60 µs";
    let x = Some(1_000.0);
    let Some(weft) = median(
        records,
        "latency",
        ServerKind::WeftCluster,
        x,
        "cpu_us_per_update",
    ) else {
        return not_measured(TARGET);
    };
    let peer = median(
        records,
        "latency",
        ServerKind::HocuspocusRedis,
        x,
        "cpu_us_per_update",
    );
    Row {
        target: TARGET,
        weft: format!("{} µs", number(weft)),
        peers: peer.map_or_else(
            || "—".to_owned(),
            |peer| format!("Hocuspocus + Redis {} µs", number(peer)),
        ),
        met: Some(weft <= 60.0),
    }
}

/// Target 7: presence at the largest size run.
fn presence(records: &[Record]) -> Row {
    const TARGET: &str = "7. presence, largest size run: presence p99 ≤ 250 ms, update p99 ≤ 100 ms, server CPU ≤ 30% of a core";
    let Some(x) = largest_weft(records, "presence") else {
        return not_measured(TARGET);
    };
    let at = |metric| median(records, "presence", ServerKind::Weft, Some(x), metric);
    let (Some(presence), Some(update), Some(cpu)) = (
        at("presence_p99_ms"),
        at("update_p99_ms"),
        at("server_cpu_pct"),
    ) else {
        return not_measured(TARGET);
    };
    let peers: Vec<String> = PEERS
        .into_iter()
        .map(
            |peer| match median(records, "presence", peer, Some(x), "presence_p99_ms") {
                Some(p99) => format!("{} presence p99 {} ms", peer.label(), number(p99)),
                None if failed_every_run(records, "presence", peer, x) => {
                    format!("{} did not keep up", peer.label())
                }
                None => format!("{} not run", peer.label()),
            },
        )
        .collect();
    Row {
        target: TARGET,
        weft: format!(
            "{} clients: presence p99 {} ms, update p99 {} ms, CPU {}%",
            number(x),
            number(presence),
            number(update),
            number(cpu)
        ),
        peers: peers.join(", "),
        met: Some(presence <= 250.0 && update <= 100.0 && cpu <= 30.0),
    }
}

/// Target 8: the join storm, warm and cold.
fn join_storm(records: &[Record]) -> Row {
    const TARGET: &str = "8. join storm (scenario 8), warm and cold: p99 ≤ 5 s, peak RSS ≤ 1 GiB";
    let at = |server, metric| median(records, "joinstorm", server, None, metric);
    let (Some(warm), Some(cold), Some(warm_rss), Some(cold_rss)) = (
        at(ServerKind::Weft, "warm_p99_ms"),
        at(ServerKind::Weft, "cold_p99_ms"),
        at(ServerKind::Weft, "warm_rss_peak_mib"),
        at(ServerKind::Weft, "cold_rss_hwm_mib"),
    ) else {
        return not_measured(TARGET);
    };
    let peers: Vec<String> = PEERS
        .into_iter()
        .filter_map(|peer| {
            let p99 = at(peer, "warm_p99_ms")?;
            let rss = at(peer, "warm_rss_peak_mib")?;
            Some(format!(
                "{} warm p99 {} s, {} MiB",
                peer.label(),
                number(p99 / 1_000.0),
                number(rss)
            ))
        })
        .collect();
    Row {
        target: TARGET,
        weft: format!(
            "p99 warm {} s, cold {} s; RSS peak warm {} MiB, cold {} MiB",
            number(warm / 1_000.0),
            number(cold / 1_000.0),
            number(warm_rss),
            number(cold_rss)
        ),
        peers: if peers.is_empty() {
            "—".to_owned()
        } else {
            peers.join(", ")
        },
        met: Some(warm.max(cold) <= 5_000.0 && warm_rss.max(cold_rss) <= 1_024.0),
    }
}

/// Target 9: a stalled reader costs at most the send-queue bound.
fn stalled(records: &[Record]) -> Row {
    const TARGET: &str = "9. stalled readers, largest size run: RSS per stalled reader at most `--send-queue-bytes` (4 MiB)";
    let Some(x) = largest_weft(records, "stalled") else {
        return not_measured(TARGET);
    };
    let Some(weft) = median(
        records,
        "stalled",
        ServerKind::Weft,
        Some(x),
        "kib_per_stalled_reader",
    ) else {
        return not_measured(TARGET);
    };
    Row {
        target: TARGET,
        weft: format!("{} KiB each, {} readers", number(weft), number(x)),
        peers: peer_cells(
            records,
            "stalled",
            Some(x),
            "kib_per_stalled_reader",
            " KiB",
        ),
        met: Some(weft <= SEND_QUEUE_KIB),
    }
}

/// Target 10: readers' p99 at 1,000 durable updates/s no worse than
/// y-websocket's (scenario 3: 50 documents, one writer and one reader
/// each, the nearest the bench has to the 20 documents with 4
/// readers).
fn reader_p99(records: &[Record]) -> Row {
    const TARGET: &str =
        "10. readers' p99, one node, 1,000 durable updates/s (scenario 3): at most y-websocket's";
    let x = Some(1_000.0);
    let Some(weft) = median(records, "throughput", ServerKind::Weft, x, "p99_ms") else {
        return not_measured(TARGET);
    };
    let reference = median(records, "throughput", ServerKind::YWebsocket, x, "p99_ms");
    Row {
        target: TARGET,
        weft: format!("{} ms", number(weft)),
        peers: peer_cells(records, "throughput", x, "p99_ms", " ms"),
        met: reference.map(|reference| weft <= reference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::Metrics;

    fn record(scenario: &str, server: ServerKind, x: f64, metrics: &[(&str, f64)]) -> Record {
        let mut map = Metrics::new();
        for (key, value) in metrics {
            map.insert((*key).into(), *value);
        }
        Record {
            scenario: scenario.into(),
            server,
            x,
            repeat: 0,
            ok: true,
            saturated: false,
            error: None,
            metrics: map,
            variant: None,
        }
    }

    #[test]
    fn rows_judge_what_the_records_say() {
        let mut failed = record("fanout", ServerKind::Hocuspocus, 100.0, &[]);
        failed.ok = false;
        failed.saturated = true;
        let records = vec![
            record(
                "throughput",
                ServerKind::Weft,
                4_000.0,
                &[("cpu_us_per_update", 18.0)],
            ),
            record(
                "throughput",
                ServerKind::YWebsocket,
                4_000.0,
                &[("cpu_us_per_update", 50.0)],
            ),
            record("maxrate", ServerKind::Weft, 0.0, &[("max_rate", 40_000.0)]),
            record(
                "maxrate",
                ServerKind::YWebsocket,
                0.0,
                &[("max_rate", 20_000.0)],
            ),
            record(
                "fanout",
                ServerKind::Weft,
                100.0,
                &[("deliveries_per_cpu_s", 400_000.0)],
            ),
            failed,
            record(
                "idle",
                ServerKind::Weft,
                19_000.0,
                &[("kib_per_session", 7.0)],
            ),
            record(
                "idle",
                ServerKind::Weft,
                1_000.0,
                &[("kib_per_session", 3.0)],
            ),
        ];
        let out = cost_targets(&records);
        let line = |prefix: &str| {
            out.lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("no row {prefix}: {out}"))
                .to_owned()
        };
        assert!(line("| 1.").ends_with("| met |"), "18 µs ≤ 20");
        assert!(line("| 2.").contains("2.0× the best peer"));
        assert!(line("| 2.").ends_with("| **not met** |"));
        let fanout = line("| 4. same");
        assert!(fanout.contains("Hocuspocus did not keep up"), "{fanout}");
        assert!(
            fanout.ends_with("| not measured |"),
            "no peer figure, no verdict"
        );
        let idle = line("| 5.");
        assert!(
            idle.contains("7.00 KiB at 19000 sessions"),
            "the largest size: {idle}"
        );
        assert!(idle.ends_with("| **not met** |"));
        assert!(line("| 3.").ends_with("| not measured |"));
    }

    #[test]
    fn two_repeats_give_the_median_the_tables_show() {
        let run = |repeat, cpu_us| Record {
            repeat,
            ..record(
                "throughput",
                ServerKind::Weft,
                4_000.0,
                &[("cpu_us_per_update", cpu_us)],
            )
        };
        let out = cost_targets(&[run(0, 18.0), run(1, 24.0)]);
        let row = out
            .lines()
            .find(|line| line.starts_with("| 1."))
            .unwrap_or_else(|| panic!("no row 1: {out}"));
        assert!(row.contains("| 21.0 µs |"), "the mean of 18 and 24: {row}");
        assert!(row.ends_with("| **not met** |"), "21 > 20: {row}");
    }

    #[test]
    fn no_scenario_no_section() {
        assert!(cost_targets(&[]).is_empty());
    }
}
