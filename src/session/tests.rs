use super::*;
use crate::channel::Namespaces;
use crate::config::Config;

fn namespaces() -> Namespaces {
    let cfg = Config::from_toml("auth.jwt_secret = 's'").expect("config");
    Namespaces::from_config(&cfg).expect("namespaces")
}

fn user(id: &str) -> Identity {
    Identity {
        user_id: Some(id.into()),
        ..Identity::default()
    }
}

fn session(ident: Identity, now: Instant) -> Session {
    let mut s = Session::new(
        now,
        Duration::from_secs(10),
        (20, 40),
        Arc::from(Vec::new()),
    );
    s.ident = ident;
    s.auth = AuthState::User {
        exp_at: now + Duration::from_secs(60),
    };
    s
}

#[test]
fn timers_close_4001_when_pending_and_4011_at_expiry() {
    let t0 = Instant::now();
    let mut s = Session::new(t0, Duration::from_secs(10), (20, 40), Arc::from(Vec::new()));
    assert_eq!(s.deadline(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(s.on_timer(t0 + Duration::from_secs(9)), None);
    assert_eq!(
        s.on_timer(t0 + Duration::from_secs(10)),
        Some(CloseCode::Unauthorized)
    );
    s.auth = AuthState::User {
        exp_at: t0 + Duration::from_secs(5),
    };
    assert_eq!(
        s.on_timer(t0 + Duration::from_secs(5)),
        Some(CloseCode::TokenExpired)
    );
    s.auth = AuthState::Anonymous { resume_exp: 0 };
    assert_eq!(s.deadline(), None);
    // An absurd `exp` never overflows the clock.
    let far = exp_instant(u64::MAX, 0, t0);
    assert!(far > t0);
}

#[test]
fn subscribe_checks_grant_and_refuse_with_the_spec_codes() {
    let ns = namespaces();
    let t0 = Instant::now();
    let s = session(user("7"), t0);
    let (own, user_ns) = ns.resolve("user:7").expect("user");
    assert_eq!(
        s.check_subscribe(user_ns, &own, SubToken::Absent, 10),
        Ok(Grant::Rules)
    );
    let (other, _) = ns.resolve("user:8").expect("user");
    let e = s
        .check_subscribe(user_ns, &other, SubToken::Absent, 10)
        .expect_err("other user");
    assert_eq!(e.code, ErrorCode::Forbidden);
    let (order, order_ns) = ns.resolve("order:1").expect("order");
    assert_eq!(
        s.check_subscribe(order_ns, &order, SubToken::Valid, 10),
        Ok(Grant::Token)
    );
    // A token for another user or channel: forbidden, not unauthorized (SPEC 3).
    let e = s
        .check_subscribe(order_ns, &order, SubToken::Invalid, 10)
        .expect_err("bad token");
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = s
        .check_subscribe(user_ns, &own, SubToken::Absent, 0)
        .expect_err("limit");
    assert_eq!(e.code, ErrorCode::LimitExceeded);
}

#[test]
fn publish_checks() {
    let ns = namespaces();
    let mut s = session(user("7"), Instant::now());
    let (chat, chat_ns) = ns.resolve("chat:1").expect("chat");
    assert_eq!(
        s.check_publish(chat_ns, &chat, false)
            .expect_err("not subscribed")
            .code,
        ErrorCode::NotSubscribed
    );
    s.add_sub(chat.clone(), Grant::Token);
    assert_eq!(s.check_publish(chat_ns, &chat, false), Ok(()));
    assert_eq!(
        s.check_publish(chat_ns, &chat, true)
            .expect_err("no allow_to")
            .code,
        ErrorCode::Forbidden
    );
    let (order, order_ns) = ns.resolve("order:1").expect("order");
    assert_eq!(
        s.check_publish(order_ns, &order, false)
            .expect_err("publish none")
            .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn a_renewal_drops_what_the_new_claims_no_longer_allow() {
    let ns = namespaces();
    let mut ident = user("7");
    ident.tenant_id = Some("t1".into());
    ident.allow = vec!["order:9".into()];
    let mut s = session(ident, Instant::now());
    let ch = |n: &str| ns.resolve(n).expect("valid").0;
    s.add_sub(ch("user:7"), Grant::Own);
    s.add_sub(ch("tenant:t1"), Grant::Rules);
    s.add_sub(ch("order:9"), Grant::Rules);
    s.add_sub(ch("order:1"), Grant::Token);
    s.add_sub(ch("public:a"), Grant::Claim);
    s.add_sub(ch("admin:x"), Grant::Claim);
    s.add_sub(ch("public:r"), Grant::Route);
    // The new token: another tenant, no `allow`, `channels` keeps only public:a.
    let new = user("7");
    let mut drops = s.renewal_drops(&new, &["public:a".to_owned()], |c| ns.get(c.namespace()));
    drops.sort();
    assert_eq!(drops, vec![ch("admin:x"), ch("order:9"), ch("tenant:t1")]);
}

#[test]
fn simultaneous_arrivals_agree_on_who_stays() {
    let both = ["a".to_owned(), "b".to_owned()];
    // evict_oldest, limit 1: the newest stays, as both nodes decide.
    assert_eq!(
        user_limit(&both, "a", 1, PerUserPolicy::EvictOldest),
        UserLimit::Replaced
    );
    assert_eq!(
        user_limit(&both, "b", 1, PerUserPolicy::EvictOldest),
        UserLimit::Admit {
            evict: vec!["a".to_owned()]
        }
    );
    // reject, limit 1: the first stays.
    assert_eq!(
        user_limit(&both, "a", 1, PerUserPolicy::Reject),
        UserLimit::Admit { evict: vec![] }
    );
    assert_eq!(
        user_limit(&both, "b", 1, PerUserPolicy::Reject),
        UserLimit::Reject
    );
    // Within the limit, or no limit: everyone stays.
    assert_eq!(
        user_limit(&both, "b", 2, PerUserPolicy::Reject),
        UserLimit::Admit { evict: vec![] }
    );
    assert_eq!(
        user_limit(&both, "a", 0, PerUserPolicy::EvictOldest),
        UserLimit::Admit { evict: vec![] }
    );
    // Three at once, limit 2: exactly two survive whichever node decides.
    let three = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let survivors: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|me| user_limit(&three, me, 2, PerUserPolicy::EvictOldest) != UserLimit::Replaced)
        .collect();
    assert_eq!(survivors, ["b", "c"]);
}
