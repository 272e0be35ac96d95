//! The in-process [`MessageBus`]: the embedded store's update log.
//!
//! A durable publish is an append to the [`EmbeddedLog`] (one
//! transaction per batch: the committer's group commit). Live delivery goes
//! to the other nodes of the same process through bounded channels; in the
//! embedded single-node mode there are none, so it costs nothing. Tests join
//! several nodes to one log with [`LogBus::join`] to exercise the
//! multi-node paths without a broker.
//!
//! Replay reads the store once ([`EmbeddedLog::load_after`]): a snapshot
//! covering more than the position asked for stands for the log it
//! compacted (as a compacted Kafka topic would), preceded by its deletion
//! if it carries a tombstone, followed by the log after it. A load, which
//! asks from the position its snapshot covers, reads no snapshot state
//! here unless one was written between the two reads.
//!
//! A deletion is [`EmbeddedLog::delete_document`]: the tombstone, the pruned
//! log and the new position in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::LogSeq;
use crate::bus::{
    BusError, Delivery, Interest, MessageBus, Origin, Position, Record, RecordKind, Replayed,
};
use crate::store::{Attribution, EMBEDDED_LOG, EmbeddedLog, NewUpdate};
/// Deliveries buffered per subscriber before a publisher waits for it.
const SUBSCRIBER_CAPACITY: usize = 4096;

/// One node's handle on an in-process log.
#[derive(Debug, Clone)]
pub struct LogBus {
    hub: Arc<Hub>,
    origin: Origin,
}

#[derive(Debug)]
struct Hub {
    store: Arc<dyn EmbeddedLog>,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

struct Subscriber {
    origin: Origin,
    interest: Arc<dyn Interest>,
    sender: mpsc::Sender<Delivery>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Subscriber")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl LogBus {
    /// A log over `store` with one node, `node`.
    pub fn new(store: Arc<dyn EmbeddedLog>, node: &str) -> Self {
        Self {
            hub: Arc::new(Hub {
                store,
                subscribers: Mutex::new(Vec::new()),
            }),
            origin: Origin::new(node),
        }
    }

    /// Another node on the same log.
    pub fn join(&self, node: &str) -> Self {
        Self {
            hub: self.hub.clone(),
            origin: Origin::new(node),
        }
    }

    async fn publish_updates(&self, records: &[Record]) -> Vec<Result<Position, BusError>> {
        let at_ms = crate::unix_millis();
        let updates: Vec<NewUpdate> = records
            .iter()
            .map(|record| NewUpdate {
                doc: record.doc.clone(),
                update: record.payload.clone(),
                attribution: Attribution {
                    author: record.author.clone(),
                    at_ms: Some(at_ms),
                    node: Some(self.origin.node.clone()),
                },
            })
            .collect();
        let seqs = match self.hub.store.append(&updates).await {
            Ok(seqs) if seqs.len() == records.len() => seqs,
            Ok(seqs) => {
                let mismatch = format!(
                    "store returned {} sequence numbers for {} updates",
                    seqs.len(),
                    records.len()
                );
                return records
                    .iter()
                    .map(|_| Err(BusError::Publish(mismatch.clone().into())))
                    .collect();
            }
            Err(error) => {
                let failure = format!("{error}: {}", error_chain(&error));
                return records
                    .iter()
                    .map(|_| Err(BusError::Publish(failure.clone().into())))
                    .collect();
            }
        };
        let mut results = Vec::with_capacity(records.len());
        for (record, seq) in records.iter().zip(seqs) {
            results.push(Ok(self.deliver_to_others(record, seq).await));
        }
        results
    }

    /// A deletion: the store prunes the document and keeps its tombstone
    /// in one transaction, at a new log position.
    async fn publish_deletion(&self, record: &Record) -> Result<Position, BusError> {
        let seq = self
            .hub
            .store
            .delete_document(&record.doc, &record.payload, crate::unix_millis())
            .await
            .map_err(|error| {
                BusError::Publish(format!("{error}: {}", error_chain(&error)).into())
            })?;
        Ok(self.deliver_to_others(record, seq).await)
    }

