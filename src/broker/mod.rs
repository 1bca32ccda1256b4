//! The broker seam: how a publication gets from whoever accepted it to every node
//! with subscribers, and where the shared state lives. Three traits by concept, each
//! implemented by the in-process [`memory::MemoryBroker`] (one node) and the
//! [`redis::RedisBroker`] (Redis or Redis Cluster), and held to the same answers by
//! one conformance suite (`tests/broker_conformance.rs`):
//!
//! - [`Broker`]: publish, subscribe/unsubscribe, history;
//! - [`Presence`]: who is subscribed where;
//! - [`Cluster`]: commands to every node, the per-user and node registries, the
//!   upstream stream, health.
//!
//! A broker hands what arrives for this node to a [`Sink`] and never touches the
//! hub itself.

pub mod counts;
pub mod memory;
pub mod notify;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::channel::{ChannelName, Namespace};
use crate::ids::ConnId;
use crate::position::{Page, Position};
use crate::protocol::{ClientInfo, Publication};

/// Broker failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached; nothing was done (503 / `unavailable`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The request was sent but no answer came in time: it may or may not have taken
    /// effect. A retry with the same idempotency key is safe (503 / `unavailable`).
    #[error("broker did not answer in time (the outcome is unknown): {0}")]
    Unknown(String),
    /// The broker answered something this node cannot use (500 / `internal`).
    #[error("broker error: {0}")]
    Internal(String),
    /// The broker refused the request as invalid (400 / `invalid_payload`).
    #[error("{0}")]
    Refused(String),
    /// A configured limit refused it (400 / `limit_exceeded`).
    #[error("{0}")]
    Limit(String),
}

/// A namespace's history settings, passed with every history-aware call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOpts {
    pub size: usize,
    pub ttl: Duration,
}

impl HistoryOpts {
    pub fn of(ns: &Namespace) -> Option<HistoryOpts> {
        ns.has_history().then_some(HistoryOpts {
            size: ns.history_size,
            ttl: ns.history_ttl,
        })
    }
}

/// A state namespace's settings (SPEC 16.1), passed with every state call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOpts {
    pub max_keys: usize,
    /// A key's life after its last change; zero: forever.
    pub ttl: Duration,
}

impl StateOpts {
    pub fn of(ns: &Namespace) -> Option<StateOpts> {
        ns.state.then_some(StateOpts {
            max_keys: ns.state_max_keys,
            ttl: ns.state_ttl,
        })
    }
}

/// A state channel's entries (SPEC 16.2): the newest publication of each key, or
/// the changes after an offset (tombstones included), ascending by offset.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    /// The channel's epoch ("" when it has no state) and newest offset.
    pub epoch: String,
    pub offset: u64,
    /// Tombstones at or below this offset may be gone: a partial snapshot from an
    /// older offset cannot be trusted.
    pub floor: u64,
    /// The entries are the changes after the asked offset, not every live key.
    pub partial: bool,
    pub entries: Vec<Arc<Publication>>,
}

impl StateSnapshot {
    /// Brings a full snapshot forward with the changes read after it (a partial read
    /// of the same epoch); false when `newer` is not that, and the caller reads again.
    pub fn advance(&mut self, newer: StateSnapshot) -> bool {
        if self.partial || !newer.partial || newer.epoch != self.epoch {
            return false;
        }
        let mut by_key: std::collections::HashMap<Arc<str>, Arc<Publication>> = self
            .entries
            .drain(..)
            .filter_map(|p| Some((p.key.clone()?, p)))
            .collect();
        for p in newer.entries {
            let Some(k) = p.key.clone() else { continue };
            if p.deleted {
                by_key.remove(&k);
            } else {
                by_key.insert(k, p);
            }
        }
        self.entries = by_key.into_values().collect();
        self.entries.sort_by_key(|p| p.offset);
        self.offset = newer.offset;
        self.floor = newer.floor;
        true
    }
}

/// What subscribing a channel involves besides receiving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOpts {
    /// The channel is numbered (history): it gets its epoch when first subscribed, so
    /// subscribers and its first publication agree on it.
    pub history: Option<HistoryOpts>,
    /// `occupied`/`vacated` are emitted for it (SPEC 17, `channel_events`).
    pub channel_events: bool,
}

