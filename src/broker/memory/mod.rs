//! The embedded broker: one node, everything in process. Publications go straight to
//! the sink; history, presence and the per-user registry are kept in memory with the
//! same bounds (size, TTL), offsets, epochs and entry ids the Redis broker gives.
//! Channels are spread over locked shards, so publishing on one channel never waits
//! for another; a sweeper frees what expired on channels nobody touches again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use self::cluster::Conns;
use self::history::History;
use self::state::StateStore;
use super::{
    Broker, BrokerError, HistoryOpts, HistoryPage, Presence, PresenceEntry, PresenceSet,
    PublishOpts, Published, Sink, StateOpts, StateSnapshot, SubscribeOpts,
};
use crate::channel::ChannelName;
use crate::config::{Config, EventKind, EventsConfig};
use crate::events::{Event, Log};
use crate::ids::random_hex;
use crate::protocol::Publication;

/// How long a channel's epoch and newest offset outlive its publications, as the
/// Redis broker's meta key does: an idle channel keeps its offsets for a day.
const META_GRACE: Duration = Duration::from_secs(24 * 3600);
const SHARDS: usize = 64;
/// Events kept in process when no webhook reads them.
const EVENTS_WITHOUT_WEBHOOKS: usize = 1024;
/// How often the sweeper looks for expired history.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct ChannelState {
    /// The epoch and newest offset (and kept publications on history channels).
    history: Option<History>,
    state: Option<StateStore>,
    /// The namespace's state settings, for expiring keys in the sweeper.
    state_opts: Option<StateOpts>,
    presence: HashMap<String, PresenceEntry>,
}

impl ChannelState {
    fn is_empty(&self) -> bool {
        self.history.is_none() && self.state.is_none() && self.presence.is_empty()
    }
}

#[derive(Default)]
struct ShardState {
    channels: HashMap<ChannelName, ChannelState>,
    /// Channels the node has subscribers of (one node: occupied). A set of its own,
    /// so a channel without history or presence costs a name, not a state.
    occupied: HashSet<ChannelName>,
}

type Shard = Mutex<ShardState>;

pub struct MemoryBroker {
    // Sync mutexes, one per shard of channels: a publication is handed to the sink
    // under its shard's lock, which is what keeps per-channel order (the sink never
    // awaits), and publications on other shards go on meanwhile.
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    /// Connections per user (or session) key, in registration order.
    users: Mutex<HashMap<Box<str>, Conns>>,
    /// Idempotency keys per channel: the first result and when it is forgotten.
    // Its own lock: looked up before the shard's, and swept by time.
    idempotency: Mutex<HashMap<(ChannelName, String), (Instant, Published)>>,
    sink: Arc<dyn Sink>,
    node_id: String,
    emit: EventsConfig,
    /// The events this broker emitted, for webhooks.
    pub events: Arc<Log>,
    /// Events a webhook gave up on (`<prefix>:events:dead` in Redis).
    pub dead: Log,
    /// Webhook consumer groups: the newest event each acknowledged.
    groups: Mutex<HashMap<String, u64>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Revocations: user → (before, until), Unix seconds.
    revoked: Mutex<HashMap<String, (u64, u64)>>,
    /// Counting presence: one node, so its own counts are the answer.
    counts: super::counts::LocalCounts,
    /// Read positions, receipts and fallbacks (SPEC 15).
    notify: Mutex<notify::NotifyState>,
}

