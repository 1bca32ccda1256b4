//! Gap fills off the subscription loop (SPEC 5.8): while one channel's missing
//! publications are read from history, its live ones wait in a queue of their own and
//! every other channel keeps flowing. The fill delivers the page (when it can fill
//! the gap: `position::fill_check`), then the queue in order, then hands the channel
//! back to direct delivery; when history cannot fill it, the channel's subscribers
//! are closed with 4012. A state channel is filled from its state instead: the
//! newest version of every key changed since the position (SPEC 16.2).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::super::{history::read_history, state::read_state, Commands, Keys};
use crate::broker::{Delivery, Sink, StateOpts};
use crate::channel::ChannelName;
use crate::position::{fill_check, Loss, Position};
use crate::protocol::Publication;

/// How long a fill keeps trying to read history before it gives the channel up
/// (4012: its subscribers recover with `since` on their own).
const GIVE_UP: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(250);
const READ_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Filling {
    queue: VecDeque<Arc<Publication>>,
    /// The path was interrupted again meanwhile: read history once more before
    /// handing the channel back.
    again: bool,
}

/// The channels being filled, shared by the subscription loop and the fill tasks.
#[derive(Clone)]
pub(super) struct Filler {
    // A sync mutex: every critical section is a lookup and a push, or a delivery into
    // the hub (which never awaits); never held across an await.
    filling: Arc<Mutex<HashMap<ChannelName, Filling>>>,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) pool: Commands,
    pub(super) keys: Keys,
    pub(super) library: Arc<str>,
}

impl Filler {
    pub(super) fn new(
        sink: Arc<dyn Sink>,
        pool: Commands,
        keys: Keys,
        library: Arc<str>,
    ) -> Filler {
        Filler {
            filling: Arc::new(Mutex::new(HashMap::new())),
            sink,
            pool,
            keys,
            library,
        }
    }

    /// Hands a publication from the path to the hub, in order behind any fill of its
    /// channel; a gap starts a fill.
    pub(super) fn dispatch(&self, p: Arc<Publication>) {
        let mut filling = self.filling.lock();
        if let Some(f) = filling.get_mut(&p.channel) {
            f.queue.push_back(p);
            return;
        }
        let from = match self.sink.deliver(&p) {
            Delivery::Gap { after } => Position {
                epoch: p.epoch.clone(),
                offset: after,
                entry_id: None,
            },
            // The history is read from the hub's position: its entry there is not the
            // one delivered, which the fill turns into a new epoch and a 4012.
            Delivery::Reused => self.sink.position(&p.channel).unwrap_or_default(),
            Delivery::Delivered | Delivery::Duplicate | Delivery::Lost => return,
        };
        {
            let ch = p.channel.clone();
            let mut f = Filling::default();
            f.queue.push_back(p);
            filling.insert(ch.clone(), f);
            drop(filling);
            tokio::spawn(self.clone().fill(ch, Some(from)));
        }
    }

    /// After an interruption of the path: `ch` catches up from `pos`, where the hub
    /// stands (a fill already running reads again).
    pub(super) fn refill(&self, ch: &ChannelName, pos: Position) {
        let mut filling = self.filling.lock();
        if let Some(f) = filling.get_mut(ch) {
            f.again = true;
            return;
        }
        filling.insert(ch.clone(), Filling::default());
        drop(filling);
        tokio::spawn(self.clone().fill(ch.clone(), Some(pos)));
    }

    async fn fill(self, ch: ChannelName, mut from: Option<Position>) {
        loop {
            let pos = match from.take() {
                Some(p) => p,
                None => self.sink.position(&ch).unwrap_or_default(),
            };
            if let Some(opts) = self.sink.state_opts(&ch) {
                self.fill_state(&ch, &pos, opts).await;
                if self.drain(&ch) {
                    return;
                }
                continue;
            }
            match self.read(&ch, &pos).await {
                Some(page) => match fill_check(&pos, &page) {
                    Ok(()) => {
                        for p in &page.publications {
                            let _ = self.sink.deliver(p);
                        }
                    }
                    Err(loss) => {
                        tracing::info!(channel = %ch, ?loss, "history cannot fill a gap: subscribers closed with 4012");
                        let epoch = match loss {
                            // Offsets now name other publications than clients saw: a
                            // new epoch makes every `since` of the old one unrecoverable.
                            Loss::Reused | Loss::RolledBack => self.reepoch(&ch, &page.epoch).await,
                            Loss::Epoch | Loss::Trimmed => page.epoch.clone(),
                        };
                        let last = page.publications.last().and_then(|p| p.entry_id.clone());
                        let last = last.filter(|_| epoch == page.epoch);
                        self.sink
                            .lose(&ch, Position::new(&epoch, page.offset, last));
                    }
                },
                None => {
                    tracing::warn!(channel = %ch, "history unreadable for too long: subscribers closed with 4012");
                    self.sink.lose(&ch, Position::default());
                }
            }
            if self.drain(&ch) {
                return;
            }
        }
    }

