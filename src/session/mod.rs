//! A connection's protocol state and every decision about it, as plain functions
//! over the state, the namespace, the limits and a `now` passed in (the quinn-proto
//! way): who the connection is (pending, anonymous, a user), what it is subscribed to
//! and how each subscription was granted, may it subscribe or publish here, what a
//! token renewal takes away, and the per-user limit. No sockets, no clock reads, no
//! I/O: the socket side (`ws`) asks, then acts.

mod rate;

pub use rate::{RateLimiter, Verdict};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{ChannelName, Identity, Namespace, Rule};
use crate::config::PerUserPolicy;
use crate::protocol::{CloseCode, ErrorCode};

/// Where a connection stands with authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    /// No identity yet: only `auth` and `ping` until the deadline (then 4001).
    Pending { deadline: Instant },
    /// An anonymous session; `resume_exp` (Unix seconds) was fixed at its creation.
    Anonymous { resume_exp: u64 },
    /// A user whose token runs out at `exp_at` (then 4011 unless renewed).
    User { exp_at: Instant },
}

/// How a subscription was granted, which decides what a token renewal re-checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The namespace's rules for this identity (owner, tenant, role, `allow`...).
    Rules,
    /// A subscription token for this channel (it stands on its own).
    Token,
    /// The token's `channels` claim.
    Claim,
    /// The connection's own `user:`/`session:` channel.
    Own,
    /// The route's auto-subscriptions (`[[routes]]`).
    Route,
    /// `/api/subscribe`: the backend decided.
    Server,
}

/// One subscription of a connection.
#[derive(Debug, Clone)]
pub struct Sub {
    pub channel: ChannelName,
    pub grant: Grant,
}

/// Why a request is refused: the wire code and a message for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: &'static str,
}

const fn refuse(code: ErrorCode, message: &'static str) -> Refusal {
    Refusal { code, message }
}

/// What a subscription token given with a `subscribe` turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubToken {
    Absent,
    Valid,
    /// Present but not for this channel and identity (or not a token at all).
    Invalid,
}

/// A connection's protocol state.
pub struct Session {
    pub auth: AuthState,
    pub ident: Identity,
    /// Subscriptions, in the order they were made. A short list: a linear search beats
    /// a map at the sizes `max_subscriptions` allows, and costs less memory.
    pub subs: Vec<Sub>,
    pub route: Arc<[ChannelName]>,
    pub rate: RateLimiter,
    /// The user this connection is registered under for the per-user limit.
    pub counted_user: Option<Box<str>>,
    /// The connection token's `iat` (revocations compare with it).
    pub token_iat: Option<u64>,
}

/// When a token expiring at `exp` (Unix seconds, `unix_now` now) runs out; absurd
/// values are capped so the deadline never overflows.
pub fn exp_instant(exp: u64, unix_now: u64, now: Instant) -> Instant {
    let left = Duration::from_secs(exp.saturating_sub(unix_now)).min(crate::config::MAX_DURATION);
    now.checked_add(left).unwrap_or(now)
}

impl Session {
    pub fn new(
        now: Instant,
        auth_timeout: Duration,
        rate: (u32, u32),
        route: Arc<[ChannelName]>,
    ) -> Session {
        Session {
            auth: AuthState::Pending {
                deadline: now + auth_timeout,
            },
            ident: Identity::default(),
            subs: Vec::new(),
            route,
            rate: RateLimiter::new(rate.0, rate.1, now),
            counted_user: None,
            token_iat: None,
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.auth, AuthState::Pending { .. })
    }

    /// The next session timer: auth timeout or token expiry.
    pub fn deadline(&self) -> Option<Instant> {
        match self.auth {
            AuthState::Pending { deadline } => Some(deadline),
            AuthState::User { exp_at } => Some(exp_at),
            AuthState::Anonymous { .. } => None,
        }
    }

    /// What the session timer means at `now`: close 4001 (no auth in time) or 4011.
    pub fn on_timer(&self, now: Instant) -> Option<CloseCode> {
        match self.auth {
            AuthState::Pending { deadline } if now >= deadline => Some(CloseCode::Unauthorized),
            AuthState::User { exp_at } if now >= exp_at => Some(CloseCode::TokenExpired),
            _ => None,
        }
    }

