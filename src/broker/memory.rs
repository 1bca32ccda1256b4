//! The embedded broker: one node, everything in process. Publications go straight to
//! the local hub; history and presence are kept in memory with the same bounds
//! (size, TTL) and the same offsets and epochs a Redis broker gives.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    Broker, BrokerError, Control, HistoryOpts, HistoryPage, NodeReport, PresenceEntry, Published,
    Sink,
};
use crate::channel::ChannelName;
use crate::ids::random_hex;
use crate::protocol::Publication;

struct History {
    epoch: String,
    /// Last offset assigned.
    top: u64,
    items: VecDeque<(Instant, Arc<Publication>)>,
}

impl History {
    fn new(epoch: String) -> History {
        History {
            epoch,
            top: 0,
            items: VecDeque::new(),
        }
    }

    /// Drops what is past its TTL. Offsets and the epoch stay: a client whose gap
    /// expired learns `recovered: false` from the missing offsets, and subscribers
    /// that were live all along are not disturbed (the epoch changes only when the
    /// history itself is lost, i.e. with this process).
    fn expire(&mut self, opts: HistoryOpts, now: Instant) {
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
                p.offset = Some(h.top);
                p.epoch = Some(Arc::from(h.epoch.as_str()));
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
        // In-process delivery is always contiguous: no gap or epoch change can occur.
        let _ = self.sink.deliver(&stored);
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

    async fn user_connected(&self, user: &str, conn_id: &str) -> Result<Vec<String>, BrokerError> {
        let mut ids = self.user_connections(user).await?;
        if !ids.iter().any(|c| c == conn_id) {
            ids.push(conn_id.to_owned());
        }
        Ok(ids)
    }

    async fn user_connections(&self, user: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.sink.user_connections(user))
    }

    /// The hub forgets connections itself when they end.
    async fn user_disconnected(&self, _user: &str, _conn_id: &str) {}

    async fn control(&self, cmd: Control) -> Result<(), BrokerError> {
        self.sink.execute(&cmd);
        Ok(())
    }

    /// One node has no upstream consumers: there is nothing to forward to.
    async fn forward(&self, _p: &Publication, _conn_id: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn report(&self, _report: &NodeReport) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        Ok(Vec::new())
    }

    async fn deregister(&self) {}

    fn is_up(&self) -> bool {
        true
    }
}
