//! Error codes carried in `error` payloads and WebSocket close codes, each with the
//! reason string and reconnect advice the SPEC's close table gives.

use serde::Serialize;

/// Codes of `{"type":"error","payload":{"code"}}` (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, `type` missing or not a string, or a binary frame.
    InvalidMessage,
    /// A non-reserved `type` without a `channel`.
    UnknownType,
    /// The payload of a reserved type has the wrong shape.
    InvalidPayload,
    /// The connection has not authenticated (or a token did not verify).
    Unauthorized,
    /// Authenticated but not allowed by the namespace rules.
    Forbidden,
    /// Bad channel name or a namespace that is not configured.
    InvalidChannel,
    /// `unsubscribe` (or a publish to a `subscribers` namespace) without a subscription.
    NotSubscribed,
    /// A configured limit (subscriptions, connections per user) is reached.
    LimitExceeded,
    /// The client sends faster than `limits.client_rate`.
    RateLimited,
    /// A publish whose event name is a reserved type.
    ReservedType,
    /// The broker is unreachable; the request had no effect and may be retried.
    Unavailable,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReservedType => "reserved_type",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes the server uses (SPEC section 2, close table), plus the
/// application codes `/api/disconnect` may pass through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    Shutdown,
    InvalidUtf8,
    MessageTooBig,
    Unauthorized,
    Forbidden,
    PolicyViolation,
    Replaced,
    SlowConsumer,
    TokenExpired,
    InsufficientState,
    /// WebSocket protocol error from the client (unmasked frame, bad opcode...).
    ProtocolError,
    /// An application code in 4000–4999 given to `/api/disconnect`.
    Custom(u16),
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Shutdown => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidUtf8 => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Unauthorized => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::PolicyViolation => 4008,
            CloseCode::Replaced => 4009,
            CloseCode::SlowConsumer => 4010,
            CloseCode::TokenExpired => 4011,
            CloseCode::InsufficientState => 4012,
            CloseCode::Custom(c) => c,
        }
    }

    /// Maps a numeric code back to the named one when the close table lists it.
    pub fn from_code(code: u16) -> CloseCode {
        match code {
            1001 => CloseCode::Shutdown,
            1002 => CloseCode::ProtocolError,
            1007 => CloseCode::InvalidUtf8,
            1009 => CloseCode::MessageTooBig,
            4001 => CloseCode::Unauthorized,
            4003 => CloseCode::Forbidden,
            4008 => CloseCode::PolicyViolation,
            4009 => CloseCode::Replaced,
            4010 => CloseCode::SlowConsumer,
            4011 => CloseCode::TokenExpired,
            4012 => CloseCode::InsufficientState,
            other => CloseCode::Custom(other),
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Shutdown => "shutdown",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidUtf8 => "invalid_utf8",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::PolicyViolation => "policy_violation",
            CloseCode::Replaced => "replaced",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::InsufficientState => "insufficient_state",
            CloseCode::Custom(_) => "disconnected",
        }
    }

    /// Whether the client should reconnect; codes outside the close table never do.
    pub fn reconnect(self) -> bool {
        match self {
            CloseCode::Shutdown
            | CloseCode::PolicyViolation
            | CloseCode::SlowConsumer
            | CloseCode::TokenExpired
            | CloseCode::InsufficientState => true,
            CloseCode::InvalidUtf8
            | CloseCode::MessageTooBig
            | CloseCode::Unauthorized
            | CloseCode::Forbidden
            | CloseCode::Replaced
            | CloseCode::ProtocolError
            | CloseCode::Custom(_) => false,
        }
    }
}
