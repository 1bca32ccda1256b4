//! The Redis broker (SPEC section 8): publications go through Redis pub/sub on
//! `<prefix>:{<channel>}` (interest-based: a node subscribes while it has local
//! subscribers), history, epochs and entry ids live in a stream and a meta hash
//! written by the `switchyard_publish` function, and every cluster-wide decision is a
//! function call (`functions`). Presence is in [`presence`], the registries and
//! commands in [`registry`], the subscription path in [`pubsub`].

mod conn;
mod events;
mod functions;
mod history;
mod keys;
mod notify;
mod presence;
mod pubsub;
mod registry;
mod state;
mod wire;

pub(crate) use conn::{classify, Commands, Conn};
pub(crate) use keys::Keys;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::{self, Value};

use super::{
    Broker, BrokerError, HistoryOpts, HistoryPage, PublishOpts, Published, Sink, StateOpts,
    StateSnapshot, SubscribeOpts,
};
use crate::channel::ChannelName;
use crate::config::{Config, EventsConfig};
use crate::metrics::Metrics;
use crate::protocol::Publication;

/// This node's presence entries: channel → connection → (who, info JSON).
type LocalPresence = HashMap<ChannelName, HashMap<String, (String, String)>>;

/// How long a node's registry entry outlives its last heartbeat (every 2 s): its
/// `presence_ttl`, kept between three missed heartbeats and 15 s, so a crashed node's
/// channels are vacated and its users go offline within `presence_ttl` (SPEC 17).
fn registry_ttl(presence_ttl: Duration) -> Duration {
    presence_ttl.clamp(Duration::from_secs(6), Duration::from_secs(15))
}

pub struct RedisBroker {
    keys: Keys,
    pool: Commands,
    /// The function library as loaded (reloaded when Redis lost it).
    library: Arc<str>,
    node_id: String,
    presence_ttl: Duration,
    upstream_maxlen: usize,
    events: EventsConfig,
    /// The namespaces, for what a dead node's channels emit when they are reaped.
    namespaces: crate::channel::Namespaces,
    /// Presence entries this node wrote, rewritten until removed, so they survive a
    /// Redis restart; a crashed node's entries expire after `presence_ttl`.
    local_presence: Mutex<LocalPresence>,
    /// Viewers of counted channels on this node, reported in batches.
    counts: super::counts::LocalCounts,
    /// Webhook consumer groups known to exist.
    groups: Mutex<std::collections::HashSet<String>>,
    metrics: Arc<Metrics>,
    sink: Arc<dyn Sink>,
    subs: pubsub::Handle,
    up: Arc<AtomicBool>,
}

