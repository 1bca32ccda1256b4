//! The wire protocol (SPEC section 2): what a client frame means, what the server
//! sends back, and the error and close codes. Pure data: no sockets, no state.

mod client;
mod codes;
mod server;

pub use client::{parse_client_frame, ClientFrame, Command, Since};
pub use codes::{CloseCode, ErrorCode};
pub use server::{
    encode, encode_publication, timestamp_now, ClientInfo, Publication, ServerMessage,
};

/// Event names no one may publish: they are the server's own message types.
pub const RESERVED_TYPES: &[&str] = &[
    "auth",
    "subscribe",
    "unsubscribe",
    "ping",
    "presence",
    "history",
    "auth_success",
    "auth_error",
    "subscribed",
    "unsubscribed",
    "pong",
    "ack",
    "error",
    "join",
    "leave",
    "disconnect",
];

/// True when `event` is a control type and may not be used as a publication's name.
pub fn is_reserved(event: &str) -> bool {
    RESERVED_TYPES.contains(&event)
}
