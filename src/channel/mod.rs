//! Channel names and namespace rules (SPEC section 4): a [`ChannelName`] is validated
//! once at the edge; [`Namespaces`] holds the resolved options ([`namespace`]) and
//! [`identity`] answers "may this identity subscribe / publish here?" without I/O.

mod identity;
mod namespace;

pub use identity::Identity;
pub use namespace::{Namespace, Namespaces, Rule};

use std::fmt;
use std::sync::Arc;

/// A valid channel name, `<namespace>:<rest>`. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name")]
pub struct InvalidChannel;

pub(crate) fn valid_namespace(ns: &str) -> bool {
    (1..=32).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_rest(rest: &str) -> bool {
    (1..=200).contains(&rest.len())
        && rest.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'=' | b'-')
        })
}

/// A state channel's key (SPEC 16.1): the characters of a channel's rest, ≤ 200.
pub fn valid_state_key(key: &str) -> bool {
    valid_rest(key)
}

impl ChannelName {
    pub fn parse(s: &str) -> Result<ChannelName, InvalidChannel> {
        let (ns, rest) = s.split_once(':').ok_or(InvalidChannel)?;
        if valid_namespace(ns) && valid_rest(rest) {
            Ok(ChannelName(Arc::from(s)))
        } else {
            Err(InvalidChannel)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn arc(&self) -> &Arc<str> {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map(|(ns, _)| ns).unwrap_or_default()
    }

    pub fn rest(&self) -> &str {
        self.0.split_once(':').map(|(_, r)| r).unwrap_or_default()
    }
}

// Lets maps keyed by channel be queried with the `&str` a publication carries.
impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

// Serialised as its name, and checked again when read (a control message from Redis
// is input too).
impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn grammar() {
        for ok in ["user:42", "order:ord_1.2", "a-b_c:x@y=z:w", "stream:1"] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        let long = format!("x:{}", "a".repeat(201));
        let ns33 = format!("{}:x", "a".repeat(33));
        for bad in [
            "", "user", "user:", ":x", "User:1", "user:a b", "user:{x}", "user:*", &long, &ns33,
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_and_overrides() {
        let cfg = Config::from_toml(
            "auth.jwt_secret='s'\n[namespaces.chat]\nhistory_size = 5\n[namespaces.vip]\nsubscribe = ['role:vip', 'tenant']\npublish = 'subscribers'\n",
        )
        .expect("config");
        let ns = Namespaces::from_config(&cfg).expect("namespaces");
        let chat = ns.get("chat").expect("chat");
        assert_eq!(chat.history_size, 5);
        assert!(
            chat.tracks_presence() && chat.join_leave,
            "other options keep built-in values"
        );
        let (ch, vip) = ns.resolve("vip:t1").expect("vip");
        let mut who = Identity {
            user_id: Some("7".into()),
            ..Identity::default()
        };
        assert!(!who.may_subscribe(vip, &ch, false));
        who.tenant_id = Some("t1".into());
        assert!(who.may_subscribe(vip, &ch, false));
        assert!(ns.resolve("nope:1").is_err());
        let (user_ch, user) = ns.resolve("user:7").expect("user");
        assert!(who.may_subscribe(user, &user_ch, false));
        let (other, _) = ns.resolve("user:8").expect("user");
        assert!(!who.may_subscribe(user, &other, false));
        let (order, order_ns) = ns.resolve("order:1").expect("order");
        assert!(!who.may_subscribe(order_ns, &order, false));
        assert!(who.may_subscribe(order_ns, &order, true));
        who.allow = vec!["order:*".into()];
        assert!(who.may_subscribe(order_ns, &order, false));
    }

    #[test]
    fn impossible_option_combinations_name_their_key() {
        for (table, key) in [
            (
                "[namespaces.n]\nread_state = true",
                "namespaces.n.read_state",
            ),
            ("[namespaces.n]\nreceipts = true", "namespaces.n.receipts"),
            ("[namespaces.n]\ndelta = true", "namespaces.n.delta"),
            (
                "[namespaces.n]\nstate = true\nstate_max_keys = 0",
                "namespaces.n.state_max_keys",
            ),
            (
                "[namespaces.n]\npresence = \"many\"",
                "namespaces.n.presence",
            ),
        ] {
            let text = format!("auth.jwt_secret='s'\n{table}\n");
            let e = match Config::from_toml(&text) {
                Err(e) => e,
                Ok(cfg) => Namespaces::from_config(&cfg).expect_err(table),
            };
            assert!(e.to_string().contains(key), "{table}: {e}");
        }
        let cfg = Config::from_toml(
            "auth.jwt_secret='s'\n[namespaces.live]\nstate = true\ndelta = true\npresence = \"counts\"\nconflate = \"250ms\"\n[namespaces.inbox]\nhistory_size = 10\nhistory_ttl = \"1h\"\nread_state = true\nreceipts = true\n",
        )
        .expect("config");
        let ns = Namespaces::from_config(&cfg).expect("valid combinations");
        let live = ns.get("live").expect("live");
        assert!(live.state && live.delta && live.numbered() && live.conflated());
        assert_eq!(live.presence, crate::config::PresenceMode::Counts);
        assert_eq!(live.state_max_keys, 10_000, "default kept");
        let inbox = ns.get("inbox").expect("inbox");
        assert!(inbox.read_state && inbox.receipts);
        assert_eq!(
            inbox.read_state_ttl,
            std::time::Duration::from_secs(30 * 86_400)
        );
    }

    #[test]
    fn bad_rule_names_key() {
        let cfg =
            Config::from_toml("auth.jwt_secret='s'\n[namespaces.x]\nsubscribe = 'everyone'\n")
                .expect("the config file itself is well-formed");
        let e = Namespaces::from_config(&cfg).expect_err("bad rule");
        assert!(e.to_string().contains("namespaces.x.subscribe"), "{e}");
    }
}
