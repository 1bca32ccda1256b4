//! What spans the nodes in Redis: cluster-wide commands (a pub/sub channel every node
//! subscribes to), the user registry (who is connected where, decided by functions,
//! with the online/offline transitions and the count of users online), the node
//! registry (heartbeats) and the reaping of a dead node's entries by one live node,
//! and the upstream stream.

use std::collections::HashSet;

use async_trait::async_trait;
use redis::{self, Value};

use super::{conn::classify, functions, registry_ttl, Conn, RedisBroker};
use crate::broker::{BrokerError, Cluster, Control, NodeReport};
use crate::config::EventKind;
use crate::ids::ConnId;
use crate::protocol::{timestamp_now, Publication};

/// How long a reaping node holds a dead node's entries for itself.
const REAP_LOCK_MS: u64 = 60_000;

/// The user id and session id a registry key names (`u:<id>` / `s:<id>`).
fn ids_of(who: &str) -> (&str, &str) {
    match who.split_once(':') {
        Some(("u", id)) => (id, ""),
        Some(("s", id)) => ("", id),
        _ => ("", ""),
    }
}

impl RedisBroker {
    fn member(&self, conn: ConnId) -> String {
        format!("{}|{conn}", self.node_id)
    }

    /// The registry keys a function call names: the user's, plus (on one Redis) the
    /// events stream and the online set, so the transition is recorded atomically.
    fn who_keys(&self, who: &str) -> Vec<String> {
        let mut keys = vec![self.keys.who(who)];
        if !self.pool.is_cluster() {
            keys.push(self.keys.events());
            keys.push(self.keys.online());
        }
        keys
    }

    fn maxlen_for(&self, kind: EventKind) -> usize {
        if self.events.emits(kind) {
            self.events.maxlen
        } else {
            0
        }
    }

    /// On a Redis Cluster the function decided a transition in the user's slot; the
    /// node records it in the online set and the events stream (other slots).
    async fn record_transition(
        &self,
        who: &str,
        online: bool,
        conn_id: &str,
    ) -> Result<(), BrokerError> {
        let kind = if online {
            EventKind::UserOnline
        } else {
            EventKind::UserOffline
        };
        if self.events.emits(kind) {
            self.metrics.event(kind, 1);
        }
        if !self.pool.is_cluster() {
            return Ok(());
        }
        let (user_id, session_id) = ids_of(who);
        let mut membership = redis::cmd(if online { "SADD" } else { "SREM" });
        membership.arg(self.keys.online()).arg(who);
        let mut cmds = vec![membership];
        let maxlen = self.maxlen_for(kind);
        if maxlen > 0 {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(self.keys.events())
                .arg("MAXLEN")
                .arg("~")
                .arg(maxlen)
                .arg("*")
                .arg(&[
                    ("event", kind.as_str()),
                    ("channel", ""),
                    ("user_id", user_id),
                    ("session_id", session_id),
                    ("conn_id", conn_id),
                    ("node", &self.node_id),
                    ("ts", &timestamp_now()),
                    ("data", "{}"),
                ]);
            cmds.push(xadd);
        }
        self.pool.run_all(cmds).await
    }

