//! The node: shared state every connection and API call works with (`Arc<Node>`), and
//! the operations that span the hub and the brokers: subscribe with the broker's
//! interest and history, unsubscribe, publish, presence; and the janitor that does a
//! closed connection's broker cleanup in the background, retrying until Redis takes
//! it, so no socket ever waits on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{
    BrokerError, Brokers, HistoryOpts, HistoryPage, NodeReport, PresenceEntry, PublishOpts,
    Published, Sink, StateOpts, SubscribeOpts,
};
use crate::channel::{ChannelName, Namespace, Namespaces};
use crate::config::{BrokerKind, Config, ConfigError};
use crate::hub::{ChannelOpts, ConnHandle, Hub, NeedRead, StateWant};
use crate::ids::ConnId;
use crate::metrics::Metrics;
use crate::position::{recoverable, Position};
use crate::protocol::{
    state_entries_json, ClientInfo, Presence, PresenceClient, Publication, ServerMessage, Since,
    Snapshot, Subscribed,
};

/// At most this many clients in a `presence` answer (SPEC 2).
pub const PRESENCE_CLIENTS_CAP: usize = 1000;
/// How long a presence answer is reused: a crowd asking at once costs one read.
const PRESENCE_CACHE: Duration = Duration::from_secs(1);

/// How a subscribe is answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Join<'a> {
    /// The position the client holds: what it missed is replayed (history), or its
    /// snapshot holds only what changed (state).
    pub since: Option<&'a Since>,
    /// State channels: narrows the snapshot to these keys.
    pub keys: Option<&'a [String]>,
    /// The request's id, echoed on `subscribed`.
    pub id: Option<&'a str>,
    /// Say `subscribed` (auto-subscriptions don't).
    pub reply: bool,
}

/// Broker work left behind by closed connections, done by the janitor.
#[derive(Debug)]
pub enum Chore {
    /// Drop the node's broker interest in a channel if nobody subscribed again.
    Unsubscribe(ChannelName),
    /// A subscribed connection left: its presence entry, and `leave` where asked.
    Left(ChannelName, ConnId, ClientInfo),
    /// Forget a connection in the user registry.
    UserGone(Box<str>, ConnId),
}

pub struct Node {
    pub config: Config,
    pub namespaces: Namespaces,
    pub auth: Auth,
    pub hub: Arc<Hub>,
    pub brokers: Brokers,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    draining: AtomicBool,
    chores: mpsc::UnboundedSender<Chore>,
    events: mpsc::UnboundedSender<crate::events::Event>,
    // A sync mutex around a small map of per-channel slots, taken without awaiting;
    // each slot's own async mutex is held across the read, so callers that arrive
    // together wait for one read instead of each making one.
    presence_cache: Mutex<HashMap<ChannelName, Arc<PresenceSlot>>>,
    /// Counted channels and their `presence_count` pushes.
    pub viewers: crate::viewers::Viewers,
}

/// One channel's cached presence answer.
type PresenceSlot = tokio::sync::Mutex<Option<(Instant, Presence)>>;