impl MemoryBroker {
    pub fn new(
        config: &Config,
        sink: Arc<dyn Sink>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<MemoryBroker> {
        let broker = Arc::new(MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            users: Mutex::new(HashMap::new()),
            idempotency: Mutex::new(HashMap::new()),
            sink,
            node_id: config.node_id.clone(),
            emit: config.events.clone(),
            // Kept for webhooks; without any, only the newest few (for inspection and
            // tests): nobody reads them, and they would cost memory per connection.
            events: Arc::new(Log::new(if config.webhooks.is_empty() {
                EVENTS_WITHOUT_WEBHOOKS
            } else {
                config.events.maxlen
            })),
            counts: super::counts::LocalCounts::local_only(),
            dead: Log::new(config.events.maxlen),
            metrics,
            revoked: Mutex::default(),
            groups: Mutex::default(),
            notify: Mutex::default(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&broker)));
        }
        broker
    }

    fn emit(&self, kind: EventKind, e: impl FnOnce(Event) -> Event) {
        if self.emit.emits(kind) {
            self.metrics.event(kind, 1);
            self.events
                .append(e(Event::new(kind, &self.node_id, serde_json::json!({}))));
        }
    }

    fn shard(&self, ch: &ChannelName) -> &Shard {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(ch.as_str()) as usize) % SHARDS]
    }

    /// Frees expired publications, and channels whose history is forgotten and that
    /// hold no presence. Returns how many channels are left (for tests).
    pub fn sweep_now(&self, now: Instant) -> usize {
        let mut left = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let ShardState { channels, occupied } = &mut *shard;
            channels.retain(|ch, state| {
                if let (Some(store), Some(h), Some(opts)) =
                    (&mut state.state, &mut state.history, state.state_opts)
                {
                    store.expire(h, opts, now, &*self.sink);
                }
                if let Some(h) = &mut state.history {
                    h.expire(now);
                    // Kept while subscribed, or while it holds state: its offsets stay
                    // valid.
                    let holds = state.state.as_ref().is_some_and(|s| !s.is_empty());
                    if h.forgotten(now) && !occupied.contains(ch) && !holds {
                        state.history = None;
                        state.state = None;
                    }
                }
                !state.is_empty()
            });
            left += channels.len();
        }
        self.idempotency.lock().retain(|_, (until, _)| *until > now);
        left
    }
}