impl SubscribeOpts {
    pub fn of(ns: &Namespace, events: &crate::config::EventsConfig) -> SubscribeOpts {
        use crate::config::EventKind;
        // State channels are numbered too, history or not.
        let numbered = HistoryOpts::of(ns).or(ns.state.then_some(HistoryOpts {
            size: 0,
            ttl: Duration::ZERO,
        }));
        SubscribeOpts {
            history: numbered,
            channel_events: ns.channel_events
                && (events.emits(EventKind::Occupied) || events.emits(EventKind::Vacated)),
        }
    }
}

/// How a publication is to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOpts {
    /// The namespace's history (None: not stored).
    pub history: Option<HistoryOpts>,
    /// A service's idempotency key and how long it is remembered (SPEC 6, 15.4).
    pub idempotency: Option<(String, Duration)>,
    /// A state channel: the publication sets (or deletes) its key (SPEC 16.1).
    pub state: Option<StateOpts>,
}

impl PublishOpts {
    pub fn history(history: Option<HistoryOpts>) -> PublishOpts {
        PublishOpts {
            history,
            ..PublishOpts::default()
        }
    }
}

/// What a publish returns: the stored position, on history channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
    /// The idempotency key was seen within its window: this is the first call's
    /// result, and nothing was published again.
    pub duplicate: bool,
}

/// A page of history, ascending by offset, with the channel's current position.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub publications: Vec<Arc<Publication>>,
    /// Newest offset of the channel (0 when nothing is kept).
    pub offset: u64,
    /// The history's epoch; empty when the channel has none (nothing stored, or lost).
    pub epoch: String,
}

impl Page for HistoryPage {
    fn epoch(&self) -> &str {
        &self.epoch
    }
    fn top(&self) -> u64 {
        self.offset
    }
    fn offsets(&self) -> Box<dyn Iterator<Item = (u64, Option<&str>)> + '_> {
        Box::new(
            self.publications
                .iter()
                .filter_map(|p| Some((p.offset?, p.entry_id.as_deref()))),
        )
    }
}

/// One presence entry: a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    pub conn_id: String,
    pub client: ClientInfo,
}

impl PresenceEntry {
    /// Who the entry counts as for `users`: the user, else the anonymous session.
    pub fn who(&self) -> String {
        match (&self.client.user_id, &self.client.session_id) {
            (Some(u), _) => format!("u:{u}"),
            (None, Some(s)) => format!("s:{s}"),
            (None, None) => format!("c:{}", self.conn_id),
        }
    }
}

/// A channel's presence: exact counts, and at most the asked number of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSet {
    /// Connections.
    pub count: usize,
    /// Distinct users and sessions.
    pub users: usize,
    pub entries: Vec<PresenceEntry>,
}

/// Whom a cluster-wide disconnect is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    User(String),
    Session(String),
    Conn(ConnId),
}

/// A cluster-wide command (`/api/disconnect`, `/api/subscribe`, `/api/unsubscribe`,
/// per-user evictions), run by every node on its own connections.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    Disconnect {
        target: Target,
        code: u16,
        reason: Option<String>,
    },
    Subscribe {
        user_id: String,
        channel: ChannelName,
    },
    Unsubscribe {
        user_id: String,
        channel: ChannelName,
    },
    /// `/api/revoke`: tokens of the user issued before `before` are refused until
    /// `until` (Unix seconds), and its connections on such tokens close with 4003.
    Revoke {
        user_id: String,
        before: u64,
        until: u64,
    },
    /// A read position moved (SPEC 15.1): the user's other connections subscribed to
    /// the channel get `read`, so a badge clears on every device.
    Read {
        target: Target,
        channel: ChannelName,
        read_offset: u64,
        unread: u64,
        /// The connection that marked it (it got the reply).
        except: ConnId,
    },
}

/// What a node tells the others about itself (registry heartbeat).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    /// The node's `/api/stats` `node` object.
    pub node: serde_json::Value,
    /// Channels with local subscribers and their subscriber counts.
    pub channels: Vec<(String, usize)>,
}

