//! The report's section on the highest sustained rate (scenario "maxrate").

use std::fmt::Write as _;

use crate::maxrate::{MAX_P99_MS, MIN_ACHIEVED, STEP_DRAIN};
use crate::report_table::{Column, number, spread, table, values};
use crate::results::{Record, Results};

/// Writes the section, if the scenario ran.
pub(crate) fn maxrate_section(out: &mut String, records: &[Record], results: &Results) {
    if !records.iter().any(|record| record.scenario == "maxrate") {
        return;
    }
    let sizes = &results.sizes;
    let _ = write!(
        out,
        "## Highest sustained rate\n\n\
         The highest total update rate one node sustains over {} documents (one writer and one reader each, as in \
         scenario 3), found by a search: a step offers a rate for {} s against a server started fresh for it, starting \
         at {} updates/s and doubling while steps pass (halving while they fail), at most {} times, then bisecting \
         between the highest passing and the lowest failing rate {} times (at most {} s per server and repeat). A step \
         passes when its check passes (every update delivered once and in order within {} s of the last send, replicas \
         equal, fresh clients agree), the readers' p99 is at most {} ms, and the writers achieved at least {}% of the \
         offered rate. Weft makes every update durable (SQLite, group commit) before it is applied; the peers store \
         nothing. **Server cores** and **driver cores** are CPU seconds over the step's wall time (connecting and the \
         check included): the driver runs on the same two cores as the server, so where the two add up to about 2 the \
         machine, not the server, is the limit. **Next failed** is the lowest rate that failed (a check failure of Weft \
         is listed under failed runs); a server that passed every step has **capped** 1 (its rate is a lower \
         bound).\n\n",
        sizes.maxrate_docs,
        sizes.maxrate_seconds,
        sizes.maxrate_start_rate,
        sizes.maxrate_doublings,
        sizes.maxrate_bisections,
        sizes.maxrate_budget_seconds,
        STEP_DRAIN.as_secs(),
        MAX_P99_MS,
        MIN_ACHIEVED * 100.0,
    );
    let columns: [Column; 10] = [
        ("max_rate", "highest sustained updates/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("cpu_us_per_update", "server CPU µs / update"),
        ("server_cores", "server cores"),
        ("driver_cores", "driver cores"),
        ("failed_rate", "next failed"),
        ("failed_check", "failed check"),
        ("capped", "capped"),
        ("steps", "steps"),
    ];
    table(
        out,
        records,
        "maxrate",
        "documents",
        &columns,
        ("max_rate", "highest sustained rate (higher is better)"),
    );
    if let Some(line) = best_peer_ratio(records) {
        let _ = writeln!(out, "{line}\n");
    }
}

/// "Weft / best peer" of the medians of `max_rate`, if both ran.
fn best_peer_ratio(records: &[Record]) -> Option<String> {
    let medians = values(records, "maxrate", "max_rate");
    let median_of = |weft: bool| {
        medians
            .iter()
            .filter(|((_, kind), _)| kind.is_weft() == weft)
            .filter_map(|((_, kind), found)| spread(found).map(|s| (s.median, kind.label())))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let (weft, _) = median_of(true)?;
    let (peer, label) = median_of(false)?;
    (peer > 0.0).then(|| {
        format!(
            "Weft against the best peer ({label}, {} updates/s): **{}×** (issue 17's target 2: at least 5×).",
            number(peer),
            number(weft / peer)
        )
    })
}