    async fn live_nodes(&self, conn: &mut Conn) -> Result<HashSet<String>, BrokerError> {
        let since =
            Self::now_ms().saturating_sub(registry_ttl(self.presence_ttl).as_millis() as u64);
        let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg(since)
            .arg("+inf")
            .query_async(conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(live.into_iter().collect())
    }

    /// The registry's members that are connections: of live nodes, and this node's
    /// only when it holds them (an entry whose removal failed is not a connection).
    async fn live_members(
        &self,
        conn: &mut Conn,
        members: Vec<String>,
    ) -> Result<Vec<String>, BrokerError> {
        let others = members
            .iter()
            .any(|m| m.split_once('|').is_some_and(|(n, _)| n != self.node_id));
        let live = if others {
            self.live_nodes(conn).await?
        } else {
            HashSet::new()
        };
        Ok(members
            .into_iter()
            .filter_map(|m| {
                let (node, id) = m.split_once('|')?;
                let alive = if node == self.node_id {
                    ConnId::parse(id).is_some_and(|c| self.sink.has_connection(c))
                } else {
                    live.contains(node)
                };
                alive.then(|| id.to_owned())
            })
            .collect())
    }

    /// Reaps the entries of nodes whose heartbeat stopped: one live node takes each
    /// dead one (a lock in Redis) and removes its users' connections, recording the
    /// users that went offline with it.
    async fn reap_dead_nodes(&self, conn: &mut Conn) -> Result<(), BrokerError> {
        let before =
            Self::now_ms().saturating_sub(registry_ttl(self.presence_ttl).as_millis() as u64);
        let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(format!("({before}"))
            .arg("LIMIT")
            .arg(0)
            .arg(10)
            .query_async(conn)
            .await
            .map_err(|e| classify(&e))?;
        for node in dead {
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.keys.reaping(&node))
                .arg(&self.node_id)
                .arg("NX")
                .arg("PX")
                .arg(REAP_LOCK_MS)
                .query_async(conn)
                .await
                .map_err(|e| classify(&e))?;
            if taken.is_none() {
                continue;
            }
            tracing::info!(node = %node, "reaping a dead node's registry entries");
            let index = self.keys.node_who(&node);
            loop {
                let batch: Vec<String> = redis::cmd("SPOP")
                    .arg(&index)
                    .arg(500)
                    .query_async(conn)
                    .await
                    .map_err(|e| classify(&e))?;
                if batch.is_empty() {
                    break;
                }
                for who in batch {
                    let (user_id, session_id) = ids_of(&who);
                    let mut cmd = redis::cmd("FCALL");
                    let keys = self.who_keys(&who);
                    cmd.arg("switchyard_user_reap")
                        .arg(keys.len())
                        .arg(&keys)
                        .arg(&who)
                        .arg(self.maxlen_for(EventKind::UserOffline))
                        .arg(user_id)
                        .arg(session_id)
                        .arg(&node)
                        .arg(timestamp_now());
                    let (offline,): (i64,) = functions::call(conn, &self.library, &cmd).await?;
                    if offline == 1 {
                        self.record_transition(&who, false, "").await?;
                    }
                }
            }
            let channels = self.keys.node_channels(&node);
            loop {
                let batch: Vec<String> = redis::cmd("SPOP")
                    .arg(&channels)
                    .arg(500)
                    .query_async(conn)
                    .await
                    .map_err(|e| classify(&e))?;
                if batch.is_empty() {
                    break;
                }
                for ch in batch {
                    let events = self
                        .namespaces
                        .resolve(&ch)
                        .is_ok_and(|(_, ns)| ns.channel_events);
                    self.vacate_on(conn, &ch, &node, events).await?;
                }
            }
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(self.keys.nodes()).arg(&node);
            let mut del = redis::cmd("DEL");
            del.arg(self.keys.node(&node));
            self.pool.run_all(vec![zrem, del]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Cluster for RedisBroker {
    async fn control(&self, cmd: Control) -> Result<(), BrokerError> {
        let text = serde_json::to_string(&cmd).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut conn = self.conn().await?;
        redis::cmd(self.publish_cmd())
            .arg(self.keys.control())
            .arg(text)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn user_connected(&self, who: &str, conn_id: ConnId) -> Result<Vec<String>, BrokerError> {
        let (user_id, session_id) = ids_of(who);
        let id = conn_id.to_string();
        let keys = self.who_keys(who);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_user_connect")
            .arg(keys.len())
            .arg(&keys)
            .arg(self.member(conn_id))
            .arg(who)
            .arg(self.maxlen_for(EventKind::UserOnline))
            .arg(user_id)
            .arg(session_id)
            .arg(&id)
            .arg(&self.node_id)
            .arg(timestamp_now())
            .arg("{}");
        let mut conn = self.conn().await?;
        let reply: Vec<Value> = functions::call(&mut conn, &self.library, &cmd).await?;
        // Indexed under this node, so the node's entries can be reaped if it dies.
        redis::cmd("SADD")
            .arg(self.keys.node_who(&self.node_id))
            .arg(who)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        let online = matches!(reply.first(), Some(Value::Int(1)));
        if online {
            self.record_transition(who, true, &id).await?;
        }
        let members: Vec<String> = reply
            .iter()
            .skip(1)
            .filter_map(|v| match v {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        self.live_members(&mut conn, members).await
    }

    async fn user_connections(&self, who: &str) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn().await?;
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.who(who))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        self.live_members(&mut conn, members).await
    }

    async fn user_disconnected(&self, who: &str, conn_id: ConnId) -> Result<(), BrokerError> {
        let (user_id, session_id) = ids_of(who);
        let id = conn_id.to_string();
        let keys = self.who_keys(who);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_user_disconnect")
            .arg(keys.len())
            .arg(&keys)
            .arg(who)
            .arg(self.maxlen_for(EventKind::UserOffline))
            .arg(user_id)
            .arg(session_id)
            .arg(&id)
            .arg(&self.node_id)
            .arg(timestamp_now())
            .arg("{}")
            .arg(self.member(conn_id));
        let mut conn = self.conn().await?;
        let (offline, mine): (i64, i64) = functions::call(&mut conn, &self.library, &cmd).await?;
        if mine == 0 {
            redis::cmd("SREM")
                .arg(self.keys.node_who(&self.node_id))
                .arg(who)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| classify(&e))?;
        }
        if offline == 1 {
            self.record_transition(who, false, &id).await?;
        }
        Ok(())
    }

    async fn forward(&self, p: &Publication, conn_id: ConnId) -> Result<(), BrokerError> {
        let from = p.from.clone().unwrap_or_default();
        let mut conn = self.conn().await?;
        redis::cmd("XADD")
            .arg(self.keys.upstream())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.upstream_maxlen)
            .arg("*")
            .arg("channel")
            .arg(p.channel.as_str())
            .arg("type")
            .arg(&p.event)
            .arg("payload")
            .arg(p.payload.get())
            .arg("user_id")
            .arg(from.user_id.as_deref().unwrap_or(""))
            .arg("session_id")
            .arg(from.session_id.as_deref().unwrap_or(""))
            .arg("conn_id")
            .arg(conn_id.to_string())
            .arg("node")
            .arg(&self.node_id)
            .arg("ts")
            .arg(&p.timestamp)
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    async fn report(&self, report: &NodeReport) -> Result<(), BrokerError> {
        let text =
            serde_json::to_string(report).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut conn = self.conn().await?;
        // Separate commands: the keys live in different cluster slots.
        redis::cmd("SET")
            .arg(self.keys.node(&self.node_id))
            .arg(text)
            .arg("PX")
            .arg(registry_ttl(self.presence_ttl).as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        redis::cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(Self::now_ms())
            .arg(&self.node_id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        self.reap_dead_nodes(&mut conn).await
    }

    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        let mut conn = self.conn().await?;
        let ids = self.live_nodes(&mut conn).await?;
        let mut out = Vec::new();
        for id in ids {
            let text: Option<String> = redis::cmd("GET")
                .arg(self.keys.node(&id))
                .query_async(&mut conn)
                .await
                .map_err(|e| classify(&e))?;
            if let Some(r) = text.and_then(|t| serde_json::from_str(&t).ok()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn user_count(&self) -> Result<usize, BrokerError> {
        let mut conn = self.conn().await?;
        redis::cmd("SCARD")
            .arg(self.keys.online())
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))
    }

    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, crate::events::Event)>, BrokerError> {
        let start = after.map(|a| format!("({a}")).unwrap_or_else(|| "-".into());
        let mut conn = self.conn().await?;
        let entries: Value = redis::cmd("XRANGE")
            .arg(self.keys.events())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(super::wire::decode_events(entries))
    }

    async fn emit(&self, events: Vec<crate::events::Event>) -> Result<(), BrokerError> {
        self.emit_events(&events).await
    }

    async fn consume_events(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(String, crate::events::Event)>, BrokerError> {
        self.consume(group, consumer, max).await
    }

    async fn ack_events(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        self.ack(group, ids).await
    }

    async fn dead_letter(
        &self,
        events: &[crate::events::Event],
        webhook: &str,
        error: &str,
    ) -> Result<(), BrokerError> {
        self.dead(events, webhook, error).await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, BrokerError> {
        self.hold_lease(name, holder, ttl).await
    }

    async fn revoke(&self, user: &str, before: u64, until: u64) -> Result<(), BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_revoke")
            .arg(1)
            .arg(self.keys.revoked())
            .arg(user)
            .arg(before)
            .arg(until);
        let mut conn = self.conn().await?;
        functions::call::<Value>(&mut conn, &self.library, &cmd).await?;
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, u64, u64)>, BrokerError> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.revoked())
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        let now = crate::auth::unix_now();
        Ok(all
            .into_iter()
            .filter_map(|(user, v)| {
                let (b, u) = v.split_once(':')?;
                Some((user, b.parse().ok()?, u.parse().ok()?))
            })
            .filter(|(_, _, until)| *until > now)
            .collect())
    }

    async fn deregister(&self) {
        if let Ok(mut conn) = self.conn().await {
            let _ = redis::cmd("DEL")
                .arg(self.keys.node(&self.node_id))
                .query_async::<()>(&mut conn)
                .await;
            // Kept in the nodes set with an old score: another node reaps whatever
            // registry entries this one could not remove itself.
            let _ = redis::cmd("ZADD")
                .arg(self.keys.nodes())
                .arg(0)
                .arg(&self.node_id)
                .query_async::<()>(&mut conn)
                .await;
        }
    }

    fn is_up(&self) -> bool {
        self.is_up_now()
    }
}

impl RedisBroker {
    /// The channel keys an occupancy call names: the channel's, plus (on one Redis)
    /// the events stream, so the transition is recorded in the same step.
    fn channel_keys(&self, ch: &str) -> Vec<String> {
        let mut keys = vec![self.keys.channel(ch)];
        if !self.pool.is_cluster() {
            keys.push(self.keys.events());
        }
        keys
    }

    /// On a Redis Cluster the function decided `occupied`/`vacated` in the channel's
    /// slot; the node appends it to the events stream.
    async fn record_channel_event(
        &self,
        conn: &mut Conn,
        kind: EventKind,
        ch: &str,
        node: &str,
    ) -> Result<(), BrokerError> {
        if self.events.emits(kind) {
            self.metrics.event(kind, 1);
        }
        if !self.pool.is_cluster() || !self.events.emits(kind) {
            return Ok(());
        }
        let data = serde_json::json!({ "channel": ch }).to_string();
        redis::cmd("XADD")
            .arg(self.keys.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.events.maxlen)
            .arg("*")
            .arg(&[
                ("event", kind.as_str()),
                ("channel", ch),
                ("user_id", ""),
                ("session_id", ""),
                ("conn_id", ""),
                ("node", node),
                ("ts", &timestamp_now()),
                ("data", &data),
            ])
            .query_async::<()>(conn)
            .await
            .map_err(|e| classify(&e))
    }

    /// Records this node's interest in `ch` (SPEC 17 `occupied`; a numbered channel
    /// gets its epoch), indexed under the node for reaping.
    pub(super) async fn occupy(
        &self,
        ch: &crate::channel::ChannelName,
        opts: &crate::broker::SubscribeOpts,
    ) -> Result<(), BrokerError> {
        let keys = self.channel_keys(ch.as_str());
        let maxlen = if opts.channel_events {
            self.maxlen_for(EventKind::Occupied)
        } else {
            0
        };
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_occupy")
            .arg(keys.len())
            .arg(&keys)
            .arg(&self.node_id)
            .arg(if opts.history.is_some() { "1" } else { "0" })
            .arg(crate::ids::random_hex(8))
            .arg(maxlen)
            .arg(timestamp_now())
            .arg(ch.as_str());
        let mut conn = self.conn().await?;
        let (occupied, _epoch): (i64, String) =
            functions::call(&mut conn, &self.library, &cmd).await?;
        redis::cmd("SADD")
            .arg(self.keys.node_channels(&self.node_id))
            .arg(ch.as_str())
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        if occupied == 1 && maxlen > 0 {
            self.record_channel_event(&mut conn, EventKind::Occupied, ch.as_str(), &self.node_id)
                .await?;
        }
        Ok(())
    }

    /// Withdraws `node`'s interest in `ch` (this node's, or a dead one's when reaping).
    pub(super) async fn vacate(
        &self,
        ch: &crate::channel::ChannelName,
        node: &str,
        channel_events: bool,
    ) -> Result<(), BrokerError> {
        let mut conn = self.conn().await?;
        self.vacate_on(&mut conn, ch.as_str(), node, channel_events)
            .await
    }

    async fn vacate_on(
        &self,
        conn: &mut Conn,
        ch: &str,
        node: &str,
        channel_events: bool,
    ) -> Result<(), BrokerError> {
        let keys = self.channel_keys(ch);
        let maxlen = if channel_events {
            self.maxlen_for(EventKind::Vacated)
        } else {
            0
        };
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_vacate")
            .arg(keys.len())
            .arg(&keys)
            .arg(node)
            .arg(maxlen)
            .arg(timestamp_now())
            .arg(ch);
        let (vacated,): (i64,) = functions::call(conn, &self.library, &cmd).await?;
        redis::cmd("SREM")
            .arg(self.keys.node_channels(node))
            .arg(ch)
            .query_async::<()>(conn)
            .await
            .map_err(|e| classify(&e))?;
        if vacated == 1 && maxlen > 0 {
            self.record_channel_event(conn, EventKind::Vacated, ch, node)
                .await?;
        }
        Ok(())
    }
}
