//! Bounded waits: a test that waits for something that never comes fails
//! instead of hanging.

use std::time::Duration;

/// Upper bound of every single wait for something the server should do.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes longer than `limit`.
pub(crate) async fn bounded<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
