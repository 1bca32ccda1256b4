//! The node's local registry: which connections exist, who they are, and which
//! channels each is subscribed to; and the fan-out of a publication into the bounded
//! queues of the local subscribers, after checking its offset against what this node
//! delivered (`position`). It is the broker's [`Sink`]; it knows nothing of sockets.

mod conflate;
mod outbox;
mod revoked;
mod state;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;

pub use outbox::{Item, Outbox, Pushed};
pub use revoked::Revocations;
pub use state::{NeedRead, StateWant};

use crate::broker::{Control, Delivery, Sink, StateOpts, StateSnapshot, Target};
use crate::channel::{ChannelName, Namespace};
pub use crate::ids::ConnId;
use crate::metrics::Metrics;
use crate::position::{judge, Position, Verdict};
use crate::protocol::{ClientInfo, CloseCode, Publication};

/// Who a connection currently is; changes when an anonymous session authenticates.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub user_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub info: Option<Arc<RawValue>>,
    /// The connection token's issue time (revocations compare with it).
    pub iat: Option<u64>,
}

impl Who {
    pub fn client_info(&self) -> ClientInfo {
        ClientInfo {
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            info: self.info.clone(),
        }
    }
}

/// The part of a connection other tasks may touch: its queue and identity.
pub struct ConnHandle {
    pub id: ConnId,
    pub outbox: Outbox,
    // Read on targeted (`to`) deliveries and API lookups, written once or twice in a
    // connection's life: an RwLock of a few pointers.
    who: RwLock<Who>,
}

impl ConnHandle {
    pub fn new(id: ConnId, send_queue: usize, send_queue_bytes: usize) -> ConnHandle {
        ConnHandle {
            id,
            outbox: Outbox::new(send_queue, send_queue_bytes),
            who: RwLock::new(Who::default()),
        }
    }

    pub fn who(&self) -> Who {
        self.who.read().clone()
    }

    fn matches_target(&self, to: &str) -> bool {
        let w = self.who.read();
        w.user_id.as_deref() == Some(to) || w.session_id.as_deref() == Some(to)
    }

    pub fn close(&self, code: CloseCode, reason: Option<String>) {
        self.outbox.push_control(Item::Close(code, reason));
    }
}

struct Sub {
    conn: Arc<ConnHandle>,
    /// Publications with an offset at or below this were already sent to this
    /// subscriber as part of its subscribe (history replay) and are skipped live.
    skip_until: u64,
}

/// How a channel's publications reach its subscribers, from its namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelOpts {
    /// A state channel (SPEC 16.1): the hub keeps a replica of it.
    pub state: Option<StateOpts>,
    /// Merge-patch deltas against the key's previous version (16.3).
    pub delta: bool,
    /// Per-subscriber coalescing of each (channel, key) to one per interval (16.4).
    pub conflate: Option<std::time::Duration>,
}

impl ChannelOpts {
    pub fn of(ns: &Namespace) -> ChannelOpts {
        ChannelOpts {
            state: StateOpts::of(ns),
            delta: ns.delta && ns.state,
            conflate: ns.conflated().then_some(ns.conflate),
        }
    }
}

/// Where delivery of a channel stands, and the replica of a state channel, which
/// moves with it.
#[derive(Default)]
struct Track {
    position: Position,
    replica: Option<crate::state::Replica>,
}

#[derive(Default)]
struct Entry {
    subs: HashMap<ConnId, Sub>,
    // Updated by the one task that delivers this channel, read by subscribes: a plain
    // mutex taken under the shard's read lock for a few instructions (and, on a delta
    // channel, the computation of one patch per publication).
    track: Mutex<Track>,
    /// A subscriber read the channel's history: its gaps are filled after an
    /// interruption of the broker path even while it has none yet.
    numbered: bool,
    opts: ChannelOpts,
}

/// The subscriber set moved while a subscribe read history: read it again.
#[derive(Debug)]
pub struct Retry;

const SHARDS: usize = 64;

/// References to a publication's bytes taken at once (32 KiB of `Bytes` per thread).
const CLONE_CHUNK: usize = 1024;

