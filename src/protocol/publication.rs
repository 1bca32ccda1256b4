//! A publication: one message on a channel, as accepted by a node or received from
//! the broker. Its JSON is encoded once and the bytes are shared by every subscriber's
//! queue; the variants a subscriber may need instead (a delta against the key's
//! previous value, the `conflated` mark) are encoded once too, on first use.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

pub use super::json::timestamp_now;
use super::json::{json_bytes, raw};
use crate::channel::ChannelName;

/// Who made a client publication or joined a channel: `from`, presence entries and
/// `join`/`leave` payloads. Stamped by the server, never taken from a client.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<Arc<RawValue>>,
}

// `RawValue` has no `PartialEq`; two infos are equal when their JSON text is.
impl PartialEq for ClientInfo {
    fn eq(&self, other: &ClientInfo) -> bool {
        self.user_id == other.user_id
            && self.session_id == other.session_id
            && self.info.as_ref().map(|i| i.get()) == other.info.as_ref().map(|i| i.get())
    }
}

impl Eq for ClientInfo {}

/// A merge patch against the key's payload at offset `base` (SPEC 16.3).
#[derive(Debug)]
pub struct Delta {
    pub base: u64,
    pub patch: Box<RawValue>,
}

/// One publication on a channel.
#[derive(Debug)]
pub struct Publication {
    pub channel: ChannelName,
    pub event: String,
    /// The data; `null` on a `deleted` state publication (never sent then).
    pub payload: Box<RawValue>,
    /// Position in the channel's history or state; `None` when not stored.
    pub offset: Option<u64>,
    /// The history `offset` belongs to (never sent to clients with the publication).
    pub epoch: Option<Arc<str>>,
    /// The stored entry's own id (SPEC 8.5): an offset reused after a failover comes
    /// with another id, which is how a rollback is told from a duplicate.
    pub entry_id: Option<Arc<str>>,
    /// State channels (SPEC 16): the key this publication sets or deletes.
    pub key: Option<Arc<str>>,
    pub deleted: bool,
    pub from: Option<ClientInfo>,
    /// Deliver only to subscribers whose user or session id equals this.
    pub to: Option<String>,
    pub volatile: bool,
    pub timestamp: String,
    /// When the publish was accepted on this node, for the delivery latency histogram.
    pub accepted: Instant,
    /// Set once, before fan-out, on channels with deltas: the patch from the key's
    /// previous version, when it is smaller than the payload.
    pub delta: OnceLock<Option<Delta>>,
    encoded: OnceLock<Bytes>,
    encoded_delta: OnceLock<Option<Bytes>>,
    encoded_conflated: OnceLock<Bytes>,
    encoded_entry: OnceLock<Bytes>,
}

impl Publication {
    pub fn new(channel: ChannelName, event: String, payload: Box<RawValue>) -> Publication {
        Publication {
            channel,
            event,
            payload,
            offset: None,
            epoch: None,
            entry_id: None,
            key: None,
            deleted: false,
            from: None,
            to: None,
            volatile: false,
            timestamp: timestamp_now(),
            accepted: Instant::now(),
            delta: OnceLock::new(),
            encoded: OnceLock::new(),
            encoded_delta: OnceLock::new(),
            encoded_conflated: OnceLock::new(),
            encoded_entry: OnceLock::new(),
        }
    }

    /// Whether it is kept in history/state (gets an offset) when its channel keeps any.
    pub fn storable(&self) -> bool {
        !self.volatile && self.to.is_none()
    }

    /// The JSON text sent to subscribers, encoded once per publication.
    pub fn bytes(&self) -> &Bytes {
        self.encoded.get_or_init(|| self.encode(Variant::Full))
    }

    /// The same with `"conflated": true`: it replaced older ones of its key.
    pub fn conflated_bytes(&self) -> &Bytes {
        self.encoded_conflated
            .get_or_init(|| self.encode(Variant::Conflated))
    }

    /// The delta form, when one was computed (and is smaller than the payload).
    pub fn delta_bytes(&self) -> Option<&Bytes> {
        self.encoded_delta
            .get_or_init(|| {
                self.delta
                    .get()
                    .and_then(Option::as_ref)
                    .map(|d| self.encode(Variant::Delta(d)))
            })
            .as_ref()
    }

    /// This publication as an entry of a snapshot (SPEC 16.2), encoded once: a
    /// snapshot of ten thousand keys is then a concatenation, not ten thousand
    /// serialisations, for every subscriber that asks.
    pub fn entry_bytes(&self) -> &Bytes {
        self.encoded_entry.get_or_init(|| {
            json_bytes(&super::server::StateEntry {
                key: self.key.as_deref().unwrap_or_default(),
                ty: (!self.deleted).then_some(self.event.as_str()),
                payload: (!self.deleted).then_some(&*self.payload),
                deleted: self.deleted,
                offset: self.offset.unwrap_or(0),
                timestamp: &self.timestamp,
            })
        })
    }

    fn encode(&self, variant: Variant<'_>) -> Bytes {
        let (payload, base, delta) = match variant {
            Variant::Delta(d) => (Some(&*d.patch), Some(d.base), true),
            _ if self.deleted => (None, None, false),
            _ => (Some(&*self.payload), None, false),
        };
        let env = PublicationEnvelope {
            ty: &self.event,
            channel: self.channel.as_str(),
            key: self.key.as_deref(),
            payload,
            timestamp: &self.timestamp,
            offset: self.offset,
            from: self.from.as_ref(),
            deleted: self.deleted,
            delta,
            base,
            conflated: matches!(variant, Variant::Conflated),
        };
        json_bytes(&env)
    }
}

enum Variant<'a> {
    Full,
    Conflated,
    Delta(&'a Delta),
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A publication as subscribers see it (SPEC 2): the envelope with the fields that
/// apply, in a fixed order.
#[derive(Serialize)]
struct PublicationEnvelope<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a ClientInfo>,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
    #[serde(skip_serializing_if = "is_false")]
    delta: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    conflated: bool,
}

/// Bytes of a JSON array made of already-encoded publications (history replies).
pub fn publications_json(pubs: &[Arc<Publication>]) -> Box<RawValue> {
    json_array(pubs.iter().map(|p| p.bytes()))
}

/// The `entries` of a snapshot, from the publications in the order given.
pub fn state_entries_json<'a>(pubs: impl IntoIterator<Item = &'a Publication>) -> Box<RawValue> {
    let parts: Vec<&Bytes> = pubs.into_iter().map(|p| p.entry_bytes()).collect();
    json_array(parts.into_iter())
}

fn json_array<'a>(parts: impl Iterator<Item = &'a Bytes> + Clone) -> Box<RawValue> {
    let mut out = Vec::with_capacity(parts.clone().map(|b| b.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, b) in parts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.push(b']');
    // Each part is JSON the server encoded, so the whole is too.
    String::from_utf8(out)
        .ok()
        .and_then(|t| RawValue::from_string(t).ok())
        .unwrap_or_else(|| raw("[]"))
}
