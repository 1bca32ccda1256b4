//! Channel requests of a session (SPEC sections 2, 4, 5): subscribe (with rules,
//! tokens and recovery), unsubscribe, presence, history, client publish, and the
//! server-side subscribe/unsubscribe of `/api/subscribe`; and the cleanup when the
//! connection ends.

use serde_json::value::RawValue;

use super::conn::Conn;
use crate::broker::BrokerError;
use crate::channel::{ChannelName, Namespace};
use crate::node::{Chore, Join};
use crate::protocol::{
    publications_json, ClientInfo, ErrorCode, History, Presence, Publication, ServerMessage, Since,
};
use crate::session::{Grant, SubToken};

/// The wire code for a broker failure (logged when it is not plain unavailability).
pub(super) fn broker_code(e: &BrokerError) -> ErrorCode {
    match e {
        BrokerError::Unavailable(_) | BrokerError::Unknown(_) => ErrorCode::Unavailable,
        BrokerError::Refused(_) => ErrorCode::InvalidPayload,
        BrokerError::Limit(_) => ErrorCode::LimitExceeded,
        BrokerError::Internal(m) => {
            tracing::warn!(error = %m, "broker error");
            ErrorCode::Internal
        }
    }
}

fn broker_message(e: &BrokerError) -> &'static str {
    match e {
        BrokerError::Unavailable(_) => "broker unavailable: not done, retry",
        BrokerError::Unknown(_) => "broker did not answer in time: the outcome is unknown",
        BrokerError::Refused(_) => "refused: the publication is not valid here",
        BrokerError::Limit(_) => "a configured limit was reached",
        BrokerError::Internal(_) => "internal error",
    }
}

impl Conn {
    /// Resolves a channel for a request, answering `invalid_channel` itself.
    pub(super) fn resolve(&self, id: Option<&str>, name: &str) -> Option<(ChannelName, Namespace)> {
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

    fn sub_token(&self, token: Option<&str>, ch: &ChannelName) -> SubToken {
        match token {
            None => SubToken::Absent,
            Some(t) => match self
                .node
                .auth
                .verify_subscription(t, ch.as_str(), &self.session.ident)
            {
                Ok(()) => SubToken::Valid,
                Err(_) => SubToken::Invalid,
            },
        }
    }

    pub(super) async fn on_subscribe(
        &mut self,
        id: Option<&str>,
        name: &str,
        token: Option<&str>,
        since: Option<&Since>,
        keys: Option<&[String]>,
    ) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        let token = self.sub_token(token, &ch);
        let grant = match self.session.check_subscribe(
            &ns,
            &ch,
            token,
            self.node.config.limits.max_subscriptions,
        ) {
            Ok(g) => g,
            Err(r) => return self.error(id, r.code, r.message),
        };
        if self.session.is_subscribed(&ch) {
            // Subscribing again is answered like a first subscribe (current offset and
            // epoch, replay after `since`); presence and join/leave are left alone.
            self.node.unsubscribe(&self.handle, &ch);
            if let Err(e) = self
                .node
                .subscribe(
                    &self.handle,
                    &ch,
                    &ns,
                    Join {
                        since,
                        keys,
                        id,
                        reply: true,
                    },
                )
                .await
            {
                self.session.remove_sub(&ch);
                self.left_chore(&ch, &ns);
                self.error(id, broker_code(&e), broker_message(&e));
            }
            return;
        }
        let join = Join {
            since,
            keys,
            id,
            reply: true,
        };
        if let Err(code) = self.subscribe_to(&ch, join, grant).await {
            self.error(id, code, "subscribe failed");
        }
    }

    /// Subscribes and records it; `reply` sends `subscribed` (auto-subscriptions don't).
    pub(super) async fn subscribe_to(
        &mut self,
        ch: &ChannelName,
        join: Join<'_>,
        grant: Grant,
    ) -> Result<(), ErrorCode> {
        let ns = self
            .node
            .namespaces
            .get(ch.namespace())
            .cloned()
            .ok_or(ErrorCode::InvalidChannel)?;
        match self.node.subscribe(&self.handle, ch, &ns, join).await {
            Ok(_) => {
                self.session.add_sub(ch.clone(), grant);
                self.node.joined(&self.handle, ch, &ns).await;
                self.emit_sub(crate::config::EventKind::Subscribe, ch);
                Ok(())
            }
            Err(e) => Err(broker_code(&e)),
        }
    }

