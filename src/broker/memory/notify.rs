//! Notification state in memory (SPEC 15): read positions, receipts and fallbacks
//! with the same rules the Redis functions apply, for one node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;

use super::MemoryBroker;
use crate::broker::notify::{Fallback, Notify, ReadMoved, Receipts, Received};
use crate::broker::BrokerError;
use crate::channel::ChannelName;
use crate::config::EventKind;
use crate::ids::ConnId;

#[derive(Default)]
pub(super) struct NotifyState {
    /// who → channel → (read position, when it is forgotten).
    reads: HashMap<String, HashMap<ChannelName, (u64, Instant)>>,
    /// channel → (when forgotten, offset → who confirmed it).
    receipts: HashMap<ChannelName, (Instant, BTreeMap<u64, HashSet<String>>)>,
    /// Pending fallbacks by due time, and their details.
    due: BTreeSet<(Instant, ChannelName, u64)>,
    pending: HashMap<(ChannelName, u64), (Instant, Fallback)>,
}

impl NotifyState {
    /// Confirms pending fallbacks of `ch` at the offsets `which` says; returns how many.
    fn confirm(&mut self, ch: &ChannelName, which: impl Fn(u64) -> bool) -> usize {
        let keys: Vec<(ChannelName, u64)> = self
            .pending
            .keys()
            .filter(|(c, o)| c == ch && which(*o))
            .cloned()
            .collect();
        for k in &keys {
            if let Some((at, _)) = self.pending.remove(k) {
                self.due.remove(&(at, k.0.clone(), k.1));
            }
        }
        keys.len()
    }

    /// Forgets expired read positions and receipts (the sweeper, once a second).
    pub(super) fn sweep(&mut self, now: Instant) {
        self.reads.retain(|_, chans| {
            chans.retain(|_, (_, until)| *until > now);
            !chans.is_empty()
        });
        self.receipts.retain(|_, (until, _)| *until > now);
    }
}

#[async_trait]
impl Notify for MemoryBroker {
    async fn read_positions(
        &self,
        who: &str,
        channels: &[ChannelName],
    ) -> Result<Vec<u64>, BrokerError> {
        let now = Instant::now();
        let n = self.notify.lock();
        let mine = n.reads.get(who);
        Ok(channels
            .iter()
            .map(|ch| {
                mine.and_then(|m| m.get(ch))
                    .filter(|(_, until)| *until > now)
                    .map_or(0, |(p, _)| *p)
            })
            .collect())
    }

    async fn read_channels(
        &self,
        who: &str,
        limit: usize,
    ) -> Result<Vec<(ChannelName, u64)>, BrokerError> {
        let now = Instant::now();
        let n = self.notify.lock();
        let mut out: Vec<(ChannelName, u64)> = n
            .reads
            .get(who)
            .map(|m| {
                m.iter()
                    .filter(|(_, (_, until))| *until > now)
                    .map(|(ch, (p, _))| (ch.clone(), *p))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.truncate(limit);
        Ok(out)
    }

    async fn mark_read(
        &self,
        who: &str,
        ch: &ChannelName,
        offset: u64,
        ttl: Duration,
        conn: ConnId,
    ) -> Result<ReadMoved, BrokerError> {
        let now = Instant::now();
        let mut n = self.notify.lock();
        let slot = n
            .reads
            .entry(who.to_owned())
            .or_default()
            .entry(ch.clone())
            .or_insert((0, now));
        if slot.1 <= now {
            slot.0 = 0;
        }
        if offset <= slot.0 {
            let position = slot.0;
            return Ok(ReadMoved {
                position,
                moved: false,
                confirmed: 0,
            });
        }
        *slot = (offset, now + ttl);
        let confirmed = n.confirm(ch, |o| o <= offset);
        drop(n);
        self.emit(EventKind::Read, |e| {
            e.channel(ch.as_str())
                .who(who)
                .conn(&conn.to_string())
                .data(json!({ "read_offset": offset }))
        });
        Ok(ReadMoved {
            position: offset,
            moved: true,
            confirmed,
        })
    }

    async fn received(&self, r: Receipts<'_>) -> Result<Received, BrokerError> {
        let now = Instant::now();
        let mut n = self.notify.lock();
        let (until, seen) = n
            .receipts
            .entry(r.channel.clone())
            .or_insert_with(|| (now, BTreeMap::new()));
        *until = now + r.keep;
        let mut new = Vec::new();
        for &o in r.offsets {
            if seen.entry(o).or_default().insert(r.who.to_owned()) {
                new.push(o);
            }
        }
        // Receipts of publications no longer in history are forgotten.
        *seen = seen.split_off(&(r.floor + 1));
        let confirmed = n.confirm(r.channel, |o| r.offsets.contains(&o));
        drop(n);
        for &o in &new {
            self.emit(EventKind::Received, |e| {
                e.channel(r.channel.as_str())
                    .who(r.who)
                    .conn(&r.conn.to_string())
                    .data(json!({ "offset": o }))
            });
        }
        Ok(Received { new, confirmed })
    }

    async fn schedule_fallback(&self, f: Fallback) -> Result<(), BrokerError> {
        let mut n = self.notify.lock();
        let key = (f.channel.clone(), f.offset);
        let confirmed = n
            .receipts
            .get(&f.channel)
            .is_some_and(|(_, seen)| seen.get(&f.offset).is_some_and(|w| !w.is_empty()));
        if confirmed || n.pending.contains_key(&key) {
            return Ok(());
        }
        let at = Instant::now() + f.after;
        n.due.insert((at, f.channel.clone(), f.offset));
        n.pending.insert(key, (at, f));
        Ok(())
    }

    async fn fire_fallbacks(&self, max: usize) -> Result<usize, BrokerError> {
        let now = Instant::now();
        let mut fired = Vec::new();
        {
            let mut n = self.notify.lock();
            while fired.len() < max {
                let Some(first) = n.due.first().cloned() else {
                    break;
                };
                if first.0 > now {
                    break;
                }
                n.due.remove(&first);
                if let Some((_, f)) = n.pending.remove(&(first.1, first.2)) {
                    fired.push(f);
                }
            }
        }
        let count = fired.len();
        for f in fired {
            let data = serde_json::from_str(f.data.get()).unwrap_or_default();
            self.emit(EventKind::Undelivered, |e| {
                e.channel(f.channel.as_str()).who(&f.who).data(data)
            });
        }
        Ok(count)
    }
}
