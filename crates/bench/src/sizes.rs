//! The sizes of the scenarios in each mode, and the idle scenario's sizes
//! fitted to the open files limit.

use serde::{Deserialize, Serialize};

use crate::Mode;

/// The sizes of one mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sizes {
    pub(crate) latency_writers: usize,
    pub(crate) latency_readers: usize,
    pub(crate) latency_rates: Vec<f64>,
    pub(crate) latency_seconds: f64,
    pub(crate) fanout_readers: usize,
    pub(crate) fanout_rates: Vec<f64>,
    pub(crate) fanout_seconds: f64,
    pub(crate) throughput_docs: usize,
    pub(crate) throughput_rates: Vec<f64>,
    pub(crate) throughput_seconds: f64,
    pub(crate) idle_sessions: Vec<usize>,
    /// Why a size of `idle_sessions` was lowered (the open files limit).
    #[serde(default)]
    pub(crate) idle_capped: Option<String>,
    /// Weft's `--kafka-fetch-wait-ms` in cluster runs (`None`: its default).
    pub(crate) kafka_fetch_wait_ms: Option<u32>,
    /// Scenario 5 replays at most this many edits of the trace (`None`:
    /// all of it).
    #[serde(default)]
    pub(crate) trace_max_edits: Option<usize>,
    /// Scenario 6: clients connected to the node that is killed, and the
    /// documents they spread over (0 in results written before it existed).
    #[serde(default)]
    pub(crate) storm_clients: usize,
    #[serde(default)]
    pub(crate) storm_docs: usize,
    /// The presence scenario: clients on its one document, and seconds of
    /// load (empty in results written before it existed).
    #[serde(default)]
    pub(crate) presence_clients: Vec<usize>,
    #[serde(default)]
    pub(crate) presence_seconds: f64,
    /// Scenario "stalled": readers that stop reading, and the seconds the
    /// writer sends for (0 in results written before it existed).
    #[serde(default)]
    pub(crate) stalled_readers: usize,
    #[serde(default)]
    pub(crate) stalled_seconds: f64,
    /// Scenario 7: clients joining at once, and the size the document is
    /// built to (its encoded state), bytes.
    #[serde(default)]
    pub(crate) joinstorm_clients: usize,
    #[serde(default)]
    pub(crate) joinstorm_doc_bytes: usize,
    /// Scenario "maxrate" (`maxrate.rs`): documents (one writer and one
    /// reader each), the first rate offered, seconds per step, the most
    /// doublings and bisections, and the search's time budget per server
    /// (0 in results written before it existed).
    #[serde(default)]
    pub(crate) maxrate_docs: usize,
    #[serde(default)]
    pub(crate) maxrate_start_rate: f64,
    #[serde(default)]
    pub(crate) maxrate_seconds: f64,
    #[serde(default)]
    pub(crate) maxrate_doublings: u32,
    #[serde(default)]
    pub(crate) maxrate_bisections: u32,
    #[serde(default)]
    pub(crate) maxrate_budget_seconds: f64,
}

