//! `docs/BENCHMARKS.md` from the results: per scenario a table of medians
//! with the min–max spread of the repeats, ratios Weft / peer, a plot, and
//! the targets of issue 9 with what was measured against them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::ReportArgs;
use crate::plan::{Record, Results};
use crate::plot::{self, Series};
use crate::servers::ServerKind;

/// A metric shown in a table: key, heading.
type Column = (&'static str, &'static str);

/// Median, minimum and maximum of the successful repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

pub(crate) fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

/// Three significant digits, no exponent for everyday magnitudes.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

pub(crate) fn cell(spread: Option<Spread>) -> String {
    match spread {
        None => "—".to_owned(),
        Some(s) if s.min == s.max => number(s.median),
        Some(s) => format!("{} ({}–{})", number(s.median), number(s.min), number(s.max)),
    }
}

/// `(x, server)` → the successful values of `metric`.
fn values(
    records: &[Record],
    scenario: &str,
    metric: &str,
) -> BTreeMap<(u64, ServerKind), Vec<f64>> {
    let mut map: BTreeMap<(u64, ServerKind), Vec<f64>> = BTreeMap::new();
    for record in records.iter().filter(|record| record.scenario == scenario) {
        let entry = map.entry((record.x as u64, record.server)).or_default();
        if let (true, Some(value)) = (record.ok, record.metrics.get(metric)) {
            entry.push(*value);
        }
    }
    map
}

/// Where a cross-node update's time goes in Weft: the writer's node
/// reports its share (client frame to durable acknowledgement, and the
/// produce request to the broker's `acks=all` answer within it); the rest
/// of the end-to-end p50 is the other node's fetch and its frames to the
/// readers.
fn latency_breakdown(out: &mut String, records: &[Record]) {
    let p50 = values(records, "latency", "p50_ms");
    let commit = values(records, "latency", "commit_mean_ms");
    let publish = values(records, "latency", "publish_mean_ms");
    let batch = values(records, "latency", "publish_batch_mean");
    if commit.is_empty() {
        return;
    }
    out.push_str(
        "Where Weft's time goes (medians of the runs). The writer's node reports the mean time from a client's update \
         frame to its durable acknowledgement (its `weft_update_commit_seconds`), and within it the produce request \
         to the broker's `acks=all` answer (`weft_publish_seconds`: the broker's append, and with RF 3 one follower's \
         fetch of the record); the rest of the end-to-end time is the reading node's fetch (the broker answers it \
         once the record is committed) and the frames to its readers.\n\n\
         | server | updates/s | end-to-end p50 ms | frame → durable ack, mean ms | produce → acks=all, mean ms | updates per produce |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (key, commits) in &commit {
        let median_of = |map: &BTreeMap<(u64, ServerKind), Vec<f64>>| {
            cell(map.get(key).and_then(|values| spread(values)))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            key.1.label(),
            key.0,
            median_of(&p50),
            cell(spread(commits)),
            median_of(&publish),
            median_of(&batch),
        );
    }
    out.push('\n');
}

fn server_order(kind: ServerKind) -> u8 {
    match kind {
        ServerKind::Weft => 0,
        ServerKind::WeftCluster => 1,
        ServerKind::WeftClusterReplicated => 2,
        ServerKind::YWebsocket => 3,
        ServerKind::Hocuspocus => 4,
        ServerKind::HocuspocusRedis => 5,
    }
}