impl Node {
    pub fn new(config: Config) -> Result<Arc<Node>, ConfigError> {
        let namespaces = Namespaces::from_config(&config)?;
        let auth = Auth::from_config(&config)?;
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let sink: Arc<dyn Sink> = hub.clone();
        let brokers = match config.broker {
            BrokerKind::Memory => Brokers::of(MemoryBroker::new(&config, sink, metrics.clone())),
            BrokerKind::Redis => Brokers::of(
                RedisBroker::start(&config, sink, metrics.clone()).map_err(|e| {
                    ConfigError::Key {
                        key: "redis.url".into(),
                        message: e.to_string(),
                    }
                })?,
            ),
        };
        metrics
            .broker_up
            .set(if brokers.cluster.is_up() { 1.0 } else { 0.0 });
        let (chores, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            config,
            namespaces,
            auth,
            hub,
            brokers,
            metrics,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            chores,
            events,
            presence_cache: Mutex::new(HashMap::new()),
            viewers: Default::default(),
        });
        tokio::spawn(janitor(Arc::downgrade(&node), rx));
        tokio::spawn(emitter(Arc::downgrade(&node), events_rx));
        tokio::spawn(expire_state(Arc::downgrade(&node)));
        tokio::spawn(crate::viewers::run(Arc::downgrade(&node)));
        tokio::spawn(crate::inbox::fire_loop(Arc::downgrade(&node)));
        crate::webhooks::spawn(&node);
        tokio::spawn(reload_revocations(Arc::downgrade(&node)));
        Ok(node)
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.brokers.cluster.is_up()
    }

    /// Verifies a connection token, and refuses one its user's revocation covers.
    pub fn verify_connection(
        &self,
        token: &str,
    ) -> Result<crate::auth::ConnClaims, crate::auth::AuthError> {
        let claims = self.auth.verify_connection(token)?;
        let now = crate::auth::unix_now();
        if !self.hub.revoked.allows(&claims.user_id, claims.iat, now) {
            return Err(crate::auth::AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Queues broker work for the janitor.
    pub fn chore(&self, c: Chore) {
        let _ = self.chores.send(c);
    }

    /// Appends `connect`, `disconnect`, `subscribe` or `unsubscribe` (SPEC 17) when
    /// `[events] emit` names it, off the caller's path (`emitter` writes them, in order).
    pub fn emit(
        &self,
        kind: crate::config::EventKind,
        conn: ConnId,
        who: Option<&str>,
        channel: Option<&ChannelName>,
        code: Option<u16>,
    ) {
        if !self.config.events.emits(kind) {
            return;
        }
        let (user_id, session_id) = who.map_or((None, None), crate::broker::notify::ids_of);
        let mut data = serde_json::json!({ "conn_id": conn.to_string() });
        let fields = [
            ("user_id", user_id.map(str::to_owned)),
            ("session_id", session_id.map(str::to_owned)),
            ("channel", channel.map(ChannelName::to_string)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                data[k] = serde_json::json!(v);
            }
        }
        if let Some(c) = code {
            data["code"] = serde_json::json!(c);
        }
        let mut e = crate::events::Event::new(kind, self.node_id(), data).conn(&conn.to_string());
        if let Some(w) = who {
            e = e.who(w);
        }
        if let Some(ch) = channel {
            e = e.channel(ch.as_str());
        }
        let _ = self.events.send(e);
    }

    /// Subscribes `conn` to `ch` and queues `subscribed` (with `id`) and, when `since`
    /// is given, the missed publications (on a state channel: its snapshot), all
    /// before any live publication. Runs the broker subscribe first when this is the
    /// channel's first local subscriber. Subscribes to one channel run one at a time
    /// (the channel lock), so a crowd arriving together costs one broker read.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        ch: &ChannelName,
        ns: &Namespace,
        join: Join<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let _guard = self.hub.channel_lock(ch).lock().await;
        let first = !self.hub.has_subscribers(ch);
        if first {
            if !self.hub.ensure_channel(
                ch,
                self.config.limits.max_channels_per_namespace,
                ChannelOpts::of(ns),
            ) {
                return Err(BrokerError::Limit(format!(
                    "limits.max_channels_per_namespace reached for namespace {}",
                    ch.namespace()
                )));
            }
            let opts = SubscribeOpts::of(ns, &self.config.events);
            if let Err(e) = self.brokers.broker.subscribe(ch, &opts).await {
                self.hub.remove_channel_if_empty(ch);
                return Err(e);
            }
        } else if !self.brokers.cluster.is_up() {
            // Local subscribers already there, but publications from elsewhere cannot
            // arrive now: saying `subscribed` would promise what cannot be kept.
            return Err(BrokerError::Unavailable("broker unavailable".into()));
        }
        let result = match StateOpts::of(ns) {
            Some(opts) => self.attach_state(conn, ch, opts, join).await,
            None => self.attach(conn, ch, ns, join).await,
        };
        if result.is_ok() && ns.counts_presence() {
            self.viewers.subscribed(ch, ns.presence_push_interval, conn);
        }
        if result.is_err() && first && self.hub.remove_channel_if_empty(ch) {
            // Best effort: the broker interest is dropped again on failure.
            let opts = SubscribeOpts::of(ns, &self.config.events);
            let _ = self.brokers.broker.unsubscribe(ch, &opts).await;
        }
        result
    }

    async fn attach(
        &self,
        conn: &Arc<ConnHandle>,
        ch: &ChannelName,
        ns: &Namespace,
        join: Join<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let Join {
            since, id, reply, ..
        } = join;
        // The reader's position, on channels with read state (SPEC 15.1).
        let read_offset = match crate::inbox::who_of(conn).filter(|_| ns.read_state) {
            Some(who) => Some(
                self.brokers
                    .notify
                    .read_positions(&who, std::slice::from_ref(ch))
                    .await?
                    .first()
                    .copied()
                    .unwrap_or(0),
            ),
            None => None,
        };
        let Some(opts) = HistoryOpts::of(ns) else {
            let body = Subscribed {
                channel: ch.to_string(),
                recovered: since.map(|_| false),
                ..Subscribed::default()
            };
            let bytes = ServerMessage::Subscribed(&body).to_bytes(id);
            let _ = self.hub.add_subscriber(ch, conn, None, || {
                if reply {
                    conn.outbox.push_data(bytes, None);
                }
            });
            return Ok(body);
        };
        // Bounded: each retry means a publication landed meanwhile; under a publish
        // storm the last read is still consistent because the hub re-checks it.
        for _ in 0..100 {
            let page = self
                .brokers
                .broker
                .history(ch, opts, since.map(|s| s.offset), None)
                .await?;
            let recovered = since.map(|s| recoverable(s.offset, &s.epoch, &page));
            let body = Subscribed {
                channel: ch.to_string(),
                offset: Some(page.offset),
                epoch: Some(page.epoch.clone()),
                recovered,
                read_offset,
                unread: read_offset.map(|r| crate::inbox::unread(page.offset, r)),
            };
            let bytes = ServerMessage::Subscribed(&body).to_bytes(id);
            let newest = page
                .publications
                .last()
                .filter(|p| p.offset == Some(page.offset))
                .and_then(|p| p.entry_id.clone());
            let read = Position::new(&page.epoch, page.offset, newest);
            let added = self.hub.add_subscriber(ch, conn, Some(&read), || {
                if reply {
                    conn.outbox.push_data(bytes, None);
                }
                if recovered == Some(true) {
                    for p in &page.publications {
                        conn.outbox.push_data(p.bytes().clone(), None);
                    }
                }
            });
            if added.is_ok() {
                return Ok(body);
            }
        }
        Err(BrokerError::Internal(
            "history kept moving during subscribe".into(),
        ))
    }

    /// Attaches a subscriber to a state channel: `subscribed`, then its snapshot cut
    /// from the node's replica of the channel, which one broker read seeds.
    async fn attach_state(
        &self,
        conn: &Arc<ConnHandle>,
        ch: &ChannelName,
        opts: StateOpts,
        join: Join<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let want = StateWant {
            since: join.since.map(|s| (s.offset, s.epoch.as_str())),
            keys: join.keys,
        };
        let mut read = None;
        for _ in 0..10 {
            let emit = |sub: &Subscribed, snap: &Snapshot| {
                if join.reply {
                    conn.outbox
                        .push_data(ServerMessage::Subscribed(sub).to_bytes(join.id), None);
                }
                conn.outbox
                    .push_data(ServerMessage::Snapshot(snap).to_bytes(None), None);
            };
            match self.hub.attach_state(ch, conn, want, read.as_ref(), emit) {
                Ok(sub) => return Ok(sub),
                Err(NeedRead::Full) => self.seed_state(ch, opts).await?,
                Err(NeedRead::Since(s)) => {
                    read = Some(self.brokers.broker.state(ch, opts, Some(s), None).await?);
                }
            }
        }
        Err(BrokerError::Internal(
            "state kept moving during subscribe".into(),
        ))
    }

    /// Seeds the channel's replica: one full read, brought forward with the changes
    /// after it while deliveries move past it (a publisher hammering the channel).
    async fn seed_state(&self, ch: &ChannelName, opts: StateOpts) -> Result<(), BrokerError> {
        let broker = &self.brokers.broker;
        let mut read = broker.state(ch, opts, None, None).await?;
        for _ in 0..100 {
            if self.hub.seed_state(ch, &read).is_ok() {
                return Ok(());
            }
            let newer = broker.state(ch, opts, Some(read.offset), None).await?;
            if !read.advance(newer) {
                read = broker.state(ch, opts, None, None).await?;
            }
        }
        Err(BrokerError::Internal(
            "state kept moving during subscribe".into(),
        ))
    }

    /// A state channel's live keys (`state`, `GET /api/state`): from this node's
    /// replica when it has one, else one broker read.
    pub async fn state(
        &self,
        ch: &ChannelName,
        ns: &Namespace,
        keys: Option<&[String]>,
    ) -> Result<Option<Snapshot>, BrokerError> {
        let Some(opts) = StateOpts::of(ns) else {
            return Ok(None);
        };
        if let Some(view) = self.hub.state_view(ch, keys) {
            return Ok(Some(view));
        }
        let read = self.brokers.broker.state(ch, opts, None, keys).await?;
        Ok(Some(Snapshot {
            channel: ch.to_string(),
            offset: read.offset,
            epoch: read.epoch,
            full: None,
            entries: state_entries_json(read.entries.iter().map(|p| &**p)).into(),
        }))
    }

    /// Removes `conn` from `ch` at once; the broker interest is dropped by the janitor
    /// after the last local subscriber left (unless someone subscribed again).
    pub fn unsubscribe(&self, conn: &ConnHandle, ch: &ChannelName) {
        if self.hub.remove_subscriber(ch, conn.id) {
            self.chore(Chore::Unsubscribe(ch.clone()));
        }
    }

    /// Publishes through the broker, timing it.
    pub async fn publish(
        &self,
        p: Publication,
        ns: &Namespace,
        idempotency: Option<(String, Duration)>,
    ) -> Result<Published, BrokerError> {
        check_keyed(ns, &p).map_err(|m| BrokerError::Refused(m.into()))?;
        let start = Instant::now();
        let opts = PublishOpts {
            history: HistoryOpts::of(ns),
            idempotency,
            state: crate::broker::StateOpts::of(ns),
        };
        let r = self.brokers.broker.publish(p, &opts).await;
        self.metrics
            .broker_publish
            .record(start.elapsed().as_secs_f64());
        r
    }

    pub async fn history(
        &self,
        ch: &ChannelName,
        ns: &Namespace,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Option<HistoryPage>, BrokerError> {
        match HistoryOpts::of(ns) {
            Some(opts) => self
                .brokers
                .broker
                .history(ch, opts, since, limit)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// The channel's presence: exact counts, at most 1,000 clients (on a counted
    /// channel: per-node counts and a sample of 100), cached a moment (one read for a
    /// crowd asking at once).
    pub async fn presence(
        &self,
        ch: &ChannelName,
        ns: &Namespace,
    ) -> Result<Presence, BrokerError> {
        let slot = {
            let mut cache = self.presence_cache.lock();
            if cache.len() > 10_000 {
                cache.retain(|_, s| Arc::strong_count(s) > 1);
            }
            cache.entry(ch.clone()).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some((at, view)) = cached.as_ref() {
            if at.elapsed() < PRESENCE_CACHE {
                return Ok(view.clone());
            }
        }
        let set = if ns.counts_presence() {
            // A big audience: counted per node, with a sample (SPEC 16.5).
            self.brokers
                .presence
                .counts(ch, crate::broker::counts::SAMPLE)
                .await?
        } else {
            self.brokers
                .presence
                .presence(ch, PRESENCE_CLIENTS_CAP)
                .await?
        };
        let view = Presence {
            channel: None,
            count: set.count,
            users: set.users,
            clients: set
                .entries
                .into_iter()
                .map(|e| PresenceClient {
                    conn_id: e.conn_id,
                    user_id: e.client.user_id,
                    session_id: e.client.session_id,
                    info: e.client.info,
                })
                .collect(),
        };
        *cached = Some((Instant::now(), view.clone()));
        Ok(view)
    }

    /// Records presence and announces `join` where the namespace asks for it.
    pub async fn joined(&self, conn: &ConnHandle, ch: &ChannelName, ns: &Namespace) {
        if !ns.tracks_presence() && !ns.join_leave {
            return;
        }
        let client = conn.who().client_info();
        if ns.counts_presence() {
            // Counted, not listed, and no join per viewer (SPEC 16.5).
            self.presence_cache.lock().remove(ch);
            let entry = PresenceEntry {
                conn_id: conn.id.to_string(),
                client,
            };
            self.brokers.presence.count_join(ch, entry);
            return;
        }
        if ns.tracks_presence() {
            self.presence_cache.lock().remove(ch);
            let entry = PresenceEntry {
                conn_id: conn.id.to_string(),
                client: client.clone(),
            };
            if let Err(e) = self.brokers.presence.presence_add(ch, entry).await {
                tracing::warn!(channel = %ch, error = %e, "presence add failed");
            }
        }
        if ns.join_leave {
            self.announce(ch, "join", &client).await;
        }
    }

    /// Removes presence and announces `leave`.
    pub async fn left(&self, conn: ConnId, ch: &ChannelName, client: &ClientInfo) {
        let Some(ns) = self.namespaces.get(ch.namespace()) else {
            return;
        };
        if ns.counts_presence() {
            self.presence_cache.lock().remove(ch);
            self.brokers.presence.count_leave(ch, &conn.to_string());
            return;
        }
        if ns.tracks_presence() {
            self.presence_cache.lock().remove(ch);
            if let Err(e) = self
                .brokers
                .presence
                .presence_remove(ch, &conn.to_string())
                .await
            {
                tracing::debug!(channel = %ch, error = %e, "presence remove failed (it expires)");
            }
        }
        if ns.join_leave {
            self.announce(ch, "leave", client).await;
        }
    }

    async fn announce(&self, ch: &ChannelName, event: &str, client: &ClientInfo) {
        let Ok(payload) = serde_json::value::to_raw_value(client) else {
            return;
        };
        let mut p = Publication::new(ch.clone(), event.to_owned(), payload);
        p.volatile = true;
        if let Err(e) = self
            .brokers
            .broker
            .publish(p, &PublishOpts::default())
            .await
        {
            tracing::warn!(channel = %ch, error = %e, event, "announce failed");
        }
    }

    /// This node's registry entry.
    pub fn report(&self) -> NodeReport {
        NodeReport {
            node: self.stats(),
            channels: self.hub.channels(None),
        }
    }

    /// Every live node's entry, this one's fresh (the registry may lag by a beat).
    pub async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        let mut all = vec![self.report()];
        for r in self.brokers.cluster.cluster().await? {
            if r.node["node_id"] != self.node_id() {
                all.push(r);
            }
        }
        Ok(all)
    }

    /// Stats of this node (`/api/stats` `node`).
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "node_id": self.node_id(),
            "connections": self.hub.connection_count(),
            "subscriptions": self.hub.subscription_count(),
            "channels": self.hub.channel_count(),
            "uptime_s": self.started.elapsed().as_secs(),
        })
    }
}

/// A publication's `key` and `delete` against its namespace (SPEC 16.1).
pub fn check_keyed(ns: &Namespace, p: &Publication) -> Result<(), &'static str> {
    match (&p.key, ns.state) {
        (None, true) if p.storable() => Err("a publication on a state channel needs a \"key\""),
        (Some(_), false) => Err("`key` and `delete` are for state channels (state = true)"),
        (None, false) if p.deleted => {
            Err("`key` and `delete` are for state channels (state = true)")
        }
        (Some(k), true) if !crate::channel::valid_state_key(k) => Err(
            "a state key is 1 to 200 of the characters of a channel name: A-Z a-z 0-9 _ . : @ = -",
        ),
        (Some(_), true) if !p.storable() => {
            Err("a keyed publication cannot be volatile or targeted (`to`)")
        }
        _ => Ok(()),
    }
}

