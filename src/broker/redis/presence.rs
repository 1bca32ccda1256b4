//! Presence in Redis (SPEC 5.5): entries, expiries and per-user counts of a channel
//! in three keys of its slot, written and read by functions. Counts come from HLEN
//! (never from reading every entry), at most the asked number of entries is read, and
//! answers are cached for a moment, so a crowd asking for presence cannot hammer
//! Redis. This node's entries are refreshed in one pipeline per period (one round
//! trip per node, not per channel), so they survive a Redis restart and a crashed
//! node's entries expire.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{self, Value};

use super::{functions, RedisBroker};
use crate::broker::{BrokerError, Presence, PresenceEntry, PresenceSet};
use crate::channel::ChannelName;
use crate::protocol::ClientInfo;

impl RedisBroker {
    fn presence_add_cmd(&self, ch: &ChannelName, entries: &[(&str, &str, &str)]) -> redis::Cmd {
        let exp = Self::now_ms() + self.presence_ttl.as_millis() as u64;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_presence_add")
            .arg(3)
            .arg(&self.keys.presence(ch.as_str())[..])
            .arg(exp)
            .arg(self.presence_ttl.as_millis() as u64);
        for (conn, who, info) in entries {
            cmd.arg(*conn).arg(*who).arg(*info);
        }
        cmd
    }
}

#[async_trait]
impl Presence for RedisBroker {
    async fn presence_add(
        &self,
        ch: &ChannelName,
        entry: PresenceEntry,
    ) -> Result<(), BrokerError> {
        let info = serde_json::to_string(&entry.client)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let who = entry.who();
        // Remembered first: if Redis is down now, the refresh writes it once it is back.
        self.local_presence
            .lock()
            .entry(ch.clone())
            .or_default()
            .insert(entry.conn_id.clone(), (who.clone(), info.clone()));
        let cmd = self.presence_add_cmd(ch, &[(&entry.conn_id, &who, &info)]);
        let mut conn = self.conn().await?;
        functions::call::<Value>(&mut conn, &self.library, &cmd).await?;
        Ok(())
    }

    async fn presence_remove(&self, ch: &ChannelName, conn_id: &str) -> Result<(), BrokerError> {
        {
            let mut local = self.local_presence.lock();
            if let Some(ids) = local.get_mut(ch) {
                ids.remove(conn_id);
                if ids.is_empty() {
                    local.remove(ch);
                }
            }
        }
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_presence_remove")
            .arg(3)
            .arg(&self.keys.presence(ch.as_str())[..])
            .arg(conn_id);
        let mut conn = self.conn().await?;
        functions::call::<Value>(&mut conn, &self.library, &cmd).await?;
        Ok(())
    }

    async fn presence(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_presence")
            .arg(3)
            .arg(&self.keys.presence(ch.as_str())[..])
            .arg(Self::now_ms())
            .arg(limit);
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut conn, &self.library, &cmd).await?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => *i as usize,
            _ => 0,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let mut set = PresenceSet {
            count: int(reply.first()),
            users: int(reply.get(1)),
            entries: Vec::new(),
        };
        for pair in reply.get(2..).unwrap_or_default().chunks(2) {
            let [conn_id, info] = pair else { continue };
            let (Some(conn_id), Some(info)) = (text(conn_id), text(info)) else {
                continue;
            };
            // Entries are written by nodes; one that does not parse is skipped.
            if let Ok(client) = serde_json::from_str::<ClientInfo>(&info) {
                set.entries.push(PresenceEntry { conn_id, client });
            }
        }
        Ok(set)
    }

    fn count_join(&self, ch: &ChannelName, entry: PresenceEntry) {
        self.counts.join(ch, entry);
    }

    fn count_leave(&self, ch: &ChannelName, conn_id: &str) {
        self.counts.leave(ch, conn_id);
    }

    async fn counts(&self, ch: &ChannelName, limit: usize) -> Result<PresenceSet, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_counts")
            .arg(1)
            .arg(self.keys.channel(ch.as_str()))
            .arg(Self::now_ms());
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut conn, &self.library, &cmd).await?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => (*i).max(0) as usize,
            _ => 0,
        };
        let mut set = PresenceSet {
            count: int(reply.first()),
            users: int(reply.get(1)),
            entries: Vec::new(),
        };
        // One node's users are counted exactly; several nodes' union is estimated
        // (HyperLogLog), and never above the connections.
        set.users = set.users.min(set.count);
        for sample in reply.get(2..).unwrap_or_default() {
            if let Value::BulkString(b) = sample {
                crate::broker::counts::parse_sample(b, &mut set.entries, limit);
            }
        }
        Ok(set)
    }
}

