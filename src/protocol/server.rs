//! Server → client messages other than publications (SPEC 2, 15, 16): one enum, one
//! payload struct per frame, encoded in one place with the envelope every frame
//! shares (`type`, `id`, `payload`, `timestamp`).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::json::{json_bytes, timestamp_now};
use super::{CloseCode, ErrorCode};
use crate::ids::ConnId;

/// `auth_success` (SPEC 2, 3).
#[derive(Debug, Serialize)]
pub struct AuthSuccess<'a> {
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub conn_id: ConnId,
    pub node: &'a str,
    pub channels: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// `subscribed` (SPEC 2, 5.3, 15.1, 16.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subscribed {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
}

/// One connection in a presence answer.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceClient {
    pub conn_id: String,
    pub user_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub info: Option<Arc<RawValue>>,
}

/// `presence` (SPEC 2, 16.5) and the body of `GET /api/presence/..`.
#[derive(Debug, Clone, Serialize)]
pub struct Presence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub count: usize,
    pub users: usize,
    pub clients: Vec<PresenceClient>,
}

/// `history`: publications already encoded, spliced in as they are.
#[derive(Debug, Serialize)]
pub struct History<'a> {
    pub channel: &'a str,
    pub publications: Box<RawValue>,
    pub offset: u64,
    pub epoch: &'a str,
}

/// `read` (SPEC 15.1): a reply to `mark_read`, or pushed to the user's other devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Read {
    pub channel: String,
    pub read_offset: u64,
    pub unread: u64,
}

/// One channel of an `unread` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadChannel {
    pub channel: String,
    pub offset: u64,
    pub read_offset: u64,
    pub unread: u64,
}

/// `unread` (SPEC 15.1) and the body of `GET /api/unread/..`.
#[derive(Debug, Clone, Serialize)]
pub struct Unread {
    pub channels: Vec<UnreadChannel>,
}

/// One key of a snapshot (SPEC 16.2); a tombstone has `deleted` and no payload.
/// Encoded once per publication ([`Publication::entry_bytes`]).
///
/// [`Publication::entry_bytes`]: super::Publication::entry_bytes
#[derive(Debug, Clone, Serialize)]
pub struct StateEntry<'a> {
    pub key: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    pub offset: u64,
    pub timestamp: &'a str,
}

/// `snapshot` after `subscribed` on a state channel, and `state` (SPEC 16.2). The
/// entries are spliced in already encoded (`state_entries_json`).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    /// Only on `snapshot`: false when it holds just the keys changed after `since`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
    pub entries: Arc<RawValue>,
}

/// `presence_count` (SPEC 16.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceCount {
    pub channel: String,
    pub count: usize,
    pub users: usize,
}

/// Every reserved server → client message but publications (and `join`/`leave`,
/// which travel as publications so they keep their place in the channel's order).
#[derive(Debug)]
pub enum ServerMessage<'a> {
    AuthSuccess(AuthSuccess<'a>),
    AuthError { code: ErrorCode, message: &'a str },
    Subscribed(&'a Subscribed),
    Unsubscribed { channel: &'a str },
    Pong,
    Presence(&'a Presence),
    History(History<'a>),
    Ack { offset: Option<u64> },
    Error { code: ErrorCode, message: &'a str },
    Disconnect { code: CloseCode, reason: &'a str },
    Read(&'a Read),
    Unread(&'a Unread),
    Snapshot(&'a Snapshot),
    State(&'a Snapshot),
    PresenceCount(&'a PresenceCount),
}

#[derive(Serialize)]
struct Envelope<'a, P: Serialize> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    payload: P,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct CodeMessage<'a> {
    code: ErrorCode,
    message: &'a str,
}

#[derive(Serialize)]
struct ChannelOnly<'a> {
    channel: &'a str,
}

#[derive(Serialize)]
struct AckPayload {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

#[derive(Serialize)]
struct DisconnectPayload<'a> {
    code: u16,
    reason: &'a str,
    reconnect: bool,
}

#[derive(Serialize)]
struct Empty {}

impl ServerMessage<'_> {
    /// The message's `type`.
    pub fn name(&self) -> &'static str {
        match self {
            ServerMessage::AuthSuccess(_) => "auth_success",
            ServerMessage::AuthError { .. } => "auth_error",
            ServerMessage::Subscribed(_) => "subscribed",
            ServerMessage::Unsubscribed { .. } => "unsubscribed",
            ServerMessage::Pong => "pong",
            ServerMessage::Presence(_) => "presence",
            ServerMessage::History(_) => "history",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Disconnect { .. } => "disconnect",
            ServerMessage::Read(_) => "read",
            ServerMessage::Unread(_) => "unread",
            ServerMessage::Snapshot(_) => "snapshot",
            ServerMessage::State(_) => "state",
            ServerMessage::PresenceCount(_) => "presence_count",
        }
    }

    /// The frame's JSON, echoing the request's `id` (never on `disconnect`).
    pub fn to_bytes(&self, id: Option<&str>) -> Bytes {
        let ts = timestamp_now();
        let ty = self.name();
        fn env<'a, P: Serialize>(
            ty: &'a str,
            id: Option<&'a str>,
            ts: &'a str,
            payload: P,
        ) -> Bytes {
            json_bytes(&Envelope {
                ty,
                id,
                payload,
                timestamp: ts,
            })
        }
        match self {
            ServerMessage::AuthSuccess(p) => env(ty, id, &ts, p),
            ServerMessage::AuthError { code, message } | ServerMessage::Error { code, message } => {
                env(
                    ty,
                    id,
                    &ts,
                    CodeMessage {
                        code: *code,
                        message,
                    },
                )
            }
            ServerMessage::Subscribed(p) => env(ty, id, &ts, p),
            ServerMessage::Unsubscribed { channel } => env(ty, id, &ts, ChannelOnly { channel }),
            ServerMessage::Pong => env(ty, id, &ts, Empty {}),
            ServerMessage::Presence(p) => env(ty, id, &ts, p),
            ServerMessage::History(p) => env(ty, id, &ts, p),
            ServerMessage::Ack { offset } => env(ty, id, &ts, AckPayload { offset: *offset }),
            ServerMessage::Disconnect { code, reason } => env(
                ty,
                None,
                &ts,
                DisconnectPayload {
                    code: code.code(),
                    reason,
                    reconnect: code.reconnect(),
                },
            ),
            ServerMessage::Read(p) => env(ty, id, &ts, p),
            ServerMessage::Unread(p) => env(ty, id, &ts, p),
            ServerMessage::Snapshot(p) | ServerMessage::State(p) => env(ty, id, &ts, p),
            ServerMessage::PresenceCount(p) => env(ty, id, &ts, p),
        }
    }
}

/// The `type` of every server → client message, in one list: the JavaScript SDK's
/// `SERVER_TYPES` is checked against it by a test.
pub const SERVER_TYPES: &[&str] = &[
    "auth_success",
    "auth_error",
    "subscribed",
    "unsubscribed",
    "pong",
    "presence",
    "history",
    "ack",
    "error",
    "join",
    "leave",
    "disconnect",
    "read",
    "unread",
    "snapshot",
    "state",
    "presence_count",
];

#[cfg(test)]
mod tests;
