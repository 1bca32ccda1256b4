//! State channels in memory (SPEC 16.1–16.2): the newest publication of every key,
//! tombstones for deleted and expired keys, and snapshots, with the same offsets,
//! floors and limits the Redis functions give.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{BrokerError, Sink, StateOpts, StateSnapshot};
use crate::ids::random_hex;
use crate::protocol::{raw_null, Publication};

use super::history::History;

/// How long a tombstone is remembered at most.
const TOMBSTONE: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
pub(super) struct StateStore {
    live: HashMap<Arc<str>, Arc<Publication>>,
    /// Tombstones and when they go.
    tombs: HashMap<Arc<str>, (Arc<Publication>, Instant)>,
    /// When a live key expires (keys of a namespace with a `state_ttl`).
    expires: HashMap<Arc<str>, Instant>,
    /// Offset → key of its newest change, live and tombstones.
    index: BTreeMap<u64, Arc<str>>,
    /// Tombstones at or below this offset may be gone.
    floor: u64,
}

impl StateStore {
    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty() && self.tombs.is_empty()
    }

    /// Stores `p` (which has its key) under the next offset of `h`, and hands it on.
    pub(super) fn change(
        &mut self,
        h: &mut History,
        mut p: Publication,
        opts: StateOpts,
        now: Instant,
        sink: &dyn Sink,
    ) -> Result<Arc<Publication>, BrokerError> {
        let Some(key) = p.key.clone() else {
            return Err(BrokerError::Refused(
                "a state channel publication needs a \"key\"".into(),
            ));
        };
        if !p.deleted && !self.live.contains_key(&key) && self.live.len() >= opts.max_keys {
            return Err(BrokerError::Limit(format!(
                "the channel already holds state_max_keys ({}) keys",
                opts.max_keys
            )));
        }
        h.top += 1;
        h.touched = now;
        p.offset = Some(h.top);
        p.epoch = Some(h.epoch.clone());
        p.entry_id = Some(Arc::from(random_hex(6)));
        let p = Arc::new(p);
        self.index.retain(|_, k| *k != key);
        self.index.insert(h.top, key.clone());
        if p.deleted {
            self.live.remove(&key);
            self.expires.remove(&key);
            let keep = if opts.ttl.is_zero() {
                TOMBSTONE
            } else {
                opts.ttl.min(TOMBSTONE)
            };
            self.tombs.insert(key, (p.clone(), now + keep));
        } else {
            self.tombs.remove(&key);
            if opts.ttl.is_zero() {
                self.expires.remove(&key);
            } else {
                self.expires.insert(key.clone(), now + opts.ttl);
            }
            self.live.insert(key, p.clone());
        }
        let _ = sink.deliver(&p);
        Ok(p)
    }

    /// Live keys past their `state_ttl` become tombstones (delivered, so subscribers
    /// drop them); tombstones past their time go and raise the floor.
    pub(super) fn expire(
        &mut self,
        h: &mut History,
        opts: StateOpts,
        now: Instant,
        sink: &dyn Sink,
    ) {
        let due: Vec<Arc<str>> = self
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(last) = self.live.get(&key).cloned() else {
                self.expires.remove(&key);
                continue;
            };
            let mut tomb = Publication::new(last.channel.clone(), last.event.clone(), raw_null());
            tomb.key = Some(key);
            tomb.deleted = true;
            let _ = self.change(h, tomb, opts, now, sink);
        }
        let gone: Vec<Arc<str>> = self
            .tombs
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some((p, _)) = self.tombs.remove(&key) {
                let offset = p.offset.unwrap_or(0);
                self.index.remove(&offset);
                self.floor = self.floor.max(offset);
            }
        }
    }

    /// Every live key, or the changes after `since` when the tombstones reach back
    /// that far; `keys` narrows either.
    pub(super) fn snapshot(
        &self,
        h: &History,
        since: Option<u64>,
        keys: Option<&[String]>,
    ) -> StateSnapshot {
        let partial = since.is_some_and(|s| s >= self.floor && s <= h.top);
        let wanted = |k: &str| keys.is_none_or(|ks| ks.iter().any(|w| w == k));
        let from = if partial { since.unwrap_or(0) + 1 } else { 0 };
        let entries = self
            .index
            .range(from..)
            .filter(|(_, k)| wanted(k))
            .filter_map(|(_, k)| {
                self.live.get(k).cloned().or_else(|| {
                    partial
                        .then(|| self.tombs.get(k).map(|(p, _)| p.clone()))
                        .flatten()
                })
            })
            .collect();
        StateSnapshot {
            epoch: h.epoch.to_string(),
            offset: h.top,
            floor: self.floor,
            partial,
            entries,
        }
    }
}
