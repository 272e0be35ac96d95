//! `docs/BENCHMARKS.md` from the results: per scenario a table of medians
//! with the min–max spread of the repeats, ratios Weft / peer, a plot, and
//! the targets of issue 9 with what was measured against them.
//!
//! This module writes the file: the conditions, scenarios 1 to 4 and the
//! failed runs. `report_sections` has the sections of scenarios 5, 6 and
//! scaling out, `report_presence` that of presence at scale, `report_table` the tables' pieces, `report_text` the fixed
//! prose and the targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::ReportArgs;
use crate::plot::{self, Series};
use crate::report_sections::{joinstorm_section, scale_section, storm_section, trace_section};
use crate::report_table::{Column, cell, server_order, spread, table, values};
use crate::results::{Record, Results};
use crate::servers::ServerKind;

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
    out.push_str(&crate::report_cost::cost_targets(records));

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
    crate::report_maxrate::maxrate_section(&mut out, records, results);

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
    crate::report_stalled::stalled_section(&mut out, records, results);

    trace_section(&mut out, results);
    storm_section(&mut out, results);
    crate::report_presence::presence_section(&mut out, results);
    joinstorm_section(&mut out, results);
    scale_section(
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
