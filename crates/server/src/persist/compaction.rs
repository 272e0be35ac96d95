//! The worker's history compaction: in a cluster the shared store's
//! checkpoints and versions older than `--history-retention` fold into the
//! newest checkpoint by then (named versions stay), for every document of
//! the topic's log, loaded on a node or not (see
//! `weft_sync::compaction`). Several workers may run it at once: a
//! compaction is one transaction, idempotent, and a stale one changes
//! nothing.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_sync::compaction::{CompactionMetrics, CompactionSettings, run_compaction};
use weft_sync::history::History;

/// Starts compacting `topic`'s history in `store` on `tasks` until `stop`,
/// if `settings` says so.
pub(super) fn start(
    store: Arc<dyn History>,
    topic: &str,
    settings: Option<CompactionSettings>,
    metrics: &CompactionMetrics,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let Some(settings) = settings else {
        return;
    };
    tasks.spawn(run_compaction(
        store,
        topic.to_owned(),
        settings,
        metrics.clone(),
        stop,
    ));
}
