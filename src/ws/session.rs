//! What a client's messages mean (SPEC sections 2–4): authentication state, the
//! connection's subscriptions, and one handler per command. Replies go through the
//! connection's outbox so they stay in order with publications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conn::Conn;
use super::rate::{RateLimiter, Verdict};
use super::Setup;
use crate::auth::{new_session_id, unix_now, AuthError, ConnClaims};
use crate::broker::BrokerError;
use crate::channel::{ChannelName, Identity, Namespace, Rule};
use crate::config::PerUserPolicy;
use crate::hub::{conn_id_string, Control, Who};
use crate::metrics::{AUTH_FAILURES, MESSAGES_IN, PUBLICATIONS};
use crate::node::{publications_json, Node};
use crate::protocol::{
    encode, parse_client_frame, ClientFrame, ClientInfo, CloseCode, Command, ErrorCode,
    Publication, ServerMessage, Since,
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
    ident: Identity,
    /// Channels this connection is subscribed to. A short list: linear search beats a
    /// map at the sizes `max_subscriptions` allows, and costs less memory.
    subs: Vec<ChannelName>,
    route: Arc<[ChannelName]>,
    rate: RateLimiter,
    /// The user this connection is registered under for the per-user limit.
    counted_user: Option<String>,
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

    fn is_subscribed(&self, ch: &ChannelName) -> bool {
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
fn broker_code(e: &BrokerError) -> ErrorCode {
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
    fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
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
            conn_id: conn_id_string(self.handle.id),
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
        let me = conn_id_string(self.handle.id);
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

    /// Resolves a channel for a request, answering `invalid_channel` itself.
    fn resolve(&self, id: Option<&str>, name: &str) -> Option<(ChannelName, Namespace)> {
        match self.node.namespaces.resolve(name) {
            Ok((ch, ns)) => Some((ch, ns.clone())),
            Err(_) => {
                self.error(
                    id,
                    ErrorCode::InvalidChannel,
                    &format!("invalid channel {name:?}"),
                );
                None
            }
        }
    }

    fn sub_token_ok(&self, token: Option<&str>, ch: &ChannelName) -> bool {
        token.is_some_and(|t| {
            self.node
                .auth
                .verify_subscription(t, ch.as_str(), &self.session.ident)
                .is_ok()
        })
    }

    async fn on_subscribe(
        &mut self,
        id: Option<&str>,
        name: &str,
        token: Option<&str>,
        since: Option<&Since>,
    ) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self
            .session
            .ident
            .may_subscribe(&ns, &ch, self.sub_token_ok(token, &ch))
        {
            let (code, msg) = if token.is_some() {
                (
                    ErrorCode::Unauthorized,
                    "subscription token is not valid for this channel",
                )
            } else {
                (
                    ErrorCode::Forbidden,
                    "not allowed to subscribe to this channel",
                )
            };
            self.error(id, code, msg);
            return;
        }
        if let Some(pos) = self.session.subs.iter().position(|c| *c == ch) {
            // Subscribing again is answered like a first subscribe (current offset and
            // epoch, replay after `since`); presence and join/leave are left alone.
            self.session.subs.swap_remove(pos);
            self.node.unsubscribe(&self.handle, &ch).await;
            match self
                .node
                .subscribe(&self.handle, &ch, &ns, since, id, true)
                .await
            {
                Ok(_) => self.session.subs.push(ch),
                Err(e) => {
                    self.node.left(&self.handle, &ch, &ns).await;
                    self.error(id, broker_code(&e), "subscribe failed");
                }
            }
            return;
        }
        if self.session.subs.len() >= self.node.config.limits.max_subscriptions {
            self.error(
                id,
                ErrorCode::LimitExceeded,
                "max subscriptions per connection reached",
            );
            return;
        }
        if let Err(code) = self.subscribe_to(&ch, since, id, true).await {
            self.error(id, code, "subscribe failed");
        }
    }

    /// Subscribes and records it; `reply` sends `subscribed` (auto-subscriptions don't).
    async fn subscribe_to(
        &mut self,
        ch: &ChannelName,
        since: Option<&Since>,
        id: Option<&str>,
        reply: bool,
    ) -> Result<(), ErrorCode> {
        let ns = self
            .node
            .namespaces
            .get(ch.namespace())
            .cloned()
            .ok_or(ErrorCode::InvalidChannel)?;
        let r = self
            .node
            .subscribe(&self.handle, ch, &ns, since, id, reply)
            .await;
        match r {
            Ok(_) => {
                self.session.subs.push(ch.clone());
                self.node.joined(&self.handle, ch, &ns).await;
                Ok(())
            }
            Err(e) => Err(broker_code(&e)),
        }
    }

    async fn on_unsubscribe(&mut self, id: Option<&str>, name: &str) {
        let Ok(ch) = ChannelName::parse(name) else {
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!("invalid channel {name:?}"),
            );
            return;
        };
        if !self.unsubscribe_from(&ch).await {
            self.error(
                id,
                ErrorCode::NotSubscribed,
                "not subscribed to this channel",
            );
            return;
        }
        self.send(
            ServerMessage::Unsubscribed {
                channel: ch.as_str(),
            }
            .to_bytes(id),
        );
    }

    async fn unsubscribe_from(&mut self, ch: &ChannelName) -> bool {
        let Some(pos) = self.session.subs.iter().position(|c| c == ch) else {
            return false;
        };
        self.session.subs.swap_remove(pos);
        self.node.unsubscribe(&self.handle, ch).await;
        if let Some(ns) = self.node.namespaces.get(ch.namespace()).cloned() {
            self.node.left(&self.handle, ch, &ns).await;
        }
        true
    }

    /// May this connection read presence or history of `ch`?
    fn may_read(&self, ch: &ChannelName, ns: &Namespace) -> bool {
        self.session.is_subscribed(ch) || self.session.ident.may_subscribe(ns, ch, false)
    }

    async fn on_presence(&mut self, id: Option<&str>, name: &str) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.may_read(&ch, &ns) {
            self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
            return;
        }
        if !ns.presence {
            self.error(
                id,
                ErrorCode::Forbidden,
                "presence is not enabled in this namespace",
            );
            return;
        }
        match self.node.presence(&ch).await {
            Ok(view) => {
                let body = serde_json::json!({
                    "channel": ch.as_str(),
                    "count": view.count,
                    "users": view.users,
                    "clients": view.clients,
                });
                self.send(encode("presence", id, None, &body));
            }
            Err(_) => self.error(id, ErrorCode::Unavailable, "broker unavailable"),
        }
    }

    async fn on_history(
        &mut self,
        id: Option<&str>,
        name: &str,
        limit: Option<usize>,
        since: Option<u64>,
    ) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.may_read(&ch, &ns) {
            self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
            return;
        }
        match self.node.history(&ch, &ns, since, limit).await {
            Ok(Some(page)) => {
                let body = serde_json::json!({
                    "channel": ch.as_str(),
                    "publications": publications_json(&page.publications),
                    "offset": page.offset,
                    "epoch": page.epoch,
                });
                self.send(encode("history", id, None, &body));
            }
            Ok(None) => self.error(
                id,
                ErrorCode::Forbidden,
                "history is not enabled in this namespace",
            ),
            Err(_) => self.error(id, ErrorCode::Unavailable, "broker unavailable"),
        }
    }

    async fn on_publish(&mut self, id: Option<&str>, mut p: Publication) {
        let Some((ch, ns)) = self.resolve(id, &p.channel.clone()) else {
            return;
        };
        let subscribed = self.session.is_subscribed(&ch);
        if !self.session.ident.may_publish(&ns, &ch, subscribed) {
            if ns.publish == [Rule::Subscribers] {
                self.error(
                    id,
                    ErrorCode::NotSubscribed,
                    "subscribe to the channel to publish",
                );
            } else {
                self.error(
                    id,
                    ErrorCode::Forbidden,
                    "not allowed to publish to this channel",
                );
            }
            return;
        }
        if p.to.is_some() && !ns.allow_to {
            self.error(
                id,
                ErrorCode::Forbidden,
                "`to` is not allowed in this namespace",
            );
            return;
        }
        let ident = &self.session.ident;
        p.from = Some(ClientInfo {
            user_id: ident.user_id.clone(),
            session_id: ident.session_id.clone(),
            info: ident.info.clone(),
        });
        let forward = (ns.forward && !p.volatile && p.to.is_none()).then(|| {
            let mut copy = Publication::new(p.channel.clone(), p.event.clone(), p.payload.clone());
            copy.from = p.from.clone();
            copy.timestamp = p.timestamp.clone();
            copy
        });
        match self.node.publish(p, &ns).await {
            Ok(r) => {
                if let Some(copy) = forward {
                    if let Err(e) = self
                        .node
                        .broker
                        .forward(&copy, &conn_id_string(self.handle.id))
                        .await
                    {
                        tracing::warn!(error = %e, "upstream append failed");
                    }
                }
                self.node
                    .metrics
                    .counter(PUBLICATIONS, "source", "client")
                    .increment(1);
                if id.is_some() {
                    self.send(ServerMessage::Ack { offset: r.offset }.to_bytes(id));
                }
            }
            Err(_) => self.error(
                id,
                ErrorCode::Unavailable,
                "broker unavailable, not published",
            ),
        }
    }

    /// `/api/subscribe`: subscribe without rules (the backend decided) and say so.
    pub(super) async fn server_subscribe(&mut self, ch: ChannelName) {
        if self.session.is_subscribed(&ch) {
            return;
        }
        if self.session.subs.len() >= self.node.config.limits.max_subscriptions {
            self.error(
                None,
                ErrorCode::LimitExceeded,
                "max subscriptions per connection reached",
            );
            return;
        }
        if let Err(code) = self.subscribe_to(&ch, None, None, true).await {
            self.error(None, code, "server-side subscribe failed");
        }
    }

    pub(super) async fn server_unsubscribe(&mut self, ch: ChannelName) {
        if self.unsubscribe_from(&ch).await {
            self.send(
                ServerMessage::Unsubscribed {
                    channel: ch.as_str(),
                }
                .to_bytes(None),
            );
        }
    }

    /// The connection is gone: leave every channel (presence, leave events, interest).
    pub(super) async fn session_end(&mut self) {
        if let Some(user) = self.session.counted_user.take() {
            let me = conn_id_string(self.handle.id);
            self.node.broker.user_disconnected(&user, &me).await;
        }
        let subs = std::mem::take(&mut self.session.subs);
        for ch in subs {
            self.node.unsubscribe(&self.handle, &ch).await;
            if let Some(ns) = self.node.namespaces.get(ch.namespace()).cloned() {
                self.node.left(&self.handle, &ch, &ns).await;
            }
        }
    }
}
