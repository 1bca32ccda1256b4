//! Command connections for both Redis shapes: a deadpool of multiplexed connections
//! to one Redis, or a deadpool of cluster connections that route each command to the
//! master of its key's slot. The rest of the broker sees one `Conn` type.

use std::time::Duration;

use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{Cmd, Pipeline, RedisFuture, Value};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};

use crate::broker::BrokerError;
use crate::config::RedisConfig;

#[derive(Clone)]
pub(crate) enum Commands {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

pub(crate) enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

fn pool_config(size: usize) -> PoolConfig {
    PoolConfig {
        max_size: size,
        timeouts: Timeouts {
            wait: Some(Duration::from_secs(2)),
            create: Some(Duration::from_secs(2)),
            recycle: Some(Duration::from_secs(2)),
        },
        ..PoolConfig::default()
    }
}

impl Commands {
    pub(crate) fn new(cfg: &RedisConfig) -> Result<Commands, BrokerError> {
        let bad = |e: &dyn std::fmt::Display| BrokerError::Internal(format!("redis.url: {e}"));
        if cfg.cluster {
            let mut c = deadpool_redis::cluster::Config::from_urls(vec![cfg.url.clone()]);
            c.pool = Some(pool_config(cfg.pool_size));
            c.create_pool(Some(Runtime::Tokio1))
                .map(Commands::Cluster)
                .map_err(|e| bad(&e))
        } else {
            // Explicit timeouts: redis' default response timeout (500 ms) is shorter
            // than a large history read may need, and a dead peer must not hang us.
            let conn_cfg = deadpool_redis::redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(3)));
            let manager = deadpool_redis::Manager::new_with_config(cfg.url.as_str(), conn_cfg)
                .map_err(|e| bad(&e))?;
            let pc = pool_config(cfg.pool_size);
            deadpool_redis::Pool::builder(manager)
                .config(pc)
                .runtime(Runtime::Tokio1)
                .build()
                .map(Commands::Single)
                .map_err(|e| bad(&e))
        }
    }

    pub(crate) async fn get(&self) -> Result<Conn, BrokerError> {
        let down = |e: &dyn std::fmt::Display| BrokerError::Unavailable(e.to_string());
        match self {
            Commands::Single(p) => p.get().await.map(Conn::Single).map_err(|e| down(&e)),
            Commands::Cluster(p) => p.get().await.map(Conn::Cluster).map_err(|e| down(&e)),
        }
    }

    /// Drops every idle connection (after a silent network fault they may be dead).
    pub(crate) fn reset(&self) {
        match self {
            Commands::Single(p) => {
                p.retain(|_, _| false);
            }
            Commands::Cluster(p) => {
                p.retain(|_, _| false);
            }
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Commands::Cluster(_))
    }

    /// Runs independent commands in one round trip: one pipeline on one Redis; on a
    /// cluster (where a pipeline may not cross slots) all at once on the multiplexed
    /// connection, which sends each to its slot's master.
    pub(crate) async fn run_all(&self, cmds: Vec<Cmd>) -> Result<(), BrokerError> {
        use futures_util::{stream, StreamExt};
        let classify = |e: deadpool_redis::redis::RedisError| super::functions::classify(&e);
        let mut conn = self.get().await?;
        match &mut conn {
            Conn::Single(c) => {
                let mut pipe = deadpool_redis::redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd).ignore();
                }
                pipe.query_async::<()>(c).await.map_err(classify)
            }
            Conn::Cluster(c) => {
                let shared: deadpool_redis::redis::cluster_async::ClusterConnection = (**c).clone();
                let mut results = stream::iter(cmds)
                    .map(|cmd| {
                        let mut conn = shared.clone();
                        async move { cmd.query_async::<Value>(&mut conn).await }
                    })
                    .buffer_unordered(256);
                let mut first_error = None;
                while let Some(r) = results.next().await {
                    if let (Err(e), None) = (r, &first_error) {
                        first_error = Some(classify(e));
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
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
