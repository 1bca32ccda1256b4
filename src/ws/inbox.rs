//! Notification requests of a session (SPEC 15): `mark_read`, `received` and
//! `unread`, answered from `inbox`, where the rules live.

use super::conn::Conn;
use crate::channel::ChannelName;
use crate::inbox::{self, Refused};
use crate::protocol::{ErrorCode, ServerMessage};

impl Conn {
    fn refuse(&self, id: Option<&str>, r: Refused) {
        if r.code == ErrorCode::Internal {
            tracing::warn!(error = %r.message, "notification request failed");
            return self.error(id, r.code, "internal error");
        }
        self.error(id, r.code, &r.message);
    }

    pub(super) async fn on_mark_read(&mut self, id: Option<&str>, name: &str, offset: u64) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        if !self.session.may_read(&ns, &ch) {
            return self.error(id, ErrorCode::Forbidden, "not allowed to read this channel");
        }
        match inbox::mark_read(&self.node, &self.handle, &ch, &ns, offset).await {
            Ok(read) => self.send(ServerMessage::Read(&read).to_bytes(id)),
            Err(r) => self.refuse(id, r),
        }
    }

    pub(super) async fn on_received(&mut self, id: Option<&str>, name: &str, offsets: &[u64]) {
        let Some((ch, ns)) = self.resolve(id, name) else {
            return;
        };
        let subscribed = self.session.is_subscribed(&ch);
        if let Err(r) =
            inbox::received(&self.node, &self.handle, &ch, &ns, subscribed, offsets).await
        {
            self.refuse(id, r);
        }
    }

    pub(super) async fn on_unread(&mut self, id: Option<&str>, names: Option<Vec<String>>) {
        let Some(who) = inbox::who_of(&self.handle) else {
            return self.error(id, ErrorCode::Unauthorized, "authenticate first");
        };
        let named = match names {
            Some(names) => {
                let mut channels = Vec::with_capacity(names.len());
                for n in names {
                    let Some((ch, ns)) = self.resolve(id, &n) else {
                        return;
                    };
                    if !self.session.may_read(&ns, &ch) {
                        return self.error(
                            id,
                            ErrorCode::Forbidden,
                            &format!("not allowed to read {ch}"),
                        );
                    }
                    channels.push(ch);
                }
                Some(channels)
            }
            None => None::<Vec<ChannelName>>,
        };
        match inbox::unread_of(&self.node, &who, named).await {
            Ok(u) => self.send(ServerMessage::Unread(&u).to_bytes(id)),
            Err(r) => self.refuse(id, r),
        }
    }
}
