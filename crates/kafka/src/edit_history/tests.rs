use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use weft_sync::history::{
    AuthorActivity, Compacted, Compaction, CompactionPlan, History, HistoryRead, HistoryStats,
    Version,
};
use weft_sync::{LogSeq, StoreError};

use super::*;

/// Edits and versions in memory; `failing` makes every write fail.
#[derive(Debug, Default)]
struct Recorded {
    edits: Mutex<Vec<LoggedEdit>>,
    versions: Mutex<Vec<Version>>,
    failing: AtomicBool,
}

impl Recorded {
    fn refuse(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(StoreError::new("write", std::io::Error::other("down")));
        }
        Ok(())
    }
}

#[async_trait]
impl History for Recorded {
    fn keep_log(&self) {}

    async fn create_version(&self, version: NewVersion<'_>) -> Result<Version, StoreError> {
        self.refuse()?;
        let mut versions = self.versions.lock();
        let stored = Version {
            id: i64::try_from(versions.len()).unwrap_or(0) + 1,
            name: None,
            kind: version.kind,
            at_ms: version.at_ms,
            covers: version.covers,
            authors: Vec::new(),
        };
        versions.push(stored.clone());
        Ok(stored)
    }

    async fn versions(
        &self,
        _doc: &str,
        _before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Version>, StoreError> {
        let versions = self.versions.lock();
        Ok(versions
            .iter()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn version(&self, _doc: &str, _id: i64) -> Result<Option<Version>, StoreError> {
        Ok(None)
    }

    async fn position_at(&self, _doc: &str, _at_ms: i64) -> Result<Option<LogSeq>, StoreError> {
        Ok(None)
    }

    async fn position_before(
        &self,
        _doc: &str,
        _position: LogSeq,
    ) -> Result<Option<LogSeq>, StoreError> {
        Ok(None)
    }

    async fn purge(&self, _doc: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn read_at(&self, _doc: &str, _covers: LogSeq) -> Result<HistoryRead, StoreError> {
        Ok(HistoryRead::default())
    }

    async fn updates_between(
        &self,
        _doc: &str,
        _after: LogSeq,
        _upto: LogSeq,
    ) -> Result<Vec<weft_sync::text_runs::AttributedUpdate>, StoreError> {
        Ok(Vec::new())
    }

    async fn activity(
        &self,
        _doc: &str,
        _from_ms: i64,
        _to_ms: i64,
    ) -> Result<Vec<AuthorActivity>, StoreError> {
        Ok(Vec::new())
    }

    async fn history_documents(
        &self,
        _log: &str,
        _after: &str,
        _limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn compaction_plan(
        &self,
        _log: &str,
        _doc: &str,
        _cutoff_ms: i64,
    ) -> Result<Option<CompactionPlan>, StoreError> {
        Ok(None)
    }

    async fn compact(
        &self,
        _log: &str,
        _compaction: Compaction<'_>,
    ) -> Result<Compacted, StoreError> {
        Ok(Compacted::Stale)
    }

    async fn history_stats(&self, _log: &str) -> Result<HistoryStats, StoreError> {
        Ok(HistoryStats::default())
    }
}

#[async_trait]
impl EditLog for Recorded {
    async fn append_edits(&self, edits: &[LoggedEdit]) -> Result<(), StoreError> {
        self.refuse()?;
        self.edits.lock().extend_from_slice(edits);
        Ok(())
    }
}

const KEEPING: HistoryKeeping = HistoryKeeping {
    version_interval: Duration::from_secs(600),
    version_quiet: Duration::from_secs(30),
};

fn edit(doc: &str, position: i64, author: &str) -> LoggedEdit {
    LoggedEdit {
        doc: Arc::from(doc),
        position,
        update: vec![0, 0],
        author: Some(Arc::from(author)),
        at_ms: Some(1_000 + position),
        node: Some(Arc::from("weft-0")),
    }
}

fn folded(covers: i64) -> ReadState {
    ReadState {
        state: vec![0, 0],
        has_content: true,
        deleted_at_ms: None,
        covers,
        deleted_position: None,
    }
}

#[test]
fn a_version_is_due_after_the_interval_of_activity_or_once_quiet() {
    let start = Instant::now();
    let clock = VersionClock {
        changed_since: start,
        last_change: start + Duration::from_secs(590),
    };
    assert!(!clock.due(&KEEPING, start + Duration::from_secs(599)));
    assert!(clock.due(&KEEPING, start + Duration::from_secs(600)));
    let quiet = VersionClock {
        changed_since: start,
        last_change: start + Duration::from_secs(10),
    };
    assert!(!quiet.due(&KEEPING, start + Duration::from_secs(39)));
    assert!(quiet.due(&KEEPING, start + Duration::from_secs(40)));
}

#[tokio::test(start_paused = true)]
async fn offsets_stay_below_edits_not_stored_until_the_store_takes_them() {
    let store = Arc::new(Recorded::default());
    let mut history = EditHistory::new(store.clone(), KEEPING, Arc::default());
    let now = Instant::now();
    history.note(0, edit("a", 7, "alice"), false, now);
    history.note(0, edit("b", 9, "bob"), false, now);
    history.note(1, edit("c", 3, "carol"), false, now);
    let mut offsets = vec![(0, 12), (1, 2), (2, 5)];
    history.clamp(&mut offsets);
    assert_eq!(offsets, vec![(0, 7), (1, 2), (2, 5)]);

    store.failing.store(true, Ordering::Relaxed);
    assert!(!history.store_edits().await);
    let mut offsets = vec![(0, 12)];
    history.clamp(&mut offsets);
    assert_eq!(
        offsets,
        vec![(0, 7)],
        "a failed write keeps the records uncommitted"
    );
    assert!(store.edits.lock().is_empty());

    store.failing.store(false, Ordering::Relaxed);
    assert!(history.store_edits().await);
    let mut offsets = vec![(0, 12)];
    history.clamp(&mut offsets);
    assert_eq!(offsets, vec![(0, 12)]);
    let stored: Vec<i64> = store
        .edits
        .lock()
        .iter()
        .map(|edit| edit.position)
        .collect();
    assert_eq!(stored, vec![7, 9, 3], "kept in the order read");
}

#[tokio::test(start_paused = true)]
async fn a_quiet_document_gets_one_automatic_version_covering_its_last_record() {
    let store = Arc::new(Recorded::default());
    let mut history = EditHistory::new(store.clone(), KEEPING, Arc::default());
    let start = Instant::now();
    history.note(0, edit("a", 4, "alice"), false, start);
    history.note(
        0,
        edit("a", 5, "bob"),
        false,
        start + Duration::from_secs(5),
    );
    assert!(
        history
            .due_versions(start + Duration::from_secs(34))
            .is_empty()
    );
    let due = history.due_versions(start + Duration::from_secs(35));
    assert_eq!(due.len(), 1);
    assert!(history.store_edits().await);
    history.take_version(&due[0], Some(folded(5))).await;
    let versions = store.versions.lock().clone();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].covers, 5);
    assert_eq!(versions[0].kind, VersionKind::Auto);
    assert!(
        history
            .due_versions(start + Duration::from_secs(3_600))
            .is_empty(),
        "nothing changed since"
    );
}

#[tokio::test(start_paused = true)]
async fn no_second_version_of_what_a_version_covers_and_none_of_a_deleted_document() {
    let store = Arc::new(Recorded::default());
    let mut history = EditHistory::new(store.clone(), KEEPING, Arc::default());
    let start = Instant::now();
    let later = start + Duration::from_secs(60);
    // A node's version (or this worker's before a restart) covers 8.
    history.note(0, edit("a", 8, "alice"), false, start);
    history
        .take_version(&history.due_versions(later)[0].clone(), Some(folded(8)))
        .await;
    history.note(0, edit("a", 8, "alice"), false, later);
    let due = history.due_versions(later + Duration::from_secs(60));
    history.take_version(&due[0], Some(folded(8))).await;
    assert_eq!(store.versions.lock().len(), 1, "record 8 is versioned once");
    assert!(
        history
            .due_versions(later + Duration::from_secs(120))
            .is_empty()
    );

    history.note(0, edit("b", 9, "bob"), false, start);
    history.note(0, edit("b", 10, "bob"), true, start);
    assert!(
        history.due_versions(later).is_empty(),
        "deleted: nothing to version"
    );

    store.failing.store(true, Ordering::Relaxed);
    history.note(0, edit("a", 11, "alice"), false, start);
    let due = history.due_versions(later);
    history.take_version(&due[0], Some(folded(11))).await;
    assert_eq!(
        history.due_versions(later),
        due,
        "a failed version is retried"
    );
}
