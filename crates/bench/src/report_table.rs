//! The building blocks of the report's tables: the median and min–max
//! spread of the repeats, numbers to three significant digits, and the
//! table of medians per (x, server) with its ratios Weft / peer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::Record;
use crate::servers::ServerKind;

/// A metric shown in a table: key, heading.
pub(crate) type Column = (&'static str, &'static str);

/// Median, minimum and maximum of the successful repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// The spread of `values`; `None` if there are none.
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

/// The median of `metric` over `server`'s successful runs of `scenario` at
/// `x` (any size if `None`), as the tables show it (the mean of the middle
/// two of an even count).
pub(crate) fn median(
    records: &[Record],
    scenario: &str,
    server: ServerKind,
    x: Option<f64>,
    metric: &str,
) -> Option<f64> {
    let values: Vec<f64> = records
        .iter()
        .filter(|r| {
            r.ok && r.scenario == scenario && r.server == server && x.is_none_or(|x| r.x == x)
        })
        .filter_map(|r| r.metrics.get(metric).copied())
        .collect();
    spread(&values).map(|s| s.median)
}

/// Three significant digits, no exponent for everyday magnitudes.
pub(crate) fn number(value: f64) -> String {
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

/// A table cell: the median, with the min–max when they differ.
pub(crate) fn cell(spread: Option<Spread>) -> String {
    match spread {
        None => "—".to_owned(),
        Some(s) if s.min == s.max => number(s.median),
        Some(s) => format!("{} ({}–{})", number(s.median), number(s.min), number(s.max)),
    }
}

/// `(x, server)` → the successful values of `metric`.
pub(crate) fn values(
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

/// The order of servers in tables and plots: Weft's first.
pub(crate) fn server_order(kind: ServerKind) -> u8 {
    match kind {
        ServerKind::Weft => 0,
        ServerKind::WeftCluster => 1,
        ServerKind::WeftClusterReplicated => 2,
        ServerKind::YWebsocket => 3,
        ServerKind::Hocuspocus => 4,
        ServerKind::HocuspocusRedis => 5,
    }
}

/// A table of `columns` per (x, server), then the ratios Weft / peer of
/// the `ratio` metric.
pub(crate) fn table(
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
