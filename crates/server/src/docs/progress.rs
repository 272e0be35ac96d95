//! Progress of `weft docs` on a terminal: documents, bytes, rate and time
//! left, redrawn in place on stderr. Silent when stderr is not a terminal
//! (piped, redirected, under a supervisor), so logs and scripts see only
//! the final summary line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn at most: often enough to look alive,
/// rarely enough to cost nothing on a fast import.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// A progress line.
#[derive(Debug)]
pub struct Progress {
    verb: &'static str,
    total: Option<u64>,
    documents: u64,
    bytes: u64,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    /// Progress of `verb` ("exported") over `total` documents, if known.
    pub fn new(verb: &'static str, total: Option<u64>) -> Self {
        Self {
            verb,
            total,
            documents: 0,
            bytes: 0,
            started: Instant::now(),
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Counts documents already done by an earlier run (a resume).
    pub fn skip(&mut self, documents: u64) {
        if let Some(total) = self.total.as_mut() {
            *total = total.saturating_sub(documents);
        }
    }

    /// One more document of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.documents += 1;
        self.bytes += bytes;
        if !self.terminal {
            return;
        }
        let now = Instant::now();
        if self.drawn.is_some_and(|drawn| now - drawn < REDRAW_EVERY) {
            return;
        }
        self.drawn = Some(now);
        let line = self.line(now);
        let mut stderr = std::io::stderr().lock();
        let _ignored = write!(stderr, "\r\x1b[2K{line}");
        let _flushed = stderr.flush();
    }

    /// Clears the line (on a terminal) and returns the summary.
    pub fn finish(self) -> String {
        if self.terminal && self.drawn.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ignored = write!(stderr, "\r\x1b[2K");
        }
        format!(
            "{} {} documents, {} in {:.1}s",
            self.verb,
            self.documents,
            human_bytes(self.bytes),
            self.started.elapsed().as_secs_f64()
        )
    }

    fn line(&self, now: Instant) -> String {
        let seconds = (now - self.started).as_secs_f64().max(0.001);
        let rate = self.documents as f64 / seconds;
        let mut line = match self.total {
            Some(total) => format!("{} {}/{} documents", self.verb, self.documents, total),
            None => format!("{} {} documents", self.verb, self.documents),
        };
        line.push_str(&format!(
            ", {} ({}/s), {:.0} documents/s",
            human_bytes(self.bytes),
            human_bytes((self.bytes as f64 / seconds) as u64),
            rate
        ));
        if let Some(total) = self.total
            && rate > 0.0
        {
            let left = total.saturating_sub(self.documents) as f64 / rate;
            line.push_str(&format!(", {left:.0}s left"));
        }
        line
    }
}

/// `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
