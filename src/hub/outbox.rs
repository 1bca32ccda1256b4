//! The bounded send queue of one connection. Publishers push shared bytes without
//! waiting; the connection's task drains it into the socket. Overflow marks the
//! connection a slow consumer (close 4010) and never blocks the publisher; on a
//! conflated channel the newest publication of a key replaces the older instead
//! (`conflate`).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::channel::ChannelName;
use crate::protocol::CloseCode;

/// What a connection's task is asked to do, in order.
#[derive(Debug)]
pub enum Item {
    /// JSON to send as one text frame; `accepted` is when its publication was accepted.
    Data(Bytes, Option<Instant>),
    /// Server-side subscribe (`/api/subscribe`): the task subscribes and says `subscribed`.
    Subscribe(ChannelName),
    /// Server-side unsubscribe (`/api/unsubscribe`, 4012 on a channel...).
    Unsubscribe(ChannelName),
    /// Send `disconnect`, then close with this code.
    Close(CloseCode, Option<String>),
    /// The place of a conflated (channel, key) in the queue: what goes out there is
    /// the newest publication of that key when it is reached.
    Conflated(super::conflate::SlotKey),
}

/// Result of pushing data.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// This push overflowed the queue: the connection is now closing with 4010.
    Overflowed,
    /// The connection is already closing; nothing more is queued for it.
    Closed,
    /// It replaced an older publication of its (channel, key) still waiting.
    Conflated,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) queue: VecDeque<Item>,
    /// Data items in `queue` (control items do not count toward the bound), and the
    /// conflated publications waiting for their interval to end.
    pub(super) data: usize,
    /// Bytes of those.
    pub(super) bytes: usize,
    pub(super) closing: bool,
    /// Only for connections subscribed to a conflated channel.
    pub(super) conflation: Option<Box<super::conflate::Conflation>>,
}

/// An emptied queue keeps up to this many slots until the connection's ping tick.
const KEEP_CAPACITY: usize = 64;

pub struct Outbox {
    // A plain mutex: every critical section is a push or a drain of a few pointers,
    // never held across an await, and far cheaper than an async lock per delivery.
    pub(super) state: Mutex<State>,
    /// Set when the queue went from empty to not empty; cleared by the drain that
    /// empties it. Lets the task check for work without taking the lock.
    pending: AtomicBool,
    // One waiting task (the connection's): an atomic waker slot is a couple of atomic
    // operations per wake-up, cheaper than a notification list.
    waker: AtomicWaker,
    /// Conflated publications wait for an interval to end: the task asks when.
    pub(super) conflating: AtomicBool,
    pub(super) cap: usize,
    pub(super) cap_bytes: usize,
}

