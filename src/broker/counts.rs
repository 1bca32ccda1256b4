//! Counting presence (SPEC 16.5), this node's side: its viewers of each counted
//! channel, exactly, and the reports the brokers keep cluster-wide from them. A
//! report is per node and per channel (a count, the users to count distinctly, a
//! sample of entries), written in batches, so a burst of viewers costs a few writes
//! per channel, not one per viewer, and reading the whole audience is O(nodes).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{PresenceEntry, PresenceSet};
use crate::channel::ChannelName;

/// Entries a node reports as its sample (and a `presence` answer holds at most).
pub const SAMPLE: usize = 100;

#[derive(Default)]
struct Local {
    conns: HashMap<String, PresenceEntry>,
    /// Connections per user (or anonymous session).
    users: HashMap<String, u32>,
    /// Users new since the last report.
    added: Vec<String>,
    /// A user left since the last report: the next one rewrites the users.
    removed: bool,
    dirty: bool,
}

/// One node's report of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountReport {
    pub channel: ChannelName,
    /// Connections here; 0: this node has no viewers left (its report goes).
    pub count: usize,
    /// `users` are all of them (replacing what was reported), else only new ones.
    pub replace: bool,
    pub users: Vec<String>,
    /// A JSON array of at most [`SAMPLE`] entries.
    pub sample: String,
}

#[derive(Default)]
pub struct LocalCounts {
    channels: Mutex<HashMap<ChannelName, Local>>,
    /// Only counted, never reported (one node: its counts are the answer).
    local_only: bool,
}

impl LocalCounts {
    /// Counts that are never reported: a channel goes when its last viewer does.
    pub fn local_only() -> LocalCounts {
        LocalCounts {
            local_only: true,
            ..LocalCounts::default()
        }
    }

    pub fn join(&self, ch: &ChannelName, entry: PresenceEntry) {
        let who = entry.who();
        let mut channels = self.channels.lock();
        let local = channels.entry(ch.clone()).or_default();
        if local.conns.insert(entry.conn_id.clone(), entry).is_none() {
            let n = local.users.entry(who.clone()).or_default();
            *n += 1;
            if *n == 1 && !self.local_only {
                local.added.push(who);
            }
        }
        local.dirty = true;
    }

    pub fn leave(&self, ch: &ChannelName, conn_id: &str) {
        let mut channels = self.channels.lock();
        let Some(local) = channels.get_mut(ch) else {
            return;
        };
        let Some(entry) = local.conns.remove(conn_id) else {
            return;
        };
        let who = entry.who();
        if let Some(n) = local.users.get_mut(&who) {
            *n -= 1;
            if *n == 0 {
                local.users.remove(&who);
                local.removed = true;
            }
        }
        local.dirty = true;
        if self.local_only && local.conns.is_empty() {
            channels.remove(ch);
        }
    }

    /// Reports of the channels that changed since the last call, or of every one
    /// (`all`: a periodic rewrite, so what a Redis restart lost comes back). A
    /// channel whose viewers all left is reported once with count 0, then forgotten.
    pub fn reports(&self, all: bool) -> Vec<CountReport> {
        let mut channels = self.channels.lock();
        let mut out = Vec::new();
        channels.retain(|ch, local| {
            if !(local.dirty || all) {
                return true;
            }
            let replace = all || local.removed;
            let users = if replace {
                local.users.keys().cloned().collect()
            } else {
                std::mem::take(&mut local.added)
            };
            local.added.clear();
            local.removed = false;
            local.dirty = false;
            out.push(CountReport {
                channel: ch.clone(),
                count: local.conns.len(),
                replace,
                users,
                sample: sample_json(local.conns.values()),
            });
            !local.conns.is_empty()
        });
        out
    }

    /// Reports that could not be written: the next one rewrites those channels in
    /// full. (A lost count-0 report leaves the node's old one to expire.)
    pub fn retry(&self, failed: &[CountReport]) {
        let mut channels = self.channels.lock();
        for r in failed {
            if let Some(local) = channels.get_mut(&r.channel) {
                local.dirty = true;
                local.removed = true;
            }
        }
    }

