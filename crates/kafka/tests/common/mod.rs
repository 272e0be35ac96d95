//! Helpers the Kafka crate's broker tests share.

/// The broker `make test` started (`WEFT_TEST_KAFKA`). Without it a test is
/// skipped locally and fails under CI, so a missing broker cannot pass for
/// a green run.
pub(crate) fn broker() -> Option<String> {
    match std::env::var("WEFT_TEST_KAFKA") {
        Ok(address) if !address.is_empty() => Some(address),
        _ if std::env::var_os("CI").is_some() => {
            panic!("WEFT_TEST_KAFKA is not set: `make test` starts a broker and sets it")
        }
        _ => {
            eprintln!("skipped: set WEFT_TEST_KAFKA=host:port (make test does)");
            None
        }
    }
}

/// A topic name no other test uses.
pub(crate) fn fresh_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("test-{name}-{}-{nanos}", std::process::id())
}

/// Tasks of a bus under test: a tracker and a token of its own (a node
/// gives the bus its own).
pub(crate) fn tasks() -> weft_kafka::BusTasks {
    weft_kafka::BusTasks::new(
        tokio_util::sync::CancellationToken::new(),
        tokio_util::task::TaskTracker::new(),
    )
}
