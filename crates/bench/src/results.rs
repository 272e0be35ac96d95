//! The results file's types: one record per run, and everything a report
//! needs. `plan` writes them after every run, `report` reads them; the JSON
//! they serialise to is the results file's format.

use serde::{Deserialize, Serialize};

use crate::Mode;
use crate::scale_plan::{ScaleSizes, Variant};
use crate::scenarios::Metrics;
use crate::servers::ServerKind;
use crate::sizes::Sizes;

/// One scenario at one size against one server, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) scenario: String,
    pub(crate) server: ServerKind,
    /// The size varied along the x axis (rate, readers, sessions...).
    pub(crate) x: f64,
    pub(crate) repeat: u32,
    pub(crate) ok: bool,
    /// The run failed only because updates were still arriving at its
    /// deadline (saturation), not because of a failed check.
    #[serde(default)]
    pub(crate) saturated: bool,
    pub(crate) error: Option<String>,
    pub(crate) metrics: Metrics,
    /// The `scale` scenario's consume mode and routing (`None` elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<Variant>,
}

impl Record {
    /// The record of one run: its metrics, or why it has none. A run that
    /// only failed to keep up ([`crate::session::DidNotKeepUp`]) is
    /// saturated, not failed.
    pub(crate) fn from_outcome(
        scenario: &str,
        server: ServerKind,
        x: f64,
        repeat: u32,
        variant: Option<Variant>,
        outcome: anyhow::Result<Metrics>,
    ) -> Record {
        let (ok, saturated, error, metrics) = match outcome {
            Ok(metrics) => (true, false, None, metrics),
            Err(error) => {
                let saturated = error
                    .downcast_ref::<crate::session::DidNotKeepUp>()
                    .is_some();
                (false, saturated, Some(format!("{error:#}")), Metrics::new())
            }
        };
        Record {
            scenario: scenario.to_owned(),
            server,
            x,
            repeat,
            ok,
            saturated,
            error,
            metrics,
            variant,
        }
    }
}

/// Everything a report needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) mode: Mode,
    pub(crate) repeats: u32,
    pub(crate) conditions: Vec<(String, String)>,
    pub(crate) sizes: Sizes,
    pub(crate) records: Vec<Record>,
    /// Scenario 5's trace, or why it was skipped (`None` in results written
    /// before scenario 5 existed).
    #[serde(default)]
    pub(crate) trace: Option<TraceInfo>,
    /// The `scale` scenario's sizes (`None` in results written before it existed).
    #[serde(default)]
    pub(crate) scale: Option<ScaleSizes>,
}

/// What scenario 5 replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TraceInfo {
    /// The trace's file name (not its path).
    pub(crate) file: String,
    /// Edits replayed (a prefix in short mode).
    pub(crate) edits: usize,
    /// Transactions replayed (one update each).
    pub(crate) txns: usize,
    /// Edits in the whole trace.
    pub(crate) total_edits: usize,
    /// Characters of the replayed prefix's final text.
    pub(crate) end_chars: usize,
    /// Why scenario 5 did not run, if it did not.
    pub(crate) skipped: Option<String>,
}
