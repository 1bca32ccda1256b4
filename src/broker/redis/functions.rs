//! The `switchyard` Redis Function library (`switchyard.lua`): loading it (on every
//! master of a cluster), calling it, loading it again when Redis answers that it is
//! missing (`FUNCTION FLUSH`, a fresh replica promoted), and mapping Redis errors to
//! what they mean for the caller.

use redis::{self, FromRedisValue, RedisError, Value};

use super::conn::{classify, Conn};
use crate::broker::BrokerError;
use crate::protocol::{CLIENT_TYPES, SERVER_TYPES};

/// The library's parts, in the order they are put together.
const PARTS: [&str; 8] = [
    include_str!("lua/header.lua"),
    include_str!("lua/common.lua"),
    include_str!("lua/history.lua"),
    include_str!("lua/state.lua"),
    include_str!("lua/presence.lua"),
    include_str!("lua/registry.lua"),
    include_str!("lua/notify.lua"),
    include_str!("lua/register.lua"),
];

/// The library text for this deployment: the reserved types from the one list the
/// node uses, and PUBLISH or SPUBLISH (Redis Cluster's sharded pub/sub).
pub(crate) fn library(cluster: bool) -> String {
    let reserved: String = CLIENT_TYPES
        .iter()
        .chain(SERVER_TYPES)
        .map(|t| format!("[\"{t}\"]=true,"))
        .collect();
    PARTS
        .join("\n")
        .replace("__RESERVED__", &reserved)
        .replace("__PUBLISH__", if cluster { "SPUBLISH" } else { "PUBLISH" })
}

/// Loads the library (a cluster connection sends FUNCTION LOAD to every master).
pub(crate) async fn load(conn: &mut Conn, library: &str) -> Result<(), BrokerError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library)
        .query_async::<Value>(conn)
        .await
        .map(|_| ())
        .map_err(|e| classify(&e))
}

fn missing(e: &RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// Runs `cmd` (an FCALL); when Redis no longer has the library, loads it and runs
/// the command once more.
pub(crate) async fn call<T: FromRedisValue>(
    conn: &mut Conn,
    library: &str,
    cmd: &redis::Cmd,
) -> Result<T, BrokerError> {
    match cmd.query_async::<T>(conn).await {
        Ok(v) => Ok(v),
        Err(e) if missing(&e) => {
            tracing::warn!(
                "the switchyard function library was missing in Redis: loading it again"
            );
            load(conn, library).await?;
            cmd.query_async::<T>(conn).await.map_err(|e| classify(&e))
        }
        Err(e) => Err(classify(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_names_every_reserved_type_and_the_publish_command() {
        let single = library(false);
        assert!(single.contains("[\"subscribed\"]=true"));
        assert!(single.contains("[\"mark_read\"]=true"));
        assert!(!single.contains("__RESERVED__") && !single.contains("__PUBLISH__"));
        assert!(single.contains("redis.call('PUBLISH'"));
        assert!(library(true).contains("redis.call('SPUBLISH'"));
    }
}