thread_local! {
    static CLONES: std::cell::RefCell<Vec<bytes::Bytes>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct Hub {
    // Sharded so that fan-out on one channel (read lock) does not stall subscribes to
    // others; a sync lock because fan-out never awaits.
    shards: Box<[RwLock<HashMap<ChannelName, Entry>>]>,
    conns: RwLock<HashMap<ConnId, Arc<ConnHandle>>>,
    /// Connection ids per user, oldest first (per-user limit, API by user id).
    users: Mutex<HashMap<Arc<str>, Vec<ConnId>>>,
    /// Serialises broker subscribe/unsubscribe of one channel (held across the broker
    /// call, hence async), chosen from a fixed pool by the channel's hash.
    channel_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    subscriptions: AtomicUsize,
    channels: AtomicUsize,
    /// Channel entries per namespace (`limits.max_channels_per_namespace`).
    per_namespace: Mutex<HashMap<String, usize>>,
    /// Revoked tokens, per user (SPEC 6).
    pub revoked: Revocations,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            conns: RwLock::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            channel_locks: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
            // Random start: connection ids of different nodes do not collide in practice.
            next_id: AtomicU64::new(rand::random::<u64>() >> 1),
            subscriptions: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            per_namespace: Mutex::new(HashMap::new()),
            revoked: Revocations::default(),
            metrics,
        }
    }

    fn slot(&self, ch: &str) -> usize {
        (self.hasher.hash_one(ch) as usize) % SHARDS
    }

    fn shard(&self, ch: &str) -> &RwLock<HashMap<ChannelName, Entry>> {
        &self.shards[self.slot(ch)]
    }

    pub fn channel_lock(&self, ch: &ChannelName) -> &tokio::sync::Mutex<()> {
        &self.channel_locks[self.slot(ch.as_str())]
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn register(&self, conn: Arc<ConnHandle>) {
        self.conns.write().insert(conn.id, conn);
        self.metrics.connections.increment(1.0);
    }

    /// Forgets a closed connection. Its channel subscriptions are removed by the caller.
    pub fn unregister(&self, conn: &ConnHandle) {
        if self.conns.write().remove(&conn.id).is_none() {
            return;
        }
        self.metrics.connections.decrement(1.0);
        if let Some(user) = conn.who().user_id {
            let mut users = self.users.lock();
            if let Some(ids) = users.get_mut(&user) {
                ids.retain(|&i| i != conn.id);
                if ids.is_empty() {
                    users.remove(&user);
                }
            }
        }
    }

    /// Sets who a connection is; a new user id is indexed (newest last).
    pub fn set_who(&self, conn: &ConnHandle, who: Who) {
        let old_user = {
            let mut w = conn.who.write();
            let old = w.user_id.clone();
            *w = who.clone();
            old
        };
        if old_user != who.user_id {
            let mut users = self.users.lock();
            if let Some(old) = old_user {
                if let Some(ids) = users.get_mut(&old) {
                    ids.retain(|&i| i != conn.id);
                }
            }
            if let Some(new) = who.user_id {
                users.entry(new).or_default().push(conn.id);
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.read().len()
    }

    pub fn user_count(&self) -> usize {
        self.users.lock().len()
    }

    pub fn get(&self, id: ConnId) -> Option<Arc<ConnHandle>> {
        self.conns.read().get(&id).cloned()
    }

    /// The user's connections on this node, oldest first.
    pub fn user_conns(&self, user: &str) -> Vec<Arc<ConnHandle>> {
        let ids = self.users.lock().get(user).cloned().unwrap_or_default();
        let conns = self.conns.read();
        ids.iter().filter_map(|i| conns.get(i).cloned()).collect()
    }

    pub fn session_conns(&self, session: &str) -> Vec<Arc<ConnHandle>> {
        self.conns
            .read()
            .values()
            .filter(|c| c.who.read().session_id.as_deref() == Some(session))
            .cloned()
            .collect()
    }

    pub fn all_conns(&self) -> Vec<Arc<ConnHandle>> {
        self.conns.read().values().cloned().collect()
    }

    pub fn has_subscribers(&self, ch: &ChannelName) -> bool {
        self.shard(ch.as_str())
            .read()
            .get(ch)
            .is_some_and(|e| !e.subs.is_empty())
    }

    fn count_channel(&self, ch: &ChannelName, delta: isize) {
        let n = if delta > 0 {
            self.channels.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.channels.fetch_sub(1, Ordering::Relaxed) - 1
        };
        self.metrics.channels.set(n as f64);
        let mut per = self.per_namespace.lock();
        let c = per.entry(ch.namespace().to_owned()).or_default();
        *c = c.saturating_add_signed(delta);
        if *c == 0 {
            per.remove(ch.namespace());
        }
    }

    /// Makes sure deliveries for `ch` are tracked before the broker subscription is
    /// made; false when its namespace already has `max` channels here (0: no limit).
    pub fn ensure_channel(&self, ch: &ChannelName, max: usize, opts: ChannelOpts) -> bool {
        let mut shard = self.shard(ch.as_str()).write();
        if !shard.contains_key(ch) {
            let full = max > 0
                && self
                    .per_namespace
                    .lock()
                    .get(ch.namespace())
                    .is_some_and(|n| *n >= max);
            if full {
                return false;
            }
            shard.insert(
                ch.clone(),
                Entry {
                    opts,
                    ..Entry::default()
                },
            );
            self.count_channel(ch, 1);
        }
        true
    }

    /// Drops the channel's entry when no one is subscribed; true when it did.
    pub fn remove_channel_if_empty(&self, ch: &ChannelName) -> bool {
        let mut shard = self.shard(ch.as_str()).write();
        if shard.get(ch).is_some_and(|e| e.subs.is_empty()) {
            if let Some(e) = shard.remove(ch) {
                self.forget_replica(&mut e.track.lock());
            }
            self.count_channel(ch, -1);
            true
        } else {
            false
        }
    }

    /// Adds a subscriber. `history` is what the caller read: the newest offset, the
    /// epoch ("" when the channel has none) and the newest entry's id; if a newer
    /// publication was delivered since, the caller must read again. `before` runs
    /// under the lock, so what it queues (the `subscribed` reply, replayed history)
    /// precedes every live publication.
    pub fn add_subscriber(
        &self,
        ch: &ChannelName,
        conn: &Arc<ConnHandle>,
        history: Option<&Position>,
        before: impl FnOnce(),
    ) -> Result<(), Retry> {
        let mut shard = self.shard(ch.as_str()).write();
        let entry = shard.entry(ch.clone()).or_insert_with(|| {
            self.count_channel(ch, 1);
            Entry::default()
        });
        entry.numbered |= history.is_some();
        let newest = history.map(|h| h.offset).unwrap_or(0);
        if let Some(read) = history {
            let mut track = entry.track.lock();
            let pos = &mut track.position;
            match (&pos.epoch, &read.epoch) {
                (_, None) if pos.offset > 0 => {
                    // History was lost since this node delivered (a flush): whoever
                    // is subscribed holds void offsets (5.8).
                    *pos = read.clone();
                    drop(track);
                    Self::close_all(entry, CloseCode::InsufficientState);
                }
                (None, _) => {
                    // First look at this channel's history: deliveries continue from here.
                    if pos.offset > newest {
                        return Err(Retry);
                    }
                    *pos = read.clone();
                }
                (Some(e), Some(r)) if e == r => {
                    if pos.offset > newest {
                        return Err(Retry);
                    }
                }
                (Some(_), _) => {
                    // The history was replaced since this node last delivered: whoever
                    // is subscribed holds void offsets (5.8).
                    *pos = read.clone();
                    drop(track);
                    Self::close_all(entry, CloseCode::InsufficientState);
                }
            }
        }
        before();
        let sub = Sub {
            conn: conn.clone(),
            skip_until: newest,
        };
        self.insert_sub(entry, sub);
        Ok(())
    }

    fn insert_sub(&self, entry: &mut Entry, sub: Sub) {
        if entry.subs.insert(sub.conn.id, sub).is_none() {
            let n = self.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.subscriptions.set(n as f64);
        }
    }

    /// Removes a subscriber; true when it was the channel's last local one.
    pub fn remove_subscriber(&self, ch: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(ch.as_str()).write();
        let Some(entry) = shard.get_mut(ch) else {
            return false;
        };
        if entry.subs.remove(&conn).is_some() {
            let n = self.subscriptions.fetch_sub(1, Ordering::Relaxed) - 1;
            self.metrics.subscriptions.set(n as f64);
        }
        entry.subs.is_empty()
    }

    /// Fans a publication out to the local subscribers of its channel, after checking
    /// its offset against what this node delivered (5.8). The bytes are encoded once
    /// and shared; a full queue closes that subscriber alone (4010), except on a
    /// conflated channel, where the newest of a key replaces the older.
    pub fn deliver(&self, p: &Arc<Publication>) -> Delivery {
        let shard = self.shard(p.channel.as_str()).read();
        let Some(entry) = shard.get(&p.channel) else {
            return Delivery::Delivered;
        };
        if let (Some(o), Some(e)) = (p.offset, &p.epoch) {
            let mut track = entry.track.lock();
            match judge(&track.position, o, e, p.entry_id.as_deref()) {
                Verdict::Next => {
                    track.position = Position::after(p);
                    self.replicate(&mut track, entry.opts, p);
                }
                Verdict::Duplicate => return Delivery::Duplicate,
                Verdict::Gap { after } => return Delivery::Gap { after },
                Verdict::Reused => return Delivery::Reused,
                Verdict::OtherHistory => {
                    // Offsets the subscribers hold are void (another history): 4012,
                    // and they re-subscribe with `since`.
                    track.position = Position::after(p);
                    self.forget_replica(&mut track);
                    drop(track);
                    Self::close_all(entry, CloseCode::InsufficientState);
                    return Delivery::Lost;
                }
            }
        }
        self.fan_out(entry, p, true);
        Delivery::Delivered
    }

    /// Hands `p` to every subscriber that should get it: the delta form to those
    /// that received its base live (when `deltas`), through the conflation slots on
    /// a conflated channel.
    fn fan_out(&self, entry: &Entry, p: &Arc<Publication>, deltas: bool) {
        let full = p.bytes();
        let delta = if deltas { p.delta_bytes() } else { None };
        let base = delta.and(p.delta.get().and_then(Option::as_ref).map(|d| d.base));
        let primary = delta.unwrap_or(full);
        let conflate = entry
            .opts
            .conflate
            .filter(|_| !matches!(p.event.as_str(), "join" | "leave"));
        let now = std::time::Instant::now();
        let (mut overflowed, mut conflated, mut deltas_sent) = (0, 0, 0u64);
        CLONES.with(|cell| {
            let mut clones = cell.borrow_mut();
            clones.clear();
            for sub in entry.subs.values() {
                if p.offset.is_some_and(|o| o <= sub.skip_until) {
                    continue;
                }
                if let Some(to) = &p.to {
                    if !sub.conn.matches_target(to) {
                        continue;
                    }
                }
                // Whether the subscriber received the key's version at `base` live.
                let holds_base = base.is_some_and(|b| b > sub.skip_until);
                if let Some(interval) = conflate {
                    match sub.conn.outbox.push_conflated(p, interval, holds_base, now) {
                        Pushed::Overflowed => overflowed += 1,
                        Pushed::Conflated => conflated += 1,
                        Pushed::Queued | Pushed::Closed => {}
                    }
                    continue;
                }
                let b = if base.is_some() && !holds_base {
                    full.clone()
                } else {
                    deltas_sent += u64::from(base.is_some());
                    // References are taken a chunk at a time before they are handed
                    // out: once subscribers on the other cores drop theirs, a clone
                    // per push would fight them for the reference count's cache line.
                    // A targeted publication reaches a few and takes one at a time.
                    match clones.pop() {
                        Some(b) => b,
                        None if p.to.is_some() => primary.clone(),
                        None => {
                            clones.extend(std::iter::repeat_n(primary, CLONE_CHUNK).cloned());
                            primary.clone()
                        }
                    }
                };
                if sub.conn.outbox.push_data(b, Some(p.accepted)) == Pushed::Overflowed {
                    overflowed += 1;
                }
            }
            clones.clear();
        });
        if overflowed > 0 {
            self.metrics.slow_consumers.increment(overflowed);
        }
        if conflated > 0 {
            self.metrics.conflated.increment(conflated);
        }
        if let Some(d) = delta.filter(|_| deltas_sent > 0) {
            let saved = full.len().saturating_sub(d.len()) as u64;
            self.metrics
                .delta_bytes_saved
                .increment(saved * deltas_sent);
        }
    }

    fn close_all(entry: &Entry, code: CloseCode) {
        for sub in entry.subs.values() {
            sub.conn.close(code, None);
        }
    }

    /// Closes the channel's local subscribers with 4012 (history cannot fill their
    /// gap) and moves the position past the loss.
    pub fn lose(&self, ch: &ChannelName, position: Position) {
        let shard = self.shard(ch.as_str()).read();
        if let Some(entry) = shard.get(ch) {
            let mut track = entry.track.lock();
            track.position = position;
            self.forget_replica(&mut track);
            drop(track);
            Self::close_all(entry, CloseCode::InsufficientState);
        }
    }

    /// Every local channel that has seen history, with its delivery position (for gap
    /// checks after an interruption of the broker path).
    pub fn positions(&self) -> Vec<(ChannelName, Position)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (ch, e) in shard.read().iter() {
                if e.numbered {
                    out.push((ch.clone(), e.track.lock().position.clone()));
                }
            }
        }
        out
    }

    /// Runs a cluster-wide command on this node's connections.
    pub fn execute(&self, c: &Control) {
        match c {
            Control::Disconnect {
                target,
                code,
                reason,
            } => {
                let targets = match target {
                    Target::User(u) => self.user_conns(u),
                    Target::Session(s) => self.session_conns(s),
                    Target::Conn(id) => self.get(*id).into_iter().collect(),
                };
                for conn in targets {
                    conn.close(CloseCode::from_code(*code), reason.clone());
                }
            }
            Control::Revoke {
                user_id,
                before,
                until,
            } => {
                self.revoked.revoke(user_id, *before, *until);
                for conn in self.user_conns(user_id) {
                    if conn.who().iat.is_none_or(|iat| iat < *before) {
                        conn.close(CloseCode::Forbidden, Some("token revoked".into()));
                    }
                }
            }
            Control::Read {
                target,
                channel,
                read_offset,
                unread,
                except,
            } => {
                let conns = match target {
                    Target::User(u) => self.user_conns(u),
                    Target::Session(s) => self.session_conns(s),
                    Target::Conn(id) => self.get(*id).into_iter().collect(),
                };
                let body = crate::protocol::Read {
                    channel: channel.to_string(),
                    read_offset: *read_offset,
                    unread: *unread,
                };
                let bytes = crate::protocol::ServerMessage::Read(&body).to_bytes(None);
                let shard = self.shard(channel.as_str()).read();
                let Some(entry) = shard.get(channel) else {
                    return;
                };
                for conn in conns {
                    if conn.id != *except && entry.subs.contains_key(&conn.id) {
                        conn.outbox.push_data(bytes.clone(), None);
                    }
                }
            }
            Control::Subscribe { user_id, channel } | Control::Unsubscribe { user_id, channel } => {
                let ch = channel.clone();
                let subscribe = matches!(c, Control::Subscribe { .. });
                for conn in self.user_conns(user_id) {
                    let item = if subscribe {
                        Item::Subscribe(ch.clone())
                    } else {
                        Item::Unsubscribe(ch.clone())
                    };
                    conn.outbox.push_control(item);
                }
            }
        }
    }

    /// Channels with local subscribers, with their counts.
    pub fn channels(&self, prefix: Option<&str>) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (ch, e) in shard.read().iter() {
                if !e.subs.is_empty() && prefix.is_none_or(|p| ch.as_str().starts_with(p)) {
                    out.push((ch.to_string(), e.subs.len()));
                }
            }
        }
        out.sort();
        out
    }

    pub fn channel_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().filter(|e| !e.subs.is_empty()).count())
            .sum()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Connections subscribed to `ch` on this node.
    pub fn subscribers(&self, ch: &ChannelName) -> Vec<Arc<ConnHandle>> {
        self.shard(ch.as_str())
            .read()
            .get(ch)
            .map(|e| e.subs.values().map(|s| s.conn.clone()).collect())
            .unwrap_or_default()
    }
}

impl Sink for Hub {
    fn deliver(&self, p: &Arc<Publication>) -> Delivery {
        Hub::deliver(self, p)
    }

    fn execute(&self, c: &Control) {
        Hub::execute(self, c)
    }

    fn positions(&self) -> Vec<(ChannelName, Position)> {
        Hub::positions(self)
    }

    fn position(&self, ch: &ChannelName) -> Option<Position> {
        let shard = self.shard(ch.as_str()).read();
        shard.get(ch).map(|e| e.track.lock().position.clone())
    }

    fn lose(&self, ch: &ChannelName, position: Position) {
        Hub::lose(self, ch, position)
    }

    fn has_connection(&self, id: ConnId) -> bool {
        self.conns.read().contains_key(&id)
    }

    fn state_opts(&self, ch: &ChannelName) -> Option<StateOpts> {
        let shard = self.shard(ch.as_str()).read();
        shard.get(ch).and_then(|e| e.opts.state)
    }

    fn catch_up(&self, ch: &ChannelName, changes: &StateSnapshot) -> bool {
        Hub::catch_up(self, ch, changes)
    }
}