/// A table of `columns` per (x, server), then ratios of `ratio_metric`.
fn table(
    out: &mut String,
    records: &[Record],
    scenario: &str,
    x_heading: &str,
    columns: &[Column],
    ratio: Column,
) {
    let mut rows: Vec<(u64, ServerKind)> = values(records, scenario, columns[0].0)
        .into_keys()
        .collect();
    rows.sort_by_key(|(x, kind)| (*x, server_order(*kind)));
    let _ = write!(out, "| {x_heading} | server |");
    for (_, heading) in columns {
        let _ = write!(out, " {heading} |");
    }
    let _ = write!(out, "\n| ---: | --- |");
    for _ in columns {
        out.push_str(" ---: |");
    }
    out.push('\n');
    let per_column: Vec<_> = columns
        .iter()
        .map(|(key, _)| values(records, scenario, key))
        .collect();
    for row in &rows {
        let _ = write!(out, "| {} | {} |", row.0, row.1.label());
        for column in &per_column {
            let _ = write!(out, " {} |", cell(column.get(row).and_then(|v| spread(v))));
        }
        out.push('\n');
    }
    let ratios = values(records, scenario, ratio.0);
    let mut lines = Vec::new();
    let xs: std::collections::BTreeSet<u64> = rows.iter().map(|(x, _)| *x).collect();
    for x in xs {
        let weft = ratios
            .iter()
            .find(|((rx, kind), _)| *rx == x && kind.is_weft())
            .and_then(|(_, v)| spread(v));
        let Some(weft) = weft else { continue };
        for ((rx, kind), peer_values) in &ratios {
            if *rx != x || kind.is_weft() {
                continue;
            }
            if let Some(peer) = spread(peer_values)
                && peer.median != 0.0
            {
                lines.push(format!(
                    "{x_heading} {x}: Weft / {} = {}",
                    kind.label(),
                    number(weft.median / peer.median)
                ));
            }
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(out, "\nRatios of medians, {}:\n", ratio.1);
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
    }
    out.push('\n');
}

fn chart(
    records: &[Record],
    scenario: &str,
    metric: Column,
    x_label: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let mut by_server: BTreeMap<u8, Series> = BTreeMap::new();
    for ((x, kind), values) in values(records, scenario, metric.0) {
        let Some(s) = spread(&values) else { continue };
        by_server
            .entry(server_order(kind))
            .or_insert_with(|| Series {
                label: kind.label().to_owned(),
                points: Vec::new(),
            })
            .points
            .push((x as f64, s.median, s.min, s.max));
    }
    let series: Vec<Series> = by_server.into_values().collect();
    plot::line_chart(
        file,
        &format!("{scenario}: {}", metric.1),
        x_label,
        metric.1,
        &series,
        // Latency spans orders of magnitude once a server saturates.
        if scenario == "latency" {
            plot::YScale::Log
        } else {
            plot::YScale::Linear
        },
    )
}

/// Writes the markdown and the plots.
pub(crate) fn write(results: &Results, args: &ReportArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.plots).context("create plots dir")?;
    let plots_link = args
        .plots
        .file_name()
        .map_or("bench".into(), |name| name.to_string_lossy().into_owned());
    let records = &results.records;
    let sizes = &results.sizes;
    let mut out = String::new();
    out.push_str(crate::report_text::INTRO);
    out.push_str("\n## Conditions\n\n| | |\n| --- | --- |\n");
    for (key, value) in &results.conditions {
        let _ = writeln!(out, "| {key} | {} |", value.replace('|', "/"));
    }
    out.push_str(&crate::report_text::targets(records));

    let _ = writeln!(
        out,
        "\n## 1. Cross-node latency\n\n{} writers on node A, {} readers on node B, one document, a steady total rate for {} s; \
         latency is from the writer's send to the reader's receipt, in ms. Every server is started fresh for each run and \
         first sent to for 3 s on another document, unmeasured (at the run's rate, at most 500 updates/s), so that each \
         is warm (a Kafka broker's JVM has compiled its produce and fetch paths) when the clock starts. y-websocket-server has no clustering, so the peer is \
         Hocuspocus as two nodes with its Redis extension. Weft's two nodes share one Apache Kafka broker, or a cluster of three with \
         the topics replicated three times (RF 3, `min.insync.replicas=2`: a record is acknowledged once two brokers \
         hold it); Kafka answers a waiting fetch as soon as a record is readable (Weft's fetch wait: {}). Server CPU is both nodes' (not the broker's or Redis's), while updates flowed (connecting and the final check left out). Weft applies and forwards an \
         update only once it is durable (published at once with up to 8 batches in flight, librdkafka's 1 ms linger, `acks=all` \
         at the broker, then node B's fetch), so its latency has a floor of a few milliseconds that Hocuspocus, which forwards \
         through Redis pub/sub before storing anything, does not pay.\n",
        sizes.latency_writers,
        sizes.latency_readers,
        sizes.latency_seconds,
        sizes
            .kafka_fetch_wait_ms
            .map_or_else(|| "its default".to_owned(), |ms| format!("{ms} ms"))
    );
    let latency_columns = [
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("cpu_us_per_update", "server CPU µs / update"),
    ];
    table(
        &mut out,
        records,
        "latency",
        "updates/s",
        &latency_columns,
        ("p99_ms", "p99 (lower is better)"),
    );
    chart(
        records,
        "latency",
        ("p99_ms", "p99 ms"),
        "updates per second",
        &args.plots.join("latency-p99.svg"),
    )?;
    let _ = writeln!(out, "![cross-node p99]({plots_link}/latency-p99.svg)\n");
    latency_breakdown(&mut out, records);

    let _ = writeln!(
        out,
        "## 2. Same-node fan-out\n\nOne writer, {} readers of one document on one node, for {} s at each rate. Deliveries per second \
         are the updates readers received over the session's length (the writer's rate times the readers while the server keeps \
         up). Driver CPU is the load driver's own, to show it was not the bottleneck. Since the rate is offered, the capacity \
         comparison is deliveries per CPU second of the server (the server's user + system time from /proc, from every client \
         synced to the last reader done: connecting and the final check are left out). The driver runs on the same two cores: \
         where its CPU seconds approach twice the session's length, the machine, not the server, sets the latency. A server that \
         saturated at one rate is not run at higher ones in the same repeat.\n",
        sizes.fanout_readers, sizes.fanout_seconds
    );
    let fanout_columns = [
        ("deliveries_per_s", "deliveries/s"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("deliveries_per_cpu_s", "deliveries / server CPU s"),
        ("driver_cpu_s", "driver CPU s"),
    ];
    table(
        &mut out,
        records,
        "fanout",
        "updates/s",
        &fanout_columns,
        (
            "deliveries_per_cpu_s",
            "deliveries per server CPU second (higher is better)",
        ),
    );
    chart(
        records,
        "fanout",
        ("deliveries_per_cpu_s", "deliveries per server CPU s"),
        "writer updates per second",
        &args.plots.join("fanout-per-cpu.svg"),
    )?;
    let _ = writeln!(
        out,
        "![fan-out per CPU second]({plots_link}/fanout-per-cpu.svg)\n"
    );

    let _ = writeln!(
        out,
        "## 3. Throughput\n\n{} documents, each with one writer and one reader, the total rate spread over them, for {} s. Weft makes \
         every update durable (SQLite, group commit) before it is applied; neither peer persists anything in this setup (no \
         persistence extension), so their CPU per update excludes storage.\n",
        sizes.throughput_docs, sizes.throughput_seconds
    );
    let throughput_columns = [
        ("updates_per_s", "updates/s"),
        ("cpu_us_per_update", "server CPU µs / update"),
        ("p99_ms", "p99 ms"),
    ];
    table(
        &mut out,
        records,
        "throughput",
        "offered/s",
        &throughput_columns,
        (
            "cpu_us_per_update",
            "server CPU per update (lower is better)",
        ),
    );
    chart(
        records,
        "throughput",
        ("cpu_us_per_update", "server CPU µs per update"),
        "offered updates per second",
        &args.plots.join("throughput-cpu.svg"),
    )?;
    let _ = writeln!(out, "![CPU per update]({plots_link}/throughput-cpu.svg)\n");

    out.push_str(
        "## 4. Idle sessions\n\nSessions spread over 10 documents (each loaded first by one session that wrote one update), every \
         one synced, then nothing; the server's RSS before and after, 2 s after the last connect.\n\n",
    );
    if let Some(reason) = &results.sizes.idle_capped {
        let _ = writeln!(out, "Not measured as asked: {reason}.\n");
    }
    let idle_columns = [
        ("kib_per_session", "KiB / session"),
        ("rss_before_mib", "RSS before MiB"),
        ("rss_after_mib", "RSS after MiB"),
    ];
    table(
        &mut out,
        records,
        "idle",
        "sessions",
        &idle_columns,
        ("kib_per_session", "KiB per session (lower is better)"),
    );
    chart(
        records,
        "idle",
        ("kib_per_session", "KiB per idle session"),
        "sessions",
        &args.plots.join("idle-rss.svg"),
    )?;
    let _ = writeln!(out, "![RSS per idle session]({plots_link}/idle-rss.svg)\n");

    trace_section(&mut out, results);
    storm_section(&mut out, results);
    crate::scale::section(
        &mut out,
        records,
        results.scale.as_ref(),
        &args.plots,
        &plots_link,
    )?;

    out.push_str(crate::report_text::MISSING);
    let failures: Vec<&Record> = records.iter().filter(|record| !record.ok).collect();
    if !failures.is_empty() {
        out.push_str(
            "\n## Failed and saturated runs\n\nA saturated run is one whose updates were still arriving at its deadline (the \
             offered rate was more than the server, or the driver, could deliver): a result, not a failed check. Any other \
             entry is a failed check; one of Weft fails `make bench`, one of a peer is reported here only.\n\n",
        );
        for record in failures {
            let _ = writeln!(
                out,
                "- {}{} against {} at {} (run {}): {}",
                if record.saturated {
                    "saturated: "
                } else {
                    "**failed**: "
                },
                record.scenario,
                record.server.label(),
                record.x,
                record.repeat + 1,
                record.error.as_deref().unwrap_or("?").replace('\n', " ")
            );
        }
    }
    std::fs::write(&args.markdown, out)
        .with_context(|| format!("write {}", args.markdown.display()))
}

/// Scenario 5: a table per server, or the reason it was skipped.
fn trace_section(out: &mut String, results: &Results) {
    let Some(info) = &results.trace else { return };
    out.push_str("## 5. Large document (a real editing trace)\n\n");
    if let Some(reason) = &info.skipped {
        let _ = writeln!(out, "Skipped: {reason}.\n");
        return;
    }
    let _ = writeln!(
        out,
        "The editing trace `{}` (the LaTeX source of a paper typed character by character; CC BY 4.0), its first {} of \
         {} edits in {} transactions, ending with a text of {} characters. One writer applies each transaction to a yrs \
         `Y.Text` and sends it as one update, staying at most {} inserted characters ahead of a reader connected from \
         the start; the replay ends when the reader's text is the trace's end (checked, as is the writer's). Server CPU is \
         over the replay. Document size is the writer's document encoded as one update (v1). Warm load: a fresh client's \
         connect-to-synced time against the still-running server, its text checked, while the writer and the reader are \
         still connected (Hocuspocus unloads a document when its last connection closes, and without persistence that \
         loses it). Cold load: Weft is stopped with \
         SIGTERM and started again on the same SQLite store, so the document is loaded from its snapshot and log; restart \
         is the time from the signal to ready. The peers keep documents in memory only (no persistence extension \
         configured), so a restarted peer has lost the document: no cold load for them.\n",
        info.file,
        info.edits,
        info.total_edits,
        info.txns,
        info.end_chars,
        crate::scenarios::TRACE_WINDOW,
    );
    let columns: [Column; 6] = [
        ("edits_per_s", "edits/s"),
        ("replay_s", "replay s"),
        ("server_cpu_s", "server CPU s"),
        ("doc_kib", "document KiB"),
        ("warm_load_ms", "warm load ms"),
        ("cold_load_ms", "cold load ms"),
    ];
    out.push_str("| server |");
    for (_, heading) in &columns {
        let _ = write!(out, " {heading} |");
    }
    out.push_str(" restart s |\n| --- |");
    for _ in 0..=columns.len() {
        out.push_str(" ---: |");
    }
    out.push('\n');
    let records = &results.records;
    let per_column: Vec<_> = columns
        .iter()
        .map(|(key, _)| values(records, "trace", key))
        .collect();
    let restarts = values(records, "trace", "restart_s");
    let mut rows: Vec<(u64, ServerKind)> = per_column[0].keys().copied().collect();
    rows.sort_by_key(|(x, kind)| (*x, server_order(*kind)));
    for row in &rows {
        let _ = write!(out, "| {} |", row.1.label());
        for (index, column) in per_column.iter().enumerate() {
            let is_cold = index == columns.len() - 1;
            let text = if is_cold && !row.1.is_weft() {
                "not applicable (no persistence)".to_owned()
            } else {
                cell(column.get(row).and_then(|v| spread(v)))
            };
            let _ = write!(out, " {text} |");
        }
        let restart = if row.1.is_weft() {
            cell(restarts.get(row).and_then(|v| spread(v)))
        } else {
            "—".to_owned()
        };
        let _ = writeln!(out, " {restart} |");
    }
    out.push('\n');
}

/// Scenario 6: the storm table, the ratios Weft / peer, and the checks.
fn storm_section(out: &mut String, results: &Results) {
    let records = &results.records;
    if !records.iter().any(|record| record.scenario == "storm") {
        return;
    }
    let _ = writeln!(
        out,
        "## 6. Reconnect storm\n\n{} clients over {} documents ({} each) connect to node A; each appends one unique string \
         to its document's shared array, and the storm starts once every client holds every edit of its document (so \
         the server accepted and broadcast each one). Node A is then killed with SIGKILL. For the two-node servers \
         every client reconnects to node B, as a load balancer would send it. `@y/websocket-server` and Hocuspocus \
         alone have no clustering: they are started again on the same port right after the kill, and the clients \
         reconnect there (their time includes the process start); so is Weft alone (one node, SQLite), which loads \
         the documents from its store. A client keeps its replica (as a browser's provider \
         does), tries at once and then backs off (50 ms doubling to 1 s, at most 20 attempts within 60 s); it is \
         re-synced when it has applied the new server's SyncStep2 and its replica holds every edit of its document. \
         Storm is the time from the kill until the last client re-synced; p50/p99 are per client, from the kill. \
         Checked (a failure fails the run): every client's array holds each edit of its document exactly once (nothing \
         lost, nothing duplicated), and a fresh client of the serving node loads the same. Weft's node B loads each \
         document from the log (Apache Kafka); the peers keep documents in memory only, so their new node starts empty and \
         is filled again by the clients' replies to its SyncStep1 (the fresh client waits, up to 10 s, for those). \
         Memory is the serving node's RSS: before (node B idle before the kill; for a restarted server, the first \
         process freshly started), the peak sampled every 20 ms from the kill to the last re-sync, and after the clients closed and \
         the documents unloaded (Weft: `--doc-unload-grace 1s` and its `weft_documents_loaded` gauge at 0; the peers \
         unload a document when its last connection closes), plus 2 s; after / before near 1 is memory back to \
         normal.\n",
        results.sizes.storm_clients,
        results.sizes.storm_docs,
        results
            .sizes
            .storm_clients
            .checked_div(results.sizes.storm_docs)
            .unwrap_or(0),
    );
    let columns = [
        ("storm_s", "storm s"),
        ("resync_p50_ms", "p50 ms"),
        ("resync_p99_ms", "p99 ms"),
        ("max_attempts", "max attempts"),
        ("rss_before_mib", "RSS before MiB"),
        ("rss_peak_mib", "RSS peak MiB"),
        ("rss_after_mib", "RSS after MiB"),
        ("rss_after_ratio", "after / before"),
    ];
    // No ratio lines from `table`: the pairs below compare like with like.
    table(out, records, "storm", "clients", &columns, ("", ""));
    let pairs = [
        (ServerKind::WeftCluster, ServerKind::HocuspocusRedis),
        (ServerKind::Weft, ServerKind::YWebsocket),
        (ServerKind::Weft, ServerKind::Hocuspocus),
    ];
    let ratio_metrics = [
        ("storm_s", "storm"),
        ("resync_p99_ms", "p99"),
        ("rss_peak_mib", "RSS peak"),
        ("rss_after_ratio", "RSS after / before"),
    ];
    let mut lines = Vec::new();
    for (weft, peer) in pairs {
        let mut cells = Vec::new();
        for (metric, heading) in ratio_metrics {
            let medians = values(records, "storm", metric);
            let median_of = |kind: ServerKind| {
                medians
                    .iter()
                    .find(|((_, k), _)| *k == kind)
                    .and_then(|(_, v)| spread(v))
                    .map(|s| s.median)
            };
            if let (Some(w), Some(p)) = (median_of(weft), median_of(peer))
                && p != 0.0
            {
                cells.push(format!("{heading} {}", number(w / p)));
            }
        }
        if !cells.is_empty() {
            lines.push(format!(
                "- {} / {}: {}",
                weft.label(),
                peer.label(),
                cells.join(", ")
            ));
        }
    }
    if !lines.is_empty() {
        out.push_str(
            "Ratios of medians, Weft / peer (failover against failover, restart against restart; \
             lower is better):\n\n",
        );
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out.push_str("\nChecks (runs that passed every check / runs):\n\n");
    let mut by_server: BTreeMap<u8, (ServerKind, usize, usize)> = BTreeMap::new();
    for record in records.iter().filter(|record| record.scenario == "storm") {
        let entry = by_server
            .entry(server_order(record.server))
            .or_insert((record.server, 0, 0));
        entry.1 += usize::from(record.ok);
        entry.2 += 1;
    }
    for (kind, passed, runs) in by_server.into_values() {
        let edits = values(records, "storm", "edits_checked")
            .into_iter()
            .find(|((_, k), _)| *k == kind)
            .and_then(|(_, v)| v.first().copied())
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "- {}: {passed} / {runs} (each run: every client's replica holds its document's edits exactly once, \
             {edits:.0} entries checked; a fresh client of each document holds them exactly once too)",
            kind.label()
        );
    }
    out.push('\n');
}