    /// The exact counts of this node alone (the memory broker's whole answer).
    pub fn exact(&self, ch: &ChannelName, limit: usize) -> PresenceSet {
        let channels = self.channels.lock();
        let Some(local) = channels.get(ch) else {
            return PresenceSet::default();
        };
        PresenceSet {
            count: local.conns.len(),
            users: local.users.len(),
            entries: local
                .conns
                .values()
                .take(limit.min(SAMPLE))
                .cloned()
                .collect(),
        }
    }
}

/// Entries as the sample JSON a report carries: `[{conn_id, client}...]`.
fn sample_json<'a>(entries: impl Iterator<Item = &'a PresenceEntry>) -> String {
    let sample: Vec<serde_json::Value> = entries
        .take(SAMPLE)
        .map(|e| serde_json::json!({"conn_id": e.conn_id, "client": e.client}))
        .collect();
    serde_json::to_string(&sample).unwrap_or_else(|_| "[]".into())
}

/// Reads a sample written by [`sample_json`] (by any node); what does not parse is
/// skipped.
pub fn parse_sample(json: &[u8], into: &mut Vec<PresenceEntry>, limit: usize) {
    #[derive(serde::Deserialize)]
    struct Item {
        conn_id: String,
        client: crate::protocol::ClientInfo,
    }
    let Ok(items) = serde_json::from_slice::<Vec<Item>>(json) else {
        return;
    };
    for i in items {
        if into.len() >= limit {
            return;
        }
        into.push(PresenceEntry {
            conn_id: i.conn_id,
            client: i.client,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientInfo;

    fn viewer(conn: &str, user: &str) -> PresenceEntry {
        PresenceEntry {
            conn_id: conn.into(),
            client: ClientInfo {
                user_id: Some(user.into()),
                ..ClientInfo::default()
            },
        }
    }

    #[test]
    fn reports_carry_new_users_until_one_leaves_then_all_of_them() {
        let c = LocalCounts::default();
        let ch = ChannelName::parse("stream:1").expect("valid");
        c.join(&ch, viewer("1", "a"));
        c.join(&ch, viewer("2", "a"));
        c.join(&ch, viewer("3", "b"));
        let r = c.reports(false);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].count, r[0].replace), (3, false));
        assert_eq!(r[0].users, ["u:a", "u:b"]);
        assert!(c.reports(false).is_empty(), "nothing changed");
        c.join(&ch, viewer("4", "c"));
        c.leave(&ch, "2");
        let r = c.reports(false);
        assert_eq!(
            (r[0].count, r[0].replace, r[0].users.clone()),
            (3, false, vec!["u:c".to_owned()]),
            "a still has a connection"
        );
        c.leave(&ch, "3");
        let mut r = c.reports(false);
        r[0].users.sort();
        assert_eq!(
            (r[0].count, r[0].replace, r[0].users.clone()),
            (2, true, vec!["u:a".to_owned(), "u:c".to_owned()])
        );
        let exact = c.exact(&ch, 100);
        assert_eq!((exact.count, exact.users, exact.entries.len()), (2, 2, 2));
        c.leave(&ch, "1");
        c.leave(&ch, "4");
        assert_eq!(c.reports(false)[0].count, 0, "the last leave is reported");
        assert!(c.reports(true).is_empty(), "then forgotten");
    }

    #[test]
    fn the_sample_is_bounded_and_reads_back() {
        let c = LocalCounts::default();
        let ch = ChannelName::parse("stream:1").expect("valid");
        for i in 0..250 {
            c.join(&ch, viewer(&i.to_string(), &format!("u{i}")));
        }
        let r = c.reports(true);
        let mut back = Vec::new();
        parse_sample(r[0].sample.as_bytes(), &mut back, 1000);
        assert_eq!(back.len(), SAMPLE);
        let mut few = Vec::new();
        parse_sample(r[0].sample.as_bytes(), &mut few, 7);
        assert_eq!(few.len(), 7);
        parse_sample(b"garbage", &mut few, 100);
        assert_eq!(few.len(), 7);
    }
}
