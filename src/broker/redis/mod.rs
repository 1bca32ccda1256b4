//! The Redis broker (SPEC section 8): publications go through Redis pub/sub on
//! `<prefix>:{<channel>}` (interest-based: a node subscribes while it has local
//! subscribers), history and epochs live in a stream and a meta hash written by the
//! `switchyard_publish` function, presence in a hash with per-entry expiry, and the
//! cluster-wide commands and node registry under `<prefix>:`.

mod conn;
mod history;
mod keys;
mod pubsub;
mod wire;

pub(crate) use history::read_history;
pub(crate) use keys::Keys;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use parking_lot::Mutex;

use conn::{Commands, Conn};

use super::{Broker, BrokerError, HistoryOpts, HistoryPage, NodeReport, PresenceEntry, Published};
use crate::channel::ChannelName;
use crate::config::Config;
use crate::hub::Control;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{ClientInfo, Publication};

pub(crate) const FUNCTIONS: &str = include_str!("switchyard.lua");
/// Upstream stream length bound (`XADD ... MAXLEN ~`).
const UPSTREAM_MAXLEN: usize = 100_000;
/// How long a node's registry entry outlives its last heartbeat.
const REGISTRY_TTL: Duration = Duration::from_secs(15);

pub(crate) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

pub struct RedisBroker {
    keys: Keys,
    pool: Commands,
    node_id: String,
    presence_ttl: Duration,
    /// Presence entries this node wrote (connection id → entry JSON), rewritten
    /// until removed, so they survive a Redis restart; a crashed node's entries
    /// expire after `presence_ttl`.
    local_presence: Mutex<HashMap<ChannelName, HashMap<String, String>>>,
    /// This node's connections, to tell its live per-user entries from stale ones.
    hub: Arc<Hub>,
    subs: pubsub::Handle,
    up: Arc<AtomicBool>,
}

impl RedisBroker {
    /// Builds the broker and starts its subscription task; Redis may be down at this
    /// point: the task keeps trying and `/ready` says 503 until it is up.
    pub fn start(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let pool = Commands::new(&config.redis)?;
        let client = pubsub::Client::new(&config.redis)?;
        let keys = Keys {
            prefix: config.redis.prefix.clone(),
        };
        let up = Arc::new(AtomicBool::new(false));
        metrics.broker_up.set(0.0);
        let hub_for_broker = hub.clone();
        let subs = pubsub::spawn(pubsub::Setup {
            client,
            pool: pool.clone(),
            keys: keys.clone(),
            node_id: config.node_id.clone(),
            hub,
            metrics,
            up: up.clone(),
        });
        let broker = Arc::new(RedisBroker {
            keys,
            pool,
            node_id: config.node_id.clone(),
            presence_ttl: config.presence_ttl,
            local_presence: Mutex::new(HashMap::new()),
            hub: hub_for_broker,
            subs,
            up,
        });
        tokio::spawn(refresh_presence(Arc::downgrade(&broker)));
        Ok(broker)
    }

    async fn conn(&self) -> Result<Conn, BrokerError> {
        self.pool.get().await
    }

    /// PUBLISH, or SPUBLISH on a Redis Cluster (sharded pub/sub).
    fn publish_cmd(&self) -> &'static str {
        if self.pool.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

impl RedisBroker {
    /// A user's connections on live nodes, oldest first; entries of nodes that left
    /// the registry (crashed) are removed on the way.
    async fn live_user_conns(
        &self,
        conn: &mut Conn,
        user: &str,
    ) -> Result<Vec<String>, BrokerError> {
        let key = self.keys.user_conns(user);
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg(Self::now_ms().saturating_sub(REGISTRY_TTL.as_millis() as u64))
            .arg("+inf")
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for m in members {
            let Some((node, id)) = m.split_once('|') else {
                continue;
            };
            // Own entries are checked against the hub: one whose removal failed (Redis
            // down at the time) or that predates a restart is not a connection.
            let alive = if node == self.node_id {
                crate::ids::ConnId::parse(id)
                    .and_then(|c| self.hub.get(c))
                    .is_some()
            } else {
                live.iter().any(|n| n == node)
            };
            if alive {
                out.push(id.to_owned());
            } else {
                let _ = redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&m)
                    .query_async::<()>(conn)
                    .await;
            }
        }
        Ok(out)
    }
}

