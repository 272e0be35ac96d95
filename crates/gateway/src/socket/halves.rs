//! Runs a socket's reader and writer in one task, each with a waker of its
//! own, so that a wake-up polls only the half it was for.
//!
//! Under fan-out a session's task is woken once per frame queued for it;
//! a `select!` of both halves then re-polled the reader (its cancellation
//! tokens, each a mutex, its timer and its socket read) every time. Here a
//! half is polled only once its own waker fired (both at first), the
//! reader first when both did, so the reader's close reason still wins
//! over the writer's end. The cost is two small `Arc`s per session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::{ArcWake, AtomicWaker, waker_ref};

/// Which half ended first.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Half<R> {
    /// The reader, with its output.
    Reader(R),
    /// The writer.
    Writer,
}

/// A half's waker: marks the half as due, then wakes the task.
#[derive(Debug)]
struct HalfWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl HalfWaker {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            // Due at first: each half is polled once to start.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        })
    }
}

impl ArcWake for HalfWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// Polls `reader` and `writer` until one ends.
pub(super) async fn first_of<R, W>(reader: Pin<&mut R>, writer: Pin<&mut W>) -> Half<R::Output>
where
    R: Future,
    W: Future<Output = ()>,
{
    let reader_waker = HalfWaker::new();
    let writer_waker = HalfWaker::new();
    let mut reader = reader;
    let mut writer = writer;
    std::future::poll_fn(|cx| {
        reader_waker.task.register(cx.waker());
        writer_waker.task.register(cx.waker());
        if reader_waker.woken.swap(false, Ordering::AcqRel) {
            let waker = waker_ref(&reader_waker);
            if let Poll::Ready(output) = reader.as_mut().poll(&mut Context::from_waker(&waker)) {
                return Poll::Ready(Half::Reader(output));
            }
        }
        if writer_waker.woken.swap(false, Ordering::AcqRel) {
            let waker = waker_ref(&writer_waker);
            if writer
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                return Poll::Ready(Half::Writer);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// Counts its polls; ends when its channel says so.
    async fn counted(polls: &AtomicUsize, mut ends: mpsc::Receiver<()>) {
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            ends.poll_recv(cx).map(|_| ())
        })
        .await;
    }

    #[tokio::test]
    async fn a_wake_up_polls_only_its_own_half() {
        let reader_polls = AtomicUsize::new(0);
        let (wake_writer, writer_wakes) = mpsc::channel::<()>(8);
        let (_keep_reader, reader_ends) = mpsc::channel::<()>(1);
        let reader = counted(&reader_polls, reader_ends);
        // The writer ends on its third message.
        let writer = async move {
            let mut writer_wakes = writer_wakes;
            for _ in 0..3 {
                writer_wakes.recv().await;
            }
        };
        tokio::pin!(reader, writer);
        // Each message is sent once the test's task waits again, so each is
        // a wake-up of its own.
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                wake_writer.send(()).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(first_of(reader, writer).await, Half::Writer);
        sender.await.unwrap();
        assert_eq!(
            reader_polls.load(Ordering::Relaxed),
            1,
            "the reader was polled once, to start"
        );
    }

    #[tokio::test]
    async fn the_reader_wins_when_both_are_ready() {
        let (end_reader, reader_ends) = oneshot::channel::<u8>();
        end_reader.send(7).unwrap();
        let reader = async move { reader_ends.await.unwrap() };
        let writer = async {};
        tokio::pin!(reader, writer);
        assert_eq!(first_of(reader, writer).await, Half::Reader(7));
    }
}
