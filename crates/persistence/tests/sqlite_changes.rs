//! The change log (webhooks, server-sent events) on the SQLite store.

mod change_log_suite;

use weft_persistence::SqliteStore;

#[tokio::test]
async fn the_sqlite_store_keeps_the_change_log_contract() {
    let dir = std::env::temp_dir().join(format!("weft-changes-{}", std::process::id()));
    let _stale = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&format!("sqlite://{}/weft.db", dir.display()))
        .await
        .expect("store call");
    change_log_suite::run(&store).await;
    let _removed = std::fs::remove_dir_all(&dir);
}
