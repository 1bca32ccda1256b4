//! The user registry, commands and events of a single node (the `Cluster` face of
//! the memory broker).

use async_trait::async_trait;

use super::MemoryBroker;
use crate::broker::{BrokerError, Cluster, Control, NodeReport};
use crate::config::EventKind;
use crate::events::Event;
use crate::ids::ConnId;
use crate::protocol::Publication;

/// A user's connections in registration order. Most users have one: kept inline,
/// since the registry holds an entry per connected user.
#[derive(Debug)]
pub(super) enum Conns {
    One(ConnId),
    Many(Vec<ConnId>),
}

impl Conns {
    fn ids(&self) -> &[ConnId] {
        match self {
            Conns::One(c) => std::slice::from_ref(c),
            Conns::Many(v) => v,
        }
    }

    fn add(&mut self, conn: ConnId) {
        if self.ids().contains(&conn) {
            return;
        }
        match self {
            Conns::One(c) => *self = Conns::Many(vec![*c, conn]),
            Conns::Many(v) => v.push(conn),
        }
    }

    /// Removes `conn`; true when it was the last one (the entry should go).
    fn remove(&mut self, conn: ConnId) -> (bool, bool) {
        match self {
            Conns::One(c) => (*c == conn, *c == conn),
            Conns::Many(v) => {
                let before = v.len();
                v.retain(|c| *c != conn);
                (v.len() < before, v.is_empty())
            }
        }
    }

    fn strings(&self) -> Vec<String> {
        self.ids().iter().map(ConnId::to_string).collect()
    }
}

#[async_trait]
impl Cluster for MemoryBroker {
    async fn control(&self, cmd: Control) -> Result<(), BrokerError> {
        self.sink.execute(&cmd);
        Ok(())
    }

    async fn user_connected(&self, user: &str, conn: ConnId) -> Result<Vec<String>, BrokerError> {
        let (list, online) = {
            let mut users = self.users.lock();
            match users.get_mut(user) {
                Some(conns) => {
                    conns.add(conn);
                    (conns.strings(), false)
                }
                None => {
                    users.insert(Box::from(user), Conns::One(conn));
                    (vec![conn.to_string()], true)
                }
            }
        };
        if online {
            self.emit(EventKind::UserOnline, |e| {
                e.who(user).conn(&conn.to_string())
            });
        }
        Ok(list)
    }

    async fn user_connections(&self, user: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self
            .users
            .lock()
            .get(user)
            .map(Conns::strings)
            .unwrap_or_default())
    }

    async fn user_disconnected(&self, user: &str, conn: ConnId) -> Result<(), BrokerError> {
        let offline = {
            let mut users = self.users.lock();
            match users.get_mut(user) {
                Some(conns) => {
                    let (removed, empty) = conns.remove(conn);
                    if empty {
                        users.remove(user);
                    }
                    removed && empty
                }
                None => false,
            }
        };
        if offline {
            self.emit(EventKind::UserOffline, |e| {
                e.who(user).conn(&conn.to_string())
            });
        }
        Ok(())
    }

    /// One node has no upstream consumers: there is nothing to forward to.
    async fn forward(&self, _p: &Publication, _conn: ConnId) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn report(&self, _report: &NodeReport) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn cluster(&self) -> Result<Vec<NodeReport>, BrokerError> {
        Ok(Vec::new())
    }

    async fn user_count(&self) -> Result<usize, BrokerError> {
        Ok(self.users.lock().len())
    }

    async fn read_events(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Event)>, BrokerError> {
        let after = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        Ok(self
            .events
            .read(after, max)
            .into_iter()
            .map(|(seq, e)| (seq.to_string(), e))
            .collect())
    }

    async fn emit(&self, events: Vec<Event>) -> Result<(), BrokerError> {
        for e in events {
            self.metrics.event(e.event, 1);
            self.events.append(e);
        }
        Ok(())
    }

    async fn consume_events(
        &self,
        group: &str,
        _consumer: &str,
        max: usize,
    ) -> Result<Vec<(String, Event)>, BrokerError> {
        let after = *self.groups.lock().entry(group.to_owned()).or_default();
        let got = self.events.read(after, max);
        if let Some((first, _)) = got.first() {
            if *first > after + 1 {
                tracing::warn!(
                    group,
                    lost = first - after - 1,
                    "events were dropped (events.maxlen) before the webhook delivered them"
                );
            }
        }
        Ok(got
            .into_iter()
            .map(|(seq, e)| (seq.to_string(), e))
            .collect())
    }

    async fn ack_events(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        let newest = ids.iter().filter_map(|i| i.parse::<u64>().ok()).max();
        if let Some(n) = newest {
            let mut groups = self.groups.lock();
            let cursor = groups.entry(group.to_owned()).or_default();
            *cursor = (*cursor).max(n);
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        events: &[Event],
        webhook: &str,
        error: &str,
    ) -> Result<(), BrokerError> {
        for e in events {
            let mut dead = e.clone();
            dead.data = serde_json::json!({ "event": e.data, "webhook": webhook, "error": error });
            self.dead.append(dead);
        }
        Ok(())
    }

    async fn lease(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, BrokerError> {
        // One node: it always holds.
        Ok(true)
    }

    async fn revoke(&self, user: &str, before: u64, until: u64) -> Result<(), BrokerError> {
        let mut r = self.revoked.lock();
        let slot = r.entry(user.to_owned()).or_insert((before, until));
        slot.0 = slot.0.max(before);
        slot.1 = slot.1.max(until);
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<(String, u64, u64)>, BrokerError> {
        let now = crate::auth::unix_now();
        let mut r = self.revoked.lock();
        r.retain(|_, (_, until)| *until > now);
        Ok(r.iter().map(|(u, (b, t))| (u.clone(), *b, *t)).collect())
    }

    async fn deregister(&self) {}

    fn is_up(&self) -> bool {
        true
    }
}
