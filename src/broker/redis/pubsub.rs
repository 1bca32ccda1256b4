//! The node's subscription path to Redis: one dedicated pub/sub connection, owned by
//! one task that subscribes and unsubscribes on request, hands publications to the
//! hub in order, fills gaps from history (SPEC 5.8), reconnects and resubscribes by
//! itself, and publishes a canary through its own path to notice a connection that
//! is up but no longer delivers (SPEC 8.6).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, aio::PubSubSink, PushInfo, PushKind, Value};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::conn::{slot, Commands};
use super::{read_history, wire, Keys, FUNCTIONS};
use crate::broker::BrokerError;
use crate::config::RedisConfig;
use crate::hub::{Control, Delivery, Hub, Position};
use crate::metrics::{Metrics, PUBLICATIONS};
use crate::protocol::Publication;

/// Canary period; the path is declared dead after `CANARY_MISSES` periods of silence.
const CANARY_PERIOD: Duration = Duration::from_millis(1000);
const CANARY_MISSES: u32 = 3;
/// Bound on any single Redis round trip of the subscription path.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE command when resubscribing everything.
const BATCH: usize = 1000;

/// How to open the subscription path: one Redis, or a Redis Cluster (sharded pub/sub
/// over RESP3, routed by slot).
pub(super) enum Client {
    Single(redis::Client),
    Cluster(String),
}

impl Client {
    pub(super) fn new(cfg: &RedisConfig) -> Result<Client, BrokerError> {
        if cfg.cluster {
            Ok(Client::Cluster(cfg.url.clone()))
        } else {
            redis::Client::open(cfg.url.as_str())
                .map(Client::Single)
                .map_err(|e| BrokerError::Internal(format!("redis.url: {e}")))
        }
    }
}

/// An open subscription path.
enum Path {
    Single {
        sink: PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Channels this node unsubscribed: their `sunsubscribe` confirmations are
        /// expected; any other one means Redis dropped a subscription (slot moved).
        leaving: HashSet<String>,
    },
}

impl Path {
    async fn subscribe(&mut self, channels: &[&String]) -> redis::RedisResult<()> {
        match self {
            Path::Single { sink, .. } => sink.subscribe(channels).await,
            // A sharded subscribe names channels of one slot: one at a time.
            Path::Cluster { conn, .. } => {
                for ch in channels {
                    conn.ssubscribe(ch.as_str()).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Path::Single { sink, .. } => sink.unsubscribe(channel).await,
            Path::Cluster { conn, leaving, .. } => {
                leaving.insert(channel.to_owned());
                conn.sunsubscribe(channel).await
            }
        }
    }

    /// The next message as (channel, payload); `None` when the path is lost.
    async fn next(&mut self) -> Option<(String, Vec<u8>)> {
        match self {
            Path::Single { stream, .. } => {
                let m = stream.next().await?;
                Some((
                    m.get_channel_name().to_owned(),
                    m.get_payload_bytes().to_vec(),
                ))
            }
            Path::Cluster {
                pushes, leaving, ..
            } => loop {
                let push = pushes.recv().await?;
                let mut data = push.data.into_iter();
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let (Some(Value::BulkString(ch)), Some(Value::BulkString(payload))) =
                            (data.next(), data.next())
                        {
                            return Some((String::from_utf8_lossy(&ch).into_owned(), payload));
                        }
                    }
                    PushKind::SUnsubscribe => {
                        let ch = match data.next() {
                            Some(Value::BulkString(ch)) => {
                                String::from_utf8_lossy(&ch).into_owned()
                            }
                            _ => String::new(),
                        };
                        // Not asked for: the server dropped it because its slot moved.
                        if !leaving.remove(&ch) {
                            return None;
                        }
                    }
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}

pub(super) struct Setup {
    pub(super) client: Client,
    pub(super) pool: Commands,
    pub(super) keys: Keys,
    pub(super) node_id: String,
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) up: Arc<AtomicBool>,
}

enum Cmd {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), BrokerError>>),
}

/// Requests to the subscription task.
pub(super) struct Handle {
    tx: mpsc::Sender<Cmd>,
}

fn down(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl Handle {
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), BrokerError>>) -> Cmd,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send_timeout(make(tx), OP_TIMEOUT)
            .await
            .map_err(|_| down("subscription path busy"))?;
        match tokio::time::timeout(OP_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(down("subscription path busy")),
        }
    }

    /// Returns once Redis confirmed the subscription: publications from now on arrive.
    pub(super) async fn subscribe(&self, channel: String) -> Result<(), BrokerError> {
        self.ask(|tx| Cmd::Subscribe(channel, tx)).await
    }

    pub(super) async fn unsubscribe(&self, channel: String) -> Result<(), BrokerError> {
        self.ask(|tx| Cmd::Unsubscribe(channel, tx)).await
    }
}

