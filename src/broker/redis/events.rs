//! The events stream for webhooks (SPEC 17): events the node decides, appended with
//! the SPEC's fields; one consumer group per webhook, read by the node holding its
//! lease (so events go out in order), which first takes over whatever a node that
//! died left unacknowledged; and the dead-letter stream.

use std::time::Duration;

use redis::Value;

use super::{classify, functions, RedisBroker};
use crate::broker::BrokerError;
use crate::events::Event;

/// The fields of an event in the stream, in the SPEC's order.
fn fields(e: &Event) -> Vec<(&'static str, String)> {
    vec![
        ("event", e.event.as_str().to_owned()),
        ("channel", e.channel.clone().unwrap_or_default()),
        ("user_id", e.user_id.clone().unwrap_or_default()),
        ("session_id", e.session_id.clone().unwrap_or_default()),
        ("conn_id", e.conn_id.clone().unwrap_or_default()),
        ("node", e.node.clone()),
        ("ts", e.ts.clone()),
        ("data", e.data.to_string()),
    ]
}

impl RedisBroker {
    fn xadd(&self, stream: String, fields: Vec<(&'static str, String)>) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.events.maxlen)
            .arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    }

    /// Appends in order, in one pipeline: the stream is one key, so on a cluster too
    /// the commands go to one master in the order given.
    pub(super) async fn emit_events(&self, events: &[Event]) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        for e in events {
            pipe.add_command(self.xadd(self.keys.events(), fields(e)))
                .ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        for e in events {
            self.metrics.event(e.event, 1);
        }
        Ok(())
    }

    async fn ensure_group(&self, group: &str) -> Result<(), BrokerError> {
        if self.groups.lock().contains(group) {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.events())
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async::<Value>(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(classify(&e)),
        }
        self.groups.lock().insert(group.to_owned());
        Ok(())
    }

    pub(super) async fn consume(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<(String, Event)>, BrokerError> {
        self.ensure_group(group).await?;
        let mut conn = self.conn().await?;
        // Entries read but never acknowledged (by a node that died, or this one
        // before a restart): the lease holder delivers them first.
        let claimed: Result<Value, _> = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.events())
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await;
        let claimed = match claimed {
            Ok(v) => v,
            Err(e) if e.to_string().contains("NOGROUP") => {
                // The group went with Redis (a restart without persistence).
                self.groups.lock().remove(group);
                return Ok(Vec::new());
            }
            Err(e) => return Err(classify(&e)),
        };
        if let Value::Array(parts) = claimed {
            if let Some(entries) = parts.into_iter().nth(1) {
                let got = super::wire::decode_events(entries);
                if !got.is_empty() {
                    return Ok(got);
                }
            }
        }
        let read: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("STREAMS")
            .arg(self.keys.events())
            .arg(">")
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        // [[stream, [entries]]], or nil when there is nothing new.
        let Value::Array(streams) = read else {
            return Ok(Vec::new());
        };
        Ok(streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .flat_map(super::wire::decode_events)
            .collect())
    }

    pub(super) async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        redis::cmd("XACK")
            .arg(self.keys.events())
            .arg(group)
            .arg(ids)
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(())
    }

    pub(super) async fn dead(
        &self,
        events: &[Event],
        webhook: &str,
        error: &str,
    ) -> Result<(), BrokerError> {
        let cmds = events
            .iter()
            .map(|e| {
                let mut f = fields(e);
                f.push(("webhook", webhook.to_owned()));
                f.push(("error", error.to_owned()));
                self.xadd(format!("{}:dead", self.keys.events()), f)
            })
            .collect();
        self.pool.run_all(cmds).await
    }

    pub(super) async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("switchyard_lease")
            .arg(1)
            .arg(format!("{{{}}}:lease:{name}", self.keys.events()))
            .arg(holder)
            .arg(ttl.as_millis() as u64);
        let mut conn = self.conn().await?;
        let held: i64 = functions::call(&mut conn, &self.library, &cmd).await?;
        Ok(held == 1)
    }
}
