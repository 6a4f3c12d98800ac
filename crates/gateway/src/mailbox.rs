//! A `/ws` connection's outbound queue.
//!
//! Fan-out fills it without waiting; the connection's task drains it in
//! batches. It is bounded: a push into a full mailbox marks the connection
//! *kicked* (a slow consumer) and wakes it so it closes. One small
//! allocation per connection (an idle connection's queue holds no buffer),
//! where a channel plus a cancellation token cost about a kilobyte.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

/// One frame queued for a `/ws` connection. `id` is set for `message`
/// frames so a fresh join can drop what its history already contains.
#[derive(Debug)]
pub(crate) struct QueuedFrame {
    pub frame: Utf8Bytes,
    pub id: Option<Uuid>,
}

/// What sits in a connection's queue: one pointer, shared by every
/// recipient of a broadcast (so a queue slot is 8 bytes, and a delivery is
/// one reference-count increment).
pub(crate) type Outbound = Arc<QueuedFrame>;

/// A queued frame that is not a room message.
pub(crate) fn reply(frame: String) -> Outbound {
    Arc::new(QueuedFrame {
        frame: Utf8Bytes::from(frame),
        id: None,
    })
}

/// Queue capacity kept after a burst drains; more is given back.
const KEEP_CAPACITY: usize = 64;

/// Why a connection is made to close from outside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The mailbox overflowed: a slow consumer.
    Slow,
    /// The server API disconnected its user.
    Disconnected,
}

/// What the connection's task is woken for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// At least one frame is queued.
    Frames,
    /// The mailbox overflowed: close the connection as a slow consumer.
    Kicked,
}

#[derive(Debug)]
pub(crate) struct Mailbox {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Outbound>,
    waker: Option<Waker>,
    kicked: Option<Kick>,
    closed: bool,
}

impl Inner {
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

impl Mailbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame without waiting. Returns false when it was not queued:
    /// the mailbox is closed or kicked, or is full (which kicks it).
    pub fn push(&self, out: Outbound) -> bool {
        let mut inner = self.lock();
        if inner.closed || inner.kicked.is_some() {
            return false;
        }
        let queued = inner.queue.len() < self.capacity;
        if queued {
            inner.queue.push_back(out);
        } else {
            inner.kicked = Some(Kick::Slow);
            metrics::counter!("switchboard_slow_consumers_total", "protocol" => "ws").increment(1);
            crate::admin::SLOW_CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        queued
    }

    /// Ready when a frame is queued or the mailbox was kicked (which wins).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Ready> {
        let mut inner = self.lock();
        if inner.kicked.is_some() {
            return Poll::Ready(Ready::Kicked);
        }
        if !inner.queue.is_empty() {
            return Poll::Ready(Ready::Frames);
        }
        inner.register(cx);
        Poll::Pending
    }

    /// Ready only once the mailbox was kicked. Always leaves the task's
    /// waker behind otherwise: a write stalled on a client that stopped
    /// reading must still be woken by the kick.
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<Kick> {
        let mut inner = self.lock();
        if let Some(kick) = inner.kicked {
            return Poll::Ready(kick);
        }
        inner.register(cx);
        Poll::Pending
    }

    /// Takes the oldest queued frame.
    pub fn pop(&self) -> Option<Outbound> {
        let mut inner = self.lock();
        let out = inner.queue.pop_front();
        if inner.queue.is_empty() && inner.queue.capacity() > KEEP_CAPACITY {
            inner.queue = VecDeque::new();
        }
        out
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Whether the mailbox overflowed.
    #[cfg(test)]
    pub fn is_kicked(&self) -> bool {
        self.lock().kicked.is_some()
    }

    /// Makes the connection close as disconnected by the server (unless it
    /// is closing already).
    pub fn disconnect(&self) {
        let mut inner = self.lock();
        if inner.closed || inner.kicked.is_some() {
            return;
        }
        inner.kicked = Some(Kick::Disconnected);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The connection is gone: drops what is queued and refuses more.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queue = VecDeque::new();
        inner.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::task::Waker;

    fn poll(m: &Mailbox) -> Poll<Ready> {
        m.poll_ready(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn delivers_in_order_then_waits() {
        let m = Mailbox::new(4);
        assert_eq!(poll(&m), Poll::Pending);
        assert!(m.push(reply("a".into())));
        assert!(m.push(reply("b".into())));
        assert_eq!(poll(&m), Poll::Ready(Ready::Frames));
        assert_eq!(m.pop().unwrap().frame.as_str(), "a");
        assert_eq!(m.pop().unwrap().frame.as_str(), "b");
        assert!(m.pop().is_none());
        assert_eq!(poll(&m), Poll::Pending);
    }

    #[test]
    fn overflow_kicks_and_refuses_more() {
        let m = Mailbox::new(2);
        assert!(m.push(reply("1".into())));
        assert!(m.push(reply("2".into())));
        assert!(!m.push(reply("3".into())), "the third does not fit");
        assert!(m.is_kicked());
        assert_eq!(
            poll(&m),
            Poll::Ready(Ready::Kicked),
            "kicked wins over queued frames"
        );
        assert!(!m.push(reply("4".into())));
    }

    #[test]
    fn closed_mailbox_drops_and_refuses() {
        let m = Mailbox::new(2);
        assert!(m.push(reply("1".into())));
        m.close();
        assert!(m.pop().is_none());
        assert!(!m.push(reply("2".into())));
        assert!(!m.is_kicked(), "closing is not a kick");
    }

    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn flagged() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }

    fn woken(flag: &Flag) -> bool {
        flag.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_push_wakes_the_waiting_task() {
        let (flag, waker) = flagged();
        let m = Mailbox::new(2);
        assert_eq!(
            m.poll_ready(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        m.push(reply("x".into()));
        assert!(woken(&flag));
    }

    #[test]
    fn a_kick_wakes_a_task_stalled_on_a_write_with_frames_queued() {
        let m = Mailbox::new(2);
        assert!(m.push(reply("1".into())), "queued before the write stalls");
        let (flag, waker) = flagged();
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        assert!(m.push(reply("2".into())));
        assert!(woken(&flag));
        let (flag, waker) = flagged();
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        assert!(!m.push(reply("3".into())), "full: kicked");
        assert!(woken(&flag), "the kick wakes the stalled task");
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Ready(Kick::Slow)
        );
        m.disconnect();
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Ready(Kick::Slow),
            "the first reason stays"
        );
    }

    #[test]
    fn a_disconnect_wakes_and_refuses_more() {
        let m = Mailbox::new(4);
        let (flag, waker) = flagged();
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Pending
        );
        m.disconnect();
        assert!(woken(&flag));
        assert_eq!(
            m.poll_kicked(&mut Context::from_waker(&waker)),
            Poll::Ready(Kick::Disconnected)
        );
        assert!(!m.push(reply("late".into())));
    }
}
