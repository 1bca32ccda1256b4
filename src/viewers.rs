//! `presence_count` pushes (SPEC 16.5): for each counted channel with subscribers
//! here, the node reads the audience (O(nodes) in the broker) at most once per
//! `presence_push_interval` and pushes it to its subscribers when it changed, so
//! 100,000 viewers cause no join or leave traffic, only a count per interval.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::channel::ChannelName;
use crate::hub::ConnHandle;
use crate::node::Node;
use crate::protocol::{PresenceCount, ServerMessage};

/// How often the task looks for channels due.
const TICK: Duration = Duration::from_millis(50);
/// Channels read at once.
const READS_AT_ONCE: usize = 16;

struct Slot {
    interval: Duration,
    /// What was pushed last.
    last: Option<(usize, usize)>,
    read_at: Option<Instant>,
}

/// The counted channels of this node and what was pushed for each.
#[derive(Default)]
pub struct Viewers {
    slots: Mutex<HashMap<ChannelName, Slot>>,
}

/// What the task does for one channel now, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Wait,
    Read,
}

/// A channel is read when it never was, or once its interval passed.
pub fn due(read_at: Option<Instant>, interval: Duration, now: Instant) -> Due {
    match read_at {
        Some(at) if now < at + interval => Due::Wait,
        _ => Due::Read,
    }
}

/// Whether a read is pushed: when it differs from what was pushed last.
pub fn changed(last: Option<(usize, usize)>, now: (usize, usize)) -> bool {
    last != Some(now)
}

impl Viewers {
    /// A subscriber of a counted channel arrived: it gets the count pushed last at
    /// once (its own arrival shows in the next push), and the channel is watched.
    pub fn subscribed(&self, ch: &ChannelName, interval: Duration, conn: &ConnHandle) {
        let mut slots = self.slots.lock();
        let slot = slots.entry(ch.clone()).or_insert(Slot {
            interval,
            last: None,
            read_at: None,
        });
        if let Some((count, users)) = slot.last {
            let body = PresenceCount {
                channel: ch.to_string(),
                count,
                users,
            };
            conn.outbox
                .push_data(ServerMessage::PresenceCount(&body).to_bytes(None), None);
        }
    }

    fn due_now(&self, now: Instant) -> Vec<ChannelName> {
        self.slots
            .lock()
            .iter()
            .filter(|(_, s)| due(s.read_at, s.interval, now) == Due::Read)
            .map(|(ch, _)| ch.clone())
            .collect()
    }
}

/// Reads the due channels and pushes what changed; forgets channels without local
/// subscribers.
pub async fn run(node: Weak<Node>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(node) = node.upgrade() else { return };
        let now = Instant::now();
        let due = node.viewers.due_now(now);
        if due.is_empty() {
            continue;
        }
        futures_util::stream::iter(due)
            .for_each_concurrent(READS_AT_ONCE, |ch| {
                let node = node.clone();
                async move { read_and_push(&node, &ch, now).await }
            })
            .await;
    }
}

async fn read_and_push(node: &Arc<Node>, ch: &ChannelName, now: Instant) {
    let subscribers = node.hub.subscribers(ch);
    if subscribers.is_empty() {
        node.viewers.slots.lock().remove(ch);
        return;
    }
    let Ok(set) = node.brokers.presence.counts(ch, 0).await else {
        // Tried again at the next interval.
        if let Some(s) = node.viewers.slots.lock().get_mut(ch) {
            s.read_at = Some(now);
        }
        return;
    };
    let read = (set.count, set.users);
    {
        let mut slots = node.viewers.slots.lock();
        let Some(slot) = slots.get_mut(ch) else {
            return;
        };
        slot.read_at = Some(now);
        if !changed(slot.last, read) {
            return;
        }
        slot.last = Some(read);
    }
    let body = PresenceCount {
        channel: ch.to_string(),
        count: read.0,
        users: read.1,
    };
    let bytes = ServerMessage::PresenceCount(&body).to_bytes(None);
    for conn in subscribers {
        conn.outbox.push_data(bytes.clone(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_once_per_interval_and_push_only_changes() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(1);
        assert_eq!(due(None, iv, t0), Due::Read, "never read");
        assert_eq!(due(Some(t0), iv, t0 + iv / 2), Due::Wait);
        assert_eq!(due(Some(t0), iv, t0 + iv), Due::Read);
        assert!(changed(None, (0, 0)), "the first read is pushed");
        assert!(!changed(Some((3, 2)), (3, 2)));
        assert!(changed(Some((3, 2)), (3, 3)));
    }
}
