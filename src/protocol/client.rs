//! Client → server frames: one JSON object per text frame, parsed once into a typed
//! [`Command`]. The payload of a publish is kept as raw JSON text: the server never
//! needs to look inside it, so huge numbers or odd values pass through untouched.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::{is_reserved, ErrorCode};

/// The largest integer a JavaScript client can hold exactly (2^53 − 1): offsets and
/// limits beyond it (or negative) are refused, never wrapped.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Reads an offset or a count: a JSON integer in 0..=2^53−1, anything else an error.
fn safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .filter(|v| *v <= MAX_SAFE_INTEGER)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer from 0 to 2^53-1")))
}

fn opt_safe_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| {
            n.as_u64()
                .filter(|v| *v <= MAX_SAFE_INTEGER)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{n} is not an integer from 0 to 2^53-1"))
                })
        })
        .transpose()
}

/// A parsed client frame: the request id to echo and what the client asks for.
#[derive(Debug)]
pub struct ClientFrame {
    pub id: Option<String>,
    pub command: Command,
}

/// `since` of a `subscribe`: the last position the client saw.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Since {
    #[serde(deserialize_with = "safe_u64")]
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug)]
pub enum Command {
    Auth {
        token: Option<String>,
        resume: Option<String>,
    },
    Subscribe {
        channel: String,
        token: Option<String>,
        since: Option<Since>,
        /// State channels: narrows the snapshot to these keys.
        keys: Option<Vec<String>>,
    },
    Unsubscribe {
        channel: String,
    },
    Ping,
    Presence {
        channel: String,
    },
    History {
        channel: String,
        limit: Option<usize>,
        since: Option<u64>,
    },
    /// Moves the user's read position forward (SPEC 15.1).
    MarkRead {
        channel: String,
        offset: u64,
    },
    /// Publications that reached the application (SPEC 15.2); no reply.
    Received {
        channel: String,
        offsets: Vec<u64>,
    },
    /// Unread counts of the named channels, or of every channel with a position.
    Unread {
        channels: Option<Vec<String>>,
    },
    /// A state channel's entries without subscribing (SPEC 16.2).
    State {
        channel: String,
        keys: Option<Vec<String>>,
    },
    /// Any non-reserved `type` with a `channel`.
    Publish {
        event: String,
        channel: String,
        payload: Box<RawValue>,
        to: Option<String>,
        volatile: bool,
        key: Option<String>,
        delete: bool,
    },
}

impl Command {
    /// The `switchyard_messages_in_total` label: a reserved type, or `publish`.
    pub fn label(&self) -> &'static str {
        match self {
            Command::Auth { .. } => "auth",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Ping => "ping",
            Command::Presence { .. } => "presence",
            Command::History { .. } => "history",
            Command::MarkRead { .. } => "mark_read",
            Command::Received { .. } => "received",
            Command::Unread { .. } => "unread",
            Command::State { .. } => "state",
            Command::Publish { .. } => "publish",
        }
    }
}

/// Why a frame was refused; `id` is echoed when it could be read.
#[derive(Debug)]
pub struct FrameError {
    pub id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

/// The envelope with every field left as raw JSON, so a wrong type in one field is
/// reported precisely instead of failing the whole frame.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    volatile: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    delete: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct AuthPayload {
    token: Option<String>,
    resume: Option<String>,
}

