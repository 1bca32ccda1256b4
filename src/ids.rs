//! Identities the node makes up itself: connection ids, anonymous session ids, and
//! random hex for epochs and generated secrets. No other module owns them, so the
//! config, auth and hub layers can all use them without depending on each other.

use std::fmt;

/// A connection's id, unique on its node (and, from a random start, in practice
/// across nodes). Clients and the API see it as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Parses the 16-hex-digit form; anything else is not a connection id.
    pub fn parse(s: &str) -> Option<ConnId> {
        (s.len() == 16)
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
            .map(ConnId)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl serde::Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConnId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConnId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("a connection id is 16 hex digits"))
    }
}

/// `n` random bytes as lowercase hex (session ids, epochs, generated secrets).
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    use std::fmt::Write;
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().fold(String::with_capacity(n * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A fresh 128-bit anonymous session id.
pub fn new_session_id() -> String {
    random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_round_trip() {
        let id = ConnId(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!(ConnId::parse("00000000000000ab"), Some(id));
        assert_eq!(ConnId::parse("ab"), None);
        assert_eq!(ConnId::parse("zzzzzzzzzzzzzzzz"), None);
        assert_eq!(random_hex(8).len(), 16);
    }
}
