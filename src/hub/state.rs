//! State channels in the hub (SPEC 16.2–16.3): the channel's replica is seeded from
//! one broker read and moves with every delivered change, under the same lock as the
//! delivery position; a subscriber's snapshot is cut from it under the shard lock, so
//! it is followed by exactly the changes after the snapshot's offset. Deltas are
//! computed here, once per publication.

use std::sync::Arc;

use super::{Hub, Sub, Track};
use crate::broker::{StateOpts, StateSnapshot};
use crate::channel::ChannelName;
use crate::hub::ConnHandle;
use crate::position::Position;
use crate::protocol::{Delta, Publication, Snapshot, Subscribed};
use crate::state::{delta, Replica};

/// What a subscriber of a state channel asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateWant<'a> {
    /// The position it holds (`since`): offset and epoch.
    pub since: Option<(u64, &'a str)>,
    /// Narrows the snapshot to these keys.
    pub keys: Option<&'a [String]>,
}

/// The replica cannot answer a subscriber alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedRead {
    /// There is none yet: seed it (`seed_state`).
    Full,
    /// The subscriber's `since` is older than the replica reaches: read the changes
    /// after it from the broker and attach again with that read.
    Since(u64),
}

/// Deliveries went past a snapshot read to seed a replica: read the changes after
/// the snapshot and try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind;

impl Hub {
    /// Takes a delivered change into the channel's replica and, on a delta channel,
    /// sets the publication's delta against the key's previous version.
    pub(super) fn replicate(
        &self,
        track: &mut Track,
        opts: super::ChannelOpts,
        p: &Arc<Publication>,
    ) {
        let Some(r) = track.replica.as_mut() else {
            return;
        };
        if p.key.is_none() {
            return;
        }
        let before = r.len();
        let previous = r.apply(p);
        self.count_keys(before, r.len());
        if opts.delta && !p.deleted {
            p.delta.get_or_init(|| {
                let prev = previous?;
                let patch = delta::smaller_patch(&prev.payload, &p.payload)?;
                Some(Delta {
                    base: prev.offset?,
                    patch,
                })
            });
        }
    }

    pub(super) fn forget_replica(&self, track: &mut Track) {
        if let Some(r) = track.replica.take() {
            self.count_keys(r.len(), 0);
        }
    }

    fn count_keys(&self, before: usize, after: usize) {
        if after > before {
            self.metrics.state_keys.increment((after - before) as f64);
        } else if before > after {
            self.metrics.state_keys.decrement((before - after) as f64);
        }
    }

    /// Whether the channel has a replica.
    pub fn has_replica(&self, ch: &ChannelName) -> bool {
        let shard = self.shard(ch.as_str()).read();
        shard
            .get(ch)
            .is_some_and(|e| e.track.lock().replica.is_some())
    }

    /// Seeds the channel's replica from a full read (a replica already there stays).
    pub fn seed_state(&self, ch: &ChannelName, read: &StateSnapshot) -> Result<(), Behind> {
        let shard = self.shard(ch.as_str()).read();
        let Some(entry) = shard.get(ch) else {
            return Ok(());
        };
        let Some(opts) = entry.opts.state else {
            return Ok(());
        };
        let mut track = entry.track.lock();
        if track.replica.is_some() || read.partial {
            return Ok(());
        }
        let same = track
            .position
            .epoch
            .as_deref()
            .is_none_or(|e| e == read.epoch);
        if same && track.position.offset > read.offset {
            return Err(Behind);
        }
        let replica = Replica::seed(read, opts.max_keys);
        self.count_keys(0, replica.len());
        track.replica = Some(replica);
        track.position = Position::new(&read.epoch, read.offset, None);
        Ok(())
    }

