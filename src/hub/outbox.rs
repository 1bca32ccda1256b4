//! The bounded send queue of one connection. Publishers push shared bytes without
//! waiting; the connection's task drains it into the socket. Overflow marks the
//! connection a slow consumer (close 4010) and never blocks the publisher.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

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
}

/// Result of pushing data.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// This push overflowed the queue: the connection is now closing with 4010.
    Overflowed,
    /// The connection is already closing; nothing more is queued for it.
    Closed,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    /// Data items in `queue` (control items do not count toward the bound).
    data: usize,
    closing: bool,
}

pub struct Outbox {
    // A plain mutex: every critical section is a push or a drain of a few pointers,
    // never held across an await, and far cheaper than an async lock per delivery.
    state: Mutex<State>,
    notify: Notify,
    cap: usize,
}

/// Above this many idle slots the queue's memory is handed back after a drain.
const KEEP_CAPACITY: usize = 4;

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            cap,
        }
    }

    pub fn push_data(&self, bytes: Bytes, accepted: Option<Instant>) -> Pushed {
        let mut s = self.state.lock();
        if s.closing {
            return Pushed::Closed;
        }
        if s.data >= self.cap {
            s.closing = true;
            s.queue.clear();
            s.data = 0;
            s.queue
                .push_back(Item::Close(CloseCode::SlowConsumer, None));
            drop(s);
            self.notify.notify_one();
            return Pushed::Overflowed;
        }
        let was_empty = s.queue.is_empty();
        s.queue.push_back(Item::Data(bytes, accepted));
        s.data += 1;
        drop(s);
        // The task drains everything it finds, so only the first item needs a wake-up.
        if was_empty {
            self.notify.notify_one();
        }
        Pushed::Queued
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
        self.notify.notify_one();
        true
    }

    /// Moves up to `max` items into `out`.
    pub fn drain(&self, out: &mut Vec<Item>, max: usize) {
        let mut s = self.state.lock();
        let n = s.queue.len().min(max);
        let before = out.len();
        out.extend(s.queue.drain(..n));
        let data = out[before..]
            .iter()
            .filter(|i| matches!(i, Item::Data(..)))
            .count();
        s.data -= data;
        if s.queue.is_empty() && s.queue.capacity() > KEEP_CAPACITY {
            s.queue = VecDeque::new();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_and_refuses_more() {
        let o = Outbox::new(2);
        assert_eq!(o.push_data(Bytes::from_static(b"1"), None), Pushed::Queued);
        assert_eq!(o.push_data(Bytes::from_static(b"2"), None), Pushed::Queued);
        assert_eq!(
            o.push_data(Bytes::from_static(b"3"), None),
            Pushed::Overflowed
        );
        assert_eq!(o.push_data(Bytes::from_static(b"4"), None), Pushed::Closed);
        let mut out = Vec::new();
        o.drain(&mut out, 100);
        assert!(matches!(
            out.as_slice(),
            [Item::Close(CloseCode::SlowConsumer, None)]
        ));
    }
}
