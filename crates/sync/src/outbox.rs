//! A session's outbox queue: bounded, many senders, one receiver, and
//! nothing allocated while it is empty.
//!
//! Every synced session holds one for its whole life, and an idle session's
//! outbox is empty almost all of the time. A tokio `mpsc` channel costs
//! about 1.7 KiB each however empty it is (its shared state, padded to
//! cache lines, and a first block of 32 slots); this one costs its `Arc`'s
//! shared state, about 100 bytes, and a `VecDeque` that is released when it
//! drains after holding more than [`KEPT_SLOTS`] frames.
//!
//! Same contract as the channel it replaces: `try_send` refuses with
//! `Full` past the capacity and with `Closed` once the receiver is gone;
//! `recv` yields the frames in order, then `None` once every sender is
//! dropped; `recv` is cancel-safe (a frame is taken only when it is
//! returned).

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

/// Slots a drained queue keeps (four `Bytes`, 128 bytes); a larger buffer
/// is released when the queue empties, so a burst's memory does not stay
/// with an idle session.
const KEPT_SLOTS: usize = 4;

/// An outbox queue of at most `capacity` frames.
pub fn outbox_channel(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        capacity,
        state: Mutex::new(State {
            frames: VecDeque::new(),
            waker: None,
            senders: 1,
            receiving: true,
        }),
    });
    (
        FrameSender {
            shared: shared.clone(),
        },
        FrameReceiver { shared },
    )
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    frames: VecDeque<Bytes>,
    /// The receiver's task, waiting for a frame or for the last sender.
    waker: Option<Waker>,
    /// Live senders; at 0 the receiver ends once the queue is drained.
    senders: usize,
    /// False once the receiver is dropped: sends are refused.
    receiving: bool,
}

/// The sending half; cloned for every document a socket holds.
pub struct FrameSender {
    shared: Arc<Shared>,
}

impl FrameSender {
    /// Queues `frame` if the receiver is alive and the queue has room.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        let waker = {
            let mut state = self.shared.state.lock();
            if !state.receiving {
                return Err(TrySendError::Closed(frame));
            }
            if state.frames.len() >= self.shared.capacity {
                return Err(TrySendError::Full(frame));
            }
            state.frames.push_back(frame);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.state.lock().receiving
    }
}

impl Clone for FrameSender {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.state.lock();
            state.senders = state.senders.saturating_sub(1);
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSender")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

/// The receiving half: the socket's writer.
pub struct FrameReceiver {
    shared: Arc<Shared>,
}

impl FrameReceiver {
    /// The next frame; `None` once the queue is empty and every sender is
    /// gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Bytes, TryRecvError> {
        let mut state = self.shared.state.lock();
        match take_front(&mut state) {
            Some(frame) => Ok(frame),
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.shared.state.lock().frames.len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.shared.state.lock();
        if let Some(frame) = take_front(&mut state) {
            return Poll::Ready(Some(frame));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Takes the first frame, releasing a large buffer once the queue drains.
fn take_front(state: &mut State) -> Option<Bytes> {
    let frame = state.frames.pop_front()?;
    if state.frames.is_empty() && state.frames.capacity() > KEPT_SLOTS {
        state.frames = VecDeque::new();
    }
    Some(frame)
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.shared.state.lock();
            state.receiving = false;
            state.waker = None;
            std::mem::take(&mut state.frames)
        };
        drop(dropped);
    }
}

impl fmt::Debug for FrameReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReceiver")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> Bytes {
        Bytes::from(vec![byte])
    }

    #[test]
    fn refuses_past_its_capacity_and_keeps_order() {
        let (sender, mut receiver) = outbox_channel(2);
        sender.try_send(frame(1)).unwrap();
        sender.clone().try_send(frame(2)).unwrap();
        assert!(matches!(
            sender.try_send(frame(3)),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(receiver.try_recv().unwrap(), frame(1));
        sender.try_send(frame(3)).unwrap();
        assert_eq!(receiver.try_recv().unwrap(), frame(2));
        assert_eq!(receiver.try_recv().unwrap(), frame(3));
        assert!(matches!(receiver.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn a_dropped_receiver_closes_it() {
        let (sender, receiver) = outbox_channel(2);
        drop(receiver);
        assert!(sender.is_closed());
        assert!(matches!(
            sender.try_send(frame(1)),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn recv_drains_then_ends_when_the_last_sender_goes() {
        let (sender, mut receiver) = outbox_channel(4);
        let second = sender.clone();
        sender.try_send(frame(1)).unwrap();
        drop(sender);
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(frame) = receiver.recv().await {
                got.push(frame);
            }
            got
        });
        tokio::task::yield_now().await;
        second.try_send(frame(2)).unwrap();
        drop(second);
        assert_eq!(waiting.await.unwrap(), vec![frame(1), frame(2)]);
    }

    #[test]
    fn a_drained_burst_releases_its_buffer() {
        let (sender, mut receiver) = outbox_channel(64);
        for byte in 0..32 {
            sender.try_send(frame(byte)).unwrap();
        }
        assert!(receiver.shared.state.lock().frames.capacity() >= 32);
        while receiver.try_recv().is_ok() {}
        assert_eq!(receiver.shared.state.lock().frames.capacity(), 0);
        sender.try_send(frame(1)).unwrap();
        receiver.try_recv().unwrap();
        assert!(receiver.shared.state.lock().frames.capacity() <= KEPT_SLOTS);
    }
}
