//! Notifications on the node (SPEC 15): what `mark_read`, `received`, `unread` and a
//! publish with `fallback` mean, checked here against the namespace and the channel's
//! newest offset, then carried out through the broker's notification face; and the
//! task that fires due fallbacks. One place for the rules, used by the socket and
//! the HTTP API alike.

use std::sync::Weak;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::broker::notify::{Fallback, Receipts, UNREAD_CHANNELS_MAX};
use crate::broker::{BrokerError, Control, Sink, Target};
use crate::channel::{ChannelName, Namespace};
use crate::hub::ConnHandle;
use crate::metrics::FALLBACKS;
use crate::node::Node;
use crate::protocol::{ErrorCode, Read, Unread, UnreadChannel};

/// Shortest and longest `fallback.after` (SPEC 15.3).
const AFTER_MIN: Duration = Duration::from_secs(1);
const AFTER_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often each node claims due fallbacks (their lateness is at most about this).
const FIRE_EVERY: Duration = Duration::from_millis(200);
const FIRE_BATCH: usize = 1000;

/// Why a request was refused: the wire code and a message that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

impl From<BrokerError> for Refused {
    fn from(e: BrokerError) -> Refused {
        let code = match e {
            BrokerError::Unavailable(_) | BrokerError::Unknown(_) => ErrorCode::Unavailable,
            BrokerError::Refused(_) => ErrorCode::InvalidPayload,
            BrokerError::Limit(_) => ErrorCode::LimitExceeded,
            BrokerError::Internal(_) => ErrorCode::Internal,
        };
        refused(code, e.to_string())
    }
}

/// The registry key of whoever a connection is: `u:<user>` or `s:<session>`.
pub fn who_of(conn: &ConnHandle) -> Option<String> {
    let w = conn.who();
    match (&w.user_id, &w.session_id) {
        (Some(u), _) => Some(format!("u:{u}")),
        (None, Some(s)) => Some(format!("s:{s}")),
        (None, None) => None,
    }
}

fn target_of(who: &str) -> Option<Target> {
    match who.split_once(':') {
        Some(("u", id)) => Some(Target::User(id.to_owned())),
        Some(("s", id)) => Some(Target::Session(id.to_owned())),
        _ => None,
    }
}

/// `unread = newest − read_offset`, never below 0.
pub fn unread(top: u64, read_offset: u64) -> u64 {
    top.saturating_sub(read_offset)
}

/// `mark_read {channel, offset}`: moves the position forward (checked against the
/// channel's newest offset), tells the user's other connections, and answers `read`.
pub async fn mark_read(
    node: &Node,
    conn: &ConnHandle,
    ch: &ChannelName,
    ns: &Namespace,
    offset: u64,
) -> Result<Read, Refused> {
    if !ns.read_state {
        return Err(refused(
            ErrorCode::InvalidPayload,
            "read state is not enabled in this namespace (read_state = true)",
        ));
    }
    let who = who_of(conn).ok_or_else(|| refused(ErrorCode::Unauthorized, "authenticate first"))?;
    let top = node.brokers.broker.tops(std::slice::from_ref(ch)).await?[0];
    if offset > top {
        return Err(refused(
            ErrorCode::InvalidPayload,
            format!("offset {offset} is beyond the channel's newest ({top})"),
        ));
    }
    let moved = node
        .brokers
        .notify
        .mark_read(&who, ch, offset, ns.read_state_ttl, conn.id)
        .await?;
    count_confirmed(node, moved.confirmed);
    let read = Read {
        channel: ch.to_string(),
        read_offset: moved.position,
        unread: unread(top, moved.position),
    };
    if moved.moved {
        if let Some(target) = target_of(&who) {
            let cmd = Control::Read {
                target,
                channel: ch.clone(),
                read_offset: read.read_offset,
                unread: read.unread,
                except: conn.id,
            };
            // The reply stands even if the other devices cannot be told now; they
            // get the position with their next `subscribed` or `unread`.
            if let Err(e) = node.brokers.cluster.control(cmd).await {
                tracing::debug!(error = %e, "read position not pushed to other devices");
            }
        }
    }
    Ok(read)
}

