//! Revocations (SPEC 6 `/api/revoke`): per user, tokens issued before a time are
//! refused until the revocation expires. Every node keeps the set in memory, so a
//! connect never waits on the broker for it: `/api/revoke` reaches every node as a
//! command, and each node also reloads the set from the broker periodically.

use std::collections::HashMap;

use parking_lot::Mutex;

#[derive(Default)]
pub struct Revocations {
    /// user → (tokens issued before this are refused, until when; Unix seconds).
    users: Mutex<HashMap<String, (u64, u64)>>,
}

impl Revocations {
    /// Records a revocation (the later `before` wins).
    pub fn revoke(&self, user: &str, before: u64, until: u64) {
        let mut users = self.users.lock();
        let slot = users.entry(user.to_owned()).or_insert((before, until));
        slot.0 = slot.0.max(before);
        slot.1 = slot.1.max(until);
    }

    /// Whether a token of `user` issued at `iat` (absent: refused if revoked) may
    /// still be used at `now`.
    pub fn allows(&self, user: &str, iat: Option<u64>, now: u64) -> bool {
        match self.users.lock().get(user) {
            Some((before, until)) if *until > now => iat.is_some_and(|i| i >= *before),
            _ => true,
        }
    }

    /// Forgets expired revocations.
    pub fn prune(&self, now: u64) {
        self.users.lock().retain(|_, (_, until)| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_before_are_refused_until_the_revocation_expires() {
        let r = Revocations::default();
        assert!(r.allows("u", None, 100));
        r.revoke("u", 1000, 5000);
        assert!(!r.allows("u", Some(999), 1001), "issued before");
        assert!(!r.allows("u", None, 1001), "no iat: refused");
        assert!(r.allows("u", Some(1000), 1001), "issued at or after: fine");
        assert!(r.allows("v", Some(1), 1001), "another user");
        assert!(r.allows("u", Some(999), 5000), "expired");
        r.revoke("u", 900, 6000);
        assert!(!r.allows("u", Some(950), 1001), "the later `before` stays");
        r.prune(7000);
        assert!(r.users.lock().is_empty());
    }
}
