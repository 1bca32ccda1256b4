//! The embedded broker: one node, everything in process. Publications go straight to
//! the local hub; history and presence are kept in memory with the same bounds
//! (size, TTL) and the same offsets and epochs a Redis broker gives.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Broker, BrokerError, HistoryOpts, HistoryPage, PresenceEntry, Published, Sink};
use crate::auth::random_hex;
use crate::channel::ChannelName;
use crate::protocol::Publication;

struct History {
    epoch: String,
    /// Last offset assigned.
    top: u64,
    items: VecDeque<(Instant, Arc<Publication>)>,
    last_write: Instant,
}

impl History {
    fn new(epoch: String) -> History {
        History {
            epoch,
            top: 0,
            items: VecDeque::new(),
            last_write: Instant::now(),
        }
    }

    /// Drops what is past its TTL. When everything expired the history is lost and a
    /// new epoch starts, as a Redis key expiring would do; offsets keep increasing so
    /// a node never sees one go backwards within this broker's life.
    fn expire(&mut self, opts: HistoryOpts, now: Instant) {
        if now.duration_since(self.last_write) >= opts.ttl {
            if !self.items.is_empty() || self.top > 0 {
                self.items.clear();
                self.epoch = random_hex(8);
            }
            // The new epoch itself lives one TTL, like a Redis meta key written now.
            self.last_write = now;
            return;
        }
        while self
            .items
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= opts.ttl)
        {
            self.items.pop_front();
        }
    }
}

#[derive(Default)]
struct ChannelState {
    history: Option<History>,
    presence: HashMap<String, PresenceEntry>,
}

pub struct MemoryBroker {
    /// Epoch of every channel that has never lost its history in this process. Reads
    /// of a channel nobody published to create nothing (clients cannot grow memory by
    /// asking), yet report the epoch its first publication will have.
    base_epoch: String,
    // A sync mutex held while a publication is handed to the sink: this is what keeps
    // per-channel order, and the sink never awaits.
    channels: Mutex<HashMap<ChannelName, ChannelState>>,
    sink: Arc<dyn Sink>,
}

impl MemoryBroker {
    pub fn new(sink: Arc<dyn Sink>) -> MemoryBroker {
        MemoryBroker {
            base_epoch: random_hex(8),
            channels: Mutex::new(HashMap::new()),
            sink,
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        mut p: Publication,
        history: Option<HistoryOpts>,
    ) -> Result<Published, BrokerError> {
        let ch =
            ChannelName::parse(&p.channel).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut channels = self.channels.lock();
        let mut published = Published::default();
        let stored = match history {
            Some(opts) if !p.volatile && p.to.is_none() => {
                let now = Instant::now();
                let state = channels.entry(ch).or_default();
                let h = state
                    .history
                    .get_or_insert_with(|| History::new(self.base_epoch.clone()));
                h.expire(opts, now);
                h.top += 1;
                h.last_write = now;
                p.offset = Some(h.top);
                published = Published {
                    offset: Some(h.top),
                    epoch: Some(h.epoch.clone()),
                };
                let p = Arc::new(p);
                h.items.push_back((now, p.clone()));
                while h.items.len() > opts.size {
                    h.items.pop_front();
                }
                p
            }
            _ => Arc::new(p),
        };
        self.sink.deliver(&stored);
        Ok(published)
    }

    async fn subscribe(&self, _ch: &ChannelName) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _ch: &ChannelName) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn history(
        &self,
        ch: &ChannelName,
        opts: HistoryOpts,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, BrokerError> {
        let mut channels = self.channels.lock();
        let Some(h) = channels.get_mut(ch).and_then(|s| s.history.as_mut()) else {
            return Ok(HistoryPage {
                publications: Vec::new(),
                offset: 0,
                epoch: self.base_epoch.clone(),
            });
        };
        h.expire(opts, Instant::now());
        let mut pubs: Vec<Arc<Publication>> = h
            .items
            .iter()
            .filter(|(_, p)| since.is_none_or(|s| p.offset.is_some_and(|o| o > s)))
            .map(|(_, p)| p.clone())
            .collect();
        if let Some(limit) = limit {
            if pubs.len() > limit {
                pubs.drain(..pubs.len() - limit);
            }
        }
        Ok(HistoryPage {
            publications: pubs,
            offset: h.top,
            epoch: h.epoch.clone(),
        })
    }

    async fn presence_add(
        &self,
        ch: &ChannelName,
        entry: PresenceEntry,
    ) -> Result<(), BrokerError> {
        let mut channels = self.channels.lock();
        channels
            .entry(ch.clone())
            .or_default()
            .presence
            .insert(entry.conn_id.clone(), entry);
        Ok(())
    }

    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError> {
        let mut channels = self.channels.lock();
        if let Some(state) = channels.get_mut(ch) {
            state.presence.remove(conn_id);
            if state.presence.is_empty() && state.history.is_none() {
                channels.remove(ch);
            }
        }
        Ok(())
    }

    async fn presence(&self, ch: &ChannelName) -> Result<Vec<PresenceEntry>, BrokerError> {
        let channels = self.channels.lock();
        Ok(channels
            .get(ch)
            .map(|s| s.presence.values().cloned().collect())
            .unwrap_or_default())
    }

    fn is_up(&self) -> bool {
        true
    }
}
