//! The typed sections of the config file: `[redis]`, `[auth]`, `[api]`, `[limits]`,
//! `[log]`, `[events]` and `[[webhooks]]`, each with the SPEC's defaults. Secrets are
//! redacted from `Debug`, so they never reach a log line.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, LogFormat, LogLevel, PerUserPolicy};

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
    /// How long an anonymous session can be resumed, counted from its creation.
    #[serde(deserialize_with = "duration")]
    pub resume_ttl: Duration,
    /// How long `/api/revoke` is remembered.
    #[serde(deserialize_with = "duration")]
    pub revocation_ttl: Duration,
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
            .field("resume_ttl", &self.resume_ttl)
            .field("revocation_ttl", &self.revocation_ttl)
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
            resume_ttl: Duration::from_secs(24 * 3600),
            revocation_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub key: String,
    /// How long an `idempotency_key` is remembered (SPEC 6).
    #[serde(deserialize_with = "duration")]
    pub idempotency_window: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            key: String::new(),
            idempotency_window: Duration::from_secs(300),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("key", &redacted(&self.key))
            .field("idempotency_window", &self.idempotency_window)
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
    /// A connection that has not sent its whole HTTP request (headers, body) in this
    /// time is dropped (slowloris).
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Connections accepted whose request has not arrived yet; beyond it new ones are
    /// closed at once, so idle sockets cannot exhaust the node's file descriptors.
    pub max_pending_handshakes: usize,
    /// Bytes a connection may have queued (publications and replies) before it is a
    /// slow consumer, like a full `send_queue`.
    pub send_queue_bytes: usize,
    /// `MAXLEN ~` of the upstream stream.
    pub upstream_maxlen: usize,
    /// Distinct channels of one namespace with subscribers on this node (0: no limit),
    /// so a flood of subscribes to random names cannot grow the node or Redis.
    pub max_channels_per_namespace: usize,
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
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            send_queue_bytes: 4 * 1024 * 1024,
            upstream_maxlen: 100_000,
            max_channels_per_namespace: 0,
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

/// The lifecycle events a node may emit (SPEC 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Occupied,
    Vacated,
    UserOnline,
    UserOffline,
    Connect,
    Disconnect,
    Subscribe,
    Unsubscribe,
    Received,
    Read,
    Undelivered,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::Occupied,
        EventKind::Vacated,
        EventKind::UserOnline,
        EventKind::UserOffline,
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Subscribe,
        EventKind::Unsubscribe,
        EventKind::Received,
        EventKind::Read,
        EventKind::Undelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Occupied => "occupied",
            EventKind::Vacated => "vacated",
            EventKind::UserOnline => "user_online",
            EventKind::UserOffline => "user_offline",
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::Received => "received",
            EventKind::Read => "read",
            EventKind::Undelivered => "undelivered",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `[events]`: which lifecycle events are emitted, and the stream's bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub emit: Vec<EventKind>,
    /// `MAXLEN ~` of `<prefix>:events`.
    pub maxlen: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            emit: vec![
                EventKind::Occupied,
                EventKind::Vacated,
                EventKind::UserOnline,
                EventKind::UserOffline,
                EventKind::Received,
                EventKind::Read,
                EventKind::Undelivered,
            ],
            maxlen: 100_000,
        }
    }
}

impl EventsConfig {
    pub fn emits(&self, kind: EventKind) -> bool {
        self.emit.contains(&kind)
    }
}

/// One `[[webhooks]]` table: where events are POSTed, signed with `secret`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Events sent to this hook; empty: every emitted event.
    #[serde(default)]
    pub events: Vec<EventKind>,
    #[serde(default)]
    pub secret: String,
    #[serde(default = "webhook_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "webhook_attempts")]
    pub max_attempts: u32,
}

fn webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

fn webhook_attempts() -> u32 {
    10
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &redacted(&self.secret))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}