pub(super) fn spawn(setup: Setup) -> Handle {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(run(setup, rx));
    Handle { tx }
}

fn set_up(s: &Setup, up: bool) {
    s.up.store(up, Ordering::SeqCst);
    s.metrics.broker_up.set(if up { 1.0 } else { 0.0 });
}

async fn run(s: Setup, mut rx: mpsc::Receiver<Cmd>) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut connected_before = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::time::timeout(OP_TIMEOUT * 4, connect(&s, &wanted)).await;
        let (path, canaries) = match attempt {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis subscription path unavailable; retrying");
                if !wait_while_down(&s, &mut rx, &mut wanted, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::warn!("redis connect timed out; retrying");
                if !wait_while_down(&s, &mut rx, &mut wanted, backoff).await {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if connected_before {
            s.metrics.broker_reconnects.increment(1);
            tracing::info!(channels = wanted.len(), "redis subscription path restored");
        }
        connected_before = true;
        // Whatever reached history while the path was down is delivered before anything
        // newer; messages arriving meanwhile wait in the stream and are deduplicated.
        if !fill_all_gaps(&s).await {
            tracing::warn!("could not read history after reconnecting; retrying");
            s.pool.reset();
            if !wait_while_down(&s, &mut rx, &mut wanted, backoff).await {
                return;
            }
            continue;
        }
        set_up(&s, true);
        let why = serve(&s, path, canaries, &mut rx, &mut wanted).await;
        set_up(&s, false);
        match why {
            None => return,
            Some(reason) => tracing::warn!(reason, "redis subscription path lost; reconnecting"),
        }
        // Connections in the pool may be as dead as this one (a silent network fault):
        // drop them so the next commands open fresh ones.
        s.pool.reset();
    }
}

/// While Redis is unreachable: refuse subscribes (the caller says `unavailable`),
/// accept unsubscribes, and wait `delay`. False when the node is gone.
async fn wait_while_down(
    s: &Setup,
    rx: &mut mpsc::Receiver<Cmd>,
    wanted: &mut HashSet<String>,
    delay: Duration,
) -> bool {
    set_up(s, false);
    let until = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return true,
            cmd = rx.recv() => match cmd {
                None => return false,
                Some(Cmd::Subscribe(_, reply)) => { let _ = reply.send(Err(down("redis unavailable"))); }
                Some(Cmd::Unsubscribe(ch, reply)) => { wanted.remove(&ch); let _ = reply.send(Ok(())); }
            }
        }
    }
}

fn publish_cmd(s: &Setup) -> &'static str {
    if s.pool.is_cluster() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

/// One canary channel per master: each shard's path is watched on its own. On one
/// Redis there is one.
async fn canary_channels(s: &Setup) -> Result<Vec<String>, BrokerError> {
    if !s.pool.is_cluster() {
        return Ok(vec![s.keys.canary(&s.node_id)]);
    }
    let mut conn = s.pool.get().await?;
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .map_err(down)?;
    let mut masters: HashMap<String, (u16, u16)> = HashMap::new();
    if let Value::Array(ranges) = slots {
        for r in ranges {
            let Value::Array(parts) = r else { continue };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let id = format!("{:?}", master.get(2).or(master.get(1)));
            masters.entry(id).or_insert((*start as u16, *end as u16));
        }
    }
    let mut out = Vec::new();
    for (start, end) in masters.values() {
        let name = (0u32..2_000_000)
            .map(|i| format!("__canary__:{}:{i}", s.node_id))
            .find(|tag| (*start..=*end).contains(&slot(tag)))
            .ok_or_else(|| BrokerError::Internal("no canary name for a slot range".into()))?;
        out.push(format!("{}:{{{name}}}", s.keys.prefix));
    }
    Ok(out)
}

