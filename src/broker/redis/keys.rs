//! Every Redis name the broker uses (README lists them). A gateway channel's keys
//! share the hash tag `{<channel>}`, a user's (or session's) registry key the tag
//! `{<who>}`, and a node's indexes the tag `{<node>}`, so each lives in one Redis
//! Cluster slot and every function call names keys of one slot.

/// Key names, all under the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
}

impl Keys {
    /// The channel's pub/sub channel (also the base of its other keys).
    pub(crate) fn channel(&self, ch: &str) -> String {
        format!("{}:{{{ch}}}", self.prefix)
    }
    /// The three presence keys of a channel (entries, expiries, users).
    pub(crate) fn presence(&self, ch: &str) -> [String; 3] {
        let base = self.channel(ch);
        [
            format!("{base}:presence"),
            format!("{base}:presence_exp"),
            format!("{base}:presence_users"),
        ]
    }
    pub(crate) fn upstream(&self) -> String {
        format!("{}:upstream", self.prefix)
    }
    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// A user's (or session's) read positions and their expiries (SPEC 15.1).
    pub(crate) fn reads(&self, who: &str) -> [String; 2] {
        let base = format!("{}:reads:{{{who}}}", self.prefix);
        [base.clone(), format!("{base}:exp")]
    }
    /// Revocations: user → `<before>:<until>` (SPEC 6 `/api/revoke`).
    pub(crate) fn revoked(&self) -> String {
        format!("{}:revoked", self.prefix)
    }
    pub(crate) fn control(&self) -> String {
        format!("{}:{{__control__}}", self.prefix)
    }
    pub(crate) fn canary(&self, node: &str) -> String {
        format!("{}:{{__canary__:{node}}}", self.prefix)
    }
    /// A user's (`u:<id>`) or session's (`s:<id>`) live connections.
    pub(crate) fn who(&self, who: &str) -> String {
        format!("{}:who:{{{who}}}", self.prefix)
    }
    /// Every user and session connected anywhere.
    pub(crate) fn online(&self) -> String {
        format!("{}:online", self.prefix)
    }
    /// The users and sessions a node has connections of (reaped when it dies).
    pub(crate) fn node_who(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:who", self.prefix)
    }
    /// The channels a node has subscribers of (vacated for it when it dies).
    pub(crate) fn node_channels(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:channels", self.prefix)
    }
    /// Set by the node that reaps a dead node's entries, so only one does.
    pub(crate) fn reaping(&self, node: &str) -> String {
        format!("{}:node:{{{node}}}:reaping", self.prefix)
    }
    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    /// The gateway channel of a pub/sub channel name, if it is one of ours.
    pub(crate) fn channel_of<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        redis_channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix('}')
    }
}
