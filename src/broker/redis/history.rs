//! History reads through the `switchyard_history` function (one atomic call).

use std::sync::Arc;

use deadpool_redis::redis::{self, Value};

use super::conn::Conn;
use super::{unavailable, wire, Keys};
use crate::broker::{BrokerError, HistoryPage};

/// Reads a channel's history atomically (one `switchyard_history` call): epoch,
/// newest offset and the publications after `since` (all kept when `None`), at most
/// the newest `limit`. With `ttl_secs > 0` a channel without history gets its epoch
/// now, so a subscriber's epoch is the one its first publication will carry.
pub(crate) async fn read_history(
    conn: &mut Conn,
    keys: &Keys,
    ch: &str,
    ttl_secs: u64,
    since: Option<u64>,
    limit: Option<usize>,
) -> Result<HistoryPage, BrokerError> {
    let meta_ttl = if ttl_secs > 0 { ttl_secs + 86400 } else { 0 };
    let (epoch, top, entries): (String, u64, Value) = redis::cmd("FCALL")
        .arg("switchyard_history")
        .arg(1)
        .arg(keys.channel(ch))
        .arg(since.map(|s| s as i64).unwrap_or(-1))
        .arg(if since.is_some() {
            0
        } else {
            limit.unwrap_or(0)
        })
        .arg(crate::ids::random_hex(8))
        .arg(meta_ttl)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    let mut publications = Vec::new();
    if let Value::Array(items) = entries {
        for item in items {
            if let Some(p) = wire::decode_stream_entry(ch, item) {
                publications.push(Arc::new(p));
            }
        }
    }
    if let Some(limit) = limit {
        if publications.len() > limit {
            publications.drain(..publications.len() - limit);
        }
    }
    // No meta: the history is gone (or never was); an empty epoch matches no client's.
    Ok(HistoryPage {
        publications,
        offset: top,
        epoch,
    })
}
