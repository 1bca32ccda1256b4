//! The envelope format on Redis (SPEC 8.1): what nodes publish, and parsing of what
//! arrives from nodes and services. Anything malformed is refused here, once.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::protocol::{is_reserved, ClientInfo, Publication};

#[derive(Serialize)]
struct Out<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    payload: &'a RawValue,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a ClientInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    volatile: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delete: bool,
    /// The publishing node: marks a publication as not coming from a service.
    n: &'a str,
}

/// The envelope a node publishes (the function adds `offset` and `epoch`).
pub(super) fn encode(p: &Publication, node: &str) -> String {
    let out = Out {
        ty: &p.event,
        payload: &p.payload,
        timestamp: &p.timestamp,
        from: p.from.as_ref(),
        to: p.to.as_deref(),
        volatile: p.volatile,
        key: p.key.as_deref(),
        delete: p.deleted,
        n: node,
    };
    serde_json::to_string(&out).unwrap_or_default()
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type")]
    ty: String,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    offset: Option<u64>,
    epoch: Option<String>,
    from: Option<ClientInfo>,
    to: Option<String>,
    #[serde(default)]
    volatile: bool,
    timestamp: Option<String>,
    key: Option<String>,
    #[serde(default)]
    delete: bool,
    n: Option<String>,
    /// The stored entry's id, set by the functions with the offset.
    i: Option<String>,
    /// Set by the `switchyard_publish` function: only then are offset/epoch trusted.
    h: Option<u8>,
}

/// Parses an envelope received for `channel`; `None` for anything malformed. The
/// bool is true when a service (not a node) published it.
pub(super) fn decode(channel: &ChannelName, bytes: &[u8]) -> Option<(Publication, bool)> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let m: In<'_> = serde_json::from_str(text).ok()?;
    let from_node = m.n.is_some();
    // Services may not publish control types; nodes announce join/leave this way.
    let allowed_reserved = from_node && matches!(m.ty.as_str(), "join" | "leave");
    if m.ty.is_empty() || (is_reserved(&m.ty) && !allowed_reserved) {
        return None;
    }
    let payload = match m.payload {
        Some(p) => p.to_owned(),
        None => RawValue::from_string("null".to_owned()).ok()?,
    };
    let mut p = Publication::new(channel.clone(), m.ty, payload);
    if let Some(ts) = m.timestamp {
        if let Ok(t) = humantime::parse_rfc3339_weak(&ts) {
            // Latency is measured from when the publishing node accepted it.
            let age = SystemTime::now().duration_since(t).unwrap_or_default();
            p.accepted = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            p.timestamp = ts;
        }
    }
    // A plain PUBLISH writes no history (SPEC 8.1): offsets in it are ignored, so a
    // replayed or forged envelope cannot move this node's position.
    if m.h == Some(1) {
        p.offset = m
            .offset
            .filter(|o| *o > 0 && *o <= crate::protocol::MAX_SAFE_INTEGER);
        p.epoch = m.epoch.filter(|e| !e.is_empty()).map(Arc::from);
        p.entry_id = m.i.filter(|i| !i.is_empty()).map(Arc::from);
    }
    if p.offset.is_none() || p.epoch.is_none() {
        p.offset = None;
        p.epoch = None;
        p.entry_id = None;
    }
    p.key = m.key.filter(|k| !k.is_empty()).map(Arc::from);
    p.deleted = m.delete;
    p.from = if from_node { m.from } else { None };
    p.to = m.to;
    p.volatile = m.volatile;
    Some((p, !from_node))
}

/// A history stream entry `[id, ["d", envelope]]`.
pub(super) fn decode_stream_entry(channel: &ChannelName, entry: Value) -> Option<Publication> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    let fields = parts.pop()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let is_d = matches!(&k, Value::BulkString(b) if b == b"d");
        if let (true, Value::BulkString(bytes)) = (is_d, v) {
            return decode(channel, &bytes).map(|(p, _)| p);
        }
    }
    None
}

/// Entries of the events stream (`XRANGE` / `XREADGROUP` answers): `[id, [field,
/// value, ...]]` each; entries that are not events are skipped.
pub(crate) fn decode_events(entries: Value) -> Vec<(String, crate::events::Event)> {
    let Value::Array(items) = entries else {
        return Vec::new();
    };
    items.into_iter().filter_map(decode_event).collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn decode_event(entry: Value) -> Option<(String, crate::events::Event)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let id = text(parts.first()?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let mut map = std::collections::HashMap::new();
    for kv in fields.chunks(2) {
        if let [k, v] = kv {
            map.insert(text(k)?, text(v)?);
        }
    }
    let opt = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
    let event = crate::config::EventKind::parse(map.get("event")?)?;
    Some((
        id,
        crate::events::Event {
            event,
            channel: opt("channel"),
            user_id: opt("user_id"),
            session_id: opt("session_id"),
            conn_id: opt("conn_id"),
            node: map.get("node").cloned().unwrap_or_default(),
            ts: map.get("ts").cloned().unwrap_or_default(),
            data: map
                .get("data")
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(serde_json::Value::Null),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_envelope_and_garbage() {
        let ch = |n: &str| ChannelName::parse(n).expect("valid");
        let (p, from_service) = decode(
            &ch("order:1"),
            br#"{"type":"order_update","payload":{"status":"shipped"}}"#,
        )
        .expect("valid");
        assert!(from_service);
        assert_eq!(p.event, "order_update");
        assert_eq!(p.offset, None);
        for bad in [
            &b"nope"[..],
            b"[1]",
            br#"{"payload":1}"#,
            br#"{"type":"subscribed"}"#,
            br#"{"type":""}"#,
            b"\xff",
        ] {
            assert!(decode(&ch("a:b"), bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn node_round_trip_keeps_from_and_offset() {
        let chat = ChannelName::parse("chat:1").expect("valid");
        let mut p = Publication::new(
            chat.clone(),
            "m".into(),
            RawValue::from_string("[1]".into()).expect("raw"),
        );
        p.from = Some(ClientInfo {
            user_id: Some(Arc::from("u")),
            session_id: None,
            info: None,
        });
        let text = encode(&p, "n1");
        let with_offset = format!(
            "{{\"offset\":7,\"epoch\":\"e\",\"i\":\"x7\",\"h\":1,{}",
            &text[1..]
        );
        let (q, from_service) = decode(&chat, with_offset.as_bytes()).expect("decode");
        assert_eq!(q.entry_id.as_deref(), Some("x7"));
        assert!(!from_service);
        assert_eq!(q.offset, Some(7));
        assert_eq!(q.epoch.as_deref(), Some("e"));
        assert_eq!(q.from.and_then(|f| f.user_id).as_deref(), Some("u"));
        let (forged, _) = decode(&chat, br#"{"offset":9,"epoch":"x","type":"m"}"#).expect("decode");
        assert_eq!(
            forged.offset, None,
            "offsets only from the history function"
        );
    }
}