#[derive(Deserialize)]
struct SubscribePayload {
    channel: Option<String>,
    token: Option<String>,
    since: Option<Since>,
    keys: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct MarkReadPayload {
    channel: Option<String>,
    #[serde(deserialize_with = "safe_u64")]
    offset: u64,
}

#[derive(Deserialize)]
struct ReceivedPayload {
    channel: Option<String>,
    #[serde(default, deserialize_with = "opt_safe_u64")]
    offset: Option<u64>,
    offsets: Option<Vec<serde_json::Number>>,
}

#[derive(Deserialize)]
struct UnreadPayload {
    channels: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct StatePayload {
    channel: Option<String>,
    keys: Option<Vec<String>>,
}

/// At most this many offsets in one batched `received`.
const MAX_RECEIVED_BATCH: usize = 1000;

#[derive(Deserialize)]
struct ChannelPayload {
    channel: Option<String>,
}

#[derive(Deserialize)]
struct HistoryPayload {
    channel: Option<String>,
    #[serde(default, deserialize_with = "opt_safe_u64")]
    limit: Option<u64>,
    #[serde(default, deserialize_with = "opt_safe_u64")]
    since: Option<u64>,
}

fn err(id: &Option<String>, code: ErrorCode, message: impl Into<String>) -> FrameError {
    FrameError {
        id: id.clone(),
        code,
        message: message.into(),
    }
}

/// Reads an optional string field; JSON `null` counts as absent.
fn opt_string(raw: Option<&RawValue>) -> Result<Option<String>, ()> {
    match raw {
        None => Ok(None),
        Some(v) if v.get() == "null" => Ok(None),
        Some(v) => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| ()),
    }
}

fn payload_as<'a, T: Deserialize<'a>>(
    id: &Option<String>,
    payload: Option<&'a RawValue>,
) -> Result<T, FrameError> {
    let text = payload.map(RawValue::get).unwrap_or("{}");
    serde_json::from_str(text).map_err(|e| {
        err(
            id,
            ErrorCode::InvalidPayload,
            format!("invalid payload: {e}"),
        )
    })
}

/// Picks the channel from the payload, falling back to the envelope's `channel`.
fn need_channel(
    id: &Option<String>,
    from_payload: Option<String>,
    top: &Option<String>,
) -> Result<String, FrameError> {
    from_payload
        .or_else(|| top.clone())
        .ok_or_else(|| err(id, ErrorCode::InvalidPayload, "payload.channel is required"))
}

/// Parses one text frame. Errors carry the code the SPEC names for each failure.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let no_id = None;
    // serde would also accept a JSON array for a struct; the protocol wants an object.
    if !text.trim_start().starts_with('{') {
        return Err(err(
            &no_id,
            ErrorCode::InvalidMessage,
            "expected a JSON object",
        ));
    }
    let raw: RawEnvelope<'_> = serde_json::from_str(text).map_err(|e| {
        err(
            &no_id,
            ErrorCode::InvalidMessage,
            format!("invalid JSON: {e}"),
        )
    })?;
    let id = match raw.id {
        None => None,
        Some(v) if v.get() == "null" => None,
        Some(v) => match serde_json::from_str::<String>(v.get()) {
            Ok(s) => Some(s),
            // A numeric id is echoed as its text so simple clients still match replies.
            Err(_) if v.get().bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Some(v.get().to_owned())
            }
            Err(_) => {
                return Err(err(
                    &no_id,
                    ErrorCode::InvalidMessage,
                    "`id` must be a string",
                ))
            }
        },
    };
    let ty = match raw.ty.map(|v| serde_json::from_str::<String>(v.get())) {
        Some(Ok(t)) if !t.is_empty() => t,
        Some(Ok(_)) => return Err(err(&id, ErrorCode::InvalidMessage, "`type` is empty")),
        Some(Err(_)) => {
            return Err(err(
                &id,
                ErrorCode::InvalidMessage,
                "`type` must be a string",
            ))
        }
        None => return Err(err(&id, ErrorCode::InvalidMessage, "`type` is required")),
    };
    let top_channel = opt_string(raw.channel)
        .map_err(|_| err(&id, ErrorCode::InvalidMessage, "`channel` must be a string"))?;

    let command = match ty.as_str() {
        "auth" => {
            let p: AuthPayload = payload_as(&id, raw.payload)?;
            Command::Auth {
                token: p.token,
                resume: p.resume,
            }
        }
        "subscribe" => {
            let p: SubscribePayload = payload_as(&id, raw.payload)?;
            Command::Subscribe {
                channel: need_channel(&id, p.channel, &top_channel)?,
                token: p.token,
                since: p.since,
                keys: p.keys,
            }
        }
        "unsubscribe" => {
            let p: ChannelPayload = payload_as(&id, raw.payload)?;
            Command::Unsubscribe {
                channel: need_channel(&id, p.channel, &top_channel)?,
            }
        }
        "ping" => Command::Ping,
        "presence" => {
            let p: ChannelPayload = payload_as(&id, raw.payload)?;
            Command::Presence {
                channel: need_channel(&id, p.channel, &top_channel)?,
            }
        }
        "history" => {
            let p: HistoryPayload = payload_as(&id, raw.payload)?;
            Command::History {
                channel: need_channel(&id, p.channel, &top_channel)?,
                limit: p.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
                since: p.since,
            }
        }
        "mark_read" => {
            let p: MarkReadPayload = payload_as(&id, raw.payload)?;
            Command::MarkRead {
                channel: need_channel(&id, p.channel, &top_channel)?,
                offset: p.offset,
            }
        }
        "received" => {
            let p: ReceivedPayload = payload_as(&id, raw.payload)?;
            let mut offsets = Vec::new();
            if let Some(o) = p.offset {
                offsets.push(o);
            }
            for n in p.offsets.unwrap_or_default() {
                match n.as_u64().filter(|v| *v <= MAX_SAFE_INTEGER) {
                    Some(o) => offsets.push(o),
                    None => {
                        return Err(err(
                            &id,
                            ErrorCode::InvalidPayload,
                            format!("offset {n} is not an integer from 0 to 2^53-1"),
                        ))
                    }
                }
            }
            if offsets.is_empty() || offsets.len() > MAX_RECEIVED_BATCH {
                return Err(err(
                    &id,
                    ErrorCode::InvalidPayload,
                    format!("received needs `offset` or 1 to {MAX_RECEIVED_BATCH} `offsets`"),
                ));
            }
            Command::Received {
                channel: need_channel(&id, p.channel, &top_channel)?,
                offsets,
            }
        }
        "unread" => {
            let p: UnreadPayload = payload_as(&id, raw.payload)?;
            Command::Unread {
                channels: p.channels,
            }
        }
        "state" => {
            let p: StatePayload = payload_as(&id, raw.payload)?;
            Command::State {
                channel: need_channel(&id, p.channel, &top_channel)?,
                keys: p.keys,
            }
        }
        event if is_reserved(event) => {
            return Err(err(
                &id,
                ErrorCode::ReservedType,
                format!("`{event}` is a server message type and cannot be sent"),
            ))
        }
        event => {
            let Some(channel) = top_channel else {
                return Err(err(
                    &id,
                    ErrorCode::UnknownType,
                    format!("unknown type `{event}` (a publish needs a `channel`)"),
                ));
            };
            let to = opt_string(raw.to)
                .map_err(|_| err(&id, ErrorCode::InvalidPayload, "`to` must be a string"))?;
            let volatile = match raw.volatile.map(RawValue::get) {
                None | Some("null") | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(err(
                        &id,
                        ErrorCode::InvalidPayload,
                        "`volatile` must be a boolean",
                    ))
                }
            };
            let key = opt_string(raw.key)
                .map_err(|_| err(&id, ErrorCode::InvalidPayload, "`key` must be a string"))?;
            let delete = match raw.delete.map(RawValue::get) {
                None | Some("null") | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(err(
                        &id,
                        ErrorCode::InvalidPayload,
                        "`delete` must be a boolean",
                    ))
                }
            };
            let payload = match raw.payload {
                Some(p) => p.to_owned(),
                None => super::json::raw_null(),
            };
            Command::Publish {
                event: event.to_owned(),
                channel,
                payload,
                to,
                volatile,
                key,
                delete,
            }
        }
    };
    Ok(ClientFrame { id, command })
}

#[cfg(test)]
mod tests;
