//! Where a node keeps its revocations: the embedded store alone, or a Kafka
//! topic of their own in a cluster ([`weft_kafka::RevocationTopic`]). Both
//! adapt to the gateway's [`RevocationLog`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use weft_gateway::live::{Revocation, RevocationLog, RevocationLogError, unix_now};
use weft_sync::EmbeddedLog;

/// How long a node waits before reading the store's revocations again after
/// a failed read at start (it is not ready until one succeeds).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Revocations in the embedded store (`weft_revocations`). A node alone on
/// its store is the only one to learn of them, at once, from itself.
#[derive(Debug)]
pub(crate) struct StoreRevocations {
    pub(crate) store: Arc<dyn EmbeddedLog>,
}

impl RevocationLog for StoreRevocations {
    fn append(&self, record: Vec<u8>) -> BoxFuture<'_, Result<(), RevocationLogError>> {
        Box::pin(async move {
            let parsed: Revocation = serde_json::from_slice(&record)
                .map_err(|error| RevocationLogError(Box::new(error)))?;
            let expires_at = i64::try_from(parsed.expires_at).unwrap_or(i64::MAX);
            self.store
                .save_revocation(&parsed.id, &record, expires_at)
                .await
                .map_err(|error| RevocationLogError(Box::new(error)))
        })
    }

    fn follow(
        self: Arc<Self>,
        records: mpsc::Sender<Vec<u8>>,
        loaded: oneshot::Sender<()>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let now = || i64::try_from(unix_now()).unwrap_or(i64::MAX);
            let stored = loop {
                match self.store.load_revocations(now()).await {
                    Ok(stored) => break stored,
                    Err(error) => {
                        warn!(error = %error, "could not read the revocations; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(RETRY_PAUSE) => {}
                        }
                    }
                }
            };
            for record in stored {
                if records.send(record).await.is_err() {
                    return;
                }
            }
            let _node_may_be_stopping = loaded.send(());
        })
    }
}

/// Revocations on the cluster's revocations topic, followed by every node.
#[derive(Debug)]
pub(crate) struct TopicRevocations {
    pub(crate) topic: Arc<weft_kafka::RevocationTopic>,
}

impl RevocationLog for TopicRevocations {
    fn append(&self, record: Vec<u8>) -> BoxFuture<'_, Result<(), RevocationLogError>> {
        Box::pin(async move {
            let parsed: Revocation = serde_json::from_slice(&record)
                .map_err(|error| RevocationLogError(Box::new(error)))?;
            self.topic
                .append(&parsed.id, &record)
                .await
                .map_err(|error| RevocationLogError(Box::new(error)))
        })
    }

    fn follow(
        self: Arc<Self>,
        records: mpsc::Sender<Vec<u8>>,
        loaded: oneshot::Sender<()>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.topic.clone().follow(records, loaded, stop))
    }
}
