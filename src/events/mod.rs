//! Lifecycle events (SPEC 17): what an event is, and the in-process log the memory
//! broker appends to (Redis keeps them in the `<prefix>:events` stream). Webhook
//! delivery reads either, off the hot path.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

use crate::config::EventKind;
use crate::protocol::timestamp_now;

/// One event, with the SPEC's fields (absent ids are `None` here, "" in Redis).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_id: Option<String>,
    pub node: String,
    pub ts: String,
    pub data: Value,
}

impl Event {
    pub fn new(event: EventKind, node: &str, data: Value) -> Event {
        Event {
            event,
            channel: None,
            user_id: None,
            session_id: None,
            conn_id: None,
            node: node.to_owned(),
            ts: timestamp_now(),
            data,
        }
    }

    pub fn channel(mut self, ch: &str) -> Event {
        self.channel = Some(ch.to_owned());
        self
    }

    /// Sets the user or session from a registry key (`u:<id>` / `s:<id>`).
    pub fn who(mut self, who: &str) -> Event {
        match who.split_once(':') {
            Some(("u", id)) => self.user_id = Some(id.to_owned()),
            Some(("s", id)) => self.session_id = Some(id.to_owned()),
            _ => {}
        }
        self
    }

    /// `data: {channel}`, as `occupied`/`vacated` carry it.
    pub fn data_channel(mut self, ch: &str) -> Event {
        self.data = serde_json::json!({ "channel": ch });
        self
    }

    pub fn data(mut self, data: Value) -> Event {
        self.data = data;
        self
    }

    pub fn conn(mut self, conn: &str) -> Event {
        self.conn_id = Some(conn.to_owned());
        self
    }
}

/// The memory broker's events: a bounded log with sequence numbers, read by the
/// webhook dispatcher from where it stopped.
pub struct Log {
    // A sync mutex: appends and reads move a few entries, never across an await.
    inner: Mutex<LogInner>,
    maxlen: usize,
    appended: Notify,
}

struct LogInner {
    next: u64,
    entries: VecDeque<(u64, Event)>,
}

impl Log {
    pub fn new(maxlen: usize) -> Log {
        Log {
            inner: Mutex::new(LogInner {
                next: 1,
                entries: VecDeque::new(),
            }),
            maxlen: maxlen.max(1),
            appended: Notify::new(),
        }
    }

    pub fn append(&self, e: Event) {
        let mut l = self.inner.lock();
        let seq = l.next;
        l.next += 1;
        l.entries.push_back((seq, e));
        while l.entries.len() > self.maxlen {
            l.entries.pop_front();
        }
        drop(l);
        self.appended.notify_waiters();
    }

    /// Entries after `after`, at most `max`.
    pub fn read(&self, after: u64, max: usize) -> Vec<(u64, Event)> {
        let l = self.inner.lock();
        l.entries
            .iter()
            .filter(|(s, _)| *s > after)
            .take(max)
            .cloned()
            .collect()
    }

    /// Resolves at the next append (register before reading to miss none).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }
}
