//! The compaction pass and its schedule against a scripted [`History`]
//! (no I/O; the store side is tested on SQLite and PostgreSQL in
//! `weft-persistence`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use yrs::{GetString as _, ReadTxn as _, StateVector, Text as _, Transact as _};

use crate::compaction::{
    CompactionMetrics, CompactionSettings, PassLabel, PassResult, compact_pass, run_compaction,
};
use crate::history::{
    AuthorActivity, Compacted, Compaction, CompactionPlan, History, HistoryRead, HistoryStats,
    NewVersion, Version,
};
use crate::store::{LogSeq, StoreError};

/// A store that lists `docs`, plans what `plans` says and reports what
/// was committed.
#[derive(Debug, Default)]
struct ScriptedHistory {
    docs: Vec<String>,
    plans: HashMap<String, CompactionPlan>,
    stale: HashSet<String>,
    committed: Mutex<Vec<(String, Option<Vec<u8>>)>>,
    list_calls: AtomicU32,
}

fn unused() -> StoreError {
    StoreError::new("scripted history", std::io::Error::other("not scripted"))
}

#[async_trait]
impl History for ScriptedHistory {
    fn keep_log(&self) {}

    async fn create_version(&self, _version: NewVersion<'_>) -> Result<Version, StoreError> {
        Err(unused())
    }

    async fn versions(
        &self,
        _doc: &str,
        _before: Option<i64>,
        _limit: u32,
    ) -> Result<Vec<Version>, StoreError> {
        Err(unused())
    }

    async fn version(&self, _doc: &str, _id: i64) -> Result<Option<Version>, StoreError> {
        Err(unused())
    }

    async fn position_at(&self, _doc: &str, _at_ms: i64) -> Result<Option<LogSeq>, StoreError> {
        Err(unused())
    }

    async fn position_before(
        &self,
        _doc: &str,
        _position: LogSeq,
    ) -> Result<Option<LogSeq>, StoreError> {
        Err(unused())
    }

    async fn purge(&self, _doc: &str) -> Result<bool, StoreError> {
        Err(unused())
    }

    async fn read_at(&self, _doc: &str, _covers: LogSeq) -> Result<HistoryRead, StoreError> {
        Err(unused())
    }

    async fn updates_between(
        &self,
        _doc: &str,
        _after: LogSeq,
        _upto: LogSeq,
    ) -> Result<Vec<crate::text_runs::AttributedUpdate>, StoreError> {
        Err(unused())
    }

    async fn activity(
        &self,
        _doc: &str,
        _from_ms: i64,
        _to_ms: i64,
    ) -> Result<Vec<AuthorActivity>, StoreError> {
        Err(unused())
    }