/// How often this node's changed counts are reported: a burst of viewers joining
/// costs one write per channel per period, not one per viewer.
const COUNT_BATCH: Duration = Duration::from_millis(100);

/// Reports this node's counted channels: the changed ones every `COUNT_BATCH`, all of
/// them every third of `presence_ttl` (so they outlive nothing but a crash, and come
/// back after a Redis restart).
pub(super) async fn report_counts(broker: Weak<RedisBroker>) {
    let mut last_all = Instant::now();
    loop {
        tokio::time::sleep(COUNT_BATCH).await;
        let Some(b) = broker.upgrade() else { return };
        let all = last_all.elapsed() >= (b.presence_ttl / 3).max(COUNT_BATCH);
        if all {
            last_all = Instant::now();
        }
        let reports = b.counts.reports(all);
        if reports.is_empty() {
            continue;
        }
        let ttl = b.presence_ttl.as_millis() as u64;
        let now = RedisBroker::now_ms();
        let cmds: Vec<redis::Cmd> = reports
            .iter()
            .map(|r| {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("switchyard_count")
                    .arg(1)
                    .arg(b.keys.channel(r.channel.as_str()))
                    .arg(&b.node_id)
                    .arg(r.count)
                    .arg(ttl)
                    .arg(now)
                    .arg(if r.replace { "r" } else { "a" })
                    .arg(&r.sample)
                    .arg(&r.users);
                cmd
            })
            .collect();
        if let Err(e) = b.pool.run_all(cmds).await {
            tracing::debug!(error = %e, "count report failed; rewritten in full next time");
            b.counts.retry(&reports);
            if e.to_string().contains("Function not found") {
                if let Ok(mut conn) = b.conn().await {
                    let _ = functions::load(&mut conn, &b.library).await;
                }
            }
        }
    }
}

/// Keeps this node's presence entries alive while they exist: one pipeline per
/// period carries every channel's entries (rewritten, not just touched, so entries
/// lost with Redis come back).
pub(super) async fn refresh(broker: Weak<RedisBroker>) {
    loop {
        let period = match broker.upgrade() {
            Some(b) => (b.presence_ttl / 3).max(Duration::from_millis(200)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(b) = broker.upgrade() else { return };
        let snapshot: HashMap<ChannelName, Vec<(String, String, String)>> = b
            .local_presence
            .lock()
            .iter()
            .map(|(ch, ids)| {
                let entries = ids
                    .iter()
                    .map(|(id, (who, info))| (id.clone(), who.clone(), info.clone()))
                    .collect();
                (ch.clone(), entries)
            })
            .collect();
        if snapshot.is_empty() {
            continue;
        }
        let started = Instant::now();
        let cmds: Vec<redis::Cmd> = snapshot
            .iter()
            .map(|(ch, entries)| {
                let refs: Vec<(&str, &str, &str)> = entries
                    .iter()
                    .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                    .collect();
                b.presence_add_cmd(ch, &refs)
            })
            .collect();
        match b.pool.run_all(cmds).await {
            Ok(()) => tracing::trace!(
                channels = snapshot.len(),
                ms = started.elapsed().as_millis() as u64,
                "presence refreshed"
            ),
            Err(e) => {
                if e.to_string().contains("Function not found") {
                    if let Ok(mut conn) = b.conn().await {
                        let _ = functions::load(&mut conn, &b.library).await;
                    }
                }
                tracing::debug!(error = %e, "presence refresh failed");
            }
        }
    }
}
