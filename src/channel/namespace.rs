//! Namespace options (SPEC 4, 15, 16): the built-in namespaces, `[namespaces.*]`
//! overrides merged over them, and the checks that refuse combinations that cannot
//! work (read state without history, deltas without state...), naming the key.

use std::collections::HashMap;
use std::time::Duration;

use super::{valid_namespace, ChannelName, InvalidChannel};
use crate::config::{Config, ConfigError, NamespaceOverride, OneOrMany, PresenceMode};

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
    pub(crate) fn parse(s: &str, for_publish: bool) -> Option<Rule> {
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
    pub presence: PresenceMode,
    pub join_leave: bool,
    pub allow_to: bool,
    pub forward: bool,
    /// Per-user read positions (SPEC 15.1).
    pub read_state: bool,
    pub read_state_ttl: Duration,
    /// Clients confirm publications with `received` (SPEC 15.2).
    pub receipts: bool,
    /// Keyed state channels (SPEC 16.1).
    pub state: bool,
    pub state_max_keys: usize,
    /// How long a key lives after its last change; zero: forever.
    pub state_ttl: Duration,
    /// Merge-patch deltas on state channels (SPEC 16.3).
    pub delta: bool,
    /// Per-subscriber coalescing interval; zero: off (SPEC 16.4).
    pub conflate: Duration,
    pub presence_push_interval: Duration,
    /// `occupied`/`vacated` for this namespace's channels (SPEC 17).
    pub channel_events: bool,
}

impl Namespace {
    pub fn has_history(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// Presence entries are tracked (a list or per-node counts).
    pub fn tracks_presence(&self) -> bool {
        self.presence != PresenceMode::Off
    }

    /// Publications are numbered: history channels and state channels.
    pub fn numbered(&self) -> bool {
        self.has_history() || self.state
    }

    /// Presence is counted per node, not listed (SPEC 16.5).
    pub fn counts_presence(&self) -> bool {
        self.presence == PresenceMode::Counts
    }

    pub fn conflated(&self) -> bool {
        !self.conflate.is_zero()
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            subscribe: vec![Rule::Token],
            publish: vec![Rule::None],
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: PresenceMode::Off,
            join_leave: false,
            allow_to: false,
            forward: false,
            read_state: false,
            read_state_ttl: Duration::from_secs(30 * 24 * HOUR),
            receipts: false,
            state: false,
            state_max_keys: 10_000,
            state_ttl: Duration::ZERO,
            delta: false,
            conflate: Duration::ZERO,
            presence_push_interval: Duration::from_secs(1),
            channel_events: true,
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
                presence: PresenceMode::List,
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
                // A live stream's audience is counted, not listed (SPEC 16.5).
                presence: PresenceMode::Counts,
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
    macro_rules! take {
        ($($field:ident),*) => {
            $(if let Some(v) = o.$field { ns.$field = v; })*
        };
    }
    take!(
        history_size,
        history_ttl,
        presence,
        join_leave,
        allow_to,
        forward,
        read_state,
        read_state_ttl,
        receipts,
        state,
        state_max_keys,
        state_ttl,
        delta,
        conflate,
        presence_push_interval,
        channel_events
    );
    Ok(())
}

/// Refuses options that cannot work together, naming the key at fault.
fn check(ns: &Namespace, name: &str) -> Result<(), ConfigError> {
    let err = |key: &str, message: &str| {
        Err(ConfigError::Key {
            key: format!("namespaces.{name}.{key}"),
            message: message.into(),
        })
    };
    if ns.read_state && !ns.has_history() {
        return err("read_state", "needs history (history_size and history_ttl)");
    }
    if ns.receipts && !ns.has_history() {
        return err("receipts", "needs history (history_size and history_ttl)");
    }
    if ns.delta && !ns.state {
        return err("delta", "deltas apply to state channels: set state = true");
    }
    if ns.state && ns.state_max_keys == 0 {
        return err("state_max_keys", "must be greater than 0");
    }
    if ns.read_state && ns.read_state_ttl.is_zero() {
        return err("read_state_ttl", "must be longer than 0s");
    }
    if ns.presence == PresenceMode::Counts && ns.presence_push_interval.is_zero() {
        return err("presence_push_interval", "must be longer than 0s");
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
            check(ns, name)?;
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