/// Keeps this node's presence entries alive while they exist.
async fn refresh_presence(broker: std::sync::Weak<RedisBroker>) {
    loop {
        let period = match broker.upgrade() {
            Some(b) => (b.presence_ttl / 3).max(Duration::from_millis(200)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(b) = broker.upgrade() else { return };
        let entries: Vec<(ChannelName, Vec<(String, String)>)> = b
            .local_presence
            .lock()
            .iter()
            .map(|(c, ids)| {
                (
                    c.clone(),
                    ids.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let Ok(mut conn) = b.conn().await else {
            continue;
        };
        let exp = RedisBroker::now_ms() + b.presence_ttl.as_millis() as u64;
        for (ch, ids) in &entries {
            // One channel at a time: its two keys share one cluster slot. Rewritten,
            // not just touched, so entries lost with Redis come back.
            let fields: Vec<&str> = ids
                .iter()
                .flat_map(|(id, info)| [id.as_str(), info.as_str()])
                .collect();
            let scores: Vec<String> = ids
                .iter()
                .flat_map(|(id, _)| [exp.to_string(), id.clone()])
                .collect();
            let r = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(b.keys.presence(ch.as_str()))
                .arg(fields)
                .ignore()
                .cmd("ZADD")
                .arg(b.keys.presence_exp(ch.as_str()))
                .arg(scores)
                .ignore()
                .query_async::<()>(&mut conn)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "presence refresh failed");
                break;
            }
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        p: Publication,
        history: Option<HistoryOpts>,
    ) -> Result<Published, BrokerError> {
        let key = self.keys.channel(&p.channel);
        let envelope = wire::encode(&p, &self.node_id);
        let mut conn = self.conn().await?;
        match history {
            Some(opts) if !p.volatile && p.to.is_none() => {
                let (offset, epoch): (u64, String) = redis::cmd("FCALL")
                    .arg("switchyard_publish")
                    .arg(1)
                    .arg(&key)
                    .arg(envelope)
                    .arg(opts.size)
                    .arg(opts.ttl.as_secs().max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(Published {
                    offset: Some(offset),
                    epoch: Some(epoch),
                })
            }
            _ => {
                redis::cmd(self.publish_cmd())
                    .arg(&key)
                    .arg(envelope)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(Published::default())
            }
        }
    }

    async fn subscribe(&self, ch: &ChannelName) -> Result<(), BrokerError> {
        self.subs.subscribe(self.keys.channel(ch.as_str())).await
    }

    async fn unsubscribe(&self, ch: &ChannelName) -> Result<(), BrokerError> {
        self.subs.unsubscribe(self.keys.channel(ch.as_str())).await
    }

    async fn history(
        &self,
        ch: &ChannelName,
        _opts: HistoryOpts,
        since: Option<u64>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, BrokerError> {
        let mut conn = self.conn().await?;
        read_history(
            &mut conn,
            &self.keys,
            ch.as_str(),
            _opts.ttl.as_secs().max(1),
            since,
            limit,
        )
        .await
    }

    async fn presence_add(
        &self,
        ch: &ChannelName,
        entry: PresenceEntry,
    ) -> Result<(), BrokerError> {
        let info = serde_json::to_string(&entry.client)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        // Remembered first: if Redis is down now, the refresh writes it once it is back.
        self.local_presence
            .lock()
            .entry(ch.clone())
            .or_default()
            .insert(entry.conn_id.clone(), info.clone());
        let exp = Self::now_ms() + self.presence_ttl.as_millis() as u64;
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(self.keys.presence(ch.as_str()))
            .arg(&entry.conn_id)
            .arg(info)
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.presence_exp(ch.as_str()))
            .arg(exp)
            .arg(&entry.conn_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError> {
        {
            let mut local = self.local_presence.lock();
            if let Some(ids) = local.get_mut(ch) {
                ids.remove(conn_id);
                if ids.is_empty() {
                    local.remove(ch);
                }
            }
        }
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(self.keys.presence(ch.as_str()))
            .arg(conn_id)
            .ignore()
            .cmd("ZREM")
            .arg(self.keys.presence_exp(ch.as_str()))
            .arg(conn_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn presence(&self, ch: &ChannelName) -> Result<Vec<PresenceEntry>, BrokerError> {
        let mut conn = self.conn().await?;
        let exp_key = self.keys.presence_exp(ch.as_str());
        let key = self.keys.presence(ch.as_str());
        let now = Self::now_ms();
        let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&exp_key)
            .arg("-inf")
            .arg(now)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !expired.is_empty() {
            redis::pipe()
                .cmd("HDEL")
                .arg(&key)
                .arg(&expired)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&exp_key)
                .arg("-inf")
                .arg(now)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(conn_id, info)| {
                let client: ClientInfo = serde_json::from_str(&info).ok()?;
                Some(PresenceEntry { conn_id, client })
            })
            .collect())
    }

    async fn user_connected(&self, user: &str, conn_id: &str) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn().await?;
        let key = self.keys.user_conns(user);
        redis::cmd("ZADD")
            .arg(&key)
            .arg(Self::now_ms())
            .arg(format!("{}|{conn_id}", self.node_id))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        redis::cmd("EXPIRE")
            .arg(&key)
            .arg(86400)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.live_user_conns(&mut conn, user).await
    }

    async fn user_connections(&self, user: &str) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn().await?;
        self.live_user_conns(&mut conn, user).await
    }

    async fn user_disconnected(&self, user: &str, conn_id: &str) {
        if let Ok(mut conn) = self.conn().await {
            let _ = redis::cmd("ZREM")
                .arg(self.keys.user_conns(user))
                .arg(format!("{}|{conn_id}", self.node_id))
                .query_async::<()>(&mut conn)
                .await;
        }
    }

    async fn control(&self, cmd: Control) -> Result<(), BrokerError> {
        let text = serde_json::to_string(&cmd).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut conn = self.conn().await?;
        redis::cmd(self.publish_cmd())
            .arg(self.keys.control())
            .arg(text)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn forward(&self, p: &Publication, conn_id: &str) -> Result<(), BrokerError> {
        let from = p.from.clone().unwrap_or(ClientInfo {
            user_id: None,
            session_id: None,
            info: None,
        });
        let mut conn = self.conn().await?;
        redis::cmd("XADD")
            .arg(self.keys.upstream())
            .arg("MAXLEN")
            .arg("~")
            .arg(UPSTREAM_MAXLEN)
            .arg("*")
            .arg("channel")
            .arg(&*p.channel)
            .arg("type")
            .arg(&p.event)
            .arg("payload")
            .arg(p.payload.get())
            .arg("user_id")
            .arg(from.user_id.as_deref().unwrap_or(""))
            .arg("session_id")
            .arg(from.session_id.as_deref().unwrap_or(""))
            .arg("conn_id")
            .arg(conn_id)
            .arg("node")
            .arg(&self.node_id)
            .arg("ts")
            .arg(&p.timestamp)
            .query_async::<String>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn report(&self, report: &NodeReport) -> Result<(), BrokerError> {
        let text =
            serde_json::to_string(report).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut conn = self.conn().await?;
        let now = Self::now_ms();
        // Separate commands: the keys live in different cluster slots.
        redis::cmd("SET")
            .arg(self.keys.node(&self.node_id))
            .arg(text)
            .arg("PX")
            .arg(REGISTRY_TTL.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        redis::cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(now)
            .arg(&self.node_id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(now.saturating_sub(REGISTRY_TTL.as_millis() as u64))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg(Self::now_ms().saturating_sub(REGISTRY_TTL.as_millis() as u64))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for id in ids {
            let text: Option<String> = redis::cmd("GET")
                .arg(self.keys.node(&id))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if let Some(r) = text.and_then(|t| serde_json::from_str(&t).ok()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn deregister(&self) {
        if let Ok(mut conn) = self.conn().await {
            let _ = redis::cmd("DEL")
                .arg(self.keys.node(&self.node_id))
                .query_async::<()>(&mut conn)
                .await;
            let _ = redis::cmd("ZREM")
                .arg(self.keys.nodes())
                .arg(&self.node_id)
                .query_async::<()>(&mut conn)
                .await;
        }
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}
