//! Typed configuration (SPEC section 10): a TOML file, `SWITCHYARD_*` environment
//! overrides, defaults for every key, and validation that names the bad key.

mod env;
mod namespace;
mod sections;

pub use env::apply_env_overrides;
use env::secrets_in_env;
pub use namespace::{NamespaceOverride, OneOrMany, PresenceMode};
pub use sections::{
    ApiConfig, AuthConfig, EventKind, EventsConfig, LimitsConfig, LogConfig, RedisConfig,
    WebhookConfig,
};

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

/// The longest duration any key takes: far beyond any sane setting, and small enough
/// that `now + d` can never overflow a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Durations are written `"25s"`, `"1h"`, `"500ms"`; a bare integer means seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Secs(u64),
        Text(String),
    }
    let d = match Repr::deserialize(d)? {
        Repr::Secs(s) => Duration::from_secs(s),
        Repr::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {t:?} ({e}); write e.g. \"25s\""))
        })?,
    };
    if d > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{} is longer than the longest allowed duration, 10 years",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
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
    pub events: EventsConfig,
    pub webhooks: Vec<WebhookConfig>,
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
            events: EventsConfig::default(),
            webhooks: Vec::new(),
            routes: Vec::new(),
            namespaces: BTreeMap::new(),
            dev_mode: false,
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

/// The demo's state namespace (`/demo`'s live inventory table), defined only in
/// development mode.
pub const DEMO_STATE_NAMESPACE: &str = "inventory";

/// What development mode adds under whatever the environment set (which wins):
/// generated secrets, known only to this process, and the namespace the demo's
/// inventory table needs. A production node never gets a namespace it was not
/// configured with, so the demo's lives here and not among the built-ins.
fn development_defaults(table: &mut toml::Table) {
    let secret = || toml::Value::String(crate::ids::random_hex(24));
    fill(table, &["auth"], "jwt_secret", secret());
    fill(table, &["api"], "key", secret());
    let ns = ["namespaces", DEMO_STATE_NAMESPACE];
    fill(table, &ns, "subscribe", toml::Value::String("any".into()));
    fill(table, &ns, "state", toml::Value::Boolean(true));
    fill(table, &ns, "delta", toml::Value::Boolean(true));
}

/// Sets `key` in the table at `path` unless it is there already. A non-table in
/// the way is left alone: deserializing it then names the key at fault.
fn fill(table: &mut toml::Table, path: &[&str], key: &str, value: toml::Value) {
    let mut t = table;
    for name in path {
        let entry = t
            .entry((*name).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = entry else {
            return;
        };
        t = inner;
    }
    t.entry(key.to_owned()).or_insert(value);
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
            development_defaults(&mut table);
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
            ("limits.send_queue_bytes", l.send_queue_bytes),
            ("limits.max_pending_handshakes", l.max_pending_handshakes),
            ("limits.upstream_maxlen", l.upstream_maxlen),
            ("events.maxlen", self.events.maxlen),
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
            ("limits.handshake_timeout", l.handshake_timeout),
            ("auth.resume_ttl", self.auth.resume_ttl),
            ("auth.revocation_ttl", self.auth.revocation_ttl),
            ("api.idempotency_window", self.api.idempotency_window),
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
        for (i, w) in self.webhooks.iter().enumerate() {
            let url = w.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(key_err(
                    format!("webhooks[{i}].url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if w.secret.len() < 8 {
                // Receivers verify the signature; a short or empty secret makes it
                // worthless (SPEC 17), so it is refused rather than allowed by default.
                return Err(key_err(
                    format!("webhooks[{i}].secret"),
                    "set a secret of at least 8 characters; receivers verify the signature with it",
                ));
            }
            if w.max_attempts == 0 {
                return Err(key_err(
                    format!("webhooks[{i}].max_attempts"),
                    "must be at least 1",
                ));
            }
            if w.timeout.is_zero() {
                return Err(key_err(
                    format!("webhooks[{i}].timeout"),
                    "must be longer than 0s",
                ));
            }
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
    fn durations_are_bounded_and_name_their_key() {
        // Unbounded, `now + ping_interval` overflowed the clock and panicked.
        for (key, value) in [
            ("limits.ping_interval", "\"1000000y\""),
            ("limits.handshake_timeout", "9223372036854775807"),
            ("auth.resume_ttl", "\"11y\""),
        ] {
            let text = format!("auth.jwt_secret = \"s\"\n{key} = {value}\n");
            let e = Config::from_toml(&text).expect_err("too long");
            assert!(e.to_string().contains(key), "{e}");
        }
        let ok = Config::from_toml("auth.jwt_secret = \"s\"\nlimits.ping_interval = \"9y\"\n");
        assert!(ok.is_ok());
    }

    #[test]
    fn new_keys_have_the_spec_defaults() {
        let c = Config::from_toml("auth.jwt_secret = \"s\"").expect("valid");
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_pending_handshakes, 1024);
        assert_eq!(c.limits.send_queue_bytes, 4 * 1024 * 1024);
        assert_eq!(c.limits.upstream_maxlen, 100_000);
        assert_eq!(c.limits.max_channels_per_namespace, 0);
        assert_eq!(c.auth.resume_ttl, Duration::from_secs(86_400));
        assert_eq!(c.auth.revocation_ttl, Duration::from_secs(86_400));
        assert_eq!(c.api.idempotency_window, Duration::from_secs(300));
        assert_eq!(c.events.maxlen, 100_000);
        assert!(c.events.emits(EventKind::Occupied) && !c.events.emits(EventKind::Connect));
        let c = Config::from_toml(
            "auth.jwt_secret = \"s\"\n[[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"webhook-secret-123\"\n",
        )
        .expect("webhook");
        assert_eq!(c.webhooks[0].timeout, Duration::from_secs(5));
        assert_eq!(c.webhooks[0].max_attempts, 10);
        assert!(
            !format!("{:?}", c.webhooks[0]).contains("webhook-secret-123"),
            "secret redacted"
        );
        let e = Config::from_toml("auth.jwt_secret = \"s\"\n[[webhooks]]\nurl = \"ftp://x\"\n")
            .expect_err("bad url");
        assert!(e.to_string().contains("webhooks[0].url"), "{e}");
    }

    #[test]
    fn only_development_mode_has_the_demo_state_namespace() {
        let (dev, _) = Config::load_with_env(None, Vec::new()).expect("dev config");
        assert!(dev.dev_mode);
        let ns = dev
            .namespaces
            .get(DEMO_STATE_NAMESPACE)
            .expect("the demo's namespace");
        assert_eq!(
            ns.subscribe.as_ref().map(OneOrMany::items),
            Some(vec!["any"])
        );
        assert_eq!((ns.state, ns.delta), (Some(true), Some(true)));
        // The environment still decides what it names.
        let (dev, _) = Config::load_with_env(
            None,
            [(
                "SWITCHYARD_NAMESPACES__INVENTORY__DELTA".into(),
                "false".into(),
            )],
        )
        .expect("dev config");
        assert_eq!(dev.namespaces[DEMO_STATE_NAMESPACE].delta, Some(false));
        let (prod, _) =
            Config::load_with_env(None, [("SWITCHYARD_AUTH__JWT_SECRET".into(), "s".into())])
                .expect("production config");
        assert!(!prod.dev_mode);
        assert!(prod.namespaces.is_empty(), "{:?}", prod.namespaces);
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
