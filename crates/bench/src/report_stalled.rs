//! The report's section on stalled readers (scenario "stalled").

use std::fmt::Write as _;

use crate::report_table::{Column, table};
use crate::results::{Record, Results};
use crate::stalled::{STALLED_DRAIN, UPDATE_BYTES, UPDATE_RATE};

/// Writes the section, if the scenario ran.
pub(crate) fn stalled_section(out: &mut String, records: &[Record], results: &Results) {
    if !records.iter().any(|record| record.scenario == "stalled") {
        return;
    }
    let _ = write!(
        out,
        "## Stalled readers\n\n\
         Readers of one document that join, sync, and never read their socket again (each with a 4 KiB kernel receive \
         buffer, so the server's own queue fills), while one writer sends {} KiB updates at {UPDATE_RATE} per second \
         for {} s and one live reader reads everything (every run checks it received every update). **KiB / stalled \
         reader** is the server's peak RSS growth over its RSS after the joins, divided by the stalled readers. Weft \
         cuts a reader off once the bytes queued for it pass `--send-queue-bytes` (default 4 MiB; frames are shared by \
         all readers, so the memory each costs is far below the bound); **cut off (server)** is Weft's own count \
         (`weft_send_queue_overflows_total`). Afterwards each stalled reader reads what is left for {} s: **1013 seen** \
         counts close frames with that code, **dropped** connections that ended without a close frame (Weft waits 2 s \
         for a cut-off client to read up to its close frame, then drops the connection), **still open** readers whose \
         connection had not ended by then (the server still held them, or what the kernel had buffered for them was \
         not read through yet). A run stops early if the server's RSS passes 4 GiB (**RSS capped** 1).\n\n",
        UPDATE_BYTES / 1024,
        results.sizes.stalled_seconds,
        STALLED_DRAIN.as_secs(),
    );
    let columns: [Column; 8] = [
        ("kib_per_stalled_reader", "KiB / stalled reader"),
        ("mib_sent_per_reader", "MiB sent / reader"),
        ("server_overflows", "cut off (server)"),
        ("closes_1013_seen", "1013 seen"),
        ("dropped_seen", "dropped"),
        ("still_open", "still open"),
        ("rss_peak_mib", "peak RSS MiB"),
        ("rss_capped", "RSS capped"),
    ];
    table(
        out,
        records,
        "stalled",
        "stalled readers",
        &columns,
        (
            "kib_per_stalled_reader",
            "KiB per stalled reader (lower is better)",
        ),
    );
    out.push('\n');
}
