//! The report's sections of the scenarios whose tables have a shape of
//! their own: scenario 5 (a row per server, cold load for Weft only),
//! scenario 6 (failover against failover, and its checks), scenario 7 (the
//! join storm: warm and cold, against its targets) and scaling out
//! (per node count and variant, against one node).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::plot;
use crate::report_table::{Column, cell, number, server_order, spread, table, values};
use crate::results::{Record, Results};
use crate::scale_plan::{STATS_SETTLE, ScaleSizes, Variant};
use crate::servers::ServerKind;

/// Scenario 5: a row per server, or the reason it was skipped.
pub(crate) fn trace_section(out: &mut String, results: &Results) {
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
pub(crate) fn storm_section(out: &mut String, results: &Results) {
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

/// Scenario 7: the join storm table, its targets, and the ratios Weft /
/// peer.
pub(crate) fn joinstorm_section(out: &mut String, results: &Results) {
    let records = &results.records;
    if !records.iter().any(|record| record.scenario == "joinstorm") {
        return;
    }
    let _ = writeln!(
        out,
        "## 8. Join storm\n\n{} clients join one document of about {:.0} MiB (its encoded state) at once. The driver builds \
         the document (a map of sections, each a text written paragraph by paragraph: appends, inserts among the recent \
         paragraphs, some ranges deleted again) and uploads it as Update messages of about 512 KiB over an ordinary \
         client; a watcher client waits until it received all of it and stays connected. **Warm**: every client is \
         started, waits on one signal, then connects, sends a SyncStep1 with an empty state vector and waits for the \
         server's SyncStep2; its join time runs from the signal to the SyncStep2 received in full. **Cold** (Weft only): \
         the clients close, the node is stopped (SIGTERM) and started again on its store, and the storm repeats, so the \
         first joiners load the document. `@y/websocket-server` keeps documents in memory only (its optional LevelDB \
         persistence, `YPERSISTENCE`, binds a document's stored state without waiting for it, so a cold join could be \
         answered with part of the document) and the Hocuspocus node here has no persistence extension: the peers run \
         warm only. Checked (a failure fails the run): every client received a SyncStep2 whose payload hashes the same \
         as the reference, and 5 clients' payloads are applied and compared with the driver's document, section by \
         section. Memory is the server's RSS sampled every 20 ms during each storm (for the cold storm also the \
         restarted process's high-water mark, `VmHWM`), its RSS once every client synced (still connected), and its \
         RSS once the document was uploaded. Targets for Weft: \
         p99 at most 5 s and peak RSS at most 1 GiB.\n",
        results.sizes.joinstorm_clients,
        results.sizes.joinstorm_doc_bytes as f64 / (1024.0 * 1024.0),
    );
    let columns = [
        ("warm_p50_ms", "warm p50 ms"),
        ("warm_p99_ms", "warm p99 ms"),
        ("warm_max_ms", "warm max ms"),
        ("warm_rss_peak_mib", "warm RSS peak MiB"),
        ("warm_rss_synced_mib", "warm RSS synced MiB"),
        ("cold_p50_ms", "cold p50 ms"),
        ("cold_p99_ms", "cold p99 ms"),
        ("cold_rss_peak_mib", "cold RSS peak MiB"),
        ("cold_rss_hwm_mib", "cold VmHWM MiB"),
        ("rss_loaded_mib", "RSS loaded MiB"),
        ("doc_mib", "state MiB"),
    ];
    table(out, records, "joinstorm", "clients", &columns, ("", ""));
    let median = |kind: ServerKind, metric: &str| {
        values(records, "joinstorm", metric)
            .into_iter()
            .find(|((_, k), _)| *k == kind)
            .and_then(|(_, v)| spread(&v))
            .map(|s| s.median)
    };
    let mut lines = Vec::new();
    for (metric, heading, limit) in [
        ("warm_p99_ms", "warm p99", 5_000.0),
        ("cold_p99_ms", "cold p99", 5_000.0),
        ("warm_rss_peak_mib", "warm RSS peak", 1_024.0),
        ("cold_rss_hwm_mib", "cold RSS peak (VmHWM)", 1_024.0),
    ] {
        if let Some(value) = median(ServerKind::Weft, metric) {
            let verdict = if value <= limit { "met" } else { "**not met**" };
            lines.push(format!(
                "- Weft {heading}: {} (target at most {limit}): {verdict}",
                number(value)
            ));
        }
    }
    for peer in [ServerKind::YWebsocket, ServerKind::Hocuspocus] {
        let mut cells = Vec::new();
        for (metric, heading) in [
            ("warm_p99_ms", "warm p99"),
            ("warm_rss_peak_mib", "warm RSS peak"),
        ] {
            if let (Some(weft), Some(theirs)) =
                (median(ServerKind::Weft, metric), median(peer, metric))
                && theirs != 0.0
            {
                cells.push(format!("{heading} {}", number(weft / theirs)));
            }
        }
        if !cells.is_empty() {
            lines.push(format!(
                "- Weft / {}: {} (lower is better)",
                peer.label(),
                cells.join(", ")
            ));
        }
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

/// Scaling out: per node count and variant, per-node medians
/// (with the repeats' spread) and the ratio to one node.
pub(crate) fn scale_section(
    out: &mut String,
    records: &[Record],
    sizes: Option<&ScaleSizes>,
    plots: &Path,
    plots_link: &str,
) -> anyhow::Result<()> {
    let scale: Vec<&Record> = records
        .iter()
        .filter(|record| record.scenario == "scale")
        .collect();
    if scale.is_empty() {
        return Ok(());
    }
    out.push_str("## Scaling out\n\n");
    if let Some(sizes) = sizes {
        let _ = writeln!(
            out,
            "The same total load on 1 to {} Weft nodes over one Apache Kafka broker: {} documents, each with one writer and one reader \
             on the node its router picks, {} updates/s in total for {} s, topics of {} partitions. The node's live consumer \
             reads every partition (`all`) or only its held documents' (`held`); clients pick their node by a hash of the \
             document name (an ingress hashing the path) or by the document's Kafka partition. Per node: CPU seconds over the \
             load, its idle CPU (seconds per second over the {:.1} s after the load, documents still held), MiB and share of the \
             topic's records its live consumer fetched (`weft_bus_fetched_*`), updates-topic partitions assigned, RSS at the end. Median (min–max) of the repeats; \"× 1 node\" is the per-node mean over the \
             one-node `all` median.\n",
            sizes.nodes.iter().max().unwrap_or(&1),
            sizes.docs,
            sizes.rate,
            sizes.seconds,
            sizes.partitions,
            STATS_SETTLE.as_secs_f64()
        );
    }
    out.push_str(
        "| nodes | consume, routing | CPU s / node | max CPU s | × 1 node | idle CPU s/s / node | fetched MiB / node | share of records | partitions / node | RSS MiB / node |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let metric = |nodes: usize, variant: Variant, key: &str| {
        let values: Vec<f64> = scale
            .iter()
            .filter(|record| {
                record.ok && record.x as usize == nodes && record.variant == Some(variant)
            })
            .filter_map(|record| record.metrics.get(key).copied())
            .collect();
        spread(&values)
    };
    let base_cpu = metric(1, Variant::All, "cpu_s_mean").map(|s| s.median);
    let mut node_counts: Vec<usize> = scale.iter().map(|record| record.x as usize).collect();
    node_counts.sort_unstable();
    node_counts.dedup();
    let mut series = Vec::new();
    for variant in Variant::EVERY {
        let mut points = Vec::new();
        for &nodes in &node_counts {
            let Some(cpu) = metric(nodes, variant, "cpu_s_mean") else {
                continue;
            };
            let ratio = base_cpu.map_or("—".to_owned(), |base| {
                format!("{:.2}", cpu.median / base.max(1e-9))
            });
            let _ = writeln!(
                out,
                "| {nodes} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {} |",
                variant.label(),
                cell(Some(cpu)),
                cell(metric(nodes, variant, "cpu_s_max")),
                cell(metric(nodes, variant, "idle_cpu_per_s_mean")),
                cell(metric(nodes, variant, "fetched_mib_mean")),
                cell(metric(nodes, variant, "fetched_share_mean")),
                cell(metric(nodes, variant, "partitions_mean")),
                cell(metric(nodes, variant, "rss_mib_mean")),
            );
            if let Some(fetched) = metric(nodes, variant, "fetched_mib_mean") {
                points.push((nodes as f64, fetched.median, fetched.min, fetched.max));
            }
        }
        if !points.is_empty() {
            series.push(plot::Series {
                label: variant.label().to_owned(),
                points,
            });
        }
    }
    plot::line_chart(
        &plots.join("scale-fetched.svg"),
        "Fetched from the bus per node, same total load",
        "nodes",
        "MiB fetched per node",
        &series,
        plot::YScale::Linear,
    )?;
    let _ = writeln!(
        out,
        "\n![fetched MiB per node]({plots_link}/scale-fetched.svg)\n"
    );
    owners_table(out, &node_counts, &metric);
    Ok(())
}

/// Clusters of owners (`--cluster-mode ownership`): the largest share of
/// the topic one node fetched against `1/N` + 10%, what forwarding cost,
/// and how long a SIGKILLed owner's documents took to come back.
fn owners_table(
    out: &mut String,
    node_counts: &[usize],
    metric: &dyn Fn(usize, Variant, &str) -> Option<crate::report_table::Spread>,
) {
    let rows: Vec<usize> = node_counts
        .iter()
        .copied()
        .filter(|&nodes| metric(nodes, Variant::OwnersRouted, "cpu_s_mean").is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "Clusters of owners (`--cluster-mode ownership`): the largest share of the topic's records one node fetched, \
         against the bound `1/N` + 10%; cluster-wide CPU per update with clients on their document's owner (routed) and \
         with clients by name hash, forwarded by the node they reach (the difference is what forwarding costs), the MiB \
         relayed; the seconds from the group's start to a balanced assignment; and, after the routed run, the last node \
         SIGKILLed: seconds until a fresh client on another node had one of its documents whole, and until its \
         partitions were owned again.\n\n\
         | nodes | max share, routed | bound 1/N + 10% | max share, forwarded | CPU µs / update, routed | CPU µs / update, forwarded | MiB relayed | balanced after s | dead owner's document served after s | partitions owned again after s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for nodes in rows {
        let _ = writeln!(
            out,
            "| {nodes} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(metric(nodes, Variant::OwnersRouted, "fetched_share_max")),
            crate::report_table::number(1.0 / nodes as f64 + 0.1),
            cell(metric(nodes, Variant::OwnersHash, "fetched_share_max")),
            cell(metric(nodes, Variant::OwnersRouted, "cpu_us_per_update")),
            cell(metric(nodes, Variant::OwnersHash, "cpu_us_per_update")),
            cell(metric(nodes, Variant::OwnersHash, "forwarded_mib")),
            cell(metric(nodes, Variant::OwnersRouted, "balance_s")),
            cell(metric(nodes, Variant::OwnersRouted, "failover_served_s")),
            cell(metric(nodes, Variant::OwnersRouted, "failover_reowned_s")),
        );
    }
    out.push('\n');
}
