//! Every Redis name the broker uses. A gateway channel's keys share the hash tag
//! `{<channel>}`, so they live in one Redis Cluster slot.

/// Key names, all under the configured prefix; a channel's keys share `{<channel>}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
}

impl Keys {
    pub(crate) fn channel(&self, ch: &str) -> String {
        format!("{}:{{{ch}}}", self.prefix)
    }
    pub(crate) fn presence(&self, ch: &str) -> String {
        format!("{}:{{{ch}}}:presence", self.prefix)
    }
    pub(crate) fn presence_exp(&self, ch: &str) -> String {
        format!("{}:{{{ch}}}:presence_exp", self.prefix)
    }
    pub(crate) fn upstream(&self) -> String {
        format!("{}:upstream", self.prefix)
    }
    pub(crate) fn control(&self) -> String {
        format!("{}:{{__control__}}", self.prefix)
    }
    pub(crate) fn canary(&self, node: &str) -> String {
        format!("{}:{{__canary__:{node}}}", self.prefix)
    }
    pub(crate) fn user_conns(&self, user: &str) -> String {
        format!("{}:user_conns:{{{user}}}", self.prefix)
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
