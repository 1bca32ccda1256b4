//! Channel requests of a session (SPEC sections 2, 4, 5): subscribe (with rules,
//! tokens and recovery), unsubscribe, presence, history, client publish, and the
//! server-side subscribe/unsubscribe of `/api/subscribe`.

use super::conn::Conn;
use super::session::broker_code;
use crate::channel::{ChannelName, Namespace, Rule};
use crate::metrics::PUBLICATIONS;
use crate::node::publications_json;
use crate::protocol::{encode, ClientInfo, ErrorCode, Publication, ServerMessage, Since};

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

    pub(super) fn sub_token_ok(&self, token: Option<&str>, ch: &ChannelName) -> bool {
        token.is_some_and(|t| {
            self.node
                .auth
                .verify_subscription(t, ch.as_str(), &self.session.ident)
                .is_ok()
        })
    }

    pub(super) async fn on_subscribe(
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
    pub(super) async fn subscribe_to(
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

    pub(super) async fn on_unsubscribe(&mut self, id: Option<&str>, name: &str) {
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

    pub(super) async fn unsubscribe_from(&mut self, ch: &ChannelName) -> bool {
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
    pub(super) fn may_read(&self, ch: &ChannelName, ns: &Namespace) -> bool {
        self.session.is_subscribed(ch) || self.session.ident.may_subscribe(ns, ch, false)
    }

    pub(super) async fn on_presence(&mut self, id: Option<&str>, name: &str) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.may_read(&ch, &ns) {
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

    pub(super) async fn on_publish(&mut self, id: Option<&str>, mut p: Publication) {
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
                        .forward(&copy, &self.handle.id.to_string())
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
            let me = self.handle.id.to_string();
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
