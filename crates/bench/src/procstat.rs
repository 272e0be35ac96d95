//! What a server process costs, read from `/proc/<pid>`: CPU time (user +
//! system, from `stat`) and resident memory (`VmRSS`, from `status`).

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return kib.parse().context("parse VmRSS");
        }
    }
    anyhow::bail!("no VmRSS in /proc/{pid}/status")
}
