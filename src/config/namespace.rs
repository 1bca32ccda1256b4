//! A `[namespaces.<name>]` table as written in the config file: every option is
//! optional, so a table overrides only what it names (SPEC 4, 15, 16); the rules are
//! resolved and checked in `channel`.

use std::time::Duration;

use serde::Deserialize;

use super::opt_duration;

/// One rule or a list of rules, as written in a namespace table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A `[namespaces.<name>]` table: only the options it names override the built-in's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOverride {
    pub subscribe: Option<OneOrMany>,
    pub publish: Option<OneOrMany>,
    pub history_size: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub history_ttl: Option<Duration>,
    pub presence: Option<PresenceMode>,
    pub join_leave: Option<bool>,
    pub allow_to: Option<bool>,
    pub forward: Option<bool>,
    pub read_state: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub read_state_ttl: Option<Duration>,
    pub receipts: Option<bool>,
    pub state: Option<bool>,
    pub state_max_keys: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub state_ttl: Option<Duration>,
    pub delta: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub conflate: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub presence_push_interval: Option<Duration>,
    pub channel_events: Option<bool>,
}

/// `presence = true | false | "counts"` (SPEC 4, 16.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceMode {
    #[default]
    Off,
    /// Every subscribed connection, with `join`/`leave` when asked for.
    List,
    /// Per-node counts for big audiences: a count, a sample, `presence_count` pushes.
    Counts,
}

impl<'de> Deserialize<'de> for PresenceMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Flag(bool),
            Word(String),
        }
        match Repr::deserialize(d)? {
            Repr::Flag(true) => Ok(PresenceMode::List),
            Repr::Flag(false) => Ok(PresenceMode::Off),
            Repr::Word(w) if w == "counts" => Ok(PresenceMode::Counts),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "expected true, false or \"counts\", got {w:?}"
            ))),
        }
    }
}
