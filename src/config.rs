//! Typed configuration (SPEC section 10): a TOML file, `SWITCHYARD_*` environment
//! overrides, defaults for every key, and validation that names the bad key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration problem; the message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerUserPolicy {
    EvictOldest,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Durations are written `"25s"`, `"1h"`, `"500ms"`; a bare integer means seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Secs(u64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Secs(s) => Ok(Duration::from_secs(s)),
        Repr::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {t:?} ({e}); write e.g. \"25s\""))
        }),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node_id: String,
    pub listen: String,
    pub broker: BrokerKind,
    #[serde(deserialize_with = "duration")]
    pub presence_ttl: Duration,
    /// Time over which a draining node spreads its closes (SPEC 11).
    #[serde(deserialize_with = "duration")]
    pub drain_period: Duration,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub routes: Vec<RouteConfig>,
    /// Overrides of built-in namespaces and new ones, merged in `channel::Namespaces`.
    pub namespaces: BTreeMap<String, NamespaceOverride>,
    /// Set when the node started without any config: secrets were generated.
    #[serde(skip)]
    pub dev_mode: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            listen: "127.0.0.1:8080".into(),
            broker: BrokerKind::Memory,
            presence_ttl: Duration::from_secs(60),
            drain_period: Duration::from_secs(10),
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            api: ApiConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            routes: Vec::new(),
            namespaces: BTreeMap::new(),
            dev_mode: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    pub cluster: bool,
    pub prefix: String,
    pub pool_size: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            prefix: "switchyard".into(),
            pool_size: 16,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt_secret: String,
    pub jwt_public_key_file: String,
    pub issuer: String,
    pub audience: String,
    pub allow_anonymous: bool,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub allowed_origins: Vec<String>,
    /// Key for anonymous `resume` tokens; empty: derived from `jwt_secret` (or `api.key`)
    /// so every node of a cluster signs and checks the same tokens.
    pub resume_secret: String,
}

// Secrets never reach logs, not even through `{:?}`.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("timeout", &self.timeout)
            .field("allowed_origins", &self.allowed_origins)
            .field("resume_secret", &redacted(&self.resume_secret))
            .finish()
    }
}

fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            jwt_public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            allow_anonymous: false,
            timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            resume_secret: String::new(),
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub key: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("key", &redacted(&self.key))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_message_size: usize,
    pub client_rate: u32,
    pub client_burst: u32,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub per_user_policy: PerUserPolicy,
    pub send_queue: usize,
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub pong_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 65536,
            client_rate: 20,
            client_burst: 40,
            max_subscriptions: 256,
            max_connections: 0,
            max_connections_per_user: 0,
            per_user_policy: PerUserPolicy::EvictOldest,
            send_queue: 1024,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: LogLevel::Info,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: String,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

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
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub allow_to: Option<bool>,
    pub forward: Option<bool>,
}

const TOP_LEVEL: &[&str] = &[
    "node_id",
    "listen",
    "broker",
    "presence_ttl",
    "drain_period",
    "redis",
    "auth",
    "api",
    "limits",
    "log",
    "routes",
    "namespaces",
];

/// Keys whose values are strings even when they look like numbers (`SWITCHYARD_API__KEY=123`).
const STRING_KEYS: &[&str] = &[
    "node_id",
    "listen",
    "url",
    "prefix",
    "jwt_secret",
    "jwt_public_key_file",
    "issuer",
    "audience",
    "key",
    "resume_secret",
];

/// Environment variables that give a node its secrets: with any of them (and no
/// config file) the node is a production node, never in development mode.
const SECRET_VARS: &[&str] = &[
    "SWITCHYARD_AUTH__JWT_SECRET",
    "SWITCHYARD_AUTH__JWT_PUBLIC_KEY_FILE",
    "SWITCHYARD_API__KEY",
];

fn secrets_in_env(vars: &[(String, String)]) -> bool {
    vars.iter().any(|(k, _)| SECRET_VARS.contains(&k.as_str()))
}

/// Applies `SWITCHYARD_<KEY>` / `SWITCHYARD_<SECTION>__<KEY>` overrides onto a TOML
/// table; returns the names of variables that match no key (logged as warnings).
pub fn apply_env_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("SWITCHYARD_") else {
            continue;
        };
        if rest == "CONFIG" || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) || !TOP_LEVEL.contains(&path[0].as_str()) {
            unknown.push(name);
            continue;
        }
        let last = path.last().map(String::as_str).unwrap_or_default();
        let parsed = if STRING_KEYS.contains(&last) {
            toml::Value::String(value.clone())
        } else {
            parse_env_value(&value)
        };
        if !set_path(table, &path, parsed) {
            unknown.push(name);
        }
    }
    unknown
}

/// Sets `path` in nested tables, creating them; false when a non-table is in the way.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => set_path(t, rest, value),
            _ => false,
        },
    }
}

/// An environment value is read as a TOML value when it is one (`10`, `true`,
/// `["a","b"]`), else as a plain string.
fn parse_env_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

