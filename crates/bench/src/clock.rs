//! One monotonic clock for the whole driver: writers stamp updates with it,
//! readers subtract. All clients live in this process, so no clock skew.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the driver first asked.
pub(crate) fn nanos() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