    async fn history_documents(
        &self,
        _log: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.list_calls.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .docs
            .iter()
            .filter(|doc| doc.as_str() > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn compaction_plan(
        &self,
        _log: &str,
        doc: &str,
        _cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError> {
        Ok(self.plans.get(doc).cloned())
    }

    async fn compact(
        &self,
        _log: &str,
        compaction: Compaction<'_>,
    ) -> Result<Compacted, StoreError> {
        if self.stale.contains(compaction.doc) {
            return Ok(Compacted::Stale);
        }
        self.committed.lock().push((
            compaction.doc.to_owned(),
            compaction.state.map(<[u8]>::to_vec),
        ));
        Ok(Compacted::Done { removed: 3 })
    }

    async fn history_stats(&self, _log: &str) -> Result<HistoryStats, StoreError> {
        Ok(HistoryStats {
            bytes: 1234,
            versions: 5,
        })
    }
}

/// A checkpoint holding `before` and an update appending `after` to it.
fn checkpoint_and_update(before: &str, after: &str) -> (Vec<u8>, Vec<u8>) {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, before);
    let checkpoint = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let vector = doc.transact().state_vector();
    let end = text.len(&doc.transact());
    text.insert(&mut doc.transact_mut(), end, after);
    let update = doc.transact().encode_state_as_update_v1(&vector);
    (checkpoint, update)
}

fn text_of(state: &[u8]) -> String {
    use yrs::updates::decoder::Decode as _;
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let update = yrs::Update::decode_v1(state).expect("a state decodes");
    doc.transact_mut().apply_update(update).expect("applies");
    text.get_string(&doc.transact())
}

fn scripted() -> ScriptedHistory {
    let (checkpoint, update) = checkpoint_and_update("hello", " world");
    let mut history = ScriptedHistory {
        docs: (0..250).map(|index| format!("doc-{index:04}")).collect(),
        ..ScriptedHistory::default()
    };
    history.plans.insert(
        "doc-0007".to_owned(),
        CompactionPlan {
            covers: 7,
            basis: Some(7),
            read: HistoryRead {
                checkpoint: Some(checkpoint.clone()),
                updates: Vec::new(),
            },
        },
    );
    history.plans.insert(
        "doc-0100".to_owned(),
        CompactionPlan {
            covers: 12,
            basis: Some(10),
            read: HistoryRead {
                checkpoint: Some(checkpoint.clone()),
                updates: vec![update],
            },
        },
    );
    history.plans.insert(
        "doc-0200".to_owned(),
        CompactionPlan {
            covers: 3,
            basis: Some(3),
            read: HistoryRead {
                checkpoint: Some(checkpoint),
                updates: Vec::new(),
            },
        },
    );
    history.stale.insert("doc-0200".to_owned());
    history
}

#[tokio::test]
async fn a_pass_walks_every_page_folds_and_counts() {
    let history = scripted();
    let report = compact_pass(&history, "log", 0, &CancellationToken::new()).await;
    assert_eq!(report.documents, 250);
    assert_eq!(report.compacted, 2);
    assert_eq!(report.removed, 6);
    assert_eq!(report.stale, 1);
    assert!(!report.succeeded(), "a stale document is retried next pass");
    assert_eq!(
        history.list_calls.load(Ordering::Relaxed),
        3,
        "pages of 100"
    );
    let committed = history.committed.lock().clone();
    assert_eq!(committed.len(), 2);
    assert_eq!(
        committed[0],
        ("doc-0007".to_owned(), None),
        "stored already: no fold"
    );
    assert_eq!(committed[1].0, "doc-0100");
    let folded = committed[1].1.as_deref().expect("folded");
    assert_eq!(text_of(folded), "hello world");
}

#[tokio::test]
async fn a_cancelled_pass_stops_between_documents() {
    let history = scripted();
    let closing = CancellationToken::new();
    closing.cancel();
    let report = compact_pass(&history, "log", 0, &closing).await;
    assert!(report.incomplete);
    assert_eq!(report.documents, 0);
    assert!(history.committed.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_schedule_runs_a_pass_at_start_and_every_interval() {
    let mut history = scripted();
    history.stale.clear();
    let history: Arc<dyn History> = Arc::new(history);
    let metrics = CompactionMetrics::default();
    let closing = CancellationToken::new();
    let task = tokio::spawn(run_compaction(
        history,
        "log".to_owned(),
        CompactionSettings {
            retention: Duration::from_secs(60),
            interval: Duration::from_secs(30),
        },
        metrics.clone(),
        closing.clone(),
    ));
    let ok = PassLabel {
        result: PassResult::Ok,
    };
    let started = tokio::time::Instant::now();
    while metrics.runs.get_or_create(&ok).get() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(32),
        "the second pass an interval after the first: {elapsed:?}"
    );
    assert_eq!(metrics.documents.get(), 6, "three documents a pass");
    assert_eq!(metrics.history_bytes.get(), 1234);
    assert_eq!(metrics.history_versions.get(), 5);
    assert!(metrics.lag_seconds.get() <= 1, "a pass just succeeded");
    closing.cancel();
    task.await.expect("the task ends when closing");
}

#[test]
fn the_result_label_is_lowercase() {
    let metrics = CompactionMetrics::default();
    metrics
        .runs
        .get_or_create(&PassLabel {
            result: PassResult::Failed,
        })
        .inc();
    let mut registry = prometheus_client::registry::Registry::with_prefix("weft");
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    assert!(
        text.contains("weft_history_compaction_runs_total{result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("weft_history_compaction_lag_seconds 0"),
        "{text}"
    );
}