/// Asks the broker for each local state channel whose keys expire, once a second:
/// reading expires them, and each expiry is delivered as a tombstone (SPEC 16.1), so
/// subscribers see a key go when its time is up, not at the next write.
async fn expire_state(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        for (ch, opts, offset) in node.hub.expiring_state() {
            let none: &[String] = &[];
            if let Err(e) = node
                .brokers
                .broker
                .state(&ch, opts, Some(offset), Some(none))
                .await
            {
                tracing::debug!(channel = %ch, error = %e, "state expiry check failed");
            }
        }
    }
}

/// Loads the revocations in force at start and every half minute, so a node that
/// missed a `/api/revoke` command (down or cut off then) refuses those tokens too.
async fn reload_revocations(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        match node.brokers.cluster.revocations().await {
            Ok(all) => {
                for (user, before, until) in all {
                    node.hub.revoked.revoke(&user, before, until);
                }
                node.hub.revoked.prune(crate::auth::unix_now());
            }
            Err(e) => tracing::debug!(error = %e, "revocations not reloaded"),
        }
    }
}

/// Writes the node's events in the order they happened, in batches; a batch that
/// fails (the broker is away) is tried again until it is written.
async fn emitter(
    node: std::sync::Weak<Node>,
    mut rx: mpsc::UnboundedReceiver<crate::events::Event>,
) {
    const BATCH: usize = 512;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        loop {
            let Some(node) = node.upgrade() else { return };
            match node.brokers.cluster.emit(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(error = %e, events = batch.len(), "events not written; retrying");
                    drop(node);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        batch.clear();
    }
}

/// Runs chores, many at once; one that fails because the broker is down waits and
/// is tried again (the user registry must not keep a closed connection), so the
/// connections that queued them never wait. Order between chores does not matter:
/// an unsubscribe re-checks under the channel lock that nobody subscribed again.
async fn janitor(node: std::sync::Weak<Node>, mut rx: mpsc::UnboundedReceiver<Chore>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    while let Some(chore) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let node = node.clone();
        tokio::spawn(async move {
            run_chore(node, chore).await;
            drop(permit);
        });
    }
}

async fn run_chore(node: std::sync::Weak<Node>, chore: Chore) {
    const RETRY_FOR: Duration = Duration::from_secs(3600);
    let first = Instant::now();
    loop {
        let Some(node) = node.upgrade() else { return };
        let done = match &chore {
            Chore::Unsubscribe(ch) => {
                let _guard = node.hub.channel_lock(ch).lock().await;
                if node.hub.remove_channel_if_empty(ch) {
                    let opts = node
                        .namespaces
                        .get(ch.namespace())
                        .map(|ns| SubscribeOpts::of(ns, &node.config.events))
                        .unwrap_or_default();
                    if let Err(e) = node.brokers.broker.unsubscribe(ch, &opts).await {
                        tracing::debug!(channel = %ch, error = %e, "broker unsubscribe failed");
                    }
                }
                true
            }
            Chore::Left(ch, conn, client) => {
                node.left(*conn, ch, client).await;
                true
            }
            Chore::UserGone(who, conn) => {
                match node.brokers.cluster.user_disconnected(who, *conn).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, "user registry cleanup failed; retrying");
                        false
                    }
                }
            }
        };
        if done || first.elapsed() > RETRY_FOR {
            return;
        }
        drop(node);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
