//! Authentication of a connection (SPEC 3, 5.7): a token at the upgrade or in `auth`,
//! anonymous sessions and `resume`, renewal (which drops what the new claims no longer
//! allow), the user registry and the per-user limit. The decisions are the
//! `session` module's; this is where they meet the socket and the brokers.

use std::sync::Arc;
use std::time::Instant;

use super::conn::Conn;
use super::Setup;
use crate::auth::{unix_now, AuthError, ConnClaims};
use crate::broker::{Control, Target};
use crate::channel::ChannelName;
use crate::config::EventKind;
use crate::hub::Who;
use crate::ids::new_session_id;
use crate::metrics::AUTH_FAILURES;
use crate::node::Join;
use crate::protocol::{AuthSuccess, CloseCode, ErrorCode, ServerMessage};
use crate::session::{exp_instant, user_limit, AuthState, Grant, UserLimit};

impl Conn {
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
            self.become_anonymous(resumed, None).await;
        }
    }

    /// Starts an anonymous session, or resumes one (`(session id, resume expiry)`):
    /// the resume token's lifetime is fixed at the session's creation.
    async fn become_anonymous(&mut self, resumed: Option<(String, u64)>, id: Option<&str>) {
        let (sid, resume_exp) =
            resumed.unwrap_or_else(|| (new_session_id(), self.node.auth.resume_deadline()));
        let sid: Arc<str> = Arc::from(sid);
        self.session.auth = AuthState::Anonymous { resume_exp };
        self.session.ident = crate::channel::Identity {
            session_id: Some(sid.clone()),
            ..Default::default()
        };
        self.set_who();
        self.register(&format!("s:{sid}"), id).await;
        let mut auto = vec![(format!("session:{sid}"), Grant::Own)];
        auto.extend(self.route_channels());
        let channels = self.auto_channels(auto);
        self.send_auth_success(id, &channels, true);
        self.auto_subscribe(channels).await;
    }

    fn route_channels(&self) -> Vec<(String, Grant)> {
        self.session
            .route
            .iter()
            .map(|c| (c.to_string(), Grant::Route))
            .collect()
    }

    fn set_who(&self) {
        let who = Who {
            user_id: self.session.ident.user_id.clone(),
            session_id: self.session.ident.session_id.clone(),
            info: self.session.ident.info.clone(),
            iat: self.session.token_iat,
        };
        self.node.hub.set_who(&self.handle, who);
    }

    /// Valid, configured channels of a list (auto-subscriptions skip bad names).
    fn auto_channels(&self, names: Vec<(String, Grant)>) -> Vec<(ChannelName, Grant)> {
        let mut out: Vec<(ChannelName, Grant)> = Vec::new();
        for (n, grant) in names {
            match self.node.namespaces.resolve(&n) {
                Ok((ch, _)) if !out.iter().any(|(c, _)| *c == ch) => out.push((ch, grant)),
                Ok(_) => {}
                Err(_) => {
                    tracing::debug!(channel = %n, "auto-subscription skipped: invalid channel")
                }
            }
        }
        out
    }

    fn send_auth_success(
        &self,
        id: Option<&str>,
        channels: &[(ChannelName, Grant)],
        anonymous: bool,
    ) {
        let ident = &self.session.ident;
        let mut all: Vec<&str> = self.session.channels().map(ChannelName::as_str).collect();
        for (c, _) in channels {
            if !all.contains(&c.as_str()) {
                all.push(c.as_str());
            }
        }
        let resume = match (&self.session.auth, ident.session_id.as_deref()) {
            (AuthState::Anonymous { resume_exp }, Some(sid)) => {
                Some(self.node.auth.issue_resume(sid, *resume_exp))
            }
            _ => None,
        };
        let body = AuthSuccess {
            user_id: ident.user_id.as_deref(),
            session_id: ident.session_id.as_deref(),
            conn_id: self.handle.id,
            node: self.node.node_id(),
            channels: all,
            anonymous,
            resume,
        };
        self.send(ServerMessage::AuthSuccess(body).to_bytes(id));
    }

    async fn auto_subscribe(&mut self, channels: Vec<(ChannelName, Grant)>) {
        for (ch, grant) in channels {
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
            if let Err(code) = self.subscribe_to(&ch, Join::default(), grant).await {
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
            self.renew(claims, id, now).await;
            return;
        }
        let who = format!("u:{}", claims.user_id);
        // An anonymous session logging in: it is that user from now on.
        if let Some(old) = self.session.counted_user.take() {
            self.node
                .chore(crate::node::Chore::UserGone(old, self.handle.id));
        }
        let sid = self.session.ident.session_id.clone();
        self.session.ident = claims.identity(sid);
        self.session.token_iat = claims.iat;
        self.session.auth = AuthState::User {
            exp_at: exp_instant(claims.exp, unix_now(), now),
        };
        self.set_who();
        if !self.register(&who, id).await {
            return;
        }
        let mut auto = vec![(format!("user:{}", claims.user_id), Grant::Own)];
        auto.extend(claims.channels.iter().map(|c| (c.clone(), Grant::Claim)));
        auto.extend(self.route_channels());
        let channels = self.auto_channels(auto);
        self.send_auth_success(id, &channels, false);
        self.auto_subscribe(channels).await;
    }

    /// Renewal (SPEC 3): same user, new expiry and claims; subscriptions the new
    /// claims no longer allow are dropped (`unsubscribed`).
    async fn renew(&mut self, claims: ConnClaims, id: Option<&str>, now: Instant) {
        let sid = self.session.ident.session_id.clone();
        let ident = claims.identity(sid);
        let drops = {
            let namespaces = &self.node.namespaces;
            self.session
                .renewal_drops(&ident, &claims.channels, |c| namespaces.get(c.namespace()))
        };
        self.session.auth = AuthState::User {
            exp_at: exp_instant(claims.exp, unix_now(), now),
        };
        self.session.ident = ident;
        self.session.token_iat = claims.iat;
        self.set_who();
        for ch in drops {
            if self.unsubscribe_from(&ch) {
                self.send(
                    ServerMessage::Unsubscribed {
                        channel: ch.as_str(),
                    }
                    .to_bytes(None),
                );
            }
        }
        self.send_auth_success(id, &[], false);
    }

    /// Registers the connection in the user registry (online state, cluster-wide
    /// counts) and applies the per-user limit; false when this connection must stop.
    async fn register(&mut self, who: &str, id: Option<&str>) -> bool {
        let me = self.handle.id;
        let conns = match self.node.brokers.cluster.user_connected(who, me).await {
            Ok(c) => c,
            Err(e) => {
                // Without the broker the limit cannot be checked; the connection is let
                // in rather than refused for an outage it did not cause.
                tracing::warn!(error = %e, "user registry not updated; per-user limit not checked");
                return true;
            }
        };
        let first = self.session.counted_user.is_none();
        self.session.counted_user = Some(Box::from(who));
        if first {
            self.node
                .emit(EventKind::Connect, me, Some(who), None, None);
        }
        if !who.starts_with("u:") {
            return true;
        }
        let limits = &self.node.config.limits;
        match user_limit(
            &conns,
            &me.to_string(),
            limits.max_connections_per_user,
            limits.per_user_policy,
        ) {
            UserLimit::Admit { evict } => {
                for old in evict {
                    let Some(conn) = crate::ids::ConnId::parse(&old) else {
                        continue;
                    };
                    let cmd = Control::Disconnect {
                        target: Target::Conn(conn),
                        code: CloseCode::Replaced.code(),
                        reason: None,
                    };
                    if let Err(e) = self.node.brokers.cluster.control(cmd).await {
                        tracing::warn!(error = %e, "eviction not sent");
                    }
                }
                true
            }
            UserLimit::Replaced => {
                // Newer connections of this user took every place at the same moment.
                self.close(CloseCode::Replaced, None);
                false
            }
            UserLimit::Reject => {
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

    pub(super) async fn on_auth(
        &mut self,
        id: Option<&str>,
        token: Option<String>,
        resume: Option<String>,
    ) {
        match (token, resume) {
            (Some(token), _) => match self.node.verify_connection(&token) {
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
                let resumed = self.node.auth.check_resume(&resume);
                if self.session.is_pending() {
                    return self.become_anonymous(resumed, id).await;
                }
                match resumed {
                    Some((sid, resume_exp)) => {
                        if let Some(old) = self.session.ident.session_id.clone() {
                            if let Ok(ch) = ChannelName::parse(&format!("session:{old}")) {
                                self.unsubscribe_from(&ch);
                            }
                        }
                        if let Some(old) = self.session.counted_user.take() {
                            self.node
                                .chore(crate::node::Chore::UserGone(old, self.handle.id));
                        }
                        self.session.ident.session_id = Some(Arc::from(sid.as_str()));
                        self.session.auth = AuthState::Anonymous { resume_exp };
                        self.set_who();
                        self.register(&format!("s:{sid}"), id).await;
                        let channels =
                            self.auto_channels(vec![(format!("session:{sid}"), Grant::Own)]);
                        self.send_auth_success(id, &channels, true);
                        self.auto_subscribe(channels).await;
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
