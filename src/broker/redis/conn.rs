//! Command connections for both Redis shapes: `redis.pool_size` multiplexed
//! connections to one Redis (each a `ConnectionManager`, which reconnects by itself),
//! used round-robin, or one multiplexed cluster connection that routes each command
//! to the master of its key's slot. Connections are opened on first use, so a node
//! starts while Redis is down. A connection is shared by every caller at once: taking
//! one costs no round trip (a checked-out pool connection would cost a PING each).
//! The rest of the broker sees one `Conn` type.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use tokio::sync::Mutex;

use crate::broker::BrokerError;
use crate::config::RedisConfig;

/// Bound on opening a connection and on any one answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Generous enough for a large history read; a dead peer must not hang a caller.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub(crate) enum Commands {
    Single(Arc<Single>),
    Cluster(Arc<Cluster>),
}

pub(crate) struct Single {
    client: redis::Client,
    size: usize,
    // The open connections: read on every command (a clone of one handle), written
    // when one opens or all are dropped; a sync lock, never held across an await.
    open: parking_lot::RwLock<Vec<ConnectionManager>>,
    // Held while a connection is being opened (awaited): one at a time, so callers
    // of an empty set wait for one connection instead of opening many.
    opening: Mutex<()>,
    next: AtomicUsize,
}

pub(crate) struct Cluster {
    url: String,
    // As above: one connection, opened once by the first caller.
    conn: Mutex<Option<ClusterConnection>>,
}

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What a Redis error means to the caller. A timeout after the command was sent is
/// `Unknown`: it may have run, and only an idempotency key makes a retry safe.
pub(crate) fn classify(e: &RedisError) -> BrokerError {
    let text = e.to_string();
    match e.kind() {
        _ if e.is_timeout() => BrokerError::Unknown(text),
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => BrokerError::Unavailable(text),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => BrokerError::Unavailable(text),
        _ => match e.detail() {
            // The function refused the input (SPEC 8.2): nothing stored or published.
            Some(d) if d.starts_with("switchyard: limit: ") => {
                BrokerError::Limit(d["switchyard: limit: ".len()..].to_owned())
            }
            Some(d) if d.starts_with("switchyard: ") => {
                BrokerError::Refused(d["switchyard: ".len()..].to_owned())
            }
            _ => BrokerError::Internal(text),
        },
    }
}

fn down(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl Commands {
    pub(crate) fn new(cfg: &RedisConfig) -> Result<Commands, BrokerError> {
        let bad = |e: &dyn std::fmt::Display| BrokerError::Internal(format!("redis.url: {e}"));
        if cfg.cluster {
            // The URL is checked now: a bad one refuses to start the node.
            redis::cluster::ClusterClientBuilder::new(vec![cfg.url.as_str()])
                .build()
                .map_err(|e| bad(&e))?;
            Ok(Commands::Cluster(Arc::new(Cluster {
                url: cfg.url.clone(),
                conn: Mutex::new(None),
            })))
        } else {
            let client = redis::Client::open(cfg.url.as_str()).map_err(|e| bad(&e))?;
            Ok(Commands::Single(Arc::new(Single {
                client,
                size: cfg.pool_size.max(1),
                open: parking_lot::RwLock::new(Vec::new()),
                opening: Mutex::new(()),
                next: AtomicUsize::new(0),
            })))
        }
    }

    pub(crate) async fn get(&self) -> Result<Conn, BrokerError> {
        match self {
            Commands::Single(p) => {
                let (picked, missing) = {
                    let open = p.open.read();
                    let n = p.next.fetch_add(1, Ordering::Relaxed);
                    let picked = (!open.is_empty()).then(|| open[n % open.len()].clone());
                    (picked, open.len() < p.size)
                };
                match picked {
                    Some(c) => {
                        if missing {
                            // Grows toward `pool_size` beside the callers, never before them.
                            let p = p.clone();
                            tokio::spawn(async move {
                                if let Ok(_one) = p.opening.try_lock() {
                                    if p.open.read().len() < p.size {
                                        if let Ok(c) = p.connect().await {
                                            p.open.write().push(c);
                                        }
                                    }
                                }
                            });
                        }
                        Ok(Conn::Single(c))
                    }
                    None => {
                        let _one = p.opening.lock().await;
                        if let Some(c) = p.open.read().first() {
                            return Ok(Conn::Single(c.clone()));
                        }
                        let c = p.connect().await?;
                        p.open.write().push(c.clone());
                        Ok(Conn::Single(c))
                    }
                }
            }
            Commands::Cluster(p) => {
                let mut slot = p.conn.lock().await;
                if let Some(c) = slot.as_ref() {
                    return Ok(Conn::Cluster(c.clone()));
                }
                let client = redis::cluster::ClusterClientBuilder::new(vec![p.url.as_str()])
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(down)?;
                let opened =
                    tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
                        .await
                        .map_err(|_| down("redis cluster connect timed out"))?
                        .map_err(down)?;
                *slot = Some(opened.clone());
                Ok(Conn::Cluster(opened))
            }
        }
    }

    /// Drops every connection (after a silent network fault they may be dead): the
    /// next commands open fresh ones.
    pub(crate) fn reset(&self) {
        match self {
            Commands::Single(p) => p.open.write().clear(),
            Commands::Cluster(p) => {
                if let Ok(mut s) = p.conn.try_lock() {
                    *s = None;
                }
            }
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Commands::Cluster(_))
    }

    /// Runs independent commands at once: one pipeline on a single Redis, concurrent
    /// requests on a cluster (each routed to its slot's owner). The first error wins.
    pub(crate) async fn run_all(&self, cmds: Vec<Cmd>) -> Result<(), BrokerError> {
        self.query_all(cmds).await.map(drop)
    }

    /// The same, answering each command's reply in order.
    pub(crate) async fn query_all(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, BrokerError> {
        use futures_util::{stream, StreamExt};
        let classify = |e: redis::RedisError| classify(&e);
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self.get().await? {
            Conn::Single(mut c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async::<Vec<Value>>(&mut c)
                    .await
                    .map_err(classify)
            }
            Conn::Cluster(shared) => {
                let results: Vec<Result<Value, redis::RedisError>> = stream::iter(cmds)
                    .map(|cmd| {
                        let mut conn = shared.clone();
                        async move { cmd.query_async::<Value>(&mut conn).await }
                    })
                    .buffered(256)
                    .collect()
                    .await;
                results.into_iter().map(|r| r.map_err(classify)).collect()
            }
        }
    }
}

impl Single {
    async fn connect(&self) -> Result<ConnectionManager, BrokerError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| down("redis connect timed out"))?
        .map_err(down)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis Cluster hash slot of a key (CRC16-XMODEM of its hash tag, mod 16384).
pub(crate) fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b
        .iter()
        .position(|&c| c == b'{')
        .and_then(|open| {
            let close = b[open + 1..].iter().position(|&c| c == b'}')?;
            (close > 0).then(|| &b[open + 1..open + 1 + close])
        })
        .unwrap_or(b);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("switchyard:{order:1}:history"), slot("order:1"));
    }
}
