//! What a client's messages mean (SPEC sections 2–3): the session state, rate
//! limiting, parsing and dispatch, and authentication (tokens, anonymous sessions,
//! renewal, the per-user limit). Channel requests live in `requests`. Replies go
//! through the connection's outbox so they stay in order with publications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conn::Conn;
use super::rate::{RateLimiter, Verdict};
use super::Setup;
use crate::auth::{unix_now, AuthError, ConnClaims};
use crate::broker::BrokerError;
use crate::channel::{ChannelName, Identity};
use crate::config::PerUserPolicy;
use crate::hub::{Control, Who};
use crate::ids::new_session_id;
use crate::metrics::{AUTH_FAILURES, MESSAGES_IN};
use crate::node::Node;
use crate::protocol::{
    encode, parse_client_frame, ClientFrame, CloseCode, Command, ErrorCode, Publication,
    ServerMessage,
};

enum AuthState {
    /// No identity yet: only `auth` and `ping` until the deadline (then 4001).
    Pending {
        deadline: Instant,
    },
    Anonymous,
    /// `exp_at` is when the token expires (close 4011 unless renewed).
    User {
        exp_at: Instant,
    },
}

/// A connection's protocol state.
pub(super) struct Session {
    auth: AuthState,
    pub(super) ident: Identity,
    /// Channels this connection is subscribed to. A short list: linear search beats a
    /// map at the sizes `max_subscriptions` allows, and costs less memory.
    pub(super) subs: Vec<ChannelName>,
    route: Arc<[ChannelName]>,
    rate: RateLimiter,
    /// The user this connection is registered under for the per-user limit.
    pub(super) counted_user: Option<String>,
}

/// When a token expiring at `exp` (Unix seconds) runs out; absurd values are capped.
fn exp_instant(exp: u64, now: Instant) -> Instant {
    const CAP: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    let left = Duration::from_secs(exp.saturating_sub(unix_now())).min(CAP);
    now.checked_add(left).unwrap_or(now + CAP)
}

impl Session {
    pub(super) fn new(node: &Node, setup: &Setup, now: Instant) -> Session {
        let l = &node.config.limits;
        Session {
            auth: AuthState::Pending {
                deadline: now + node.config.auth.timeout,
            },
            ident: Identity::default(),
            subs: Vec::new(),
            route: setup.route.clone(),
            rate: RateLimiter::new(l.client_rate, l.client_burst, now),
            counted_user: None,
        }
    }

    /// The next session timer: auth timeout or token expiry.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.auth {
            AuthState::Pending { deadline } => Some(deadline),
            AuthState::User { exp_at } => Some(exp_at),
            AuthState::Anonymous => None,
        }
    }

    pub(super) fn on_timer(&self, now: Instant) -> Option<CloseCode> {
        match self.auth {
            AuthState::Pending { deadline } if now >= deadline => Some(CloseCode::Unauthorized),
            AuthState::User { exp_at } if now >= exp_at => Some(CloseCode::TokenExpired),
            _ => None,
        }
    }

    pub(super) fn is_subscribed(&self, ch: &ChannelName) -> bool {
        self.subs.contains(ch)
    }
}

#[derive(Serialize)]
struct AuthSuccess<'a> {
    user_id: Option<&'a str>,
    session_id: Option<&'a str>,
    conn_id: String,
    node: &'a str,
    channels: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    anonymous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<String>,
}

/// The wire code for a broker failure (logged when it is not plain unavailability).
pub(super) fn broker_code(e: &BrokerError) -> ErrorCode {
    match e {
        BrokerError::Unavailable(_) => ErrorCode::Unavailable,
        BrokerError::Internal(m) => {
            tracing::warn!(error = %m, "broker error");
            ErrorCode::Internal
        }
    }
}

fn in_label(cmd: &Command) -> &'static str {
    match cmd {
        Command::Auth { .. } => "auth",
        Command::Subscribe { .. } => "subscribe",
        Command::Unsubscribe { .. } => "unsubscribe",
        Command::Ping => "ping",
        Command::Presence { .. } => "presence",
        Command::History { .. } => "history",
        Command::Publish { .. } => "publish",
    }
}

