//! The broker seam: how a publication gets from whoever accepted it to every node
//! with subscribers, and where history and presence live. [`memory::MemoryBroker`]
//! keeps everything in process (one node); a Redis implementation sits behind the
//! same trait, so the rest of the node never knows which one runs.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::channel::{ChannelName, Namespace};
use crate::protocol::{ClientInfo, Publication};

/// Broker failures; every one means "not done, retry later" to the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached (503 / `unavailable`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered something this node cannot use.
    #[error("broker error: {0}")]
    Internal(String),
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

/// What a publish returns: the stored position, on history channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
}

/// A page of history, ascending by offset, with the channel's current position.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub publications: Vec<Arc<Publication>>,
    /// Newest offset of the channel (0 when nothing was ever kept).
    pub offset: u64,
    pub epoch: String,
}

/// One presence entry: a subscribed connection.
#[derive(Debug, Clone)]
pub struct PresenceEntry {
    pub conn_id: String,
    pub client: ClientInfo,
}

/// Where the broker hands publications and cluster-wide commands for this node.
pub trait Sink: Send + Sync + 'static {
    fn deliver(&self, p: &Publication) -> crate::hub::Delivery;
    fn execute(&self, c: &Control);
    /// This node's open (not closing) connections of a user, oldest first.
    fn user_connections(&self, user: &str) -> Vec<String>;
}

pub use crate::hub::Control;

/// What a node tells the others about itself (registry heartbeat).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    /// The node's `/api/stats` `node` object.
    pub node: serde_json::Value,
    /// Distinct users connected to the node.
    pub users: usize,
    /// Channels with local subscribers and their subscriber counts.
    pub channels: Vec<(String, usize)>,
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Accepts a publication: on history channels (`history` given, not volatile, not
    /// targeted) assigns the next offset and stores it; then delivers it to every node
    /// with subscribers, in per-channel order. Returns only once accepted.
    async fn publish(
        &self,
        p: Publication,
        history: Option<HistoryOpts>,
    ) -> Result<Published, BrokerError>;

    /// Starts receiving the channel's publications on this node.
    async fn subscribe(&self, ch: &ChannelName) -> Result<(), BrokerError>;

    /// Stops receiving them (the last local subscriber left).
    async fn unsubscribe(&self, ch: &ChannelName) -> Result<(), BrokerError>;

    /// Publications after `since` (all kept when `None`), at most the newest `limit`.
    async fn history(
        &self,
        ch: &ChannelName,
        opts: HistoryOpts,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, BrokerError>;

    async fn presence_add(&self, ch: &ChannelName, entry: PresenceEntry)
        -> Result<(), BrokerError>;
    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError>;
    async fn presence(&self, ch: &ChannelName) -> Result<Vec<PresenceEntry>, BrokerError>;

    /// Registers a user's connection for the cluster-wide per-user limit and returns
    /// the user's live connection ids, oldest first, this one included.
    async fn user_connected(&self, user: &str, conn_id: &str) -> Result<Vec<String>, BrokerError>;

    /// The user's live connection ids, oldest first (the `reject` check at upgrade).
    async fn user_connections(&self, user: &str) -> Result<Vec<String>, BrokerError>;

    /// Forgets a connection registered with `user_connected`.
    async fn user_disconnected(&self, user: &str, conn_id: &str);

    /// Runs a cluster-wide command on every node (this one included).
    async fn control(&self, cmd: Control) -> Result<(), BrokerError>;

    /// Appends a client publication to the upstream stream (`forward` namespaces).
    async fn forward(&self, p: &Publication, conn_id: &str) -> Result<(), BrokerError>;

    /// Publishes this node's registry entry (heartbeat).
    async fn report(&self, report: &NodeReport) -> Result<(), BrokerError>;

    /// The registry entries of every live node (none on a single node).
    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError>;

    /// Removes this node from the registry (clean shutdown).
    async fn deregister(&self);

    /// Whether the broker is reachable now (`/ready`, `switchyard_broker_up`).
    fn is_up(&self) -> bool;
}
