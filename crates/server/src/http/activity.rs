//! What a connection is doing before it upgrades, for its deadlines.
//!
//! hyper's own header read timeout starts whenever it waits for a request
//! head, so on a keep-alive connection it would also cut the wait between
//! two requests. Weft tells the two apart: a connection is *reading a head*
//! from its accept, and again from the first byte after a response, and
//! must finish it within `--http-header-timeout`; it is *idle* between a
//! response and that byte, and may stay so for `--http-idle-timeout`; it is
//! *busy* while a request is being answered, with no deadline here.
//!
//! [`Watched`] wraps the socket and notes the first byte of a head; the
//! service notes when a request starts and ends ([`RequestGuard`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

const READING_HEAD: u8 = 0;
const IDLE: u8 = 1;
const BUSY: u8 = 2;
/// Upgraded: the socket is a WebSocket's, nothing here applies.
const DONE: u8 = 3;

/// A connection's phase and since when, shared by its socket, its service
/// and its watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Times are milliseconds since this instant (the accept).
    base: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Wakes the watchdog when the phase changes, so a deadline that moved
    /// earlier (idle to reading a head) is seen at once.
    changed: Notify,
}

/// When a connection must be closed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// It must finish its request head by then.
    Head(Instant),
    /// It must start another request by then.
    Idle(Instant),
    /// A request is being answered, or the connection upgraded.
    None,
}

impl Activity {
    /// A connection accepted now: reading its first head.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            phase: AtomicU8::new(READING_HEAD),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts reading a head.
    fn on_read(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE
            && self
                .phase
                .compare_exchange(IDLE, READING_HEAD, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Bytes left: a response still being written keeps the connection
    /// from counting as idle.
    fn on_write(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request is being answered until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.enter(BUSY);
        RequestGuard {
            activity: self.clone(),
        }
    }

    /// The connection upgraded: stop tracking it.
    pub(crate) fn finish(&self) {
        self.phase.store(DONE, Ordering::Release);
    }

    /// The current deadline for these timeouts.
    pub(crate) fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Deadline {
        let since = self.base + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Acquire) {
            READING_HEAD => Deadline::Head(since + header_timeout),
            IDLE => Deadline::Idle(since + idle_timeout),
            _ => Deadline::None,
        }
    }

    /// Resolves when the phase changes (or changed since the last call).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight; see [`Activity::request`].
#[derive(Debug)]
pub(crate) struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1
            && self.activity.phase.load(Ordering::Acquire) == BUSY
        {
            self.activity.enter(IDLE);
        }
    }
}

/// A socket that reports its reads and writes to its [`Activity`]. Once
/// upgraded, each call costs one atomic load more than the bare socket.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_deadline() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(
            activity.deadline(HEADER, IDLE_TIMEOUT),
            Deadline::Head(start + HEADER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_response_the_idle_deadline_then_the_header_one_from_the_next_byte() {
        let activity = Activity::new();
        let request = activity.request();
        assert_eq!(activity.deadline(HEADER, IDLE_TIMEOUT), Deadline::None);
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(request);
        let idle_since = Instant::now();
        assert_eq!(
            activity.deadline(HEADER, IDLE_TIMEOUT),
            Deadline::Idle(idle_since + IDLE_TIMEOUT)
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.on_read();
        assert_eq!(
            activity.deadline(HEADER, IDLE_TIMEOUT),
            Deadline::Head(Instant::now() + HEADER)
        );
        // More bytes of the same head do not move the deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.on_read();
        assert_eq!(
            activity.deadline(HEADER, IDLE_TIMEOUT),
            Deadline::Head(idle_since + Duration::from_secs(5) + HEADER)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_deadline() {
        let activity = Activity::new();
        activity.finish();
        activity.on_read();
        assert_eq!(activity.deadline(HEADER, IDLE_TIMEOUT), Deadline::None);
    }
}