impl Conn {
    pub(super) fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
        self.send(ServerMessage::Error { code, message }.to_bytes(id));
    }

    /// Right after the upgrade: a token from the upgrade, an anonymous session, or
    /// wait for `auth`.
    pub(super) async fn start(&mut self, setup: Setup) {
        if let Some(claims) = setup.claims {
            self.become_user(claims, None).await;
        } else if self.node.config.auth.allow_anonymous {
            let resumed = setup
                .resume
                .as_deref()
                .and_then(|t| self.node.auth.check_resume(t));
            self.become_anonymous(resumed).await;
        }
    }

    async fn become_anonymous(&mut self, session: Option<String>) {
        let sid: Arc<str> = Arc::from(session.unwrap_or_else(new_session_id));
        self.session.auth = AuthState::Anonymous;
        self.session.ident = Identity {
            session_id: Some(sid.clone()),
            ..Identity::default()
        };
        self.set_who();
        let mut auto: Vec<String> = vec![format!("session:{sid}")];
        auto.extend(self.session.route.iter().map(|c| c.to_string()));
        let channels = self.auto_channels(&auto);
        self.send_auth_success(None, &channels, true);
        self.auto_subscribe(channels).await;
    }

    fn set_who(&self) {
        let who = Who {
            user_id: self.session.ident.user_id.clone(),
            session_id: self.session.ident.session_id.clone(),
            info: self.session.ident.info.clone(),
        };
        self.node.hub.set_who(&self.handle, who);
    }

    /// Valid, configured channels of a list (auto-subscriptions skip bad names).
    fn auto_channels(&self, names: &[String]) -> Vec<ChannelName> {
        let mut out: Vec<ChannelName> = Vec::new();
        for n in names {
            match self.node.namespaces.resolve(n) {
                Ok((ch, _)) if !out.contains(&ch) => out.push(ch),
                Ok(_) => {}
                Err(_) => {
                    tracing::debug!(channel = %n, "auto-subscription skipped: invalid channel")
                }
            }
        }
        out
    }

    fn send_auth_success(&self, id: Option<&str>, channels: &[ChannelName], anonymous: bool) {
        let ident = &self.session.ident;
        let mut all: Vec<&str> = self.session.subs.iter().map(ChannelName::as_str).collect();
        for c in channels {
            if !all.contains(&c.as_str()) {
                all.push(c.as_str());
            }
        }
        let body = AuthSuccess {
            user_id: ident.user_id.as_deref(),
            session_id: ident.session_id.as_deref(),
            conn_id: self.handle.id.to_string(),
            node: self.node.node_id(),
            channels: all,
            anonymous,
            resume: ident
                .session_id
                .as_deref()
                .map(|s| self.node.auth.issue_resume(s)),
        };
        self.send(encode("auth_success", id, None, &body));
    }

    async fn auto_subscribe(&mut self, channels: Vec<ChannelName>) {
        for ch in channels {
            if self.session.is_subscribed(&ch) {
                continue;
            }
            if self.session.subs.len() >= self.node.config.limits.max_subscriptions {
                self.error(
                    None,
                    ErrorCode::LimitExceeded,
                    &format!("max subscriptions reached, {ch} not subscribed"),
                );
                continue;
            }
            if let Err(code) = self.subscribe_to(&ch, None, None, false).await {
                self.error(None, code, &format!("auto-subscription to {ch} failed"));
            }
        }
    }

    /// Applies a verified token: first authentication or renewal.
    async fn become_user(&mut self, claims: ConnClaims, id: Option<&str>) {
        let now = Instant::now();
        if let Some(current) = &self.session.ident.user_id {
            if **current != *claims.user_id {
                self.send(
                    ServerMessage::AuthError {
                        code: ErrorCode::Forbidden,
                        message: "token is for another user",
                    }
                    .to_bytes(id),
                );
                return;
            }
            // Renewal: same user, new expiry and claims.
            self.session.auth = AuthState::User {
                exp_at: exp_instant(claims.exp, now),
            };
            let sid = self.session.ident.session_id.clone();
            self.session.ident = claims.identity(sid);
            self.set_who();
            self.send_auth_success(id, &[], false);
            return;
        }
        if !self.enforce_user_limit(&claims.user_id, id).await {
            return;
        }
        self.session.auth = AuthState::User {
            exp_at: exp_instant(claims.exp, now),
        };
        let sid = self.session.ident.session_id.clone();
        self.session.ident = claims.identity(sid);
        self.set_who();
        let mut auto = vec![format!("user:{}", claims.user_id)];
        auto.extend(claims.channels.iter().cloned());
        auto.extend(self.session.route.iter().map(|c| c.to_string()));
        let channels = self.auto_channels(&auto);
        self.send_auth_success(id, &channels, false);
        self.auto_subscribe(channels).await;
    }

    /// Per-user connection limit, cluster-wide; false when this connection must stop.
    async fn enforce_user_limit(&mut self, user: &str, id: Option<&str>) -> bool {
        let max = self.node.config.limits.max_connections_per_user;
        if max == 0 {
            return true;
        }
        let me = self.handle.id.to_string();
        let conns = match self.node.broker.user_connected(user, &me).await {
            Ok(c) => c,
            Err(e) => {
                // Without the broker the limit cannot be checked; the connection is let in
                // rather than refused for an outage it did not cause.
                tracing::warn!(error = %e, "per-user limit not checked");
                return true;
            }
        };
        self.session.counted_user = Some(user.to_owned());
        let others: Vec<String> = conns.into_iter().filter(|c| *c != me).collect();
        if others.len() < max {
            return true;
        }
        match self.node.config.limits.per_user_policy {
            PerUserPolicy::EvictOldest => {
                for old in &others[..others.len() + 1 - max] {
                    let cmd = Control::Disconnect {
                        user_id: None,
                        session_id: None,
                        conn_id: Some(old.clone()),
                        code: CloseCode::Replaced.code(),
                        reason: None,
                    };
                    if let Err(e) = self.node.broker.control(cmd).await {
                        tracing::warn!(error = %e, "eviction not sent");
                    }
                }
                true
            }
            PerUserPolicy::Reject => {
                self.node.broker.user_disconnected(user, &me).await;
                self.session.counted_user = None;
                self.send(
                    ServerMessage::AuthError {
                        code: ErrorCode::LimitExceeded,
                        message: "too many connections for this user",
                    }
                    .to_bytes(id),
                );
                self.close(
                    CloseCode::Unauthorized,
                    Some("too many connections for this user".into()),
                );
                false
            }
        }
    }

    pub(super) fn on_binary(&mut self) {
        if self.rate_check(None) {
            self.error(
                None,
                ErrorCode::InvalidMessage,
                "binary frames are not supported; send JSON text",
            );
        }
    }

    /// WebSocket pings count toward the rate too; an excess one gets no pong.
    pub(super) fn control_frame_allowed(&mut self) -> bool {
        match self.session.rate.check(Instant::now()) {
            Verdict::Allow => true,
            Verdict::Limited => {
                self.node.metrics.rate_limited.increment(1);
                false
            }
            Verdict::Abuse => {
                self.node.metrics.rate_limited.increment(1);
                self.close(CloseCode::PolicyViolation, None);
                false
            }
        }
    }

    /// Counts the frame against the rate; false when it must not be acted on.
    fn rate_check(&mut self, id: Option<&str>) -> bool {
        match self.session.rate.check(Instant::now()) {
            Verdict::Allow => true,
            Verdict::Limited => {
                self.node.metrics.rate_limited.increment(1);
                self.error(id, ErrorCode::RateLimited, "too many messages");
                false
            }
            Verdict::Abuse => {
                self.node.metrics.rate_limited.increment(1);
                self.close(CloseCode::PolicyViolation, None);
                false
            }
        }
    }

    pub(super) async fn on_text(&mut self, text: String) {
        let parsed = parse_client_frame(&text);
        let id = match &parsed {
            Ok(f) => f.id.clone(),
            Err(e) => e.id.clone(),
        };
        if !self.rate_check(id.as_deref()) {
            return;
        }
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.node
                    .metrics
                    .counter(MESSAGES_IN, "type", "invalid")
                    .increment(1);
                self.error(e.id.as_deref(), e.code, &e.message);
                return;
            }
        };
        self.node
            .metrics
            .counter(MESSAGES_IN, "type", in_label(&frame.command))
            .increment(1);
        self.dispatch(frame).await;
    }

    async fn dispatch(&mut self, frame: ClientFrame) {
        let id = frame.id.as_deref();
        let pending = matches!(self.session.auth, AuthState::Pending { .. });
        match frame.command {
            Command::Ping => self.send(ServerMessage::Pong.to_bytes(id)),
            Command::Auth { token, resume } => self.on_auth(id, token, resume).await,
            _ if pending => self.error(id, ErrorCode::Unauthorized, "authenticate first"),
            Command::Subscribe {
                channel,
                token,
                since,
            } => {
                self.on_subscribe(id, &channel, token.as_deref(), since.as_ref())
                    .await
            }
            Command::Unsubscribe { channel } => self.on_unsubscribe(id, &channel).await,
            Command::Presence { channel } => self.on_presence(id, &channel).await,
            Command::History {
                channel,
                limit,
                since,
            } => self.on_history(id, &channel, limit, since).await,
            Command::Publish {
                event,
                channel,
                payload,
                to,
                volatile,
            } => {
                let mut p = Publication::new(Arc::from(channel.as_str()), event, payload);
                p.to = to;
                p.volatile = volatile;
                self.on_publish(id, p).await
            }
        }
    }

    async fn on_auth(&mut self, id: Option<&str>, token: Option<String>, resume: Option<String>) {
        match (token, resume) {
            (Some(token), _) => match self.node.auth.verify_connection(&token) {
                Ok(claims) => self.become_user(claims, id).await,
                Err(e) => self.auth_failed(id, &e),
            },
            (None, Some(resume)) if self.node.config.auth.allow_anonymous => {
                if self.session.ident.user_id.is_some() {
                    self.error(
                        id,
                        ErrorCode::InvalidPayload,
                        "already authenticated as a user",
                    );
                    return;
                }
                // An invalid resume token is ignored: the session keeps or gets a new id.
                match self.node.auth.check_resume(&resume) {
                    Some(sid) if matches!(self.session.auth, AuthState::Pending { .. }) => {
                        self.become_anonymous(Some(sid)).await
                    }
                    Some(sid) => {
                        if let Some(old) = self.session.ident.session_id.clone() {
                            if let Ok(ch) = ChannelName::parse(&format!("session:{old}")) {
                                self.unsubscribe_from(&ch).await;
                            }
                        }
                        self.session.ident.session_id = Some(Arc::from(sid.as_str()));
                        self.set_who();
                        let channels = self.auto_channels(&[format!("session:{sid}")]);
                        self.send_auth_success(id, &channels, true);
                        self.auto_subscribe(channels).await;
                    }
                    None if matches!(self.session.auth, AuthState::Pending { .. }) => {
                        self.become_anonymous(None).await
                    }
                    None => self.send_auth_success(id, &[], true),
                }
            }
            _ => self.error(id, ErrorCode::InvalidPayload, "auth needs payload.token"),
        }
    }

    fn auth_failed(&mut self, id: Option<&str>, e: &AuthError) {
        self.node
            .metrics
            .counter(AUTH_FAILURES, "reason", e.reason())
            .increment(1);
        self.send(
            ServerMessage::AuthError {
                code: ErrorCode::Unauthorized,
                message: &e.to_string(),
            }
            .to_bytes(id),
        );
        self.close(CloseCode::Unauthorized, None);
    }
}