async fn connect(s: &Setup, wanted: &HashSet<String>) -> Result<(Path, Vec<String>), BrokerError> {
    let mut path = match &s.client {
        Client::Single(client) => {
            let (sink, stream) = client.get_async_pubsub().await.map_err(down)?.split();
            Path::Single { sink, stream }
        }
        Client::Cluster(url) => {
            let (tx, pushes) = mpsc::unbounded_channel();
            let client = redis::cluster::ClusterClientBuilder::new(vec![url.as_str()])
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .build()
                .map_err(down)?;
            let conn = client.get_async_connection().await.map_err(down)?;
            Path::Cluster {
                conn,
                pushes,
                leaving: HashSet::new(),
            }
        }
    };
    let mut conn = s.pool.get().await?;
    // On a cluster FUNCTION LOAD goes to every master.
    let library = FUNCTIONS.replace("__PUBLISH__", publish_cmd(s));
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async::<Value>(&mut conn)
        .await
        .map_err(down)?;
    let canaries = canary_channels(s).await?;
    let control = s.keys.control();
    let mut fixed: Vec<&String> = canaries.iter().collect();
    fixed.push(&control);
    path.subscribe(&fixed).await.map_err(down)?;
    let all: Vec<&String> = wanted.iter().collect();
    for chunk in all.chunks(BATCH) {
        path.subscribe(chunk).await.map_err(down)?;
    }
    Ok((path, canaries))
}

/// Runs the connected path until it fails (`Some(reason)`) or the node is gone.
async fn serve(
    s: &Setup,
    mut path: Path,
    canaries: Vec<String>,
    rx: &mut mpsc::Receiver<Cmd>,
    wanted: &mut HashSet<String>,
) -> Option<&'static str> {
    let control_channel = s.keys.control();
    let mut tick = tokio::time::interval(CANARY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe = Instant::now();
    let mut last_seen: HashMap<String, Instant> = canaries
        .iter()
        .map(|c| (c.clone(), Instant::now()))
        .collect();
    let mut seq: u64 = 0;
    let mut last_bad_log: Option<Instant> = None;
    loop {
        tokio::select! {
            // Messages first: a burst must not make the canary look late.
            biased;
            msg = path.next() => {
                let Some((name, payload)) = msg else { return Some("connection closed") };
                if let Some(t) = last_seen.get_mut(&name) {
                    *t = Instant::now();
                } else if name == control_channel {
                    match serde_json::from_slice::<Control>(&payload) {
                        Ok(c) => s.hub.execute(&c),
                        Err(e) => tracing::warn!(error = %e, "malformed control message ignored"),
                    }
                } else {
                    let started = Instant::now();
                    if !dispatch(s, &name, &payload, &mut last_bad_log).await {
                        return Some("history read failed while filling a gap");
                    }
                    if started.elapsed() > CANARY_PERIOD {
                        // Time spent filling a gap is not silence on the path.
                        last_seen.values_mut().for_each(|t| *t = Instant::now());
                    }
                }
            },
            cmd = rx.recv() => match cmd {
                None => return None,
                // The requester gave up (timed out): its subscribe must not linger.
                Some(Cmd::Subscribe(_, reply)) if reply.is_closed() => {}
                Some(Cmd::Subscribe(ch, reply)) => {
                    match tokio::time::timeout(OP_TIMEOUT, path.subscribe(&[&ch])).await {
                        Ok(Ok(())) => {
                            wanted.insert(ch);
                            let _ = reply.send(Ok(()));
                        }
                        _ => {
                            let _ = reply.send(Err(down("redis subscribe failed")));
                            return Some("subscribe failed");
                        }
                    }
                }
                Some(Cmd::Unsubscribe(ch, reply)) => {
                    wanted.remove(&ch);
                    let r = tokio::time::timeout(OP_TIMEOUT, path.unsubscribe(&ch)).await;
                    let _ = reply.send(Ok(()));
                    if !matches!(r, Ok(Ok(()))) {
                        return Some("unsubscribe failed");
                    }
                }
            },
            _ = tick.tick() => {
                if last_probe.elapsed() > CANARY_PERIOD * 2 {
                    // The loop was busy (a burst of subscribes, each a round trip on
                    // this path): no canary went out meanwhile, so its silence proves
                    // nothing, and the replies just read prove the path alive.
                    last_seen.values_mut().for_each(|t| *t = Instant::now());
                }
                last_probe = Instant::now();
                if last_seen.values().any(|t| t.elapsed() > CANARY_PERIOD * CANARY_MISSES) {
                    return Some("canary not received");
                }
                seq += 1;
                for channel in &canaries {
                    let pool = s.pool.clone();
                    let channel = channel.clone();
                    let cmd = publish_cmd(s);
                    // Published off the loop: a stalled command must not stall delivery.
                    tokio::spawn(async move {
                        let publish = async {
                            let mut conn = pool.get().await.ok()?;
                            redis::cmd(cmd).arg(channel).arg(seq).query_async::<i64>(&mut conn).await.ok()
                        };
                        let _ = tokio::time::timeout(CANARY_PERIOD, publish).await;
                    });
                }
            }
        }
    }
}

