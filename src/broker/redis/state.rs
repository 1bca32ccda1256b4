//! State channels in Redis (SPEC 16): writes through `switchyard_set` (one call stores
//! the change and publishes it), snapshots through `switchyard_state` (one call).

use std::sync::Arc;

use redis::Value;

use super::conn::Conn;
use super::{functions, wire, Keys};
use crate::broker::{BrokerError, StateOpts, StateSnapshot};
use crate::channel::ChannelName;

/// The `switchyard_set` call for an encoded envelope (it carries `key`/`delete`).
pub(super) fn set_cmd(
    keys: &Keys,
    ch: &ChannelName,
    envelope: String,
    opts: StateOpts,
    idempotency: Option<&(String, std::time::Duration)>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("switchyard_set")
        .arg(1)
        .arg(keys.channel(ch.as_str()))
        .arg(envelope)
        .arg(opts.max_keys)
        .arg(opts.ttl.as_secs());
    if let Some((idem, window)) = idempotency {
        cmd.arg(idem).arg(window.as_secs().max(1));
    }
    cmd
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => (*i).max(0) as u64,
        Some(v) => text(v).and_then(|t| t.parse().ok()).unwrap_or(0),
        None => 0,
    }
}

/// Reads a state channel's entries in one call.
pub(super) async fn read_state(
    conn: &mut Conn,
    library: &str,
    keys: &Keys,
    ch: &ChannelName,
    opts: StateOpts,
    since: Option<u64>,
    only: Option<&[String]>,
) -> Result<StateSnapshot, BrokerError> {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("switchyard_state")
        .arg(1)
        .arg(keys.channel(ch.as_str()))
        .arg(since.map(|s| s as i64).unwrap_or(-1))
        .arg(opts.ttl.as_secs());
    for k in only.unwrap_or_default() {
        cmd.arg(k);
    }
    let reply: Vec<Value> = functions::call(conn, library, &cmd).await?;
    let epoch = reply.first().and_then(text).unwrap_or_default();
    let mut entries = Vec::new();
    for v in reply.iter().skip(4) {
        let Value::BulkString(bytes) = v else {
            continue;
        };
        // Stored by the function from a validated envelope; one that does not parse
        // is skipped, never fatal.
        if let Some((p, _)) = wire::decode(ch, bytes) {
            entries.push(Arc::new(p));
        }
    }
    Ok(StateSnapshot {
        epoch,
        offset: int(reply.get(1)),
        floor: int(reply.get(2)),
        partial: int(reply.get(3)) == 1,
        entries,
    })
}
