//! The node's subscription path to Redis: one dedicated pub/sub connection, owned by
//! one task that subscribes and unsubscribes on request, hands publications to the
//! hub in order, fills gaps from history (SPEC 5.8), reconnects and resubscribes by
//! itself, and publishes a canary through its own path to notice a connection that
//! is up but no longer delivers (SPEC 8.6).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, aio::PubSubSink, Msg};
use deadpool_redis::Pool;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{read_history, wire, Keys, FUNCTIONS};
use crate::broker::BrokerError;
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

pub(super) struct Setup {
    pub(super) client: redis::Client,
    pub(super) pool: Pool,
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
        self.tx.send(make(tx)).await.map_err(down)?;
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
        let (sink, stream) = match attempt {
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
        fill_all_gaps(&s).await;
        set_up(&s, true);
        let why = serve(&s, sink, stream, &mut rx, &mut wanted).await;
        set_up(&s, false);
        match why {
            None => return,
            Some(reason) => tracing::warn!(reason, "redis subscription path lost; reconnecting"),
        }
        // Connections in the pool may be as dead as this one (a silent network fault):
        // drop them so the next commands open fresh ones.
        s.pool.retain(|_, _| false);
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

type Stream = redis::aio::PubSubStream;

async fn connect(s: &Setup, wanted: &HashSet<String>) -> Result<(PubSubSink, Stream), BrokerError> {
    let pubsub = s.client.get_async_pubsub().await.map_err(down)?;
    let (mut sink, stream) = pubsub.split();
    let mut conn = s.pool.get().await.map_err(down)?;
    let library = FUNCTIONS.replace("__PUBLISH__", "PUBLISH");
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async::<String>(&mut conn)
        .await
        .map_err(down)?;
    sink.subscribe(&[s.keys.canary(&s.node_id), s.keys.control()])
        .await
        .map_err(down)?;
    let all: Vec<&String> = wanted.iter().collect();
    for chunk in all.chunks(BATCH) {
        sink.subscribe(chunk).await.map_err(down)?;
    }
    Ok((sink, stream))
}

/// Runs the connected path until it fails (`Some(reason)`) or the node is gone.
async fn serve(
    s: &Setup,
    mut sink: PubSubSink,
    mut stream: Stream,
    rx: &mut mpsc::Receiver<Cmd>,
    wanted: &mut HashSet<String>,
) -> Option<&'static str> {
    let canary_channel = s.keys.canary(&s.node_id);
    let control_channel = s.keys.control();
    let mut tick = tokio::time::interval(CANARY_PERIOD);
    let mut last_canary = Instant::now();
    let mut seq: u64 = 0;
    let mut last_bad_log: Option<Instant> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return None,
                Some(Cmd::Subscribe(ch, reply)) => {
                    match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&ch)).await {
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
                    let r = tokio::time::timeout(OP_TIMEOUT, sink.unsubscribe(&ch)).await;
                    let _ = reply.send(Ok(()));
                    if !matches!(r, Ok(Ok(()))) {
                        return Some("unsubscribe failed");
                    }
                }
            },
            msg = stream.next() => {
                let Some(msg) = msg else { return Some("connection closed") };
                let name = msg.get_channel_name();
                if name == canary_channel {
                    last_canary = Instant::now();
                } else if name == control_channel {
                    match serde_json::from_slice::<Control>(msg.get_payload_bytes()) {
                        Ok(c) => s.hub.execute(&c),
                        Err(e) => tracing::warn!(error = %e, "malformed control message ignored"),
                    }
                } else {
                    dispatch(s, &msg, &mut last_bad_log).await;
                }
            },
            _ = tick.tick() => {
                if last_canary.elapsed() > CANARY_PERIOD * CANARY_MISSES {
                    return Some("canary not received");
                }
                seq += 1;
                let pool = s.pool.clone();
                let channel = canary_channel.clone();
                // Published off the loop: a stalled command must not stall delivery.
                tokio::spawn(async move {
                    let publish = async {
                        let mut conn = pool.get().await.ok()?;
                        redis::cmd("PUBLISH").arg(channel).arg(seq).query_async::<i64>(&mut conn).await.ok()
                    };
                    let _ = tokio::time::timeout(CANARY_PERIOD, publish).await;
                });
            }
        }
    }
}

async fn dispatch(s: &Setup, msg: &Msg, last_bad_log: &mut Option<Instant>) {
    let decoded = s
        .keys
        .channel_of(msg.get_channel_name())
        .and_then(|ch| wire::decode(ch, msg.get_payload_bytes()));
    let Some((p, from_service)) = decoded else {
        s.metrics
            .counter(PUBLICATIONS, "source", "malformed")
            .increment(1);
        if last_bad_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last_bad_log = Some(Instant::now());
            tracing::warn!(
                channel = msg.get_channel_name(),
                "malformed message from redis dropped"
            );
        }
        return;
    };
    if from_service {
        s.metrics
            .counter(PUBLICATIONS, "source", "redis")
            .increment(1);
    }
    deliver_in_order(s, &p).await;
}

/// Delivers `p`, first filling from history whatever this node missed before it.
async fn deliver_in_order(s: &Setup, p: &Publication) {
    if let Delivery::Gap { after } = s.hub.deliver(p) {
        let pos = Position {
            epoch: p.epoch.clone(),
            offset: after,
        };
        fill_gap(s, &p.channel, &pos).await;
        let _ = s.hub.deliver(p);
    }
}

/// Reads what history holds after `pos` and delivers it in order, or closes the
/// channel's subscribers with 4012 when history cannot fill the gap (5.8).
async fn fill_gap(s: &Setup, ch: &str, pos: &Position) {
    let Ok(Ok(mut conn)) = tokio::time::timeout(OP_TIMEOUT, s.pool.get()).await else {
        return;
    };
    let page = match tokio::time::timeout(
        OP_TIMEOUT,
        read_history(&mut conn, &s.keys, ch, 0, Some(pos.offset), None),
    )
    .await
    {
        Ok(Ok(page)) => page,
        _ => return,
    };
    let same_epoch = pos.epoch.as_deref() == Some(page.epoch.as_str());
    let first = page.publications.first().and_then(|p| p.offset);
    let contiguous = page.offset == pos.offset || first == Some(pos.offset + 1);
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
        return;
    }
    for p in &page.publications {
        let _ = s.hub.deliver(p);
    }
}

/// After (re)connecting: every history channel catches up from where it stopped.
async fn fill_all_gaps(s: &Setup) {
    for (ch, pos) in s.hub.positions() {
        if pos.epoch.is_some() {
            fill_gap(s, ch.as_str(), &pos).await;
        }
    }
}
