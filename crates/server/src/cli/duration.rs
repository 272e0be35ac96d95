//! Durations on the command line.

use std::time::Duration;

/// A duration such as `500ms`, `2s` or `1m`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (examples: 500ms, 2s, 1m)"))
}
