//! A cluster's webhook dead letters go to `<topic>-deadletter` rather than
//! the shared table: [`TopicDeadLetters`] is the worker's change feed with
//! its dead letters produced to that topic (`weft_kafka::dead_letters`).
//! The pipeline counts a dead letter, and lets its delivered position pass
//! the event, only once the brokers acknowledged the record.

use std::sync::Arc;

use async_trait::async_trait;
use weft_kafka::dead_letters::DeadLetterTopic;
use weft_sync::changes::{Change, ChangeLog, DeadLetter};
use weft_sync::{LogSeq, StoreError};

/// The feed `changes`, its dead letters produced to `topic`.
#[derive(Debug)]
pub(super) struct TopicDeadLetters {
    pub(super) changes: Arc<dyn ChangeLog>,
    pub(super) topic: Arc<DeadLetterTopic>,
}

#[async_trait]
impl ChangeLog for TopicDeadLetters {
    async fn changes_after(
        &self,
        after: LogSeq,
        doc: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        self.changes.changes_after(after, doc, limit).await
    }

    async fn log_end(&self) -> Result<LogSeq, StoreError> {
        self.changes.log_end().await
    }

    async fn position_before_time(&self, at_ms: i64) -> Result<LogSeq, StoreError> {
        self.changes.position_before_time(at_ms).await
    }

    async fn delivered_position(&self, target: &str) -> Result<Option<LogSeq>, StoreError> {
        self.changes.delivered_position(target).await
    }

    async fn save_delivered_position(
        &self,
        target: &str,
        position: LogSeq,
    ) -> Result<(), StoreError> {
        self.changes.save_delivered_position(target, position).await
    }

    async fn save_dead_letter(&self, letter: &DeadLetter<'_>) -> Result<(), StoreError> {
        self.topic
            .append(letter)
            .await
            .map_err(|error| StoreError::new("produce a webhook dead letter", error))
    }
}