    pub(super) async fn on_unsubscribe(&mut self, id: Option<&str>, name: &str) {
        let Ok(ch) = ChannelName::parse(name) else {
            self.error(
                id,
                ErrorCode::InvalidChannel,
                &format!("invalid channel {name:?}"),
            );
            return;
        };
        if !self.unsubscribe_from(&ch) {
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

    /// Leaves a channel at once (the hub stops delivering); presence, `leave` and the
    /// broker interest follow in the background.
    pub(super) fn unsubscribe_from(&mut self, ch: &ChannelName) -> bool {
        if !self.session.remove_sub(ch) {
            return false;
        }
        self.node.unsubscribe(&self.handle, ch);
        if let Some(ns) = self.node.namespaces.get(ch.namespace()).cloned() {
            self.left_chore(ch, &ns);
        }
        self.emit_sub(crate::config::EventKind::Unsubscribe, ch);
        true
    }

    fn emit_sub(&self, kind: crate::config::EventKind, ch: &ChannelName) {
        let who = self.session.counted_user.as_deref();
        self.node.emit(kind, self.handle.id, who, Some(ch), None);
    }

    fn left_chore(&self, ch: &ChannelName, ns: &Namespace) {
        if ns.tracks_presence() || ns.join_leave {
            let client = self.handle.who().client_info();
            self.node
                .chore(Chore::Left(ch.clone(), self.handle.id, client));
        }
    }

    pub(super) async fn on_presence(&mut self, id: Option<&str>, name: &str) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.session.may_read(&ns, &ch) {
            self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
            return;
        }
        if !ns.tracks_presence() {
            self.error(
                id,
                ErrorCode::Forbidden,
                "presence is not enabled in this namespace",
            );
            return;
        }
        match self.node.presence(&ch, &ns).await {
            Ok(view) => {
                let body = Presence {
                    channel: Some(ch.to_string()),
                    ..view
                };
                self.send(ServerMessage::Presence(&body).to_bytes(id));
            }
            Err(e) => self.error(id, broker_code(&e), broker_message(&e)),
        }
    }

    pub(super) async fn on_history(
        &mut self,
        id: Option<&str>,
        name: &str,
        limit: Option<usize>,
        since: Option<u64>,
    ) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.session.may_read(&ns, &ch) {
            self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
            return;
        }
        match self.node.history(&ch, &ns, since, limit).await {
            Ok(Some(page)) => {
                let body = History {
                    channel: ch.as_str(),
                    publications: publications_json(&page.publications),
                    offset: page.offset,
                    epoch: &page.epoch,
                };
                self.send(ServerMessage::History(body).to_bytes(id));
            }
            Ok(None) => self.error(
                id,
                ErrorCode::Forbidden,
                "history is not enabled in this namespace",
            ),
            Err(e) => self.error(id, broker_code(&e), broker_message(&e)),
        }
    }

    pub(super) async fn on_state(&mut self, id: Option<&str>, name: &str, keys: Option<&[String]>) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.session.may_read(&ns, &ch) {
            self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
            return;
        }
        match self.node.state(&ch, &ns, keys).await {
            Ok(Some(snapshot)) => self.send(ServerMessage::State(&snapshot).to_bytes(id)),
            Ok(None) => self.error(
                id,
                ErrorCode::Forbidden,
                "state is not enabled in this namespace",
            ),
            Err(e) => self.error(id, broker_code(&e), broker_message(&e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn on_publish(
        &mut self,
        id: Option<&str>,
        event: String,
        channel: &str,
        payload: Box<RawValue>,
        to: Option<String>,
        volatile: bool,
        key: Option<String>,
        delete: bool,
    ) {
        let Some((ch, ns)) = self.resolve(id, channel) else {
            return;
        };
        if let Err(r) = self.session.check_publish(&ns, &ch, to.is_some()) {
            return self.error(id, r.code, r.message);
        }
        let mut p = Publication::new(ch, event, payload);
        p.to = to;
        p.volatile = volatile;
        p.key = key.map(Into::into);
        if delete {
            p.deleted = true;
            p.payload = crate::protocol::raw_null();
        }
        if let Err(m) = crate::node::check_keyed(&ns, &p) {
            return self.error(id, ErrorCode::InvalidPayload, m);
        }
        let ident = &self.session.ident;
        p.from = Some(ClientInfo {
            user_id: ident.user_id.clone(),
            session_id: ident.session_id.clone(),
            info: ident.info.clone(),
        });
        // A forwarded publication is acknowledged only once it is in the upstream
        // stream (SPEC 8.5): appended first, so a failure leaves nothing half done.
        if ns.forward && p.storable() {
            if let Err(e) = self.node.brokers.cluster.forward(&p, self.handle.id).await {
                return self.error(id, broker_code(&e), "not forwarded upstream, not published");
            }
        }
        match self.node.publish(p, &ns, None).await {
            Ok(r) => {
                self.node
                    .metrics
                    .counter(crate::metrics::PUBLICATIONS, "source", "client")
                    .increment(1);
                if id.is_some() {
                    self.send(ServerMessage::Ack { offset: r.offset }.to_bytes(id));
                }
            }
            Err(e) => self.error(id, broker_code(&e), broker_message(&e)),
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
        if let Err(code) = self
            .subscribe_to(
                &ch,
                Join {
                    reply: true,
                    ..Join::default()
                },
                Grant::Server,
            )
            .await
        {
            self.error(None, code, "server-side subscribe failed");
        }
    }

    pub(super) fn server_unsubscribe(&mut self, ch: ChannelName) {
        if self.unsubscribe_from(&ch) {
            self.send(
                ServerMessage::Unsubscribed {
                    channel: ch.as_str(),
                }
                .to_bytes(None),
            );
        }
    }

    /// The connection is gone: the hub forgets it at once; presence, `leave`, broker
    /// interest and the user registry are the janitor's, so nothing here waits on
    /// the broker.
    pub(super) fn session_end(&mut self) {
        for sub in std::mem::take(&mut self.session.subs) {
            self.emit_sub(crate::config::EventKind::Unsubscribe, &sub.channel);
            self.node.unsubscribe(&self.handle, &sub.channel);
            if let Some(ns) = self.node.namespaces.get(sub.channel.namespace()).cloned() {
                self.left_chore(&sub.channel, &ns);
            }
        }
        if let Some(who) = self.session.counted_user.take() {
            self.node.chore(Chore::UserGone(who, self.handle.id));
        }
    }
}
