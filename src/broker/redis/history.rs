//! History reads through the `switchyard_history` function: one atomic call that
//! answers the epoch, the newest offset and the publications, and creates nothing.

use std::sync::Arc;

use redis::{self, Value};

use super::conn::Conn;
use super::{functions, wire, Keys};
use crate::broker::{BrokerError, HistoryPage};
use crate::channel::ChannelName;

/// Reads a channel's history: the publications after `since` (all kept when `None`),
/// at most the newest `limit`. A channel without history answers epoch "" and
/// offset 0, and nothing is written.
pub(crate) async fn read_history(
    conn: &mut Conn,
    library: &str,
    keys: &Keys,
    ch: &ChannelName,
    since: Option<u64>,
    limit: Option<usize>,
) -> Result<HistoryPage, BrokerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("switchyard_history")
        .arg(1)
        .arg(keys.channel(ch.as_str()))
        .arg(since.map(|s| s as i64).unwrap_or(-1))
        .arg(if since.is_some() {
            0
        } else {
            limit.unwrap_or(0)
        });
    let (epoch, top, entries): (String, u64, Value) = functions::call(conn, library, &cmd).await?;
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
    Ok(HistoryPage {
        publications,
        offset: top,
        epoch,
    })
}