/// Runs `sweep_now` every second while the broker lives.
async fn sweep(broker: Weak<MemoryBroker>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        let now = Instant::now();
        b.sweep_now(now);
        b.notify.lock().sweep(now);
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        mut p: Publication,
        opts: &PublishOpts,
    ) -> Result<Published, BrokerError> {
        // The key is held from the look-up to the publish, so two callers with one
        // key cannot both publish (SPEC 6).
        let mut seen = opts.idempotency.as_ref().map(|_| self.idempotency.lock());
        if let (Some(seen), Some((key, _))) = (&seen, &opts.idempotency) {
            if let Some((until, first)) = seen.get(&(p.channel.clone(), key.clone())) {
                if *until > Instant::now() {
                    return Ok(Published {
                        duplicate: true,
                        ..first.clone()
                    });
                }
            }
        }
        let channel = p.channel.clone();
        let mut shard = self.shard(&p.channel).lock();
        let mut published = Published::default();
        if let Some(state_opts) = opts.state.filter(|_| p.storable()) {
            let now = Instant::now();
            let st = shard.channels.entry(p.channel.clone()).or_default();
            let h = st
                .history
                .get_or_insert_with(|| History::new(Duration::ZERO, now));
            let store = st.state.get_or_insert_with(StateStore::default);
            st.state_opts = Some(state_opts);
            store.expire(h, state_opts, now, &*self.sink);
            let stored = store.change(h, p, state_opts, now, &*self.sink)?;
            published = Published {
                offset: stored.offset,
                epoch: Some(h.epoch.to_string()),
                duplicate: false,
            };
            drop(shard);
            if let (Some(seen), Some((key, window))) = (&mut seen, &opts.idempotency) {
                seen.insert((channel, key.clone()), (now + *window, published.clone()));
            }
            return Ok(published);
        }
        let stored = match opts.history {
            Some(opts) if p.storable() => {
                let now = Instant::now();
                let state = shard.channels.entry(p.channel.clone()).or_default();
                let h = state
                    .history
                    .get_or_insert_with(|| History::new(opts.ttl, now));
                h.ttl = opts.ttl;
                h.touched = now;
                h.expire(now);
                h.top += 1;
                p.offset = Some(h.top);
                p.epoch = Some(h.epoch.clone());
                p.entry_id = Some(Arc::from(random_hex(6)));
                published = Published {
                    offset: Some(h.top),
                    epoch: Some(h.epoch.to_string()),
                    duplicate: false,
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
        drop(shard);
        if let (Some(seen), Some((key, window))) = (&mut seen, &opts.idempotency) {
            seen.insert(
                (channel, key.clone()),
                (Instant::now() + *window, published.clone()),
            );
        }
        Ok(published)
    }

    async fn subscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError> {
        let occupied = {
            let mut shard = self.shard(ch).lock();
            if let Some(h) = opts.history {
                shard
                    .channels
                    .entry(ch.clone())
                    .or_default()
                    .history
                    .get_or_insert_with(|| History::new(h.ttl, Instant::now()));
            }
            shard.occupied.insert(ch.clone())
        };
        if occupied && opts.channel_events {
            self.emit(EventKind::Occupied, |e| {
                e.channel(ch.as_str()).data_channel(ch.as_str())
            });
        }
        Ok(())
    }

    async fn unsubscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError> {
        let vacated = {
            let mut shard = self.shard(ch).lock();
            let was = shard.occupied.remove(ch);
            if let Some(state) = shard.channels.get_mut(ch) {
                // An epoch nothing was published under goes with its subscribers.
                if state.history.as_ref().is_some_and(|h| h.top == 0) {
                    state.history = None;
                }
                if state.is_empty() {
                    shard.channels.remove(ch);
                }
            }
            was
        };
        if vacated && opts.channel_events {
            self.emit(EventKind::Vacated, |e| {
                e.channel(ch.as_str()).data_channel(ch.as_str())
            });
        }
        Ok(())
    }

    async fn state(
        &self,
        ch: &ChannelName,
        opts: StateOpts,
        since: Option<u64>,
        keys: Option<&[String]>,
    ) -> Result<StateSnapshot, BrokerError> {
        let mut shard = self.shard(ch).lock();
        let Some(st) = shard.channels.get_mut(ch) else {
            return Ok(StateSnapshot::default());
        };
        let (Some(h), Some(store)) = (st.history.as_mut(), st.state.as_mut()) else {
            let h = st.history.as_ref();
            return Ok(StateSnapshot {
                epoch: h.map(|h| h.epoch.to_string()).unwrap_or_default(),
                offset: h.map(|h| h.top).unwrap_or(0),
                partial: since.is_some(),
                ..StateSnapshot::default()
            });
        };
        st.state_opts = Some(opts);
        store.expire(h, opts, Instant::now(), &*self.sink);
        Ok(store.snapshot(h, since, keys))
    }

    async fn tops(&self, channels: &[ChannelName]) -> Result<Vec<u64>, BrokerError> {
        Ok(channels
            .iter()
            .map(|ch| {
                let shard = self.shard(ch).lock();
                shard
                    .channels
                    .get(ch)
                    .and_then(|s| s.history.as_ref())
                    .map_or(0, |h| h.top)
            })
            .collect())
    }

    async fn history(
        &self,
        ch: &ChannelName,
        _opts: HistoryOpts,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, BrokerError> {
        let mut shard = self.shard(ch).lock();
        let Some(h) = shard.channels.get_mut(ch).and_then(|s| s.history.as_mut()) else {
            return Ok(HistoryPage::default());
        };
        h.expire(Instant::now());
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
            epoch: h.epoch.to_string(),
        })
    }
}

#[async_trait]
impl Presence for MemoryBroker {
    async fn presence_add(
        &self,
        ch: &ChannelName,
        entry: PresenceEntry,
    ) -> Result<(), BrokerError> {
        self.shard(ch)
            .lock()
            .channels
            .entry(ch.clone())
            .or_default()
            .presence
            .insert(entry.conn_id.clone(), entry);
        Ok(())
    }

    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError> {
        let mut shard = self.shard(ch).lock();
        if let Some(state) = shard.channels.get_mut(ch) {
            state.presence.remove(conn_id);
            if state.is_empty() {
                shard.channels.remove(ch);
            }
        }
        Ok(())
    }

    async fn presence(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError> {
        let shard = self.shard(ch).lock();
        let Some(state) = shard.channels.get(ch) else {
            return Ok(PresenceSet::default());
        };
        let users: HashSet<String> = state.presence.values().map(PresenceEntry::who).collect();
        Ok(PresenceSet {
            count: state.presence.len(),
            users: users.len(),
            entries: state.presence.values().take(limit).cloned().collect(),
        })
    }

    fn count_join(&self, ch: &ChannelName, entry: PresenceEntry) {
        self.counts.join(ch, entry);
    }

    fn count_leave(&self, ch: &ChannelName, conn_id: &str) {
        self.counts.leave(ch, conn_id);
    }

    async fn counts(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError> {
        Ok(self.counts.exact(ch, limit))
    }
}

mod cluster;
mod history;
mod notify;
mod state;
#[cfg(test)]
mod tests;
