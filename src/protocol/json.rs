//! JSON the server writes: encoding that cannot fail, constant fragments, and the
//! `timestamp` of everything it sends.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// RFC 3339 UTC with milliseconds, the `timestamp` of everything the server sends.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Serialising plain structs and already-valid raw JSON cannot fail; the fallback
/// keeps the socket protocol-correct even if it ever did.
pub(crate) fn json_bytes<T: Serialize>(v: &T) -> Bytes {
    match serde_json::to_vec(v) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::from_static(br#"{"type":"error","payload":{"code":"internal"}}"#),
    }
}

/// A constant piece of JSON.
pub(crate) fn raw(text: &'static str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| unreachable!("{text} is JSON"))
}

/// JSON `null`, the payload of a publication that gave none.
pub fn raw_null() -> Box<RawValue> {
    raw("null")
}
