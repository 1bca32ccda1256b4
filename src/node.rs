//! The node: shared state every connection and API call works with (`Arc<Node>`), and
//! the operations that span the hub and the broker: subscribe with the broker's
//! interest and history, unsubscribe, publish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::auth::Auth;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{
    Broker, BrokerError, HistoryOpts, HistoryPage, NodeReport, PresenceEntry, Published, Sink,
};
use crate::channel::{ChannelName, Namespace, Namespaces};
use crate::config::{BrokerKind, Config, ConfigError};
use crate::hub::{ConnHandle, Control, Delivery, Hub};
use crate::metrics::Metrics;
use crate::protocol::{encode, ClientInfo, Publication, Since};

pub struct Node {
    pub config: Config,
    pub namespaces: Namespaces,
    pub auth: Auth,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    draining: AtomicBool,
}

impl Sink for Hub {
    fn deliver(&self, p: &Publication) -> Delivery {
        Hub::deliver(self, p)
    }

    fn execute(&self, c: &Control) {
        Hub::execute(self, c)
    }

    fn user_connections(&self, user: &str) -> Vec<String> {
        self.user_conns(user)
            .iter()
            .filter(|c| !c.outbox.is_closing())
            .map(|c| c.id.to_string())
            .collect()
    }
}

/// What a successful subscribe reports (`subscribed` payload).
#[derive(Debug, Clone, Serialize)]
pub struct Subscribed {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// Presence as answered to `presence` and `GET /api/presence/..`.
#[derive(Debug, Serialize)]
pub struct PresenceView {
    pub count: usize,
    pub users: usize,
    pub clients: Vec<PresenceClient>,
}

#[derive(Debug, Serialize)]
pub struct PresenceClient {
    pub conn_id: String,
    pub user_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub info: Option<Arc<RawValue>>,
}

const PRESENCE_CLIENTS_CAP: usize = 1000;

impl Node {
    pub fn new(config: Config) -> Result<Arc<Node>, ConfigError> {
        let namespaces = Namespaces::from_config(&config)?;
        let auth = Auth::from_config(&config)?;
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker: Arc<dyn Broker> = match config.broker {
            BrokerKind::Memory => Arc::new(MemoryBroker::new(hub.clone())),
            BrokerKind::Redis => RedisBroker::start(&config, hub.clone(), metrics.clone())
                .map_err(|e| ConfigError::Key {
                    key: "redis.url".into(),
                    message: e.to_string(),
                })?,
        };
        metrics
            .broker_up
            .set(if broker.is_up() { 1.0 } else { 0.0 });
        Ok(Arc::new(Node {
            config,
            namespaces,
            auth,
            hub,
            broker,
            metrics,
            started: Instant::now(),
            draining: AtomicBool::new(false),
        }))
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
        !self.is_draining() && self.broker.is_up()
    }

    /// Subscribes `conn` to `ch` and queues `subscribed` (with `id`) and, when `since`
    /// is given, the missed publications, all before any live publication. Runs the
    /// broker subscribe first when this is the channel's first local subscriber.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnHandle>,
        ch: &ChannelName,
        ns: &Namespace,
        since: Option<&Since>,
        id: Option<&str>,
        reply: bool,
    ) -> Result<Subscribed, BrokerError> {
        let _guard = self.hub.channel_lock(ch).lock().await;
        let first = !self.hub.has_subscribers(ch);
        if first {
            self.hub.ensure_channel(ch);
            if let Err(e) = self.broker.subscribe(ch).await {
                self.hub.remove_channel_if_empty(ch);
                return Err(e);
            }
        }
        let result = self.attach(conn, ch, ns, since, id, reply).await;
        if result.is_err() && first && self.hub.remove_channel_if_empty(ch) {
            // Best effort: the broker interest is dropped again on failure.
            let _ = self.broker.unsubscribe(ch).await;
        }
        result
    }

