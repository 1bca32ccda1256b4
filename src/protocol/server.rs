//! Server → client messages. Each is encoded to JSON bytes exactly once; a
//! publication's bytes are then shared by every subscriber's queue.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{CloseCode, ErrorCode};

/// RFC 3339 UTC with milliseconds, the `timestamp` of everything the server sends.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Who made a client publication or joined a channel: `from`, presence entries and
/// `join`/`leave` payloads. Stamped by the server, never taken from a client.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<Arc<RawValue>>,
}

/// One publication on a channel, as accepted by a node or received from the broker.
#[derive(Debug)]
pub struct Publication {
    pub channel: Arc<str>,
    pub event: String,
    pub payload: Box<RawValue>,
    /// Position in the channel's history; `None` when not stored.
    pub offset: Option<u64>,
    /// The history `offset` belongs to (never sent to clients with the publication).
    pub epoch: Option<Arc<str>>,
    pub from: Option<ClientInfo>,
    /// Deliver only to subscribers whose user or session id equals this.
    pub to: Option<String>,
    pub volatile: bool,
    pub timestamp: String,
    /// When the publish was accepted on this node, for the delivery latency histogram.
    pub accepted: Instant,
    /// The encoded JSON, made on first use and shared by every delivery and replay.
    encoded: OnceLock<Bytes>,
}

impl Publication {
    pub fn new(channel: Arc<str>, event: String, payload: Box<RawValue>) -> Publication {
        Publication {
            channel,
            event,
            payload,
            offset: None,
            epoch: None,
            from: None,
            to: None,
            volatile: false,
            timestamp: timestamp_now(),
            accepted: Instant::now(),
            encoded: OnceLock::new(),
        }
    }

    /// The JSON text sent to subscribers, encoded once per publication.
    pub fn bytes(&self) -> &Bytes {
        self.encoded.get_or_init(|| encode_publication(self))
    }
}

#[derive(Serialize)]
struct Envelope<'a, P: Serialize> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    payload: P,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a ClientInfo>,
}

fn to_bytes<P: Serialize>(env: &Envelope<'_, P>) -> Bytes {
    // Serialising plain structs and already-valid raw JSON cannot fail; the fallback
    // keeps the socket protocol-correct even if it ever did.
    match serde_json::to_vec(env) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::from_static(br#"{"type":"error","payload":{"code":"internal"}}"#),
    }
}

/// Encodes a publication as subscribers see it.
pub fn encode_publication(p: &Publication) -> Bytes {
    to_bytes(&Envelope {
        ty: &p.event,
        id: None,
        channel: Some(&p.channel),
        payload: &*p.payload,
        timestamp: &p.timestamp,
        offset: p.offset,
        from: p.from.as_ref(),
    })
}

/// Encodes any server message with the given payload.
pub fn encode<P: Serialize>(
    ty: &str,
    id: Option<&str>,
    channel: Option<&str>,
    payload: P,
) -> Bytes {
    let ts = timestamp_now();
    to_bytes(&Envelope {
        ty,
        id,
        channel,
        payload,
        timestamp: &ts,
        offset: None,
        from: None,
    })
}

/// The reserved server → client messages other than publications.
#[derive(Debug)]
pub enum ServerMessage<'a> {
    AuthError { code: ErrorCode, message: &'a str },
    Error { code: ErrorCode, message: &'a str },
    Pong,
    Unsubscribed { channel: &'a str },
    Ack { offset: Option<u64> },
    Disconnect { code: CloseCode, reason: &'a str },
}

#[derive(Serialize)]
struct CodeMessage<'a> {
    code: &'a str,
    message: &'a str,
}

impl ServerMessage<'_> {
    pub fn to_bytes(&self, id: Option<&str>) -> Bytes {
        match self {
            ServerMessage::AuthError { code, message } => encode(
                "auth_error",
                id,
                None,
                CodeMessage {
                    code: code.as_str(),
                    message,
                },
            ),
            ServerMessage::Error { code, message } => encode(
                "error",
                id,
                None,
                CodeMessage {
                    code: code.as_str(),
                    message,
                },
            ),
            ServerMessage::Pong => encode("pong", id, None, serde_json::json!({})),
            ServerMessage::Unsubscribed { channel } => encode(
                "unsubscribed",
                id,
                None,
                serde_json::json!({ "channel": channel }),
            ),
            ServerMessage::Ack { offset } => {
                #[derive(Serialize)]
                struct Ack {
                    #[serde(skip_serializing_if = "Option::is_none")]
                    offset: Option<u64>,
                }
                encode("ack", id, None, Ack { offset: *offset })
            }
            ServerMessage::Disconnect { code, reason } => encode(
                "disconnect",
                None,
                None,
                serde_json::json!({
                    "code": code.code(),
                    "reason": reason,
                    "reconnect": code.reconnect(),
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_golden_shape() {
        let mut p = Publication::new(
            Arc::from("order:1"),
            "order_update".into(),
            RawValue::from_string(r#"{"status":"shipped"}"#.into()).expect("raw"),
        );
        p.offset = Some(3);
        p.timestamp = "2026-01-01T00:00:00.000Z".into();
        assert_eq!(
            std::str::from_utf8(p.bytes()).expect("utf8"),
            r#"{"type":"order_update","channel":"order:1","payload":{"status":"shipped"},"timestamp":"2026-01-01T00:00:00.000Z","offset":3}"#
        );
    }

    #[test]
    fn error_echoes_id() {
        let b = ServerMessage::Error {
            code: ErrorCode::Forbidden,
            message: "no",
        }
        .to_bytes(Some("7"));
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], "7");
        assert_eq!(v["payload"]["code"], "forbidden");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