/// What the hub did with a publication handed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Fanned out (or no local subscribers to fan out to).
    Delivered,
    /// Its offset was delivered already: dropped.
    Duplicate,
    /// Offsets after `after` and before this one are missing: fill them from history
    /// first, then hand this one again.
    Gap { after: u64 },
    /// It belongs to another history: the channel's subscribers were closed with
    /// 4012 and the position moved.
    Lost,
    /// It reuses the offset delivered last with another entry (a failover lost
    /// writes): nothing was delivered; the broker gives the channel a new epoch and
    /// then closes its subscribers (`Sink::lose`).
    Reused,
}

/// Where a broker hands what it receives for this node: publications in channel
/// order, cluster-wide commands, and what it needs to know of the local state.
pub trait Sink: Send + Sync + 'static {
    fn deliver(&self, p: &Arc<Publication>) -> Delivery;
    fn execute(&self, c: &Control);
    /// Every local numbered channel with its delivery position (for gap fills after
    /// an interruption of the broker path).
    fn positions(&self) -> Vec<(ChannelName, Position)>;
    /// One numbered channel's delivery position (`None` when it has no subscribers).
    fn position(&self, ch: &ChannelName) -> Option<Position>;
    /// History cannot fill the channel's gap: close its subscribers with 4012 and
    /// move the position past the loss.
    fn lose(&self, ch: &ChannelName, position: Position);
    /// Whether this node holds the connection (tells live registry entries from
    /// ones whose removal failed).
    fn has_connection(&self, id: ConnId) -> bool;
    /// The channel is a state channel here: a gap in it is filled from its state,
    /// not from history (SPEC 16.2).
    fn state_opts(&self, _ch: &ChannelName) -> Option<StateOpts> {
        None
    }
    /// Delivers the changes of a state read after the channel's position (the newest
    /// version of each key, in offset order); false when the read cannot fill the
    /// gap (another epoch, or tombstones no longer reach back): then `lose` it.
    fn catch_up(&self, _ch: &ChannelName, _changes: &StateSnapshot) -> bool {
        false
    }
}

/// Publish, subscribe and history: the delivery path.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Accepts a publication: on history channels (`opts.history` given, not volatile,
    /// not targeted) assigns the next offset and stores it; then delivers it to every
    /// node with subscribers, in per-channel order. Returns only once accepted. With an
    /// idempotency key seen within its window, answers the first result (`duplicate`)
    /// and publishes nothing.
    async fn publish(&self, p: Publication, opts: &PublishOpts) -> Result<Published, BrokerError>;

    /// Starts receiving the channel's publications on this node (its first local
    /// subscriber) and records the node's interest cluster-wide: the first node makes
    /// the channel occupied, and a numbered channel gets its epoch. Returns once every
    /// publication accepted from now on will arrive.
    async fn subscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError>;

    /// Stops receiving them (the last local subscriber left); the last node makes the
    /// channel vacated, and an epoch nothing was published under goes with it.
    async fn unsubscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError>;

    /// A state channel's entries: every live key when `since` is `None` (or too old
    /// for the tombstones kept), else the changes after it; `keys` narrows either.
    /// Expired keys become tombstones on the way.
    async fn state(
        &self,
        ch: &ChannelName,
        opts: StateOpts,
        since: Option<u64>,
        keys: Option<&[String]>,
    ) -> Result<StateSnapshot, BrokerError>;

    /// The newest offset of each channel (0 when it has none): unread counts.
    async fn tops(&self, channels: &[ChannelName]) -> Result<Vec<u64>, BrokerError>;

    /// Publications after `since` (all kept when `None`), at most the newest `limit`.
    /// Reading never creates anything: a channel without history (and without
    /// subscribers) answers epoch "" and offset 0.
    async fn history(
        &self,
        ch: &ChannelName,
        opts: HistoryOpts,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, BrokerError>;
}