impl Outbox {
    /// A queue of at most `cap` items and `cap_bytes` bytes. One item bigger than
    /// `cap_bytes` is still taken into an empty queue: a large reply the client asked
    /// for (a history page) must be deliverable.
    pub fn new(cap: usize, cap_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            pending: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            conflating: AtomicBool::new(false),
            cap,
            cap_bytes,
        }
    }

    pub fn push_data(&self, bytes: Bytes, accepted: Option<Instant>) -> Pushed {
        let mut s = self.state.lock();
        if s.closing {
            return Pushed::Closed;
        }
        let over_bytes = s.data > 0 && s.bytes + bytes.len() > self.cap_bytes;
        if s.data >= self.cap || over_bytes {
            self.overflow(s);
            return Pushed::Overflowed;
        }
        let was_empty = s.queue.is_empty();
        s.bytes += bytes.len();
        s.queue.push_back(Item::Data(bytes, accepted));
        s.data += 1;
        drop(s);
        // The task drains everything it finds, so only the first item needs a wake-up.
        if was_empty {
            self.wake();
        }
        Pushed::Queued
    }

    /// The queue is full: the connection closes with 4010 and nothing more is ever
    /// queued, so the full queue's memory goes now (freed after the lock is released).
    pub(super) fn overflow(&self, mut s: parking_lot::MutexGuard<'_, State>) {
        s.closing = true;
        let dropped = (std::mem::take(&mut s.queue), s.conflation.take());
        s.data = 0;
        s.bytes = 0;
        s.queue
            .push_back(Item::Close(CloseCode::SlowConsumer, None));
        drop(s);
        drop(dropped);
        self.wake();
    }

    /// Queues a control item; `Close` makes the outbox refuse further data.
    pub fn push_control(&self, item: Item) -> bool {
        let mut s = self.state.lock();
        if s.closing {
            return false;
        }
        if matches!(item, Item::Close(..)) {
            s.closing = true;
        }
        s.queue.push_back(item);
        drop(s);
        self.wake();
        true
    }

    /// Moves up to `max` data items, in order, into `out`, stopping early at a control
    /// item, which is removed and returned. Only pointers move under the lock; the
    /// caller frames the bytes after it is released, so a publisher pushing to this
    /// connection meanwhile never waits on a memcpy.
    pub fn drain_data(&self, max: usize, out: &mut Vec<(Bytes, Option<Instant>)>) -> Option<Item> {
        let mut s = self.state.lock();
        let mut n = 0;
        let mut taken = 0;
        let mut control = None;
        while n < max {
            match s.queue.pop_front() {
                Some(Item::Data(bytes, accepted)) => {
                    taken += bytes.len();
                    out.push((bytes, accepted));
                    n += 1;
                }
                Some(Item::Conflated(key)) => {
                    if let Some((bytes, accepted, size)) = super::conflate::take(&mut s, &key) {
                        taken += size;
                        out.push((bytes, accepted));
                        n += 1;
                    }
                }
                Some(other) => {
                    control = Some(other);
                    break;
                }
                None => break,
            }
        }
        s.data -= n;
        s.bytes -= taken;
        let mut released = None;
        if s.queue.is_empty() {
            // Under the lock: a push after this sees an empty queue and sets it again.
            self.pending.store(false, Ordering::Release);
            // A modest capacity stays, so a busy connection does not reallocate its
            // queue under this lock on every burst (`shrink_if_idle` hands it back on
            // the ping tick); a large one, or any once closing, goes at once.
            if s.closing || s.queue.capacity() > KEEP_CAPACITY {
                released = Some(std::mem::take(&mut s.queue));
            }
        }
        drop(s);
        drop(released);
        control
    }

    /// Releases the queue's memory when it is empty; called on the connection's ping
    /// tick, so a connection that went quiet holds no queue.
    pub fn shrink_if_idle(&self) {
        let mut s = self.state.lock();
        if s.queue.is_empty() && s.queue.capacity() > 0 {
            let released = std::mem::take(&mut s.queue);
            drop(s);
            drop(released);
        }
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    pub(super) fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when items are waiting; registers the task's waker otherwise.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.pending.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(o: &Outbox, n: usize) {
        for i in 0..n {
            assert_eq!(
                o.push_data(Bytes::from(i.to_string()), None),
                Pushed::Queued
            );
        }
    }

    #[test]
    fn drain_stops_at_a_control_item_and_keeps_order() {
        let o = Outbox::new(100, usize::MAX);
        data(&o, 2);
        assert!(o.push_control(Item::Subscribe(
            ChannelName::parse("public:a").expect("valid")
        )));
        data(&o, 1);
        let mut out = Vec::new();
        let c = o.drain_data(10, &mut out);
        assert_eq!(
            out.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(),
            ["0", "1"]
        );
        assert!(matches!(c, Some(Item::Subscribe(_))), "{c:?}");
        out.clear();
        assert!(o.drain_data(10, &mut out).is_none());
        assert_eq!(out.len(), 1);
        assert!(
            !o.pending.load(Ordering::Acquire),
            "empty queue still pending"
        );
    }

    #[test]
    fn capacity_is_kept_while_small_and_released_when_large_or_idle() {
        let o = Outbox::new(1000, usize::MAX);
        let mut out = Vec::new();
        data(&o, 10);
        o.drain_data(100, &mut out);
        assert!(
            o.state.lock().queue.capacity() >= 10,
            "small queue released"
        );
        o.shrink_if_idle();
        assert_eq!(o.state.lock().queue.capacity(), 0, "idle queue kept");
        data(&o, 500);
        out.clear();
        o.drain_data(1000, &mut out);
        assert_eq!(o.state.lock().queue.capacity(), 0, "large queue kept");
    }

    #[test]
    fn overflow_releases_the_full_queue() {
        let o = Outbox::new(200, usize::MAX);
        data(&o, 200);
        assert_eq!(
            o.push_data(Bytes::from_static(b"x"), None),
            Pushed::Overflowed
        );
        assert!(o.state.lock().queue.capacity() < 200);
    }

    #[test]
    fn queued_bytes_are_bounded_but_one_big_reply_fits_an_empty_queue() {
        let o = Outbox::new(1000, 100);
        assert_eq!(
            o.push_data(Bytes::from(vec![b'x'; 500]), None),
            Pushed::Queued
        );
        let mut out = Vec::new();
        o.drain_data(10, &mut out);
        assert_eq!(
            o.push_data(Bytes::from(vec![b'x'; 60]), None),
            Pushed::Queued
        );
        assert_eq!(
            o.push_data(Bytes::from(vec![b'x'; 40]), None),
            Pushed::Queued
        );
        assert_eq!(
            o.push_data(Bytes::from_static(b"x"), None),
            Pushed::Overflowed,
            "101 bytes queued"
        );
    }

    #[test]
    fn overflow_closes_and_refuses_more() {
        let o = Outbox::new(2, usize::MAX);
        assert_eq!(o.push_data(Bytes::from_static(b"1"), None), Pushed::Queued);
        assert_eq!(o.push_data(Bytes::from_static(b"2"), None), Pushed::Queued);
        assert_eq!(
            o.push_data(Bytes::from_static(b"3"), None),
            Pushed::Overflowed
        );
        assert_eq!(o.push_data(Bytes::from_static(b"4"), None), Pushed::Closed);
        let mut out = Vec::new();
        let control = o.drain_data(100, &mut out);
        assert!(out.is_empty(), "data queued before the overflow was kept");
        assert!(matches!(
            control,
            Some(Item::Close(CloseCode::SlowConsumer, None))
        ));
    }
}
