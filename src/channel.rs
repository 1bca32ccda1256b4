//! Channel names and namespace rules (SPEC section 4): a [`ChannelName`] is validated
//! once at the edge; [`Namespaces`] holds the resolved rules and answers "may this
//! identity subscribe / publish here?" as plain functions without I/O.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::config::{Config, ConfigError, NamespaceOverride, OneOrMany};

/// A valid channel name, `<namespace>:<rest>`. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name")]
pub struct InvalidChannel;

fn valid_namespace(ns: &str) -> bool {
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

/// One access rule of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, anonymous sessions included.
    Any,
    /// Any connection with a user id.
    Authenticated,
    /// The channel's rest is the connection's user id (or its session id).
    Owner,
    /// The channel's rest is the `tenant_id` claim.
    Tenant,
    /// The `roles` claim contains this role.
    Role(String),
    /// A subscription token for the channel, or a matching `allow` claim.
    Token,
    /// Publish only: connections subscribed to the channel.
    Subscribers,
    /// Nobody (from a client).
    None,
}

impl Rule {
    fn parse(s: &str, for_publish: bool) -> Option<Rule> {
        let rule = match s {
            "any" => Rule::Any,
            "authenticated" => Rule::Authenticated,
            "owner" => Rule::Owner,
            "tenant" => Rule::Tenant,
            "token" if !for_publish => Rule::Token,
            "subscribers" if for_publish => Rule::Subscribers,
            "none" => Rule::None,
            other => {
                let role = other.strip_prefix("role:")?;
                if role.is_empty() {
                    return None;
                }
                Rule::Role(role.to_owned())
            }
        };
        Some(rule)
    }
}

/// The resolved options of one namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub subscribe: Vec<Rule>,
    pub publish: Vec<Rule>,
    pub history_size: usize,
    pub history_ttl: Duration,
    pub presence: bool,
    pub join_leave: bool,
    pub allow_to: bool,
    pub forward: bool,
}

impl Namespace {
    pub fn has_history(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            subscribe: vec![Rule::Token],
            publish: vec![Rule::None],
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
            allow_to: false,
            forward: false,
        }
    }
}

const HOUR: u64 = 3600;

fn builtins() -> Vec<(&'static str, Namespace)> {
    let base = Namespace::default;
    vec![
        (
            "user",
            Namespace {
                subscribe: vec![Rule::Owner],
                ..base()
            },
        ),
        (
            "session",
            Namespace {
                subscribe: vec![Rule::Owner],
                ..base()
            },
        ),
        (
            "tenant",
            Namespace {
                subscribe: vec![Rule::Tenant],
                ..base()
            },
        ),
        (
            "public",
            Namespace {
                subscribe: vec![Rule::Any],
                ..base()
            },
        ),
        (
            "order",
            Namespace {
                history_size: 100,
                history_ttl: Duration::from_secs(24 * HOUR),
                ..base()
            },
        ),
        (
            "chat",
            Namespace {
                publish: vec![Rule::Subscribers],
                history_size: 100,
                history_ttl: Duration::from_secs(7 * 24 * HOUR),
                presence: true,
                join_leave: true,
                forward: true,
                ..base()
            },
        ),
        (
            "stream",
            Namespace {
                subscribe: vec![Rule::Any],
                publish: vec![Rule::Subscribers],
                presence: true,
                history_size: 50,
                history_ttl: Duration::from_secs(HOUR),
                allow_to: true,
                forward: true,
                ..base()
            },
        ),
        (
            "support",
            Namespace {
                subscribe: vec![Rule::Owner, Rule::Role("admin".into())],
                publish: vec![Rule::Owner, Rule::Role("admin".into())],
                history_size: 200,
                history_ttl: Duration::from_secs(7 * 24 * HOUR),
                forward: true,
                ..base()
            },
        ),
        (
            "admin",
            Namespace {
                subscribe: vec![Rule::Role("admin".into())],
                ..base()
            },
        ),
    ]
}

fn rules(key: &str, v: &OneOrMany, for_publish: bool) -> Result<Vec<Rule>, ConfigError> {
    let items = v.items();
    if items.is_empty() {
        return Err(ConfigError::Key {
            key: key.into(),
            message: "needs at least one rule".into(),
        });
    }
    items
        .into_iter()
        .map(|s| {
            Rule::parse(s, for_publish).ok_or_else(|| ConfigError::Key {
                key: key.into(),
                message: format!("unknown rule {s:?}"),
            })
        })
        .collect()
}