impl RedisBroker {
    /// Builds the broker and starts its subscription task; Redis may be down at this
    /// point: the task keeps trying and `/ready` says 503 until it is up.
    pub fn start(
        config: &Config,
        sink: Arc<dyn Sink>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let pool = Commands::new(&config.redis)?;
        let client = pubsub::Setup::client(&config.redis)?;
        let keys = Keys {
            prefix: config.redis.prefix.clone(),
        };
        let library: Arc<str> = Arc::from(functions::library(config.redis.cluster));
        let up = Arc::new(AtomicBool::new(false));
        metrics.broker_up.set(0.0);
        let subs = pubsub::spawn(pubsub::Setup {
            client,
            pool: pool.clone(),
            keys: keys.clone(),
            library: library.clone(),
            node_id: config.node_id.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            up: up.clone(),
        });
        let broker = Arc::new(RedisBroker {
            keys,
            pool,
            library,
            node_id: config.node_id.clone(),
            presence_ttl: config.presence_ttl,
            upstream_maxlen: config.limits.upstream_maxlen,
            events: config.events.clone(),
            namespaces: crate::channel::Namespaces::from_config(config)
                .map_err(|e| BrokerError::Internal(e.to_string()))?,
            local_presence: Mutex::new(HashMap::new()),
            counts: Default::default(),
            groups: Mutex::default(),
            metrics,
            sink,
            subs,
            up,
        });
        tokio::spawn(presence::refresh(Arc::downgrade(&broker)));
        tokio::spawn(presence::report_counts(Arc::downgrade(&broker)));
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

fn published(v: Value) -> Result<Published, BrokerError> {
    let bad = || BrokerError::Internal(format!("unexpected switchyard_publish reply: {v:?}"));
    let Value::Array(parts) = &v else {
        return Err(bad());
    };
    let int = |x: Option<&Value>| match x {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    };
    let offset = int(parts.first()).ok_or_else(bad)?;
    let epoch = match parts.get(1) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => return Err(bad()),
    };
    Ok(Published {
        offset: (offset > 0).then_some(offset as u64),
        epoch: (!epoch.is_empty()).then_some(epoch),
        duplicate: int(parts.get(2)) == Some(1),
    })
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, p: Publication, opts: &PublishOpts) -> Result<Published, BrokerError> {
        let key = self.keys.channel(p.channel.as_str());
        let envelope = wire::encode(&p, &self.node_id);
        let mut conn = self.conn().await?;
        if let Some(state) = opts.state.filter(|_| p.storable()) {
            let cmd = state::set_cmd(
                &self.keys,
                &p.channel,
                envelope,
                state,
                opts.idempotency.as_ref(),
            );
            let reply: Value = functions::call(&mut conn, &self.library, &cmd).await?;
            return published(reply);
        }
        let stored = opts.history.filter(|_| p.storable());
        if stored.is_none() && opts.idempotency.is_none() {
            // Nothing to store or remember: a plain PUBLISH, no function call.
            redis::cmd(self.publish_cmd())
                .arg(&key)
                .arg(envelope)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| classify(&e))?;
            return Ok(Published::default());
        }
        let (size, ttl) = stored
            .map(|h| (h.size, h.ttl.as_secs().max(1)))
            .unwrap_or((0, 0));
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_publish")
            .arg(1)
            .arg(&key)
            .arg(envelope)
            .arg(size)
            .arg(ttl);
        if let Some((idem, window)) = &opts.idempotency {
            cmd.arg(idem).arg(window.as_secs().max(1));
        }
        let reply: Value = functions::call(&mut conn, &self.library, &cmd).await?;
        published(reply)
    }

    async fn subscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError> {
        self.subs.subscribe(self.keys.channel(ch.as_str())).await?;
        if let Err(e) = self.occupy(ch, opts).await {
            let _ = self.subs.unsubscribe(self.keys.channel(ch.as_str())).await;
            return Err(e);
        }
        Ok(())
    }

    async fn unsubscribe(&self, ch: &ChannelName, opts: &SubscribeOpts) -> Result<(), BrokerError> {
        self.subs
            .unsubscribe(self.keys.channel(ch.as_str()))
            .await?;
        self.vacate(ch, &self.node_id, opts.channel_events).await
    }

    async fn state(
        &self,
        ch: &ChannelName,
        opts: StateOpts,
        since: Option<u64>,
        keys: Option<&[String]>,
    ) -> Result<StateSnapshot, BrokerError> {
        let mut conn = self.conn().await?;
        state::read_state(&mut conn, &self.library, &self.keys, ch, opts, since, keys).await
    }

    async fn tops(&self, channels: &[ChannelName]) -> Result<Vec<u64>, BrokerError> {
        let cmds = channels
            .iter()
            .map(|ch| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(format!("{}:meta", self.keys.channel(ch.as_str())))
                    .arg("top");
                cmd
            })
            .collect();
        let replies = self.pool.query_all(cmds).await?;
        Ok(replies
            .iter()
            .map(|v| match v {
                Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                Value::Int(i) => (*i).max(0) as u64,
                _ => 0,
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
        let mut conn = self.conn().await?;
        history::read_history(&mut conn, &self.library, &self.keys, ch, since, limit).await
    }
}

impl RedisBroker {
    pub(crate) fn is_up_now(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}