    pub fn is_subscribed(&self, ch: &ChannelName) -> bool {
        self.subs.iter().any(|s| s.channel == *ch)
    }

    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.subs.iter().map(|s| &s.channel)
    }

    pub fn add_sub(&mut self, channel: ChannelName, grant: Grant) {
        if !self.is_subscribed(&channel) {
            self.subs.push(Sub { channel, grant });
        }
    }

    /// Forgets a subscription; false when there was none.
    pub fn remove_sub(&mut self, ch: &ChannelName) -> bool {
        match self.subs.iter().position(|s| s.channel == *ch) {
            Some(i) => {
                self.subs.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// May this connection subscribe to `ch` of `ns` (a first subscribe, so the
    /// subscription limit applies)? Returns how it is granted.
    pub fn check_subscribe(
        &self,
        ns: &Namespace,
        ch: &ChannelName,
        token: SubToken,
        max_subscriptions: usize,
    ) -> Result<Grant, Refusal> {
        let grant = if self.ident.may_subscribe(ns, ch, false) {
            Grant::Rules
        } else if token == SubToken::Valid && self.ident.may_subscribe(ns, ch, true) {
            Grant::Token
        } else {
            // SPEC 3: an authenticated connection whose subscribe is not granted (a
            // token for another user or channel, a rule it does not meet) is
            // `forbidden`; `unauthorized` is only for one that has not authenticated.
            return Err(refuse(
                ErrorCode::Forbidden,
                match token {
                    SubToken::Invalid => "subscription token is not valid for this channel",
                    _ => "not allowed to subscribe to this channel",
                },
            ));
        };
        if !self.is_subscribed(ch) && self.subs.len() >= max_subscriptions {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                "max subscriptions per connection reached",
            ));
        }
        Ok(grant)
    }

    /// May this connection read presence, history or state of `ch`?
    pub fn may_read(&self, ns: &Namespace, ch: &ChannelName) -> bool {
        self.is_subscribed(ch) || self.ident.may_subscribe(ns, ch, false)
    }

    /// May this connection publish to `ch` (with `to` when `targeted`)?
    pub fn check_publish(
        &self,
        ns: &Namespace,
        ch: &ChannelName,
        targeted: bool,
    ) -> Result<(), Refusal> {
        if !self.ident.may_publish(ns, ch, self.is_subscribed(ch)) {
            return Err(if ns.publish == [Rule::Subscribers] {
                refuse(
                    ErrorCode::NotSubscribed,
                    "subscribe to the channel to publish",
                )
            } else {
                refuse(
                    ErrorCode::Forbidden,
                    "not allowed to publish to this channel",
                )
            });
        }
        if targeted && !ns.allow_to {
            return Err(refuse(
                ErrorCode::Forbidden,
                "`to` is not allowed in this namespace",
            ));
        }
        Ok(())
    }

    /// The subscriptions a renewed identity no longer allows: those granted by the
    /// rules or the `channels` claim that the new claims do not grant again.
    /// Subscription tokens, own channels, routes and server-side subscriptions stand.
    pub fn renewal_drops<'a>(
        &self,
        new: &Identity,
        new_claim_channels: &[String],
        namespace_of: impl Fn(&ChannelName) -> Option<&'a Namespace>,
    ) -> Vec<ChannelName> {
        self.subs
            .iter()
            .filter(|s| {
                let by_rules = || {
                    namespace_of(&s.channel)
                        .is_some_and(|ns| new.may_subscribe(ns, &s.channel, false))
                };
                match s.grant {
                    Grant::Rules => !by_rules(),
                    Grant::Claim => {
                        !(new_claim_channels.iter().any(|c| c == s.channel.as_str()) || by_rules())
                    }
                    Grant::Token | Grant::Own | Grant::Route | Grant::Server => false,
                }
            })
            .map(|s| s.channel.clone())
            .collect()
    }
}

/// What the per-user connection limit decides for a connection that just registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLimit {
    /// Within the limit (or these older connections are evicted to make room).
    Admit { evict: Vec<String> },
    /// `reject` policy and the limit is taken by earlier connections.
    Reject,
    /// `evict_oldest` and newer connections of the user took every place: this one
    /// goes (4009), exactly as the nodes of those newer ones decide.
    Replaced,
}

/// The per-user limit (SPEC 5.7) over the user's live connections, oldest first,
/// `me` among them. Every node decides from the same ordered list, so connections
/// arriving at once on different nodes agree: the newest `max` stay under
/// `evict_oldest`, the first `max` under `reject`. Never "everyone but me", which is
/// how two simultaneous arrivals used to evict each other.
pub fn user_limit(conns: &[String], me: &str, max: usize, policy: PerUserPolicy) -> UserLimit {
    if max == 0 || conns.len() <= max {
        return UserLimit::Admit { evict: Vec::new() };
    }
    let pos = conns.iter().position(|c| c == me);
    match policy {
        PerUserPolicy::EvictOldest => {
            let cut = conns.len() - max;
            if pos.is_some_and(|p| p < cut) {
                UserLimit::Replaced
            } else {
                UserLimit::Admit {
                    evict: conns[..cut].to_vec(),
                }
            }
        }
        PerUserPolicy::Reject => {
            if pos.is_some_and(|p| p < max) {
                UserLimit::Admit { evict: Vec::new() }
            } else {
                UserLimit::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests;
