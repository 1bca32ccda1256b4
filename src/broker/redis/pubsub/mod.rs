//! The node's subscription path to Redis: one dedicated pub/sub connection, owned by
//! one task that subscribes and unsubscribes on request, hands publications to the
//! sink in order (gaps are filled off the loop, [`fill`]), reconnects with jittered
//! backoff and resubscribes by itself in pipelined batches while publications keep
//! flowing on the channels already back, and publishes a canary through its own
//! path to notice a connection that is up but no longer delivers (SPEC 8.5, 8.6).

mod fill;
pub(super) mod path;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{self, Value};
use tokio::sync::{mpsc, oneshot};

use self::fill::Filler;
use self::path::{down, Client, Path};
use super::conn::slot;
use super::{functions, wire, Commands, Keys};
use crate::broker::{BrokerError, Control, Sink};
use crate::channel::ChannelName;
use crate::config::RedisConfig;
use crate::metrics::{Metrics, PUBLICATIONS};

/// Canary period; the path is declared dead after `CANARY_MISSES` periods of silence.
const CANARY_PERIOD: Duration = Duration::from_millis(1000);
const CANARY_MISSES: u32 = 3;
/// Bound on any single Redis round trip of the subscription path.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct Setup {
    pub(super) client: Client,
    pub(super) pool: Commands,
    pub(super) keys: Keys,
    pub(super) library: Arc<str>,
    pub(super) node_id: String,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) up: Arc<AtomicBool>,
}

impl Setup {
    pub(super) fn client(cfg: &RedisConfig) -> Result<Client, BrokerError> {
        Client::new(cfg)
    }
}

enum Cmd {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String, oneshot::Sender<Result<(), BrokerError>>),
}

/// Requests to the subscription task.
pub(super) struct Handle {
    tx: mpsc::Sender<Cmd>,
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

/// Reconnect delays: exponential with full jitter, so nodes that lost Redis together
/// do not come back in step.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100 * 2u64.pow(attempt.min(5))).min(Duration::from_secs(3));
    let ms = rand::random_range(50..=cap.as_millis().max(50) as u64);
    Duration::from_millis(ms)
}