impl Config {
    /// Loads the file (if any), applies the environment, validates. Returns the config
    /// and the unknown `SWITCHYARD_*` variables to warn about once logging is up.
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Syntax {
                    path: p.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
            None => toml::Table::new(),
        };
        let dev_mode = path.is_none() && !secrets_in_env(&vars);
        let unknown = apply_env_overrides(&mut table, vars);
        if dev_mode {
            // Development mode: generated secrets, known only to this process.
            let fill = |table: &mut toml::Table, section: &str, key: &str| {
                let t = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = t {
                    t.entry(key.to_owned())
                        .or_insert_with(|| toml::Value::String(crate::ids::random_hex(24)));
                }
            };
            fill(&mut table, "auth", "jwt_secret");
            fill(&mut table, "api", "key");
        }
        let mut config = Self::from_table_with(table, dev_mode)?;
        config.dev_mode = dev_mode;
        Ok((config, unknown))
    }

    pub fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        Self::from_table_with(table, false)
    }

    fn from_table_with(table: toml::Table, dev_mode: bool) -> Result<Config, ConfigError> {
        let value = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            key_err(key, inner)
        })?;
        config.validate(dev_mode)?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = toml::from_str::<toml::Table>(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<inline>"),
            message: e.message().to_owned(),
        })?;
        Self::from_table(table)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            key_err(
                "listen",
                format!("{:?} is not host:port ({e})", self.listen),
            )
        })
    }

    fn validate(&self, dev_mode: bool) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if dev_mode && !addr.ip().is_loopback() {
            // Development mode serves /demo, which mints tokens for anyone who asks.
            return Err(key_err(
                "listen",
                format!(
                    "development mode (no config file, no secret in the environment) only \
                     listens on loopback, not {addr}; give a config file (--config) to listen publicly"
                ),
            ));
        }
        if self.node_id.trim().is_empty() {
            return Err(key_err("node_id", "must not be empty"));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_message_size", l.max_message_size),
            ("limits.client_rate", l.client_rate as usize),
            ("limits.client_burst", l.client_burst as usize),
            ("limits.send_queue", l.send_queue),
        ] {
            if v == 0 {
                return Err(key_err(key, "must be greater than 0"));
            }
        }
        for (key, d) in [
            ("limits.ping_interval", l.ping_interval),
            ("limits.pong_timeout", l.pong_timeout),
            ("limits.write_timeout", l.write_timeout),
            ("auth.timeout", self.auth.timeout),
        ] {
            if d.is_zero() {
                return Err(key_err(key, "must be longer than 0s"));
            }
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}']) {
            return Err(key_err(
                "redis.prefix",
                "must be non-empty and without braces",
            ));
        }
        if self.redis.pool_size == 0 {
            return Err(key_err("redis.pool_size", "must be greater than 0"));
        }
        if !dev_mode
            && self.auth.jwt_secret.is_empty()
            && self.auth.jwt_public_key_file.is_empty()
            && !self.auth.allow_anonymous
        {
            return Err(key_err(
                "auth.jwt_secret",
                "set auth.jwt_secret or auth.jwt_public_key_file (or auth.allow_anonymous = true)",
            ));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !r.path.starts_with('/') || r.path.contains(['{', '}', '*', '?']) {
                return Err(key_err(
                    format!("routes[{i}].path"),
                    format!("{:?} must be a plain absolute path", r.path),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_named() {
        let e = Config::from_toml("[limits]\nsend_queue = \"x\"\n").expect_err("bad type");
        assert!(e.to_string().contains("limits.send_queue"), "{e}");
        let e = Config::from_toml("[limits]\nbogus = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("limits.bogus"), "{e}");
        let e =
            Config::from_toml("listen = \"nowhere\"\nauth.jwt_secret = \"s\"").expect_err("listen");
        assert!(e.to_string().contains("`listen`"), "{e}");
        let e = Config::from_toml("auth.jwt_secret = \"s\"\nlimits.ping_interval = \"soon\"")
            .expect_err("duration");
        assert!(e.to_string().contains("limits.ping_interval"), "{e}");
    }

    #[test]
    fn env_overrides_apply_and_unknown_are_reported() {
        let mut t = toml::Table::new();
        let unknown = apply_env_overrides(
            &mut t,
            [
                ("SWITCHYARD_LISTEN".into(), "0.0.0.0:9000".into()),
                ("SWITCHYARD_LIMITS__SEND_QUEUE".into(), "8".into()),
                ("SWITCHYARD_API__KEY".into(), "123".into()),
                ("SWITCHYARD_AUTH__JWT_SECRET".into(), "s".into()),
                ("SWITCHYARD_BOGUS".into(), "1".into()),
                ("SWITCHYARD_CONFIG".into(), "/x".into()),
            ],
        );
        assert_eq!(unknown, vec!["SWITCHYARD_BOGUS".to_string()]);
        let c = Config::from_table(t).expect("valid");
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.limits.send_queue, 8);
        assert_eq!(c.api.key, "123");
    }
}
