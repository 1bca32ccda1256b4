//! Who may subscribe and publish (SPEC 3, 4): the [`Identity`] of a connection held
//! against the rules a namespace lists, answered as plain functions without I/O.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::namespace::{Namespace, Rule};
use super::ChannelName;

/// Who a connection is, as far as channel rules care.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub tenant_id: Option<String>,
    pub roles: Vec<String>,
    /// `allow` claim: channel names or `prefix*` patterns.
    pub allow: Vec<String>,
    pub info: Option<Arc<RawValue>>,
}

impl Identity {
    fn is_owner(&self, ch: &ChannelName) -> bool {
        let rest = ch.rest();
        self.user_id.as_deref() == Some(rest) || self.session_id.as_deref() == Some(rest)
    }

    fn allowed_by_claim(&self, ch: &ChannelName) -> bool {
        self.allow.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => ch.as_str().starts_with(prefix),
            None => p == ch.as_str(),
        })
    }

    fn rule_grants(&self, rule: &Rule, ch: &ChannelName, token_ok: bool, subscribed: bool) -> bool {
        match rule {
            Rule::Any => true,
            Rule::Authenticated => self.user_id.is_some(),
            Rule::Owner => self.is_owner(ch),
            Rule::Tenant => self.tenant_id.as_deref() == Some(ch.rest()),
            Rule::Role(r) => self.roles.iter().any(|x| x == r),
            Rule::Token => token_ok || self.allowed_by_claim(ch),
            Rule::Subscribers => subscribed,
            Rule::None => false,
        }
    }

    /// `token_ok`: a subscription token for exactly this channel and user verified.
    pub fn may_subscribe(&self, ns: &Namespace, ch: &ChannelName, token_ok: bool) -> bool {
        ns.subscribe
            .iter()
            .any(|r| self.rule_grants(r, ch, token_ok, false))
    }

    pub fn may_publish(&self, ns: &Namespace, ch: &ChannelName, subscribed: bool) -> bool {
        ns.publish
            .iter()
            .any(|r| self.rule_grants(r, ch, false, subscribed))
    }
}
