//! The PostgreSQL store against the shared store suite, on a database of
//! its own per test.
//!
//! `make test` points `WEFT_TEST_POSTGRES_URL` at a server (the machine's,
//! or a throwaway cluster it starts). Without it the tests are skipped
//! locally and fail under CI.
#![cfg(feature = "postgres")]

mod change_log_suite;
mod topic_feed_suite;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use weft_persistence::PostgresStore;
use weft_sync::EmbeddedLog;
use weft_sync::store::NewUpdate;

fn admin_url() -> Option<String> {
    match std::env::var("WEFT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("WEFT_TEST_POSTGRES_URL is not set: `make test` provides a PostgreSQL")
        }
        _ => {
            eprintln!("skipped: set WEFT_TEST_POSTGRES_URL (make test does)");
            None
        }
    }
}

/// A database created for one test and dropped afterwards.
struct TestDatabase {
    admin: String,
    name: String,
}

impl TestDatabase {
    async fn create(admin: &str, label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let name = format!("weft_test_{label}_{}_{nanos}", std::process::id());
        let mut connection = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect admin");
        // The name is ours (letters, digits, underscores): safe to splice.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .expect("create test database");
        Self {
            admin: admin.to_owned(),
            name,
        }
    }

    /// The admin URL with the database replaced.
    fn url(&self) -> String {
        let (base, _database) = self
            .admin
            .rsplit_once('/')
            .expect("postgres URL with a database");
        let query = self
            .admin
            .split_once('?')
            .map_or(String::new(), |(_, query)| format!("?{query}"));
        format!("{base}/{}{query}", self.name)
    }

    async fn drop_it(self) {
        let mut connection = sqlx::PgConnection::connect(&self.admin)
            .await
            .expect("connect admin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut connection)
        .await
        .expect("drop test database");
    }
}

#[tokio::test]
async fn postgres_store_passes_the_conformance_suite() {
    let Some(admin) = admin_url() else { return };
    let database = TestDatabase::create(&admin, "conformance").await;
    let store = PostgresStore::open(&database.url()).await.expect("open");
    weft_sync::conformance::run_all(&store).await;
    store.close().await;
    database.drop_it().await;
}

#[tokio::test]
async fn postgres_store_keeps_the_change_log_contract() {
    let Some(admin) = admin_url() else { return };
    let database = TestDatabase::create(&admin, "changes").await;
    let store = PostgresStore::open(&database.url()).await.expect("open");
    change_log_suite::run(&store).await;
    store.close().await;
    database.drop_it().await;
}

#[tokio::test]
async fn postgres_topic_feed_reads_the_stored_rows_in_one_order() {
    let Some(admin) = admin_url() else { return };
    let database = TestDatabase::create(&admin, "topicfeed").await;
    let store = PostgresStore::open(&database.url()).await.expect("open");
    let feed = weft_persistence::TopicHistory::new(store.clone(), "weft-updates");
    let other = weft_persistence::TopicHistory::new(store.clone(), "other-updates");
    topic_feed_suite::run(&feed, &other).await;
    store.close().await;
    database.drop_it().await;
}

#[tokio::test]
async fn one_process_at_a_time_holds_a_topics_webhook_delivery() {
    use weft_sync::changes::DeliveryLock;
    let Some(admin) = admin_url() else { return };
    let database = TestDatabase::create(&admin, "deliverylock").await;
    // Two processes' stores (two pools), one topic; another topic apart.
    let first = PostgresStore::open(&database.url()).await.expect("open");
    let second = PostgresStore::open(&database.url()).await.expect("open");
    let mine = weft_persistence::TopicHistory::new(first.clone(), "weft-updates");
    let theirs = weft_persistence::TopicHistory::new(second.clone(), "weft-updates");
    let other = weft_persistence::TopicHistory::new(second.clone(), "other-updates");
    let mut held = mine
        .try_acquire()
        .await
        .expect("lock")
        .expect("free at first");
    assert!(held.holds().await);
    assert!(
        theirs.try_acquire().await.expect("lock").is_none(),
        "held elsewhere"
    );
    assert!(
        other.try_acquire().await.expect("lock").is_some(),
        "per topic"
    );
    // Dropping the lease closes its connection: the lock passes on once
    // the server has seen it close (no event to await: poll).
    drop(held);
    let mut taken = None;
    for _ in 0..50 {
        taken = theirs.try_acquire().await.expect("lock");
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(taken.is_some(), "the lock passed to the other process");
    drop(taken);
    first.close().await;
    second.close().await;
    database.drop_it().await;
}

#[tokio::test]
async fn processes_starting_at_once_migrate_once_and_share_the_data() {
    let Some(admin) = admin_url() else { return };
    let database = TestDatabase::create(&admin, "concurrent").await;
    let url = database.url();
    let opens = (0..4).map(|_| PostgresStore::open(&url));
    let stores: Vec<PostgresStore> = futures_join_all(opens)
        .await
        .into_iter()
        .map(|opened| opened.expect("every concurrent open succeeds"))
        .collect();
    let seqs = stores[0]
        .append(&[NewUpdate {
            doc: "shared".into(),
            update: bytes::Bytes::from_static(b"x"),
            attribution: Default::default(),
        }])
        .await
        .expect("append");
    let seen = stores[3].load("shared").await.expect("load");
    assert_eq!(seen.updates.len(), 1);
    assert_eq!(seen.updates[0].seq, seqs[0]);
    for store in &stores {
        store.close().await;
    }
    database.drop_it().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_at_open_with_the_cause() {
    let error = PostgresStore::open("postgres://weft@127.0.0.1:1/weft")
        .await
        .expect_err("nothing listens on port 1");
    assert!(error.to_string().contains("open database"), "{error}");
}

/// Awaits every future concurrently (all on this task).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
