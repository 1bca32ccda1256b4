//! Notification state in Redis (SPEC 15) through the functions of `notify.lua`: a
//! user's read positions in its own slot; receipts and fallbacks in the slot of the
//! events stream, so each is deduplicated or claimed in the same step that appends
//! its event, and exactly one `undelivered` fires whichever node asks.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use super::{functions, RedisBroker};
use crate::broker::notify::{Fallback, Notify, ReadMoved, Receipts, Received};
use crate::broker::BrokerError;
use crate::channel::ChannelName;
use crate::config::EventKind;
use crate::ids::ConnId;
use crate::protocol::timestamp_now;

fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => (*i).max(0) as u64,
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl RedisBroker {
    fn emit_flag(&self, kind: EventKind) -> &'static str {
        if self.events.emits(kind) {
            "1"
        } else {
            "0"
        }
    }

    fn count_events(&self, kind: EventKind, n: u64) {
        if self.events.emits(kind) {
            self.metrics.event(kind, n);
        }
    }

    async fn reads(
        &self,
        who: &str,
        channels: Option<&[ChannelName]>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_reads")
            .arg(2)
            .arg(&self.keys.reads(who)[..])
            .arg(Self::now_ms())
            .arg(limit);
        for ch in channels.unwrap_or_default() {
            cmd.arg(ch.as_str());
        }
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut conn, &self.library, &cmd).await?;
        Ok(reply
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, int(pair.get(1)))))
            .collect())
    }
}

#[async_trait]
impl Notify for RedisBroker {
    async fn read_positions(
        &self,
        who: &str,
        channels: &[ChannelName],
    ) -> Result<Vec<u64>, BrokerError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let got = self.reads(who, Some(channels), channels.len()).await?;
        Ok(channels
            .iter()
            .map(|ch| {
                got.iter()
                    .find(|(c, _)| c == ch.as_str())
                    .map_or(0, |(_, o)| *o)
            })
            .collect())
    }

    async fn read_channels(
        &self,
        who: &str,
        limit: usize,
    ) -> Result<Vec<(ChannelName, u64)>, BrokerError> {
        let got = self.reads(who, None, limit).await?;
        let mut out: Vec<(ChannelName, u64)> = got
            .into_iter()
            // Written by nodes from valid names; anything else is skipped.
            .filter_map(|(c, o)| Some((ChannelName::parse(&c).ok()?, o)))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn mark_read(
        &self,
        who: &str,
        ch: &ChannelName,
        offset: u64,
        ttl: Duration,
        conn: ConnId,
    ) -> Result<ReadMoved, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_mark_read")
            .arg(2)
            .arg(&self.keys.reads(who)[..])
            .arg(ch.as_str())
            .arg(offset)
            .arg(ttl.as_millis() as u64)
            .arg(Self::now_ms());
        let mut c = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut c, &self.library, &cmd).await?;
        let position = int(reply.first());
        if int(reply.get(1)) != 1 {
            return Ok(ReadMoved {
                position,
                moved: false,
                confirmed: 0,
            });
        }
        // In the events stream's slot: the `read` event and the fallbacks it covers.
        // (A node that dies right between the two calls loses that one event.)
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_read_event")
            .arg(1)
            .arg(self.keys.events())
            .arg(ch.as_str())
            .arg(who)
            .arg(conn.to_string())
            .arg(&self.node_id)
            .arg(timestamp_now())
            .arg(self.events.maxlen)
            .arg(self.emit_flag(EventKind::Read))
            .arg(position);
        let confirmed: u64 = functions::call(&mut c, &self.library, &cmd).await?;
        self.count_events(EventKind::Read, 1);
        Ok(ReadMoved {
            position,
            moved: true,
            confirmed: confirmed as usize,
        })
    }

    async fn received(&self, r: Receipts<'_>) -> Result<Received, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_received")
            .arg(1)
            .arg(self.keys.events())
            .arg(r.channel.as_str())
            .arg(r.who)
            .arg(r.conn.to_string())
            .arg(&self.node_id)
            .arg(timestamp_now())
            .arg(self.events.maxlen)
            .arg(self.emit_flag(EventKind::Received))
            .arg(r.floor)
            .arg(r.keep.as_millis() as u64)
            .arg(r.offsets);
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut conn, &self.library, &cmd).await?;
        let new: Vec<u64> = reply.iter().skip(1).map(|v| int(Some(v))).collect();
        self.count_events(EventKind::Received, new.len() as u64);
        Ok(Received {
            confirmed: int(reply.first()) as usize,
            new,
        })
    }

    async fn schedule_fallback(&self, f: Fallback) -> Result<(), BrokerError> {
        let due = Self::now_ms() + f.after.as_millis() as u64;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_fallback")
            .arg(1)
            .arg(self.keys.events())
            .arg(f.channel.as_str())
            .arg(f.offset)
            .arg(due)
            .arg(&f.who)
            .arg(f.data.get());
        let mut conn = self.conn().await?;
        functions::call::<Value>(&mut conn, &self.library, &cmd).await?;
        Ok(())
    }

    async fn fire_fallbacks(&self, max: usize) -> Result<usize, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_fire")
            .arg(1)
            .arg(self.keys.events())
            .arg(Self::now_ms())
            .arg(max)
            .arg(&self.node_id)
            .arg(timestamp_now())
            .arg(self.events.maxlen)
            .arg(self.emit_flag(EventKind::Undelivered));
        let mut conn = self.conn().await?;
        let fired: u64 = functions::call(&mut conn, &self.library, &cmd).await?;
        self.count_events(EventKind::Undelivered, fired);
        Ok(fired as usize)
    }
}
