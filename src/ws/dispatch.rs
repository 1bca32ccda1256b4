//! What a client's frames mean (SPEC 2, 7): the rate limit, parsing, the metric label,
//! and dispatch to the request handlers (`auth`, `requests`). Replies go through the
//! connection's outbox so they stay in order with publications.

use std::time::Instant;

use super::conn::Conn;
use crate::metrics::MESSAGES_IN;
use crate::protocol::{
    parse_client_frame, ClientFrame, CloseCode, Command, ErrorCode, ServerMessage,
};
use crate::session::Verdict;

impl Conn {
    pub(super) fn error(&self, id: Option<&str>, code: ErrorCode, message: &str) {
        self.send(ServerMessage::Error { code, message }.to_bytes(id));
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
            .counter(MESSAGES_IN, "type", frame.command.label())
            .increment(1);
        self.dispatch(frame).await;
    }

    async fn dispatch(&mut self, frame: ClientFrame) {
        let id = frame.id.as_deref();
        match frame.command {
            Command::Ping => self.send(ServerMessage::Pong.to_bytes(id)),
            Command::Auth { token, resume } => self.on_auth(id, token, resume).await,
            _ if self.session.is_pending() => {
                self.error(id, ErrorCode::Unauthorized, "authenticate first")
            }
            Command::Subscribe {
                channel,
                token,
                since,
                keys,
            } => {
                self.on_subscribe(
                    id,
                    &channel,
                    token.as_deref(),
                    since.as_ref(),
                    keys.as_deref(),
                )
                .await
            }
            Command::Unsubscribe { channel } => self.on_unsubscribe(id, &channel).await,
            Command::Presence { channel } => self.on_presence(id, &channel).await,
            Command::History {
                channel,
                limit,
                since,
            } => self.on_history(id, &channel, limit, since).await,
            Command::State { channel, keys } => self.on_state(id, &channel, keys.as_deref()).await,
            Command::MarkRead { channel, offset } => self.on_mark_read(id, &channel, offset).await,
            Command::Received { channel, offsets } => {
                self.on_received(id, &channel, &offsets).await
            }
            Command::Unread { channels } => self.on_unread(id, channels).await,
            Command::Publish {
                event,
                channel,
                payload,
                to,
                volatile,
                key,
                delete,
            } => {
                self.on_publish(id, event, &channel, payload, to, volatile, key, delete)
                    .await
            }
        }
    }
}
