//! What a server process costs, read from `/proc/<pid>`: CPU time (user +
//! system, from `stat`) and resident memory (`VmRSS`, from `status`); and
//! how many files this process may open (`limits`).

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports
/// `USER_HZ`, which is 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) the process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its ')' are
    // space separated: state is field 3, utime 14, stime 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("parse /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse().context("utime")?;
    let stime: f64 = fields.get(12).context("stime")?.parse().context("stime")?;
    Ok((utime + stime) / USER_HZ)
}

/// Resident set size in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The largest resident set size the process has had (its high-water
/// mark), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// A `kB` field of `/proc/{pid}/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib.parse().with_context(|| format!("parse {field}"));
        }
    }
    anyhow::bail!("no {field} in /proc/{pid}/status")
}

/// This process's limit on open files (the soft limit, which `make bench`
/// raises to the hard one; servers it starts inherit it).
pub(crate) fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("read /proc/self/limits")?;
    parse_open_files_limit(&limits).context("no 'Max open files' in /proc/self/limits")
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_open_files_limit;

    #[test]
    fn reads_the_soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             unlimited            unlimited            processes \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), Some(u64::MAX));
        assert_eq!(
            parse_open_files_limit("Max processes 10 10 processes\n"),
            None
        );
    }
}
