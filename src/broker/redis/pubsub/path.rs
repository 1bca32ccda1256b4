//! An open subscription path: one dedicated pub/sub connection to one Redis, or a
//! RESP3 cluster connection that routes sharded subscriptions to each slot's master.
//! Subscribing many channels is pipelined: batches of channels per command (in a
//! cluster, one command per slot, since SSUBSCRIBE names channels of one slot), many
//! commands in flight, each with its own timeout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use futures_util::{stream, StreamExt};
use redis::{self, aio::PubSubSink, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::super::conn::slot;
use crate::broker::BrokerError;
use crate::config::RedisConfig;

/// Channels per SUBSCRIBE command on one Redis.
const BATCH: usize = 1000;
/// Subscribe commands in flight at once while (re)subscribing.
const IN_FLIGHT: usize = 32;

pub(super) fn down(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// How to open the subscription path.
pub(in crate::broker::redis) enum Client {
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

    pub(super) async fn open(&self, timeout: Duration) -> Result<Path, BrokerError> {
        match self {
            Client::Single(client) => {
                let (sink, stream) = client.get_async_pubsub().await.map_err(down)?.split();
                Ok(Path::Single { sink, stream })
            }
            Client::Cluster(url) => {
                let (tx, pushes) = mpsc::unbounded_channel();
                let client = redis::cluster::ClusterClientBuilder::new(vec![url.as_str()])
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(down)?;
                let conn = client.get_async_connection().await.map_err(down)?;
                Ok(Path::Cluster {
                    conn,
                    pushes,
                    leaving: HashSet::new(),
                    expected: Arc::default(),
                })
            }
        }
    }
}

/// The handle that sends subscribe commands while the path's reader goes on; cheap
/// to clone, so a resubscription runs beside the loop that delivers.
#[derive(Clone)]
pub(super) enum Subscriber {
    Single(PubSubSink),
    Cluster(redis::cluster_async::ClusterConnection, Expected),
}

/// Sharded subscribe confirmations this node asked for, per channel. redis-rs
/// repairs a cluster connection by itself and subscribes again, slowly and without
/// telling: a confirmation nobody asked for is how an interruption shows.
pub(super) type Expected = Arc<Mutex<HashMap<String, u32>>>;

impl Subscriber {
    /// Subscribes `channels`, pipelined, each command within `timeout`. `done` hears
    /// of every group once Redis confirmed it, so its channels can be filled at once.
    pub(super) async fn subscribe_all(
        &self,
        channels: Vec<String>,
        timeout: Duration,
        done: impl Fn(&[String]),
    ) -> Result<(), BrokerError> {
        let groups: Vec<Vec<String>> = match self {
            Subscriber::Single(_) => channels.chunks(BATCH).map(<[String]>::to_vec).collect(),
            Subscriber::Cluster(..) => {
                let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
                for ch in channels {
                    by_slot.entry(slot(&ch)).or_default().push(ch);
                }
                by_slot.into_values().collect()
            }
        };
        let mut results = stream::iter(groups)
            .map(|group| {
                let mut s = self.clone();
                async move {
                    let r = tokio::time::timeout(timeout, async {
                        match &mut s {
                            Subscriber::Single(sink) => sink.subscribe(&group).await,
                            Subscriber::Cluster(conn, expected) => {
                                {
                                    let mut e = expected.lock();
                                    for ch in &group {
                                        *e.entry(ch.clone()).or_default() += 1;
                                    }
                                }
                                conn.ssubscribe(&group).await
                            }
                        }
                    })
                    .await;
                    (group, r)
                }
            })
            .buffer_unordered(match self {
                Subscriber::Single(_) => IN_FLIGHT,
                // One command per slot: many more of them, each small.
                Subscriber::Cluster(..) => IN_FLIGHT * 8,
            });
        while let Some((group, r)) = results.next().await {
            match r {
                Ok(Ok(())) => done(&group),
                Ok(Err(e)) => return Err(down(e)),
                Err(_) => return Err(down("a subscribe batch timed out")),
            }
        }
        Ok(())
    }
}

/// An open subscription path.
pub(super) enum Path {
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
        expected: Expected,
    },
}

impl Path {
    pub(super) fn subscriber(&self) -> Subscriber {
        match self {
            Path::Single { sink, .. } => Subscriber::Single(sink.clone()),
            Path::Cluster { conn, expected, .. } => {
                Subscriber::Cluster(conn.clone(), expected.clone())
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Path::Single { sink, .. } => sink.unsubscribe(channel).await,
            Path::Cluster { conn, leaving, .. } => {
                leaving.insert(channel.to_owned());
                conn.sunsubscribe(channel).await
            }
        }
    }

    /// The next message as (channel, payload); `None` when the path is lost.
    pub(super) async fn next(&mut self) -> Option<(String, Vec<u8>)> {
        match self {
            Path::Single { stream, .. } => {
                let m = stream.next().await?;
                Some((
                    m.get_channel_name().to_owned(),
                    m.get_payload_bytes().to_vec(),
                ))
            }
            Path::Cluster {
                pushes,
                leaving,
                expected,
                ..
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
                    PushKind::SSubscribe => {
                        let ch = match data.next() {
                            Some(Value::BulkString(ch)) => {
                                String::from_utf8_lossy(&ch).into_owned()
                            }
                            _ => String::new(),
                        };
                        let mut e = expected.lock();
                        match e.get_mut(&ch) {
                            Some(n) if *n > 1 => *n -= 1,
                            Some(_) => {
                                e.remove(&ch);
                            }
                            // Not asked for: redis-rs repaired a connection on its own,
                            // so publications may have been missed meanwhile.
                            None => return None,
                        }
                    }
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}
