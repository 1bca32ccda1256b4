//! Conflation (SPEC 16.4): per subscriber, the publications of one (channel, key)
//! go out at most once per interval. The first goes at once; later ones within the
//! interval wait in the key's slot, each replacing the one before, and the newest
//! goes when the interval ends. A slot's place in the queue is a marker, so a full
//! queue of a slow reader holds one publication per key, not a backlog: memory is
//! bounded by the subscriber's distinct pending keys, and it is closed with 4010
//! only when those do not fit in its queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::outbox::{Item, Outbox, Pushed, State};
use crate::channel::ChannelName;
use crate::protocol::Publication;

/// A conflated (channel, key); the key is `None` on a channel without state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotKey {
    channel: ChannelName,
    key: Option<Arc<str>>,
}

struct Pending {
    p: Arc<Publication>,
    /// It replaced older publications of its key.
    replaced: bool,
    /// The subscriber was subscribed when the delta's base went out.
    holds_base: bool,
    /// Bytes counted toward the queue's bound.
    size: usize,
}

struct Slot {
    pending: Option<Pending>,
    /// The slot's marker is in the queue.
    queued: bool,
    /// Until when a new publication of the key waits.
    hold_until: Instant,
    interval: Duration,
    /// Offset of the key's version sent last: a delta goes out only against it.
    sent: Option<u64>,
}

#[derive(Default)]
pub(super) struct Conflation {
    slots: HashMap<SlotKey, Slot>,
    /// The earliest `hold_until`: when the connection's task calls `release_due`.
    due: Option<Instant>,
}

impl Conflation {
    fn hold(&mut self, until: Instant) {
        self.due = Some(self.due.map_or(until, |d| d.min(until)));
    }
}

impl Outbox {
    /// Queues `p` on a conflated channel (see the module); `interval` is its
    /// namespace's `conflate`.
    pub fn push_conflated(
        &self,
        p: &Arc<Publication>,
        interval: Duration,
        holds_base: bool,
        now: Instant,
    ) -> Pushed {
        let key = SlotKey {
            channel: p.channel.clone(),
            key: p.key.clone(),
        };
        let size = p.bytes().len();
        let mut guard = self.state.lock();
        if guard.closing {
            return Pushed::Closed;
        }
        let full =
            guard.data >= self.cap || (guard.data > 0 && guard.bytes + size > self.cap_bytes);
        let State {
            queue,
            data,
            bytes,
            conflation,
            ..
        } = &mut *guard;
        let c = conflation.get_or_insert_with(Default::default);
        let pending = |replaced| Pending {
            p: p.clone(),
            replaced,
            holds_base,
            size,
        };
        if let Some(slot) = c.slots.get_mut(&key) {
            if let Some(old) = slot.pending.as_mut() {
                *bytes = *bytes + size - old.size;
                *old = pending(true);
                return Pushed::Conflated;
            }
            if now < slot.hold_until {
                if full {
                    self.overflow(guard);
                    return Pushed::Overflowed;
                }
                slot.pending = Some(pending(false));
                let until = slot.hold_until;
                c.hold(until);
                *data += 1;
                *bytes += size;
                drop(guard);
                // The task sets its timer for the interval's end on this wake-up.
                self.conflating.store(true, Ordering::Release);
                self.wake();
                return Pushed::Queued;
            }
        }
        if full {
            self.overflow(guard);
            return Pushed::Overflowed;
        }
        let until = now + interval;
        let slot = c.slots.entry(key.clone()).or_insert(Slot {
            pending: None,
            queued: false,
            hold_until: until,
            interval,
            sent: None,
        });
        slot.pending = Some(pending(false));
        slot.queued = true;
        slot.hold_until = until;
        slot.interval = interval;
        c.hold(until);
        let was_empty = queue.is_empty();
        queue.push_back(Item::Conflated(key));
        *data += 1;
        *bytes += size;
        drop(guard);
        self.conflating.store(true, Ordering::Release);
        if was_empty {
            self.wake();
        }
        Pushed::Queued
    }

    /// When the connection's task must call `release_due` next.
    pub fn next_due(&self) -> Option<Instant> {
        if !self.conflating.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().conflation.as_ref().and_then(|c| c.due)
    }

    /// Queues the publications whose interval ended, and forgets the keys that
    /// stayed quiet for one.
    pub fn release_due(&self, now: Instant) {
        let mut guard = self.state.lock();
        let State {
            queue, conflation, ..
        } = &mut *guard;
        let Some(c) = conflation.as_mut() else {
            self.conflating.store(false, Ordering::Release);
            return;
        };
        let mut released = false;
        let mut due: Option<Instant> = None;
        c.slots.retain(|key, slot| {
            if !slot.queued && slot.hold_until <= now {
                if slot.pending.is_none() {
                    return false;
                }
                queue.push_back(Item::Conflated(key.clone()));
                slot.queued = true;
                slot.hold_until = now + slot.interval;
                released = true;
            }
            due = Some(due.map_or(slot.hold_until, |d| d.min(slot.hold_until)));
            true
        });
        c.due = due;
        if c.slots.is_empty() {
            *conflation = None;
            self.conflating.store(false, Ordering::Release);
        }
        drop(guard);
        if released {
            self.wake();
        }
    }
}

/// The bytes to send where a slot's marker was reached: the newest publication of
/// the key, marked `conflated` when it replaced others, as a delta only against the
/// version this subscriber was sent last. Returns them with the acceptance time and
/// the size counted for them.
pub(super) fn take(s: &mut State, key: &SlotKey) -> Option<(Bytes, Option<Instant>, usize)> {
    let slot = s.conflation.as_mut()?.slots.get_mut(key)?;
    slot.queued = false;
    let pending = slot.pending.take()?;
    let p = &pending.p;
    let base = p.delta.get().and_then(Option::as_ref).map(|d| d.base);
    let bytes = if pending.replaced {
        p.conflated_bytes().clone()
    } else {
        match p.delta_bytes() {
            Some(d) if pending.holds_base && base.is_some() && slot.sent == base => d.clone(),
            _ => p.bytes().clone(),
        }
    };
    slot.sent = p.offset;
    Some((bytes, Some(p.accepted), pending.size))
}

#[cfg(test)]
mod tests;