    /// Attaches a subscriber to a state channel with its snapshot cut from the
    /// replica (merged with `read`, the broker's changes after an older `since`).
    /// `emit` queues the `subscribed` and `snapshot` frames; it runs under the lock,
    /// so they precede every live change.
    pub fn attach_state(
        &self,
        ch: &ChannelName,
        conn: &Arc<ConnHandle>,
        want: StateWant<'_>,
        read: Option<&StateSnapshot>,
        emit: impl FnOnce(&Subscribed, &Snapshot),
    ) -> Result<Subscribed, NeedRead> {
        let mut shard = self.shard(ch.as_str()).write();
        let Some(entry) = shard.get_mut(ch) else {
            return Err(NeedRead::Full);
        };
        let mut track = entry.track.lock();
        let offset = track.position.offset;
        let Some(r) = track.replica.as_mut() else {
            return Err(NeedRead::Full);
        };
        let epoch = r.epoch.clone();
        // `since` of this epoch, above 0, and not past the newest (a rollback). On a
        // conflated channel a client's highest offset does not say what it holds (a
        // key's newest version may have been waiting in its interval when it went):
        // it always gets everything.
        let conflated = entry.opts.conflate.is_some();
        let partial_from = want
            .since
            .filter(|_| !conflated)
            .filter(|(s, e)| *e == &*epoch && *s > 0 && *s <= r.offset)
            .map(|(s, _)| s);
        let (entries, full) = match partial_from {
            Some(s) if r.reaches(s) => (r.since(s, want.keys), false),
            Some(s) => match read {
                Some(read) if read.partial && *read.epoch == *epoch && read.offset >= r.floor() => {
                    (r.since_with(read, want.keys), false)
                }
                _ => return Err(NeedRead::Since(s)),
            },
            None => (r.full(want.keys), true),
        };
        drop(track);
        let subscribed = Subscribed {
            channel: ch.to_string(),
            offset: Some(offset),
            epoch: Some(epoch.to_string()),
            recovered: want.since.map(|_| !full),
            ..Subscribed::default()
        };
        let snapshot = Snapshot {
            channel: ch.to_string(),
            offset,
            epoch: epoch.to_string(),
            full: Some(full),
            entries,
        };
        emit(&subscribed, &snapshot);
        entry.numbered = true;
        self.insert_sub(
            entry,
            Sub {
                conn: conn.clone(),
                skip_until: offset,
            },
        );
        Ok(subscribed)
    }

    /// The channel's live keys from its replica (`state`, `GET /api/state`); `None`
    /// when this node holds none.
    pub fn state_view(&self, ch: &ChannelName, keys: Option<&[String]>) -> Option<Snapshot> {
        let shard = self.shard(ch.as_str()).read();
        let entry = shard.get(ch)?;
        let mut track = entry.track.lock();
        let offset = track.position.offset;
        let r = track.replica.as_mut()?;
        Some(Snapshot {
            channel: ch.to_string(),
            offset,
            epoch: r.epoch.to_string(),
            full: None,
            entries: r.full(keys),
        })
    }

    /// After an interruption of the broker path: delivers the newest version of every
    /// key changed after the position, in offset order (intermediate versions are
    /// skipped, never the newest), and moves the position to the read's.
    pub fn catch_up(&self, ch: &ChannelName, changes: &StateSnapshot) -> bool {
        let shard = self.shard(ch.as_str()).read();
        let Some(entry) = shard.get(ch) else {
            return true;
        };
        let mut track = entry.track.lock();
        let from = track.position.offset;
        let same = track
            .position
            .epoch
            .as_deref()
            .is_none_or(|e| e == changes.epoch);
        if !changes.partial || !same {
            return false;
        }
        for p in changes.entries.iter().filter(|p| p.offset > Some(from)) {
            if let Some(r) = track.replica.as_mut() {
                let before = r.len();
                r.apply(p);
                self.count_keys(before, r.len());
            }
            self.fan_out(entry, p, false);
        }
        if changes.offset > from {
            track.position = Position::new(&changes.epoch, changes.offset, None);
            if let Some(r) = track.replica.as_mut() {
                r.offset = changes.offset;
            }
        }
        true
    }

    /// Local state channels whose keys expire, with their settings and position.
    pub fn expiring_state(&self) -> Vec<(ChannelName, StateOpts, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (ch, e) in shard.read().iter() {
                if let Some(opts) = e.opts.state.filter(|o| !o.ttl.is_zero()) {
                    out.push((ch.clone(), opts, e.track.lock().position.offset));
                }
            }
        }
        out
    }
}
