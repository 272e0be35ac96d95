//! Wall-clock time as the log and the store record it.
//!
//! The one `unix_millis` of the workspace: the store's `updated_at`
//! columns and the persistence worker's tombstones use it too.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