    async fn attach(
        &self,
        conn: &Arc<ConnHandle>,
        ch: &ChannelName,
        ns: &Namespace,
        since: Option<&Since>,
        id: Option<&str>,
        reply: bool,
    ) -> Result<Subscribed, BrokerError> {
        let Some(opts) = HistoryOpts::of(ns) else {
            let body = Subscribed {
                channel: ch.to_string(),
                offset: None,
                epoch: None,
                recovered: since.map(|_| false),
            };
            let bytes = encode("subscribed", id, None, &body);
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
                .broker
                .history(ch, opts, since.map(|s| s.offset), None)
                .await?;
            let recovered = since.map(|s| recovery_ok(s, &page));
            let body = Subscribed {
                channel: ch.to_string(),
                offset: Some(page.offset),
                epoch: Some(page.epoch.clone()),
                recovered,
            };
            let bytes = encode("subscribed", id, None, &body);
            let epoch: Arc<str> = Arc::from(page.epoch.as_str());
            let added = self
                .hub
                .add_subscriber(ch, conn, Some((page.offset, &epoch)), || {
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

    /// Removes `conn` from `ch`; drops the broker interest after the last local one.
    pub async fn unsubscribe(&self, conn: &ConnHandle, ch: &ChannelName) {
        let _guard = self.hub.channel_lock(ch).lock().await;
        if self.hub.remove_subscriber(ch, conn.id) && self.hub.remove_channel_if_empty(ch) {
            if let Err(e) = self.broker.unsubscribe(ch).await {
                tracing::warn!(channel = %ch, error = %e, "broker unsubscribe failed");
            }
        }
    }

    /// Publishes through the broker, timing it.
    pub async fn publish(&self, p: Publication, ns: &Namespace) -> Result<Published, BrokerError> {
        let start = Instant::now();
        let r = self.broker.publish(p, HistoryOpts::of(ns)).await;
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
            Some(opts) => self.broker.history(ch, opts, since, limit).await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn presence(&self, ch: &ChannelName) -> Result<PresenceView, BrokerError> {
        let entries = self.broker.presence(ch).await?;
        let mut users = std::collections::HashSet::new();
        for e in &entries {
            if let Some(u) = e.client.user_id.as_ref().or(e.client.session_id.as_ref()) {
                users.insert(u.clone());
            }
        }
        Ok(PresenceView {
            count: entries.len(),
            users: users.len(),
            clients: entries
                .into_iter()
                .take(PRESENCE_CLIENTS_CAP)
                .map(|e| PresenceClient {
                    conn_id: e.conn_id,
                    user_id: e.client.user_id,
                    session_id: e.client.session_id,
                    info: e.client.info,
                })
                .collect(),
        })
    }

    /// Records presence and announces `join` where the namespace asks for it.
    pub async fn joined(&self, conn: &ConnHandle, ch: &ChannelName, ns: &Namespace) {
        if !ns.tracks_presence() && !ns.join_leave {
            return;
        }
        let client = conn.who().client_info();
        if ns.tracks_presence() {
            let entry = PresenceEntry {
                conn_id: conn.id.to_string(),
                client: client.clone(),
            };
            if let Err(e) = self.broker.presence_add(ch, entry).await {
                tracing::warn!(channel = %ch, error = %e, "presence add failed");
            }
        }
        if ns.join_leave {
            self.announce(ch, "join", &client).await;
        }
    }

    /// Removes presence and announces `leave`.
    pub async fn left(&self, conn: &ConnHandle, ch: &ChannelName, ns: &Namespace) {
        if ns.tracks_presence() {
            if let Err(e) = self.broker.presence_remove(ch, &conn.id.to_string()).await {
                tracing::warn!(channel = %ch, error = %e, "presence remove failed");
            }
        }
        if ns.join_leave {
            self.announce(ch, "leave", &conn.who().client_info()).await;
        }
    }

    async fn announce(&self, ch: &ChannelName, event: &str, client: &ClientInfo) {
        let Ok(payload) = serde_json::value::to_raw_value(client) else {
            return;
        };
        let mut p = Publication::new(ch.arc().clone(), event.to_owned(), payload);
        p.volatile = true;
        if let Err(e) = self.broker.publish(p, None).await {
            tracing::warn!(channel = %ch, error = %e, event, "announce failed");
        }
    }

    /// This node's registry entry.
    pub fn report(&self) -> NodeReport {
        NodeReport {
            node: self.stats(),
            users: self.hub.user_count(),
            channels: self.hub.channels(None),
        }
    }

    /// Every live node's entry, this one's fresh (the registry may lag by a beat).
    pub async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        let mut all = vec![self.report()];
        for r in self.broker.cluster().await? {
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

/// Whether history can fill the gap after `since` (SPEC 5.3).
fn recovery_ok(since: &Since, page: &HistoryPage) -> bool {
    if since.epoch != page.epoch || since.offset > page.offset {
        return false;
    }
    if since.offset == page.offset {
        return true;
    }
    // Everything after `since` must still be kept: the first kept one is since+1.
    page.publications.first().and_then(|p| p.offset) == Some(since.offset + 1)
}

/// Bytes of a JSON array made of already-encoded publications.
pub fn publications_json(pubs: &[Arc<Publication>]) -> Box<RawValue> {
    let mut out = Vec::with_capacity(pubs.iter().map(|p| p.bytes().len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, p) in pubs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p.bytes());
    }
    out.push(b']');
    let text = String::from_utf8(out).unwrap_or_else(|_| "[]".to_owned());
    RawValue::from_string(text).unwrap_or_else(|_| empty_array())
}

fn empty_array() -> Box<RawValue> {
    RawValue::from_string("[]".to_owned()).unwrap_or_else(|_| unreachable!("[] is JSON"))
}

/// Shared JSON bytes helper for replies built from `serde_json::Value`.
pub fn json_bytes(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