/// `received {channel, offset(s)}`: receipts for publications this connection was
/// delivered; each is one `received` event per user.
pub async fn received(
    node: &Node,
    conn: &ConnHandle,
    ch: &ChannelName,
    ns: &Namespace,
    subscribed: bool,
    offsets: &[u64],
) -> Result<(), Refused> {
    if !ns.receipts {
        return Err(refused(
            ErrorCode::InvalidPayload,
            "receipts are not enabled in this namespace (receipts = true)",
        ));
    }
    if !subscribed {
        return Err(refused(
            ErrorCode::NotSubscribed,
            "receipts are for publications of a channel this connection is subscribed to",
        ));
    }
    let delivered = node.hub.position(ch).map_or(0, |p| p.offset);
    if let Some(bad) = offsets.iter().find(|o| **o == 0 || **o > delivered) {
        return Err(refused(
            ErrorCode::InvalidPayload,
            format!("offset {bad} was not delivered on this channel (newest {delivered})"),
        ));
    }
    let who = who_of(conn).ok_or_else(|| refused(ErrorCode::Unauthorized, "authenticate first"))?;
    let r = node
        .brokers
        .notify
        .received(Receipts {
            who: &who,
            channel: ch,
            offsets,
            conn: conn.id,
            floor: delivered.saturating_sub(ns.history_size as u64),
            keep: ns.history_ttl,
        })
        .await?;
    node.metrics.receipts.increment(r.new.len() as u64);
    count_confirmed(node, r.confirmed);
    Ok(())
}

fn count_confirmed(node: &Node, n: usize) {
    if n > 0 {
        node.metrics
            .counter(FALLBACKS, "outcome", "confirmed")
            .increment(n as u64);
    }
}

/// `unread {channels?}` and `GET /api/unread/{user}`: the named channels (each of a
/// `read_state` namespace), or every channel where `who` has a position.
pub async fn unread_of(
    node: &Node,
    who: &str,
    named: Option<Vec<ChannelName>>,
) -> Result<Unread, Refused> {
    let (channels, positions) = match named {
        Some(channels) => {
            if let Some(ch) = channels.iter().find(|c| {
                !node
                    .namespaces
                    .get(c.namespace())
                    .is_some_and(|ns| ns.read_state)
            }) {
                return Err(refused(
                    ErrorCode::InvalidPayload,
                    format!("{ch} is not in a namespace with read_state = true"),
                ));
            }
            if channels.len() > UNREAD_CHANNELS_MAX {
                return Err(refused(
                    ErrorCode::LimitExceeded,
                    format!("at most {UNREAD_CHANNELS_MAX} channels"),
                ));
            }
            let positions = node.brokers.notify.read_positions(who, &channels).await?;
            (channels, positions)
        }
        None => node
            .brokers
            .notify
            .read_channels(who, UNREAD_CHANNELS_MAX)
            .await?
            .into_iter()
            .unzip(),
    };
    let tops = node.brokers.broker.tops(&channels).await?;
    Ok(Unread {
        channels: channels
            .iter()
            .zip(positions)
            .zip(tops)
            .map(|((ch, read_offset), offset)| UnreadChannel {
                channel: ch.to_string(),
                offset,
                read_offset,
                unread: unread(offset, read_offset),
            })
            .collect(),
    })
}

/// `fallback` of `POST /api/publish` (SPEC 15.3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackBody {
    pub after: String,
    pub data: Option<Box<RawValue>>,
}

