//! The pipeline against a real receiver on 127.0.0.1 and an in-memory log.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as Body;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_sync::changes::{Change, ChangeKind, ChangeLog, MemoryChangeLog};

use super::super::{WebhookMetrics, WebhookSettings, Webhooks};

/// What the receiver saw: (doc, delivery id, answered 2xx).
type Seen = mpsc::UnboundedSender<(String, String, bool)>;

/// A receiver that refuses every event of `refused_doc` with 500.
async fn receiver(refused_doc: &'static str, seen: Seen) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Body| {
            let seen = seen.clone();
            async move {
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let doc = event["doc"].as_str().unwrap().to_owned();
                let delivery = headers["weft-delivery"].to_str().unwrap().to_owned();
                assert!(
                    headers["weft-signature"]
                        .to_str()
                        .unwrap()
                        .starts_with("t=")
                );
                let accepted = doc != refused_doc;
                seen.send((doc, delivery, accepted)).unwrap();
                if accepted {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
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
        author: Some("ann".to_owned()),
        at_ms: Some(1_000 * position),
    }
}

fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        urls: vec![url.to_owned()],
        secret: "s".to_owned(),
        debounce: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        retry_for: Duration::from_millis(300),
        timeout: Duration::from_secs(2),
        roots: Vec::new(),
    }
}

#[tokio::test]
async fn a_refused_document_is_dead_lettered_and_the_position_passes_only_what_settled() {
    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    let url = receiver("refused", seen_sender).await;
    let log = Arc::new(MemoryChangeLog::default());
    // A new target starts at the log's end: these are not sent.
    log.push(change(1, "old"));
    let (end_sender, end) = tokio::sync::watch::channel(1);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let metrics = WebhookMetrics::default();
    let _webhooks = Webhooks::start(
        &settings(&url),
        log.clone(),
        None,
        &end,
        metrics.clone(),
        &tasks,
        &stop,
    )
    .unwrap();
    // Wait until the pipeline stored its start.
    while log.delivered_position(&url).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(log.delivered_position(&url).await.unwrap(), Some(1));
    for (position, doc) in [(2, "refused"), (3, "fine"), (4, "fine")] {
        log.push(change(position, doc));
    }
    end_sender.send_replace(4);

    let mut fine_delivered = false;
    while !fine_delivered {
        let (doc, delivery, accepted) = seen.recv().await.unwrap();
        assert_ne!(doc, "old");
        if doc == "fine" {
            assert!(accepted);
            assert_eq!(delivery, "3-4", "both changes of `fine` in one event");
            fine_delivered = true;
        }
    }
    // `fine` went through while `refused` retries: the position stays
    // below the refused change.
    assert_eq!(log.delivered_position(&url).await.unwrap(), Some(1));
    assert!(log.dead_letters().is_empty());

    // After --webhook-retry-for, the refused event is a dead letter and the
    // position moves past everything.
    while log.delivered_position(&url).await.unwrap() != Some(4) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        log.dead_letters(),
        vec![(url.clone(), "refused".to_owned(), 2, 2)]
    );
    assert_eq!(metrics.dead_letters.get(), 1);
    assert_eq!(metrics.delivered.get(), 1);
    assert!(metrics.failed_attempts.get() >= 1);
    // Every retry of the refused event carried its id.
    while let Ok((doc, delivery, _)) = seen.try_recv() {
        if doc == "refused" {
            assert_eq!(delivery, "2-2");
        }
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
