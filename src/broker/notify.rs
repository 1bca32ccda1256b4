//! Notification state (SPEC 15), the broker's fourth face: read positions per user
//! and channel, receipts deduplicated per (user, channel, offset), and fallbacks
//! whose deadline lives in the broker, so exactly one `undelivered` event fires
//! cluster-wide even when the node that accepted the publish is gone. Each operation
//! appends its events (SPEC 17) in the same step where the broker allows it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::BrokerError;
use crate::channel::ChannelName;
use crate::ids::ConnId;

/// Channels an `unread` without names reports at most (SPEC 15.1).
pub const UNREAD_CHANNELS_MAX: usize = 1000;

/// What a `mark_read` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMoved {
    /// The position after the call (the old one when it did not move).
    pub position: u64,
    pub moved: bool,
    /// Pending fallbacks the move confirmed.
    pub confirmed: usize,
}

/// Receipts of one user on one channel.
#[derive(Debug, Clone)]
pub struct Receipts<'a> {
    /// `u:<user>` or `s:<session>`.
    pub who: &'a str,
    pub channel: &'a ChannelName,
    pub offsets: &'a [u64],
    pub conn: ConnId,
    /// Receipts of offsets at or below this are forgotten (no longer in history).
    pub floor: u64,
    /// How long receipts are remembered (the history's TTL).
    pub keep: Duration,
}

/// What receipts did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Offsets this user confirmed for the first time (one `received` event each).
    pub new: Vec<u64>,
    /// Pending fallbacks they confirmed.
    pub confirmed: usize,
}

/// A publication to fall back on (SPEC 15.3): `undelivered` unless confirmed in time.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub channel: ChannelName,
    pub offset: u64,
    /// `u:<user>` or `s:<session>`: the owner of the channel.
    pub who: String,
    pub after: Duration,
    /// The event's `data`: `{channel, offset, user_id, type, payload, data}`.
    pub data: Box<RawValue>,
}

#[async_trait]
pub trait Notify: Send + Sync + 'static {
    /// Read positions of `who` on `channels` (0 where there is none).
    async fn read_positions(
        &self,
        who: &str,
        channels: &[ChannelName],
    ) -> Result<Vec<u64>, BrokerError>;

    /// Every channel where `who` has a read position, at most `limit`.
    async fn read_channels(
        &self,
        who: &str,
        limit: usize,
    ) -> Result<Vec<(ChannelName, u64)>, BrokerError>;

    /// Moves the read position forward to `offset` (a lower one changes nothing), kept
    /// `ttl` after this change. A move confirms the channel's pending fallbacks up to
    /// it and appends a `read` event.
    async fn mark_read(
        &self,
        who: &str,
        ch: &ChannelName,
        offset: u64,
        ttl: Duration,
        conn: ConnId,
    ) -> Result<ReadMoved, BrokerError>;

    /// Records receipts: an offset confirmed for the first time by this user appends
    /// one `received` event; it confirms a pending fallback either way.
    async fn received(&self, r: Receipts<'_>) -> Result<Received, BrokerError>;

    /// Schedules a fallback (idempotent for one channel and offset); a publication
    /// already confirmed is not scheduled.
    async fn schedule_fallback(&self, f: Fallback) -> Result<(), BrokerError>;

    /// Claims the fallbacks whose time came and appends one `undelivered` event for
    /// each, at most `max`; any node may call it, and each fires once. Returns how
    /// many fired.
    async fn fire_fallbacks(&self, max: usize) -> Result<usize, BrokerError>;
}

/// Splits a registry key into the ids an event carries.
pub fn ids_of(who: &str) -> (Option<&str>, Option<&str>) {
    match who.split_once(':') {
        Some(("u", id)) => (Some(id), None),
        Some(("s", id)) => (None, Some(id)),
        _ => (None, None),
    }
}
