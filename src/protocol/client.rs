//! Client → server frames: one JSON object per text frame, parsed once into a typed
//! [`Command`]. The payload of a publish is kept as raw JSON text: the server never
//! needs to look inside it, so huge numbers or odd values pass through untouched.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{is_reserved, ErrorCode};

/// A parsed client frame: the request id to echo and what the client asks for.
#[derive(Debug)]
pub struct ClientFrame {
    pub id: Option<String>,
    pub command: Command,
}

/// `since` of a `subscribe`: the last position the client saw.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Since {
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
    /// Any non-reserved `type` with a `channel`.
    Publish {
        event: String,
        channel: String,
        payload: Box<RawValue>,
        to: Option<String>,
        volatile: bool,
    },
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
}

#[derive(Deserialize)]
struct ChannelPayload {
    channel: Option<String>,
}

#[derive(Deserialize)]
struct HistoryPayload {
    channel: Option<String>,
    limit: Option<usize>,
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
                limit: p.limit,
                since: p.since,
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
            let payload = match raw.payload {
                Some(p) => p.to_owned(),
                None => RawValue::from_string("null".to_owned())
                    .map_err(|_| err(&id, ErrorCode::Internal, "payload"))?,
            };
            Command::Publish {
                event: event.to_owned(),
                channel,
                payload,
                to,
                volatile,
            }
        }
    };
    Ok(ClientFrame { id, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse_client_frame(text).expect_err("should fail").code
    }

    #[test]
    fn bad_shapes_have_precise_codes() {
        assert_eq!(code_of("nope"), ErrorCode::InvalidMessage);
        assert_eq!(code_of("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code_of("{}"), ErrorCode::InvalidMessage);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(code_of(r#"{"type":"zzz"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code_of(r#"{"type":"pong","channel":"a:b"}"#),
            ErrorCode::ReservedType
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","payload":{"channel":7}}"#),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","payload":{}}"#),
            ErrorCode::InvalidPayload
        );
        // Deep nesting is never parsed into a tree: it passes through raw, no recursion.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let r = parse_client_frame(&format!(
            r#"{{"type":"x","channel":"a:b","payload":{deep}}}"#
        ));
        assert!(r.is_ok());
        let unbalanced = format!(
            r#"{{"type":"x","channel":"a:b","payload":{}}}"#,
            "[".repeat(100_000)
        );
        assert_eq!(code_of(&unbalanced), ErrorCode::InvalidMessage);
    }

    #[test]
    fn id_is_kept_on_errors_and_commands() {
        let e = parse_client_frame(r#"{"type":"nope","id":"r1"}"#).expect_err("unknown");
        assert_eq!(e.id.as_deref(), Some("r1"));
        let f = parse_client_frame(r#"{"type":"ping","id":"r2","timestamp":"x"}"#).expect("ok");
        assert_eq!(f.id.as_deref(), Some("r2"));
        assert!(matches!(f.command, Command::Ping));
    }

    #[test]
    fn publish_keeps_raw_payload() {
        let f = parse_client_frame(
            r#"{"type":"chat_message","channel":"chat:1","payload":{"n":123456789012345678901234567890},"volatile":true}"#,
        )
        .expect("publish");
        match f.command {
            Command::Publish {
                event,
                payload,
                volatile,
                ..
            } => {
                assert_eq!(event, "chat_message");
                assert_eq!(payload.get(), r#"{"n":123456789012345678901234567890}"#);
                assert!(volatile);
            }
            other => panic!("expected publish, got {other:?}"),
        }
    }
}
