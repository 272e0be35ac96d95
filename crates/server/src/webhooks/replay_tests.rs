//! A cluster's stored replays applied to running pipelines: the delivered
//! position is stored at or before the replay's before the request is
//! marked applied, the changes after it are delivered again with new ids,
//! and a request the pipelines cannot take stays pending.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_sync::changes::{
    Change, ChangeKind, ChangeLog, DeadLetter, MemoryChangeLog, ReplayRequest, ReplayRequests,
};
use weft_sync::{LogSeq, StoreError};

use super::{WebhookMetrics, WebhookSettings, Webhooks};

/// A log that remembers every delivered position stored, in order.
#[derive(Debug, Default)]
struct RecordingLog {
    inner: MemoryChangeLog,
    saved: Mutex<Vec<LogSeq>>,
}

#[async_trait]
impl ChangeLog for RecordingLog {
    async fn changes_after(
        &self,
        after: LogSeq,
        doc: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        self.inner.changes_after(after, doc, limit).await
    }
    async fn log_end(&self) -> Result<LogSeq, StoreError> {
        self.inner.log_end().await
    }
    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError> {
        self.inner.position_before_time(at_ms).await
    }
    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError> {
        self.inner.delivered_position(target).await
    }
    async fn save_delivered_position(
        &self,
        target: &str,
        position: LogSeq,
    ) -> Result<(), StoreError> {
        self.saved.lock().push(position);
        self.inner.save_delivered_position(target, position).await
    }
    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError> {
        self.inner.save_dead_letter(letter).await
    }
}

/// Replay requests in memory: (request, applied at).
#[derive(Debug, Default)]
struct MemoryRequests {
    requests: Mutex<Vec<(ReplayRequest, Option<i64>)>>,
}

#[async_trait]
impl ReplayRequests for MemoryRequests {
    async fn request_replay(&self, from_ms: i64, after: LogSeq) -> Result<i64, StoreError> {
        let mut requests = self.requests.lock();
        let id = i64::try_from(requests.len()).unwrap() + 1;
        requests.push((ReplayRequest { id, from_ms, after }, None));
        Ok(id)
    }
    async fn pending_replays(&self, limit: u32) -> Result<Vec<ReplayRequest>, StoreError> {
        Ok(self
            .requests
            .lock()
            .iter()
            .filter(|(_, done)| done.is_none())
            .map(|(request, _)| *request)
            .take(limit as usize)
            .collect())
    }
    async fn finish_replay(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        for (request, done) in self.requests.lock().iter_mut() {
            if request.id == id {
                *done = Some(at_ms);
            }
        }
        Ok(())
    }
}

/// A receiver that accepts everything and reports (doc, delivery id).
async fn receiver(seen: mpsc::UnboundedSender<(String, String)>) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let doc = event["doc"].as_str().unwrap().to_owned();
                let delivery = headers["weft-delivery"].to_str().unwrap().to_owned();
                seen.send((doc, delivery)).unwrap();
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/hook")
}

fn change(position: i64, doc: &str) -> Change {
    Change {
        position,
        doc: doc.to_owned(),
        kind: ChangeKind::Changed,
        update: Bytes::from_static(&[0, 0]),
        author: None,
        at_ms: Some(1_000 * position),
    }
}

fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        urls: vec![url.to_owned()],
        secret: "s".to_owned(),
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        retry_for: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        roots: Vec::new(),
    }
}

#[tokio::test]
async fn a_stored_replay_rewinds_the_stored_position_before_it_is_marked_applied() {
    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    let url = receiver(seen_sender).await;
    let log = Arc::new(RecordingLog::default());
    for (position, doc) in [(1, "a"), (2, "b"), (3, "a"), (4, "b")] {
        log.inner.push(change(position, doc));
    }
    log.inner.save_delivered_position(&url, 0).await.unwrap();
    let (_end_sender, end) = tokio::sync::watch::channel(4);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let webhooks = Webhooks::start(
        &settings(&url),
        log.clone(),
        None,
        &end,
        WebhookMetrics::default(),
        &tasks,
        &stop,
    )
    .unwrap();
    let mut first = Vec::new();
    while first.len() < 2 {
        first.push(seen.recv().await.unwrap());
    }
    first.sort();
    assert_eq!(
        first,
        vec![
            ("a".to_owned(), "1-3".to_owned()),
            ("b".to_owned(), "2-4".to_owned())
        ]
    );

    let requests = MemoryRequests::default();
    let id = requests.request_replay(2_000, 1).await.unwrap();
    let saved_before = log.saved.lock().len();
    assert_eq!(webhooks.apply_stored_replays(&requests).await.unwrap(), 1);
    // Applied only once a position at or before the replay's was stored.
    assert!(
        log.saved.lock()[saved_before..].iter().any(|&p| p <= 1),
        "stored after the replay: {:?}",
        &log.saved.lock()[saved_before..]
    );
    assert!(requests.pending_replays(10).await.unwrap().is_empty());
    assert_eq!(requests.requests.lock()[0].0.id, id);

    // The changes after position 1 again, with new ids.
    let mut again = Vec::new();
    while again.len() < 2 {
        again.push(seen.recv().await.unwrap());
    }
    again.sort();
    assert_eq!(
        again,
        vec![
            ("a".to_owned(), "3-3-r1".to_owned()),
            ("b".to_owned(), "2-4-r1".to_owned())
        ]
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test]
async fn a_stored_replay_no_pipeline_takes_stays_pending() {
    let log = Arc::new(RecordingLog::default());
    let (_end_sender, end) = tokio::sync::watch::channel(0);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let webhooks = Webhooks::start(
        &settings("http://127.0.0.1:9/hook"),
        log,
        None,
        &end,
        WebhookMetrics::default(),
        &tasks,
        &stop,
    )
    .unwrap();
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    let requests = MemoryRequests::default();
    requests.request_replay(0, 0).await.unwrap();
    assert_eq!(webhooks.apply_stored_replays(&requests).await.unwrap(), 0);
    assert_eq!(requests.pending_replays(10).await.unwrap().len(), 1);
}
