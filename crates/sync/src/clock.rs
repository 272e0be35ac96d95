//! Wall-clock time as the log and the store record it.
//!
//! The one `unix_millis` of the workspace. Two private copies remain for a
//! later merge: `weft-persistence` (`crates/persistence/src/lib.rs`) and the
//! persistence worker's fold (`crates/kafka/src/fold.rs`).

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
