//! SPEC section 3: token sources, algorithms, claims, renewal and expiry, subscription
//! tokens, origins, anonymous sessions and resume.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use switchyard::auth::unix_now;
use testkit::*;

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign")
}

fn hs(alg: Algorithm, claims: Value) -> String {
    sign(alg, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
}

fn exp() -> u64 {
    unix_now() + 600
}

async fn refused(node: &TestNode, t: &str) -> String {
    match Client::try_connect(&node.ws_url(&format!("/ws?token={t}")), &[]).await {
        Ok(_) => "accepted".into(),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_sources_header_query_and_message() {
    let node = TestNode::start().await;
    let t = token("42");
    let mut h = Client::connect_headers(
        &node.ws_url("/ws"),
        &[("Authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(h.expect("auth_success").await["payload"]["user_id"], "42");
    let mut q = Client::connect(&node.ws_url(&format!("/ws?token={t}"))).await;
    assert_eq!(q.expect("auth_success").await["payload"]["user_id"], "42");
    let mut m = Client::connect(&node.ws_url("/ws")).await;
    let ok = m
        .request(json!({"type": "auth", "payload": {"token": t}}), "a1")
        .await;
    assert_eq!(ok["type"], "auth_success");
    assert_eq!(ok["payload"]["channels"], json!(["user:42"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_with_401_or_auth_error_and_4001() {
    let node = TestNode::start().await;
    assert_eq!(refused(&node, "garbage").await, "401");
    assert_eq!(
        refused(
            &node,
            &hs(
                Algorithm::HS256,
                json!({"sub": "1", "exp": unix_now() - 100})
            )
        )
        .await,
        "401"
    );
    assert_eq!(
        refused(&node, &hs(Algorithm::HS256, json!({"sub": "1"}))).await,
        "401",
        "exp is required"
    );
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"other"),
        json!({"sub": "1", "exp": exp()}),
    );
    assert_eq!(refused(&node, &forged).await, "401");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "1", "exp": exp()}).to_string())
    );
    assert_eq!(refused(&node, &none).await, "401", "alg none");
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(key_path("rsa.key")).expect("key")).expect("rsa");
    assert_eq!(
        refused(
            &node,
            &sign(Algorithm::RS256, &rsa, json!({"sub": "1", "exp": exp()}))
        )
        .await,
        "401",
        "RS256 is not configured on this node"
    );
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            refused(&node, &hs(alg, json!({"sub": "1", "exp": exp()}))).await,
            "accepted"
        );
    }

    let mut c = Client::connect(&node.ws_url("/ws")).await;
    c.send(json!({"type": "auth", "id": "bad", "payload": {"token": forged}}))
        .await;
    let e = c.expect("auth_error").await;
    assert_eq!(e["id"], "bad");
    assert_eq!(e["payload"]["code"], "unauthorized");
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4001));
    assert_eq!(
        closed.disconnect.expect("disconnect")["payload"]["reconnect"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_key_algorithms() {
    for (pubkey, privkey, alg) in [
        ("rsa.pub", "rsa.key", Algorithm::RS256),
        ("rsa.pub", "rsa.key", Algorithm::RS512),
        ("ec.pub", "ec.key", Algorithm::ES256),
        ("ed.pub", "ed.key", Algorithm::EdDSA),
    ] {
        let node = TestNode::start_with(
            "",
            &format!("auth.jwt_public_key_file = \"{}\"", key_path(pubkey)),
        )
        .await;
        let pem = std::fs::read(key_path(privkey)).expect("key");
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("private key");
        let t = sign(alg, &key, json!({"sub": "pk", "exp": exp()}));
        assert_eq!(refused(&node, &t).await, "accepted", "{alg:?}");
        let mut c = Client::connect(&node.ws_url(&format!("/ws?token={t}"))).await;
        assert_eq!(c.expect("auth_success").await["payload"]["user_id"], "pk");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_connection_only_auth_and_ping_then_4001() {
    let node = TestNode::start_with("", "auth.timeout = \"700ms\"").await;
    let mut c = Client::connect(&node.ws_url("/ws")).await;
    let pong = c.request(json!({"type": "ping"}), "p").await;
    assert_eq!(pong["type"], "pong");
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "public:x"}}),
            "s",
        )
        .await;
    assert_eq!(e["payload"]["code"], "unauthorized");
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4001));
    assert_eq!(
        closed.disconnect.expect("disconnect")["payload"]["reason"],
        "unauthorized"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_user_id_tenant_roles_channels_allow_info() {
    let node = TestNode::start().await;
    let t = hs(
        Algorithm::HS256,
        json!({"user_id": 77, "exp": exp(), "tenant_id": "shop1", "roles": ["admin"],
               "info": {"name": "Ann"}, "channels": ["public:inventory", "bad channel"], "allow": ["order:ord_1*", "chat:r1"]}),
    );
    let mut c = Client::connect(&node.ws_url(&format!("/ws?token={t}"))).await;
    let ok = c.expect("auth_success").await;
    assert_eq!(
        ok["payload"]["user_id"], "77",
        "numeric user_id claim accepted"
    );
    assert_eq!(
        ok["payload"]["channels"],
        json!(["user:77", "public:inventory"])
    );
    c.subscribe("tenant:shop1").await;
    c.subscribe("admin:dashboard").await;
    c.subscribe("order:ord_123").await;
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "order:other"}}),
            "o",
        )
        .await;
    assert_eq!(e["payload"]["code"], "forbidden");
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "tenant:shop2"}}),
            "t",
        )
        .await;
    assert_eq!(e["payload"]["code"], "forbidden");
    c.subscribe("chat:r1").await.to_string();
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "chat:r1"}}),
            "again",
        )
        .await;
    assert_eq!(e["type"], "subscribed", "subscribe is idempotent");
    node.publish("public:inventory", "inventory_alert", json!({"sku": "A"}))
        .await;
    assert_eq!(c.until("inventory_alert").await["payload"]["sku"], "A");
    let p = c
        .request(
            json!({"type": "presence", "payload": {"channel": "chat:r1"}}),
            "pr",
        )
        .await;
    assert_eq!(p["payload"]["clients"][0]["info"]["name"], "Ann");
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_tokens_grant_one_channel_to_one_user() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "7").await;
    let r = c
        .request(json!({"type": "subscribe", "payload": {"channel": "order:123", "token": sub_token("7", "order:123")}}), "ok")
        .await;
    assert_eq!(r["type"], "subscribed");
    assert_eq!(
        r["payload"]["offset"], 0,
        "history channel: offset and epoch present: {r}"
    );
    assert!(r["payload"]["epoch"].as_str().is_some());
    for (tok, why) in [
        (sub_token("7", "order:999"), "other channel"),
        (sub_token("8", "order:124"), "other user"),
        ("junk".to_owned(), "garbage"),
    ] {
        let e = c
            .request(
                json!({"type": "subscribe", "payload": {"channel": "order:124", "token": tok}}),
                why,
            )
            .await;
        assert_eq!(e["type"], "error", "{why}: {e}");
        // SPEC 3: authenticated but not granted is `forbidden`; `unauthorized` is for
        // a connection that has not authenticated (these used to say unauthorized).
        assert_eq!(e["payload"]["code"], "forbidden", "{why}: {e}");
    }
    // A subscription token is not a connection token.
    assert_eq!(refused(&node, &sub_token("7", "order:123")).await, "401");
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_extends_expiry_and_expiry_closes_4011() {
    let node = TestNode::start().await;
    let short = |secs: u64| {
        hs(
            Algorithm::HS256,
            json!({"sub": "5", "exp": unix_now() + secs}),
        )
    };
    let mut c = Client::connect(&node.ws_url(&format!("/ws?token={}", short(1)))).await;
    c.expect("auth_success").await;
    let r = c
        .request(
            json!({"type": "auth", "payload": {"token": short(600)}}),
            "renew",
        )
        .await;
    assert_eq!(r["type"], "auth_success");
    let other = c
        .request(
            json!({"type": "auth", "payload": {"token": token("6")}}),
            "other",
        )
        .await;
    assert_eq!(
        other["type"], "auth_error",
        "another user's token does not switch identity"
    );
    // The renewed connection outlives the first token: a ping two seconds later works.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2100);
    while std::time::Instant::now() < deadline {
        let p = c.request(json!({"type": "ping"}), "alive").await;
        assert_eq!(p["type"], "pong");
        // An absence check: nothing must happen (no 4011) past the first token's expiry.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut e = Client::connect(&node.ws_url(&format!("/ws?token={}", short(1)))).await;
    e.expect("auth_success").await;
    let closed = e.closed().await;
    assert_eq!(closed.code, Some(4011));
    let d = closed.disconnect.expect("disconnect");
    assert_eq!(d["payload"]["reason"], "token_expired");
    assert_eq!(d["payload"]["reconnect"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_origins() {
    let node = TestNode::start_with("", "auth.allowed_origins = [\"https://shop.example\"]").await;
    let url = node.ws_url(&format!("/ws?token={}", token("1")));
    assert_eq!(
        Client::try_connect(&url, &[("Origin", "https://evil.example")])
            .await
            .err()
            .as_deref(),
        Some("403")
    );
    assert_eq!(
        Client::try_connect(&url, &[]).await.err().as_deref(),
        Some("403"),
        "no Origin"
    );
    let mut ok = Client::try_connect(&url, &[("Origin", "https://shop.example")])
        .await
        .expect("allowed");
    ok.expect("auth_success").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_and_audience_are_checked_when_set() {
    let node = TestNode::start_with("", "auth.issuer = \"shop\"\nauth.audience = \"rt\"").await;
    let good = hs(
        Algorithm::HS256,
        json!({"sub": "1", "exp": exp(), "iss": "shop", "aud": "rt"}),
    );
    assert_eq!(refused(&node, &good).await, "accepted");
    let bad_iss = hs(
        Algorithm::HS256,
        json!({"sub": "1", "exp": exp(), "iss": "x", "aud": "rt"}),
    );
    assert_eq!(refused(&node, &bad_iss).await, "401");
    let bad_aud = hs(
        Algorithm::HS256,
        json!({"sub": "1", "exp": exp(), "iss": "shop", "aud": "y"}),
    );
    assert_eq!(refused(&node, &bad_aud).await, "401");
    // SPEC 3: configured, the claims are required (jsonwebtoken only checks claims
    // that are present: these used to pass).
    for claims in [
        json!({"sub": "1", "exp": exp(), "aud": "rt"}),
        json!({"sub": "1", "exp": exp(), "iss": "shop"}),
        json!({"sub": "1", "exp": exp()}),
    ] {
        let t = hs(Algorithm::HS256, claims.clone());
        assert_eq!(refused(&node, &t).await, "401", "{claims}");
    }
}

/// SPEC 3: `nbf` is honoured (30 s leeway); `kid`, `jku` and an embedded `jwk` in the
/// header never pick a key.
#[tokio::test(flavor = "multi_thread")]
async fn not_before_is_honoured_and_header_keys_are_never_used() {
    let node = TestNode::start().await;
    let future = hs(
        Algorithm::HS256,
        json!({"sub": "1", "exp": exp(), "nbf": unix_now() + 600}),
    );
    assert_eq!(refused(&node, &future).await, "401");
    let soon = hs(
        Algorithm::HS256,
        json!({"sub": "1", "exp": exp(), "nbf": unix_now() + 10}),
    );
    assert_eq!(refused(&node, &soon).await, "accepted", "within the leeway");
    // A token signed with the attacker's own key, whose header points at it.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("attacker".into());
    header.jku = Some("https://attacker.example/jwks.json".into());
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"sub": "admin", "exp": exp()}),
        &EncodingKey::from_secret(b"attacker-secret"),
    )
    .expect("sign");
    assert_eq!(refused(&node, &forged).await, "401");
    // The same header on a token signed with the configured key changes nothing.
    let honest = jsonwebtoken::encode(
        &header,
        &json!({"sub": "1", "exp": exp()}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    assert_eq!(refused(&node, &honest).await, "accepted");
}

/// SPEC 3: a renewal drops the subscriptions the new claims no longer allow.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_drops_what_the_new_claims_no_longer_allow() {
    let node = TestNode::start().await;
    let first = token_with("5", |c| {
        c.tenant_id = Some("t1".into());
        c.channels = vec!["admin:feed".into()];
    });
    let mut c = Client::connect(&node.ws_url(&format!("/ws?token={first}"))).await;
    c.expect("auth_success").await;
    c.subscribe("tenant:t1").await;
    let renewed = token_with("5", |c| c.tenant_id = Some("t2".into()));
    c.send(json!({"type": "auth", "id": "renew", "payload": {"token": renewed}}))
        .await;
    let mut dropped = Vec::new();
    loop {
        let m = c.next_json().await.expect("frames");
        match m["type"].as_str() {
            Some("unsubscribed") => {
                dropped.push(m["payload"]["channel"].as_str().unwrap_or("").to_owned())
            }
            Some("auth_success") if m["id"] == "renew" => break,
            _ => {}
        }
    }
    dropped.sort();
    assert_eq!(dropped, ["admin:feed", "tenant:t1"]);
    node.publish("tenant:t1", "gone", json!({})).await;
    node.publish("user:5", "kept", json!({})).await;
    let next = c.until("kept").await;
    assert_eq!(
        next["channel"], "user:5",
        "the own channel stays; tenant:t1 is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_sessions_resume_and_login() {
    let node =
        TestNode::start_with("", "auth.allow_anonymous = true\nauth.resume_ttl = \"1h\"").await;
    let mut a = Client::connect(&node.ws_url("/ws")).await;
    let ok = a.expect("auth_success").await;
    assert_eq!(ok["payload"]["anonymous"], true);
    let sid = ok["payload"]["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    assert_eq!(sid.len(), 32, "128-bit hex session id");
    let resume = ok["payload"]["resume"].as_str().expect("resume").to_owned();
    a.close().await;

    let mut b = Client::connect(&node.ws_url(&format!("/ws?resume={resume}"))).await;
    let ok_b = b.expect("auth_success").await;
    assert_eq!(ok_b["payload"]["session_id"], sid.as_str());
    // SPEC 3: a resume token lives `auth.resume_ttl` from the session's creation, and
    // resuming never extends it (it used to be renewed for 24 h at every reconnect).
    let exp_of = |t: &str| -> u64 {
        t.split('.')
            .nth(1)
            .and_then(|e| e.parse().ok())
            .expect("exp")
    };
    let created = exp_of(&resume);
    assert!(
        created <= unix_now() + 3600 && created + 60 > unix_now() + 3600,
        "resume_ttl"
    );
    let again = ok_b["payload"]["resume"].as_str().expect("resume");
    assert_eq!(
        exp_of(again),
        created,
        "resuming keeps the creation's expiry"
    );
    let tampered = resume.replacen(&sid[..4], "ffff", 1);
    let mut c = Client::connect(&node.ws_url(&format!("/ws?resume={tampered}"))).await;
    let other = c.expect("auth_success").await;
    assert_ne!(
        other["payload"]["session_id"],
        sid.as_str(),
        "tampered resume gives a new session"
    );

    // The anonymous customer opens a support chat, then logs in and keeps it.
    b.subscribe(&format!("support:{sid}")).await;
    let r = b
        .request(
            json!({"type": "auth", "payload": {"token": token("u1")}}),
            "login",
        )
        .await;
    assert_eq!(r["type"], "auth_success");
    assert_eq!(r["payload"]["user_id"], "u1");
    assert_eq!(r["payload"]["session_id"], sid.as_str());
    node.publish(&format!("support:{sid}"), "reply", json!({"text": "hello"}))
        .await;
    assert_eq!(b.until("reply").await["payload"]["text"], "hello");
}