impl Sizes {
    pub(crate) fn for_mode(mode: Mode, kafka_fetch_wait_ms: Option<u32>) -> Sizes {
        match mode {
            Mode::Short => Sizes {
                latency_writers: 2,
                latency_readers: 2,
                latency_rates: vec![50.0, 200.0],
                latency_seconds: 3.0,
                fanout_readers: 100,
                fanout_rates: vec![50.0],
                fanout_seconds: 3.0,
                throughput_docs: 10,
                throughput_rates: vec![500.0],
                throughput_seconds: 3.0,
                idle_sessions: vec![1_000],
                idle_capped: None,
                kafka_fetch_wait_ms,
                trace_max_edits: Some(20_000),
                storm_clients: 100,
                storm_docs: 10,
                presence_clients: vec![100],
                presence_seconds: 5.0,
                stalled_readers: 50,
                stalled_seconds: 5.0,
                joinstorm_clients: 20,
                joinstorm_doc_bytes: 2 * 1024 * 1024,
                maxrate_docs: 10,
                maxrate_start_rate: 1_000.0,
                maxrate_seconds: 2.0,
                maxrate_doublings: 4,
                maxrate_bisections: 1,
                maxrate_budget_seconds: 25.0,
            },
            Mode::Full => Sizes {
                latency_writers: 4,
                latency_readers: 4,
                latency_rates: vec![100.0, 500.0, 1_000.0, 2_000.0, 4_000.0],
                latency_seconds: 10.0,
                fanout_readers: 1_000,
                fanout_rates: vec![20.0, 100.0, 200.0, 400.0, 800.0],
                fanout_seconds: 10.0,
                throughput_docs: 50,
                throughput_rates: vec![1_000.0, 4_000.0],
                throughput_seconds: 10.0,
                // Capped by the open files limit when run (see
                // `Sizes::fit_idle_to_fd_limit`).
                idle_sessions: vec![1_000, 10_000, 50_000],
                idle_capped: None,
                kafka_fetch_wait_ms,
                trace_max_edits: None,
                storm_clients: 1_000,
                storm_docs: 100,
                presence_clients: vec![500, 1_500],
                presence_seconds: 20.0,
                stalled_readers: 1_000,
                stalled_seconds: 10.0,
                joinstorm_clients: 150,
                joinstorm_doc_bytes: 20 * 1024 * 1024,
                maxrate_docs: 50,
                maxrate_start_rate: 1_000.0,
                maxrate_seconds: 5.0,
                maxrate_doublings: 8,
                maxrate_bisections: 3,
                maxrate_budget_seconds: 180.0,
            },
        }
    }
}

/// Open files the idle scenario leaves for everything but its sessions
/// (the server's listeners, store and logs; the driver's runtime).
const IDLE_FD_MARGIN: u64 = 1_000;

impl Sizes {
    /// Lowers idle session counts the open files limit cannot hold: the
    /// server holds one descriptor per session, and so does the driver. A
    /// lowered size becomes the largest whole thousand that fits, and
    /// `idle_capped` says why, for the report.
    pub(crate) fn fit_idle_to_fd_limit(&mut self, fd_limit: u64) {
        let fits = fd_limit.saturating_sub(IDLE_FD_MARGIN) / 1_000 * 1_000;
        let fits = usize::try_from(fits).unwrap_or(usize::MAX);
        let wanted: Vec<usize> = self.idle_sessions.clone();
        let mut capped: Vec<usize> = wanted
            .iter()
            .map(|&n| n.min(fits))
            .filter(|&n| n > 0)
            .collect();
        capped.dedup();
        if capped != wanted {
            let lowered: Vec<String> = wanted
                .iter()
                .filter(|&&n| n > fits)
                .map(usize::to_string)
                .collect();
            self.idle_capped = Some(format!(
                "{} sessions need that many open files in one server process (and in the driver); \
                 the open files limit here is {fd_limit} (`ulimit -Hn`; raising it needs CAP_SYS_RESOURCE), \
                 so the largest run is {fits} sessions",
                lowered.join(", ")
            ));
        }
        self.idle_sessions = capped;
    }
}

#[cfg(test)]
mod tests {
    use super::{Mode, Sizes};

    #[test]
    fn idle_sizes_fit_the_open_files_limit() {
        let mut sizes = Sizes::for_mode(Mode::Full, None);
        sizes.fit_idle_to_fd_limit(20_000);
        assert_eq!(sizes.idle_sessions, vec![1_000, 10_000, 19_000]);
        let reason = sizes.idle_capped.as_deref().expect("a reason");
        assert!(
            reason.contains("50000") && reason.contains("20000"),
            "{reason}"
        );

        let mut roomy = Sizes::for_mode(Mode::Full, None);
        roomy.fit_idle_to_fd_limit(100_000);
        assert_eq!(roomy.idle_sessions, vec![1_000, 10_000, 50_000]);
        assert!(roomy.idle_capped.is_none());

        let mut tight = Sizes::for_mode(Mode::Full, None);
        tight.fit_idle_to_fd_limit(5_000);
        assert_eq!(tight.idle_sessions, vec![1_000, 4_000]);
    }
}