async fn run(s: Setup, mut rx: mpsc::Receiver<Cmd>) {
    let filler = Filler::new(
        s.sink.clone(),
        s.pool.clone(),
        s.keys.clone(),
        s.library.clone(),
    );
    let mut wanted: HashSet<String> = HashSet::new();
    let mut connected_before = false;
    let mut attempt = 0;
    loop {
        let opened = tokio::time::timeout(OP_TIMEOUT * 2, connect(&s)).await;
        let (path, canaries) = match opened {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis subscription path unavailable; retrying");
                attempt += 1;
                if !wait_while_down(&s, &mut rx, &mut wanted, backoff(attempt)).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("redis connect timed out; retrying");
                attempt += 1;
                if !wait_while_down(&s, &mut rx, &mut wanted, backoff(attempt)).await {
                    return;
                }
                continue;
            }
        };
        attempt = 0;
        if connected_before {
            s.metrics.broker_reconnects.increment(1);
            tracing::info!(channels = wanted.len(), "redis subscription path restored");
        }
        connected_before = true;
        let why = serve(&s, &filler, path, canaries, &mut rx, &mut wanted).await;
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

/// Opens the path: loads the functions, subscribes the canaries and the control
/// channel. The channels themselves are resubscribed by `serve`, beside delivery.
async fn connect(s: &Setup) -> Result<(Path, Vec<String>), BrokerError> {
    let path = s.client.open(OP_TIMEOUT).await?;
    let mut conn = s.pool.get().await?;
    functions::load(&mut conn, &s.library).await?;
    let canaries = canary_channels(s).await?;
    let mut fixed = canaries.clone();
    fixed.push(s.keys.control());
    path.subscriber()
        .subscribe_all(fixed, OP_TIMEOUT, |_| {})
        .await?;
    Ok((path, canaries))
}

/// Runs the connected path until it fails (`Some(reason)`) or the node is gone.
async fn serve(
    s: &Setup,
    filler: &Filler,
    mut path: Path,
    canaries: Vec<String>,
    rx: &mut mpsc::Receiver<Cmd>,
    wanted: &mut HashSet<String>,
) -> Option<&'static str> {
    // Every local channel is subscribed again in pipelined batches beside this loop;
    // each numbered one is filled from history as soon as its batch is confirmed.
    let mut positions: HashMap<String, crate::position::Position> = s
        .sink
        .positions()
        .into_iter()
        .map(|(ch, pos)| (s.keys.channel(ch.as_str()), pos))
        .collect();
    let resubscribe = {
        let subscriber = path.subscriber();
        let channels: Vec<String> = wanted.iter().cloned().collect();
        let filler = filler.clone();
        let keys = s.keys.clone();
        let started = Instant::now();
        let total = channels.len();
        let positions = parking_lot::Mutex::new(std::mem::take(&mut positions));
        tokio::spawn(async move {
            let r = subscriber
                .subscribe_all(channels, OP_TIMEOUT, |group| {
                    for name in group {
                        let Some(pos) = positions.lock().remove(name) else {
                            continue;
                        };
                        if let Some(ch) = keys
                            .channel_of(name)
                            .and_then(|c| ChannelName::parse(c).ok())
                        {
                            filler.refill(&ch, pos);
                        }
                    }
                })
                .await;
            if r.is_ok() && total > 0 {
                tracing::info!(
                    channels = total,
                    ms = started.elapsed().as_millis() as u64,
                    "redis channels resubscribed"
                );
            }
            r
        })
    };
    tokio::pin!(resubscribe);
    let mut resubscribing = true;
    if wanted.is_empty() {
        set_up(s, true);
    }
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
    let mut last_message = Instant::now();
    loop {
        // No branch is preferred: a burst of messages must not starve subscribe
        // requests, the end of the resubscription or the canary.
        tokio::select! {
            msg = path.next() => {
                let Some((name, payload)) = msg else { return Some("connection closed") };
                if let Some(t) = last_seen.get_mut(&name) {
                    *t = Instant::now();
                } else if name == control_channel {
                    match serde_json::from_slice::<Control>(&payload) {
                        Ok(c) => s.sink.execute(&c),
                        Err(e) => tracing::warn!(error = %e, "malformed control message ignored"),
                    }
                } else {
                    last_message = Instant::now();
                    dispatch(s, filler, &name, &payload, &mut last_bad_log);
                }
            },
            r = &mut resubscribe, if resubscribing => {
                resubscribing = false;
                match r {
                    Ok(Ok(())) => set_up(s, true),
                    _ => return Some("resubscribe failed"),
                }
            },
            cmd = rx.recv() => {
                match cmd {
                    None => return None,
                    // The requester gave up (timed out): its subscribe must not linger.
                    Some(Cmd::Subscribe(_, reply)) if reply.is_closed() => {}
                    Some(Cmd::Subscribe(ch, reply)) => {
                        let sub = path.subscriber();
                        match sub.subscribe_all(vec![ch.clone()], OP_TIMEOUT, |_| {}).await {
                            Ok(()) => {
                                wanted.insert(ch);
                                let _ = reply.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
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
                }
            },
            _ = tick.tick() => {
                let delivering = !s.pool.is_cluster() && last_message.elapsed() < CANARY_PERIOD;
                if last_probe.elapsed() > CANARY_PERIOD * 2 || delivering {
                    // The loop was busy (no canary went out meanwhile, so its silence
                    // proves nothing), or the one connection is delivering messages: a
                    // path that delivers is alive, even while a backlog holds the
                    // canary back. (A cluster path has a connection per master, each
                    // watched by its own canary.)
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
            },
        }
    }
}

/// Hands one message to the filler (which delivers it in order); malformed ones are
/// dropped, counted and logged (at most every 10 s).
fn dispatch(
    s: &Setup,
    filler: &Filler,
    name: &str,
    payload: &[u8],
    last_bad_log: &mut Option<Instant>,
) {
    let decoded = s
        .keys
        .channel_of(name)
        .and_then(|ch| ChannelName::parse(ch).ok())
        .and_then(|ch| wire::decode(&ch, payload));
    let Some((p, from_service)) = decoded else {
        s.metrics
            .counter(PUBLICATIONS, "source", "malformed")
            .increment(1);
        if last_bad_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last_bad_log = Some(Instant::now());
            tracing::warn!(channel = name, "malformed message from redis dropped");
        }
        return;
    };
    if from_service {
        s.metrics
            .counter(PUBLICATIONS, "source", "redis")
            .increment(1);
    }
    filler.dispatch(Arc::new(p));
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn reconnect_delays_are_jittered_and_bounded() {
        let delays: Vec<Duration> = (0..200).map(|_| backoff(4)).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(50)));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1600)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 20, "jittered, not in step");
        assert!((0..50).all(|_| backoff(30) <= Duration::from_secs(3)));
    }
}
