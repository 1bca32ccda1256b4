//! A channel's numbers and history in memory: the epoch, the newest offset, and the
//! kept publications with their TTL (SPEC 5.2).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::random_hex;
use crate::protocol::Publication;

use super::META_GRACE;

pub(super) struct History {
    pub(super) epoch: Arc<str>,
    /// Last offset assigned.
    pub(super) top: u64,
    pub(super) items: VecDeque<(Instant, Arc<Publication>)>,
    pub(super) ttl: Duration,
    /// When the last publication was stored.
    pub(super) touched: Instant,
}

impl History {
    /// Drops what is past its TTL. Offsets and the epoch stay (for `META_GRACE`): a
    /// client whose gap expired learns `recovered: false` from the missing offsets,
    /// and subscribers that were live all along are not disturbed.
    pub(super) fn expire(&mut self, now: Instant) {
        while self
            .items
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= self.ttl)
        {
            self.items.pop_front();
        }
    }

    pub(super) fn forgotten(&self, now: Instant) -> bool {
        self.items.is_empty() && now.duration_since(self.touched) >= self.ttl + META_GRACE
    }
}

impl History {
    pub(super) fn new(ttl: Duration, now: Instant) -> History {
        History {
            epoch: Arc::from(random_hex(8)),
            top: 0,
            items: VecDeque::new(),
            ttl,
            touched: now,
        }
    }
}