    /// Catches a state channel up from its state; what cannot be (another epoch, or
    /// tombstones that no longer reach back) closes its subscribers with 4012.
    async fn fill_state(&self, ch: &ChannelName, pos: &Position, opts: StateOpts) {
        let deadline = tokio::time::Instant::now() + GIVE_UP;
        loop {
            let attempt = async {
                let mut conn = self.pool.get().await?;
                read_state(
                    &mut conn,
                    &self.library,
                    &self.keys,
                    ch,
                    opts,
                    Some(pos.offset),
                    None,
                )
                .await
            };
            if let Ok(Ok(read)) = tokio::time::timeout(READ_TIMEOUT, attempt).await {
                if !self.sink.catch_up(ch, &read) {
                    tracing::info!(channel = %ch, "state cannot fill a gap: subscribers closed with 4012");
                    self.sink
                        .lose(ch, Position::new(&read.epoch, read.offset, None));
                }
                return;
            }
            if tokio::time::Instant::now() + RETRY > deadline {
                tracing::warn!(channel = %ch, "state unreadable for too long: subscribers closed with 4012");
                self.sink.lose(ch, Position::default());
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Delivers the queued publications in order; true once the channel is handed
    /// back, false when it must be read again.
    fn drain(&self, ch: &ChannelName) -> bool {
        let mut filling = self.filling.lock();
        let Some(f) = filling.get_mut(ch) else {
            return true;
        };
        if std::mem::take(&mut f.again) {
            return false;
        }
        let epoch = self.sink.position(ch).and_then(|p| p.epoch);
        while let Some(p) = f.queue.pop_front() {
            if epoch.is_some() && p.epoch.is_some() && p.epoch != epoch {
                // Published under the history the fill just gave up: void.
                continue;
            }
            match self.sink.deliver(&p) {
                Delivery::Gap { .. } | Delivery::Reused => {
                    // History holds less than this publication proves was written (a
                    // failover to a replica that missed writes): never deliver around it.
                    self.sink.lose(ch, Position::after(&p));
                }
                Delivery::Delivered | Delivery::Duplicate | Delivery::Lost => {}
            }
        }
        filling.remove(ch);
        true
    }

    /// Gives the channel a new epoch unless another node did already; returns the
    /// epoch in force (the old one if Redis cannot be reached).
    async fn reepoch(&self, ch: &ChannelName, old: &str) -> String {
        let attempt = async {
            let mut conn = self.pool.get().await?;
            let mut cmd = redis::cmd("FCALL");
            cmd.arg("switchyard_reepoch")
                .arg(1)
                .arg(self.keys.channel(ch.as_str()))
                .arg(old)
                .arg(crate::ids::random_hex(8));
            super::super::functions::call::<String>(&mut conn, &self.library, &cmd).await
        };
        match tokio::time::timeout(READ_TIMEOUT, attempt).await {
            Ok(Ok(epoch)) => epoch,
            _ => old.to_owned(),
        }
    }

    /// Reads history from the position (inclusive, so the entry delivered last can
    /// be compared), retrying until `GIVE_UP`.
    async fn read(&self, ch: &ChannelName, pos: &Position) -> Option<crate::broker::HistoryPage> {
        let since = pos.offset.checked_sub(1);
        let deadline = tokio::time::Instant::now() + GIVE_UP;
        loop {
            let attempt = async {
                let mut conn = self.pool.get().await?;
                read_history(&mut conn, &self.library, &self.keys, ch, since, None).await
            };
            if let Ok(Ok(page)) = tokio::time::timeout(READ_TIMEOUT, attempt).await {
                return Some(page);
            }
            if tokio::time::Instant::now() + RETRY > deadline {
                return None;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
