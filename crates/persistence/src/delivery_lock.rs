//! [`DeliveryLock`] for [`TopicHistory`]: one `weft persist` worker of a
//! topic delivers its webhooks. On PostgreSQL a session-level advisory lock
//! on `weft-webhooks <topic>`, held by a connection taken out of the pool:
//! dropping the lease closes that connection, and a worker that dies
//! (SIGKILL) loses its connection, so the lock passes to another worker.
//! On SQLite one process owns the store: the lock always is its own.

use std::fmt::Debug;

use async_trait::async_trait;
use sqlx::{Connection, Row};
use weft_sync::StoreError;
use weft_sync::changes::{DeliveryLease, DeliveryLock};

use crate::dialect::{Dialect, sql_store_impl};
use crate::store::read_error;
use crate::topic_history::TopicHistory;

/// A held lock: the connection that holds it (`None` where there is
/// nothing to hold).
struct TopicLease<D: Dialect> {
    connection: Option<<D::Db as sqlx::Database>::Connection>,
}

impl<D: Dialect> Debug for TopicLease<D> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicLease")
            .field("connection", &self.connection.is_some())
            .finish()
    }
}

sql_store_impl! {
#[async_trait]
impl DeliveryLock for TopicHistory<D> {
    async fn try_acquire(&self) -> Result<Option<Box<dyn DeliveryLease>>, StoreError> {
        let Some(statement) = D::SESSION_TRY_LOCK else {
            return Ok(Some(Box::new(TopicLease::<D> { connection: None })));
        };
        let mut connection = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(|error| StoreError::new("take a connection for the webhook lock", error))?
            // Out of the pool: the lock must end with this connection.
            .detach();
        let key = format!("weft-webhooks {}", self.topic);
        let locked: i32 = sqlx::query(statement)
            .bind(key.as_str())
            .fetch_one(&mut connection)
            .await
            .map_err(|error| StoreError::new("take the webhook lock", error))?
            .try_get("locked")
            .map_err(read_error)?;
        if locked == 1 {
            Ok(Some(Box::new(TopicLease::<D> {
                connection: Some(connection),
            })))
        } else {
            // Closing it is best effort: it holds nothing.
            let _closed = connection.close().await;
            Ok(None)
        }
    }
}
}

sql_store_impl! {
#[async_trait]
impl DeliveryLease for TopicLease<D> {
    async fn holds(&mut self) -> bool {
        match &mut self.connection {
            None => true,
            Some(connection) => connection.ping().await.is_ok(),
        }
    }
}
}