/// Who is subscribed where, cluster-wide, with expiry for crashed nodes.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds (or refreshes) a subscribed connection; kept alive by this node until
    /// removed, gone `presence_ttl` after this node stops refreshing it.
    async fn presence_add(&self, ch: &ChannelName, entry: PresenceEntry)
        -> Result<(), BrokerError>;
    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError>;
    /// Counts and at most `limit` entries.
    async fn presence(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError>;

    /// Counting presence (SPEC 16.5): a viewer of a counted channel joined. Kept on
    /// this node and reported in batches; nothing is stored per viewer.
    fn count_join(&self, ch: &ChannelName, entry: PresenceEntry);
    fn count_leave(&self, ch: &ChannelName, conn_id: &str);
    /// A counted channel's audience from every live node's report, in O(nodes):
    /// connections, distinct users (approximate across nodes, error under 2 %), and
    /// a sample of at most `limit` entries (one at least while anyone is there).
    async fn counts(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError>;
}

/// What spans the nodes: commands, registries, the upstream stream, health.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Runs a cluster-wide command on every node (this one included).
    async fn control(&self, cmd: Control) -> Result<(), BrokerError>;

    /// Registers a user's connection for the cluster-wide per-user limit and returns
    /// the user's live connection ids in registration order, this one included.
    async fn user_connected(&self, user: &str, conn: ConnId) -> Result<Vec<String>, BrokerError>;

    /// The user's live connection ids, in registration order.
    async fn user_connections(&self, user: &str) -> Result<Vec<String>, BrokerError>;

    /// Forgets a connection registered with `user_connected`.
    async fn user_disconnected(&self, user: &str, conn: ConnId) -> Result<(), BrokerError>;

    /// Appends a client publication to the upstream stream (`forward` namespaces).
    async fn forward(&self, p: &Publication, conn: ConnId) -> Result<(), BrokerError>;

    /// Publishes this node's registry entry (heartbeat).
    async fn report(&self, report: &NodeReport) -> Result<(), BrokerError>;

    /// The registry entries of every live node (none on a single node).
    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError>;

    /// Distinct users and sessions connected anywhere.
    async fn user_count(&self) -> Result<usize, BrokerError>;

    /// Lifecycle events appended after the one with id `after` (from the start when
    /// `None`), at most `max`, oldest first, with their ids (SPEC 17).
    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, crate::events::Event)>, BrokerError>;

    /// Appends events the node decided (SPEC 17: `connect`, `disconnect`,
    /// `subscribe`, `unsubscribe`), in order; the broker's own transitions append
    /// theirs.
    async fn emit(&self, events: Vec<crate::events::Event>) -> Result<(), BrokerError>;

    /// Webhook delivery (SPEC 17): the next events for consumer group `group` (one
    /// per webhook): first those a dead consumer left unacknowledged, then new ones,
    /// at most `max`, oldest first, with their ids.
    async fn consume_events(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(String, crate::events::Event)>, BrokerError>;

    /// Acknowledges delivered (or dead-lettered) events of `group`.
    async fn ack_events(&self, group: &str, ids: &[String]) -> Result<(), BrokerError>;

    /// Moves events a webhook gave up on to `<prefix>:events:dead`.
    async fn dead_letter(
        &self,
        events: &[crate::events::Event],
        webhook: &str,
        error: &str,
    ) -> Result<(), BrokerError>;

    /// Takes or keeps the lease `name` for `holder` for `ttl`: one node at a time
    /// delivers a webhook's events, which keeps them in order. True when held.
    async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, BrokerError>;

    /// Records a revocation cluster-wide (nodes reload them: `revocations`).
    async fn revoke(&self, user: &str, before: u64, until: u64) -> Result<(), BrokerError>;

    /// Every revocation in force: (user, before, until), Unix seconds.
    async fn revocations(&self) -> Result<Vec<(String, u64, u64)>, BrokerError>;

    /// Removes this node from the registry (clean shutdown).
    async fn deregister(&self);

    /// Whether the broker is reachable now (`/ready`, `switchyard_broker_up`).
    fn is_up(&self) -> bool;
}

/// One broker seen through its four faces.
#[derive(Clone)]
pub struct Brokers {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn Presence>,
    pub cluster: Arc<dyn Cluster>,
    pub notify: Arc<dyn notify::Notify>,
}

impl Brokers {
    pub fn of<B: Broker + Presence + Cluster + notify::Notify>(b: Arc<B>) -> Brokers {
        Brokers {
            broker: b.clone(),
            presence: b.clone(),
            cluster: b.clone(),
            notify: b,
        }
    }
}
