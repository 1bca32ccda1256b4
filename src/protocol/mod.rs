//! The wire protocol (SPEC section 2): what a client frame means, what the server
//! sends back, and the error and close codes. Pure data: no sockets, no state.

mod client;
mod codes;
mod json;
mod publication;
mod server;

pub use client::{parse_client_frame, ClientFrame, Command, FrameError, Since, MAX_SAFE_INTEGER};
pub use codes::{CloseCode, ErrorCode};
pub use json::raw_null;
pub use publication::{
    publications_json, state_entries_json, timestamp_now, ClientInfo, Delta, Publication,
};
pub use server::{
    AuthSuccess, History, Presence, PresenceClient, PresenceCount, Read, ServerMessage, Snapshot,
    StateEntry, Subscribed, Unread, UnreadChannel, SERVER_TYPES,
};

/// The `type` of every client → server request, in one list (the JavaScript SDK's
/// `CLIENT_TYPES` is checked against it).
pub const CLIENT_TYPES: &[&str] = &[
    "auth",
    "subscribe",
    "unsubscribe",
    "ping",
    "presence",
    "history",
    "mark_read",
    "received",
    "unread",
    "state",
];

/// True when `event` is a control type (either direction) and may not be used as a
/// publication's name.
pub fn is_reserved(event: &str) -> bool {
    CLIENT_TYPES.contains(&event) || SERVER_TYPES.contains(&event)
}