/// Checks a fallback against its channel before anything is published; returns who
/// it is for and how long to wait.
pub fn check_fallback(
    ch: &ChannelName,
    ns: &Namespace,
    f: &FallbackBody,
) -> Result<(String, Duration), String> {
    if !ns.receipts {
        return Err(format!(
            "fallback needs receipts: namespace {} has no receipts = true",
            ch.namespace()
        ));
    }
    if !ns.subscribe.contains(&crate::channel::Rule::Owner) {
        return Err(format!(
            "fallback is for a channel of one user (an owner namespace such as user: or session:); {} is not one",
            ch.namespace()
        ));
    }
    let after = humantime::parse_duration(f.after.trim())
        .map_err(|e| format!("fallback.after is a duration such as \"30s\": {e}"))?;
    if !(AFTER_MIN..=AFTER_MAX).contains(&after) {
        return Err("fallback.after is 1s to 7d".into());
    }
    // The channel's owner: a session on `session:`, else a user.
    let who = if ch.namespace() == "session" {
        format!("s:{}", ch.rest())
    } else {
        format!("u:{}", ch.rest())
    };
    Ok((who, after))
}

/// The `undelivered` event's data: `{channel, offset, user_id, type, payload, data}`.
pub fn fallback_data(
    ch: &ChannelName,
    offset: u64,
    who: &str,
    ty: &str,
    payload: &RawValue,
    data: Option<&RawValue>,
) -> Box<RawValue> {
    // The SPEC's fields: `user_id` is the channel's owner (a session id on
    // `session:`; the event's own `session_id` field says which it is).
    let (user, session) = crate::broker::notify::ids_of(who);
    let v = serde_json::json!({
        "channel": ch.as_str(),
        "offset": offset,
        "user_id": user.or(session),
        "type": ty,
        "payload": payload,
        "data": data,
    });
    serde_json::value::to_raw_value(&v).unwrap_or_else(|_| crate::protocol::raw_null())
}

/// Schedules a checked fallback for a publication that got `offset`.
pub async fn schedule(
    node: &Node,
    ch: &ChannelName,
    offset: u64,
    who: String,
    after: Duration,
    data: Box<RawValue>,
) -> Result<(), BrokerError> {
    node.brokers
        .notify
        .schedule_fallback(Fallback {
            channel: ch.clone(),
            offset,
            who,
            after,
            data,
        })
        .await
}

/// Claims and fires due fallbacks on this node, as every node does: the broker makes
/// each fire once.
pub async fn fire_loop(node: Weak<Node>) {
    let mut tick = tokio::time::interval(FIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        loop {
            match node.brokers.notify.fire_fallbacks(FIRE_BATCH).await {
                Ok(n) => {
                    if n > 0 {
                        node.metrics
                            .counter(FALLBACKS, "outcome", "undelivered")
                            .increment(n as u64);
                    }
                    if n < FIRE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "firing fallbacks failed; trying again");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_never_goes_below_zero() {
        assert_eq!(unread(10, 4), 6);
        assert_eq!(unread(3, 5), 0);
    }

    #[test]
    fn a_fallback_needs_receipts_an_owner_namespace_and_a_sane_delay() {
        let user = ChannelName::parse("user:42").expect("valid");
        let mut ns = Namespace {
            subscribe: vec![crate::channel::Rule::Owner],
            receipts: true,
            history_size: 10,
            ..Namespace::default()
        };
        let body = |after: &str| FallbackBody {
            after: after.into(),
            data: None,
        };
        assert_eq!(
            check_fallback(&user, &ns, &body("30s")),
            Ok(("u:42".into(), Duration::from_secs(30)))
        );
        let session = ChannelName::parse("session:abc").expect("valid");
        assert_eq!(
            check_fallback(&session, &ns, &body("1s")).map(|r| r.0),
            Ok("s:abc".into())
        );
        for bad in ["500ms", "8d", "soon"] {
            assert!(check_fallback(&user, &ns, &body(bad)).is_err(), "{bad}");
        }
        ns.subscribe = vec![crate::channel::Rule::Any];
        assert!(
            check_fallback(&user, &ns, &body("30s")).is_err_and(|m| m.contains("owner namespace"))
        );
        ns.subscribe = vec![crate::channel::Rule::Owner];
        ns.receipts = false;
        assert!(check_fallback(&user, &ns, &body("30s")).is_err_and(|m| m.contains("receipts")));
    }
}
