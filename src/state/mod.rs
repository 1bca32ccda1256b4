//! A node's replica of a state channel it has subscribers for (SPEC 16): the newest
//! publication of every key, tombstones for the keys deleted since the replica was
//! seeded, and the snapshots cut from it.
//!
//! The node seeds a replica from one full read of the broker and keeps it current
//! with the changes it delivers anyway, so subscribers arriving together cost one
//! read, not one each; and the previous version of a key, which a delta is computed
//! against, is at hand.

pub mod delta;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::broker::StateSnapshot;
use crate::protocol::{state_entries_json, Publication};

/// Tombstones kept at least, whatever `state_max_keys` is.
const MIN_TOMBSTONES: usize = 1024;

pub struct Replica {
    pub epoch: Arc<str>,
    /// The newest change applied.
    pub offset: u64,
    /// The changes after this offset are all here (tombstones included): a partial
    /// snapshot can be cut from it for a `since` at or above it.
    floor: u64,
    /// The newest version of each key, tombstones included.
    keys: HashMap<Arc<str>, Arc<Publication>>,
    /// Offset of each key's newest version → key, for snapshots in offset order.
    order: BTreeMap<u64, Arc<str>>,
    tombstones: usize,
    max_tombstones: usize,
    /// The entries of the full snapshot at `offset`, encoded when first asked.
    full: Option<Arc<RawValue>>,
}

impl Replica {
    /// A replica of a full snapshot (`s.partial` is false).
    pub fn seed(s: &StateSnapshot, max_keys: usize) -> Replica {
        let mut r = Replica {
            epoch: Arc::from(s.epoch.as_str()),
            offset: s.offset,
            floor: s.offset,
            keys: HashMap::with_capacity(s.entries.len()),
            order: BTreeMap::new(),
            tombstones: 0,
            max_tombstones: max_keys.max(MIN_TOMBSTONES),
            full: None,
        };
        for p in &s.entries {
            r.apply(p);
        }
        r.offset = s.offset;
        r
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.keys.len() - self.tombstones
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a change in; returns the key's previous live version (a delta's base).
    /// A change older than the key's version here is ignored.
    pub fn apply(&mut self, p: &Arc<Publication>) -> Option<Arc<Publication>> {
        let (Some(key), Some(offset)) = (p.key.as_ref(), p.offset) else {
            return None;
        };
        self.offset = self.offset.max(offset);
        let previous = match self.keys.get(key) {
            Some(old) if old.offset >= Some(offset) => return None,
            Some(old) => {
                let old = old.clone();
                if let Some(o) = old.offset {
                    self.order.remove(&o);
                }
                if old.deleted {
                    self.tombstones -= 1;
                }
                (!old.deleted).then_some(old)
            }
            None => None,
        };
        self.full = None;
        self.order.insert(offset, key.clone());
        self.keys.insert(key.clone(), p.clone());
        if p.deleted {
            self.tombstones += 1;
            if self.tombstones > self.max_tombstones {
                self.forget_oldest_tombstone();
            }
        }
        previous
    }

    /// Bounds the tombstones: the oldest goes, and partial snapshots no longer reach
    /// back past it.
    fn forget_oldest_tombstone(&mut self) {
        let oldest = self
            .order
            .iter()
            .find(|(_, k)| self.keys.get(*k).is_some_and(|p| p.deleted))
            .map(|(o, k)| (*o, k.clone()));
        if let Some((offset, key)) = oldest {
            self.order.remove(&offset);
            self.keys.remove(&key);
            self.tombstones -= 1;
            self.floor = self.floor.max(offset);
        }
    }

    /// Whether a partial snapshot after `since` can be cut from here.
    pub fn reaches(&self, since: u64) -> bool {
        since >= self.floor && since <= self.offset
    }

    /// Every live key, in offset order, narrowed to `keys` when given.
    pub fn full(&mut self, keys: Option<&[String]>) -> Arc<RawValue> {
        if let Some(keys) = keys {
            return self.cut(|p| !p.deleted && keys.iter().any(|k| k.as_str() == key(p)));
        }
        if let Some(f) = &self.full {
            return f.clone();
        }
        let f: Arc<RawValue> = self.cut(|p| !p.deleted);
        self.full = Some(f.clone());
        f
    }

    /// The changes after `since` (tombstones included), narrowed to `keys`.
    pub fn since(&self, since: u64, keys: Option<&[String]>) -> Arc<RawValue> {
        let pubs = self
            .order
            .range(since + 1..)
            .filter_map(|(_, k)| self.keys.get(k))
            .filter(|p| keys.is_none_or(|ks| ks.iter().any(|k| k.as_str() == key(p))));
        state_entries_json(pubs.map(|p| &**p)).into()
    }

    /// The changes after `since` from a partial read of the broker (`read`, which
    /// reaches back further than this replica), brought to this replica's offset:
    /// each key's newest version at or below it, from either; a version the read has
    /// that is newer than this replica is left out (it is on its way here, and
    /// arrives live).
    pub fn since_with(&self, read: &StateSnapshot, keys: Option<&[String]>) -> Arc<RawValue> {
        let mut merged: HashMap<&str, &Arc<Publication>> = HashMap::new();
        for p in &read.entries {
            if p.offset.is_some_and(|o| o <= self.offset) {
                merged.insert(key(p), p);
            }
        }
        // Every change here is after `floor`, so after the `since` the read answered.
        for (_, k) in self.order.range(self.floor + 1..) {
            if let Some(p) = self.keys.get(k) {
                let newer = merged.get(&**k).is_none_or(|m| m.offset < p.offset);
                if newer {
                    merged.insert(k, p);
                }
            }
        }
        let mut pubs: Vec<&Arc<Publication>> = merged
            .into_values()
            .filter(|p| keys.is_none_or(|ks| ks.iter().any(|k| k.as_str() == key(p))))
            .collect();
        pubs.sort_by_key(|p| p.offset);
        state_entries_json(pubs.into_iter().map(|p| &**p)).into()
    }

    fn cut(&self, keep: impl Fn(&Publication) -> bool) -> Arc<RawValue> {
        let pubs = self
            .order
            .values()
            .filter_map(|k| self.keys.get(k))
            .filter(|p| keep(p));
        state_entries_json(pubs.map(|p| &**p)).into()
    }

    /// The lowest offset a partial snapshot reaches back to.
    pub fn floor(&self) -> u64 {
        self.floor
    }
}

fn key(p: &Publication) -> &str {
    p.key.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests;