    async fn deliver_to_others(&self, record: &Record, seq: LogSeq) -> Position {
        let position = Position::embedded(seq);
        for subscriber in self.others() {
            if subscriber.interest.wants(&record.doc) {
                let delivery = Delivery {
                    record: record.clone(),
                    origin: self.origin.clone(),
                    position: Some(position),
                };
                // A subscriber that is gone has stopped consuming.
                let _gone = subscriber.sender.send(delivery).await;
            }
        }
        position
    }

    /// The other subscribers, cloned out of the lock so no lock is held
    /// while a send waits.
    fn others(&self) -> Vec<Arc<Subscriber>> {
        self.hub
            .subscribers
            .lock()
            .iter()
            .filter(|subscriber| subscriber.origin != self.origin)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl MessageBus for LogBus {
    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn log_id(&self) -> &str {
        EMBEDDED_LOG
    }

    async fn publish(&self, records: &[Record]) -> Vec<Result<Position, BusError>> {
        // Runs of updates are appended in one transaction each; a deletion
        // is its own transaction, in order between them.
        let mut results = Vec::with_capacity(records.len());
        let mut start = 0;
        while start < records.len() {
            if records[start].kind == RecordKind::Delete {
                results.push(self.publish_deletion(&records[start]).await);
                start += 1;
                continue;
            }
            let end = records[start..]
                .iter()
                .position(|record| record.kind == RecordKind::Delete)
                .map_or(records.len(), |offset| start + offset);
            results.extend(self.publish_updates(&records[start..end]).await);
            start = end;
        }
        results
    }

    fn publish_ephemeral(&self, record: Record) {
        for subscriber in self.others() {
            if record.kind == RecordKind::Heartbeat || subscriber.interest.wants(&record.doc) {
                // Ephemeral: a full subscriber misses this one.
                let _missed = subscriber.sender.try_send(Delivery {
                    record: record.clone(),
                    origin: self.origin.clone(),
                    position: None,
                });
            }
        }
    }

    async fn subscribe(
        &self,
        interest: Arc<dyn Interest>,
    ) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let mut subscribers = self.hub.subscribers.lock();
        if subscribers
            .iter()
            .any(|subscriber| subscriber.origin == self.origin)
        {
            return Err(BusError::AlreadySubscribed);
        }
        subscribers.push(Arc::new(Subscriber {
            origin: self.origin.clone(),
            interest,
            sender,
        }));
        Ok(receiver)
    }

    async fn replay(&self, doc: &str, after: Option<Position>) -> Result<Vec<Replayed>, BusError> {
        let after_offset = after.map_or(LogSeq::MIN, |position| position.offset);
        let stored = self.hub.store.load_after(doc, after_offset).await?;
        let mut replayed = Vec::with_capacity(stored.updates.len() + 2);
        if let Some(snapshot) = stored.snapshot {
            if let Some(tombstone) = snapshot.tombstone
                && tombstone.position > after_offset
            {
                replayed.push(Replayed {
                    position: Position::embedded(tombstone.position),
                    kind: RecordKind::Delete,
                    update: Bytes::from(tombstone.state_vector),
                });
            }
            replayed.push(Replayed {
                position: snapshot.covers,
                kind: RecordKind::Update,
                update: Bytes::from(snapshot.state),
            });
        }
        for logged in stored.updates {
            replayed.push(Replayed {
                position: Position::embedded(logged.seq),
                kind: RecordKind::Update,
                update: Bytes::from(logged.update),
            });
        }
        Ok(replayed)
    }

    async fn check(&self) -> Result<(), BusError> {
        self.hub.store.check().await.map_err(BusError::Store)
    }
}

/// The causes of `error`, joined, for an error that must be copied per record.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn passes_the_bus_conformance_suite() {
        let a = LogBus::new(Arc::new(MemoryStore::new()), "a");
        let b = a.join("b");
        crate::bus_conformance::run_all(&a, &b).await;
    }
}