/// Hands one message to the hub; false when a needed history read failed.
async fn dispatch(
    s: &Setup,
    name: &str,
    payload: &[u8],
    last_bad_log: &mut Option<Instant>,
) -> bool {
    let decoded = s
        .keys
        .channel_of(name)
        .and_then(|ch| wire::decode(ch, payload));
    let Some((p, from_service)) = decoded else {
        s.metrics
            .counter(PUBLICATIONS, "source", "malformed")
            .increment(1);
        if last_bad_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last_bad_log = Some(Instant::now());
            tracing::warn!(channel = name, "malformed message from redis dropped");
        }
        return true;
    };
    if from_service {
        s.metrics
            .counter(PUBLICATIONS, "source", "redis")
            .increment(1);
    }
    deliver_in_order(s, &p).await
}

/// Delivers `p`, first filling from history whatever this node missed before it.
/// False when history could not be read (the path is then rebuilt and refilled).
async fn deliver_in_order(s: &Setup, p: &Publication) -> bool {
    let Delivery::Gap { after } = s.hub.deliver(p) else {
        return true;
    };
    let pos = Position {
        epoch: p.epoch.clone(),
        offset: after,
    };
    if !fill_gap(s, &p.channel, &pos).await {
        return false;
    }
    if let Delivery::Gap { .. } = s.hub.deliver(p) {
        // History holds less than this publication proves was written (a failover to
        // a replica that missed writes): never deliver around the hole.
        s.hub.lose_history(
            &p.channel,
            Position {
                epoch: p.epoch.clone(),
                offset: p.offset.unwrap_or(after),
            },
        );
    }
    true
}

/// Reads what history holds after `pos` and delivers it in order, or closes the
/// channel's subscribers with 4012 when history cannot fill the gap (5.8). False
/// when history could not be read at all.
async fn fill_gap(s: &Setup, ch: &str, pos: &Position) -> bool {
    let read = async {
        let mut conn = s.pool.get().await?;
        read_history(&mut conn, &s.keys, ch, 0, Some(pos.offset), None).await
    };
    let page = match tokio::time::timeout(OP_TIMEOUT, read).await {
        Ok(Ok(page)) => page,
        _ => return false,
    };
    let same_epoch = pos.epoch.as_deref() == Some(page.epoch.as_str());
    let first = page.publications.first().and_then(|p| p.offset);
    let contiguous = page.offset == pos.offset || first == Some(pos.offset.saturating_add(1));
    if !same_epoch || page.offset < pos.offset || !contiguous {
        tracing::info!(
            channel = ch,
            "history cannot fill a gap: subscribers closed with 4012"
        );
        s.hub.lose_history(
            ch,
            Position {
                epoch: Some(Arc::from(page.epoch.as_str())),
                offset: page.offset,
            },
        );
        return true;
    }
    for p in &page.publications {
        let _ = s.hub.deliver(p);
    }
    true
}

/// After (re)connecting: every history channel catches up from where it stopped.
/// False when history could not be read.
async fn fill_all_gaps(s: &Setup) -> bool {
    for (ch, pos) in s.hub.positions() {
        if pos.epoch.is_some() && !fill_gap(s, ch.as_str(), &pos).await {
            return false;
        }
    }
    true
}