fn apply(ns: &mut Namespace, name: &str, o: &NamespaceOverride) -> Result<(), ConfigError> {
    if let Some(v) = &o.subscribe {
        ns.subscribe = rules(&format!("namespaces.{name}.subscribe"), v, false)?;
    }
    if let Some(v) = &o.publish {
        ns.publish = rules(&format!("namespaces.{name}.publish"), v, true)?;
    }
    if let Some(v) = o.history_size {
        ns.history_size = v;
    }
    if let Some(v) = o.history_ttl {
        ns.history_ttl = v;
    }
    if let Some(v) = o.presence {
        ns.presence = v;
    }
    if let Some(v) = o.join_leave {
        ns.join_leave = v;
    }
    if let Some(v) = o.allow_to {
        ns.allow_to = v;
    }
    if let Some(v) = o.forward {
        ns.forward = v;
    }
    Ok(())
}

/// Every configured namespace, built-ins merged with `[namespaces.*]`.
#[derive(Debug, Clone)]
pub struct Namespaces(HashMap<String, Namespace>);

impl Namespaces {
    pub fn from_config(config: &Config) -> Result<Namespaces, ConfigError> {
        let mut map: HashMap<String, Namespace> = builtins()
            .into_iter()
            .map(|(n, ns)| (n.to_owned(), ns))
            .collect();
        for (name, o) in &config.namespaces {
            if !valid_namespace(name) {
                return Err(ConfigError::Key {
                    key: format!("namespaces.{name}"),
                    message: "a namespace is 1-32 of [a-z0-9_-]".into(),
                });
            }
            let ns = map.entry(name.clone()).or_default();
            apply(ns, name, o)?;
        }
        let namespaces = Namespaces(map);
        for (i, r) in config.routes.iter().enumerate() {
            for ch in &r.subscribe {
                if namespaces.resolve(ch).is_err() {
                    return Err(ConfigError::Key {
                        key: format!("routes[{i}].subscribe"),
                        message: format!("{ch:?} is not a channel of a configured namespace"),
                    });
                }
            }
        }
        Ok(namespaces)
    }

    pub fn get(&self, namespace: &str) -> Option<&Namespace> {
        self.0.get(namespace)
    }

    /// Parses a name and finds its namespace: both failures are `invalid_channel`.
    pub fn resolve(&self, name: &str) -> Result<(ChannelName, &Namespace), InvalidChannel> {
        let ch = ChannelName::parse(name)?;
        let ns = self.0.get(ch.namespace()).ok_or(InvalidChannel)?;
        Ok((ch, ns))
    }
}

/// Who a connection is, as far as channel rules care.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub tenant_id: Option<String>,
    pub roles: Vec<String>,
    /// `allow` claim: channel names or `prefix*` patterns.
    pub allow: Vec<String>,
    pub info: Option<Arc<RawValue>>,
}

impl Identity {
    fn is_owner(&self, ch: &ChannelName) -> bool {
        let rest = ch.rest();
        self.user_id.as_deref() == Some(rest) || self.session_id.as_deref() == Some(rest)
    }

    fn allowed_by_claim(&self, ch: &ChannelName) -> bool {
        self.allow.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => ch.as_str().starts_with(prefix),
            None => p == ch.as_str(),
        })
    }

    fn rule_grants(&self, rule: &Rule, ch: &ChannelName, token_ok: bool, subscribed: bool) -> bool {
        match rule {
            Rule::Any => true,
            Rule::Authenticated => self.user_id.is_some(),
            Rule::Owner => self.is_owner(ch),
            Rule::Tenant => self.tenant_id.as_deref() == Some(ch.rest()),
            Rule::Role(r) => self.roles.iter().any(|x| x == r),
            Rule::Token => token_ok || self.allowed_by_claim(ch),
            Rule::Subscribers => subscribed,
            Rule::None => false,
        }
    }

    /// `token_ok`: a subscription token for exactly this channel and user verified.
    pub fn may_subscribe(&self, ns: &Namespace, ch: &ChannelName, token_ok: bool) -> bool {
        ns.subscribe
            .iter()
            .any(|r| self.rule_grants(r, ch, token_ok, false))
    }

    pub fn may_publish(&self, ns: &Namespace, ch: &ChannelName, subscribed: bool) -> bool {
        ns.publish
            .iter()
            .any(|r| self.rule_grants(r, ch, false, subscribed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            chat.presence && chat.join_leave,
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
    fn bad_rule_names_key() {
        let cfg =
            Config::from_toml("auth.jwt_secret='s'\n[namespaces.x]\nsubscribe = 'everyone'\n")
                .expect("the config file itself is well-formed");
        let e = Namespaces::from_config(&cfg).expect_err("bad rule");
        assert!(e.to_string().contains("namespaces.x.subscribe"), "{e}");
    }
}
