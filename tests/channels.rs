//! SPEC section 4 over real sockets: every rule, lists of rules, the built-in
//! namespaces, config overrides, and `[[routes]]` auto-subscriptions.

use serde_json::{json, Value};
use testkit::*;

async fn try_sub(c: &mut Client, channel: &str) -> Value {
    c.request(
        json!({"type": "subscribe", "payload": {"channel": channel}}),
        &format!("s-{channel}"),
    )
    .await
}

fn ok(v: &Value) -> bool {
    v["type"] == "subscribed"
}

const RULES: &str = r#"
[namespaces.anyns]
subscribe = "any"
[namespaces.authns]
subscribe = "authenticated"
[namespaces.ownerns]
subscribe = "owner"
[namespaces.tenantns]
subscribe = "tenant"
[namespaces.rolens]
subscribe = "role:staff"
[namespaces.tokenns]
subscribe = "token"
[namespaces.listns]
subscribe = ["owner", "role:staff"]
publish = ["role:staff"]
[namespaces.chat]
history_size = 3
[[routes]]
path = "/ws/inventory"
subscribe = ["public:inventory"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_grants_exactly_what_it_says() {
    let node = TestNode::start_with("", &format!("auth.allow_anonymous = true\n{RULES}")).await;
    let mut anon = Client::connect(&node.ws_url("/ws")).await;
    let a = anon.expect("auth_success").await;
    let sid = a["payload"]["session_id"].as_str().expect("sid").to_owned();
    let t = token_with("u1", |c| {
        c.tenant_id = Some("t1".into());
        c.roles = vec!["staff".into()];
    });
    let mut staff = Client::connect(&node.ws_url(&format!("/ws?token={t}"))).await;
    staff.expect("auth_success").await;
    let (mut plain, _) = Client::authed(&node, "u2").await;

    assert!(ok(&try_sub(&mut anon, "anyns:x").await));
    assert!(
        !ok(&try_sub(&mut anon, "authns:x").await),
        "anonymous is not authenticated"
    );
    assert!(ok(&try_sub(&mut plain, "authns:x").await));
    assert!(
        ok(&try_sub(&mut anon, &format!("ownerns:{sid}")).await),
        "owner = session id when anonymous"
    );
    assert!(ok(&try_sub(&mut plain, "ownerns:u2").await));
    assert!(!ok(&try_sub(&mut plain, "ownerns:u1").await));
    assert!(ok(&try_sub(&mut staff, "tenantns:t1").await));
    assert!(!ok(&try_sub(&mut plain, "tenantns:t1").await));
    assert!(ok(&try_sub(&mut staff, "rolens:x").await));
    assert!(!ok(&try_sub(&mut plain, "rolens:x").await));
    assert!(!ok(&try_sub(&mut plain, "tokenns:x").await));
    let r = plain
        .request(json!({"type": "subscribe", "payload": {"channel": "tokenns:x", "token": sub_token("u2", "tokenns:x")}}), "tok")
        .await;
    assert!(ok(&r));
    assert!(ok(&try_sub(&mut plain, "listns:u2").await), "list: owner");
    assert!(
        ok(&try_sub(&mut staff, "listns:someone").await),
        "list: role"
    );
    assert!(!ok(&try_sub(&mut plain, "listns:someone").await));
    // publish = role:staff in listns
    let p = staff
        .request(
            json!({"type": "note", "channel": "listns:someone", "payload": {}}),
            "p1",
        )
        .await;
    assert_eq!(p["type"], "ack");
    let p = plain
        .request(
            json!({"type": "note", "channel": "listns:u2", "payload": {}}),
            "p2",
        )
        .await;
    assert_eq!(p["payload"]["code"], "forbidden");
    // Built-ins: user/session owner, public any, admin role:admin, order token.
    assert!(!ok(&try_sub(&mut anon, "user:u1").await));
    assert!(ok(&try_sub(&mut anon, "public:x").await));
    assert!(!ok(&try_sub(&mut staff, "admin:x").await));
    assert!(!ok(&try_sub(&mut plain, "order:1").await));
    assert!(ok(&try_sub(&mut anon, "stream:1").await), "stream: any");
    // Override of a built-in keeps its other options: chat keeps presence, history shrinks.
    for i in 1..=5 {
        node.publish("chat:r", "m", json!(i)).await;
    }
    let (_, hist) = api_get(&node, "/api/history/chat:r").await;
    assert_eq!(
        hist["publications"].as_array().map(Vec::len),
        Some(3),
        "history_size = 3 override"
    );
    let (s, _) = api_get(&node, "/api/presence/chat:r").await;
    assert_eq!(s, 200, "presence kept from the built-in");
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_auto_subscribe_their_channels() {
    let node = TestNode::start_with("", RULES).await;
    let mut inv =
        Client::connect(&node.ws_url(&format!("/ws/inventory?token={}", token("shopper")))).await;
    let ok = inv.expect("auth_success").await;
    assert_eq!(
        ok["payload"]["channels"],
        json!(["user:shopper", "public:inventory"])
    );
    let (mut plain, _) = Client::authed(&node, "other").await;
    node.publish(
        "public:inventory",
        "inventory_update",
        json!({"sku": "IPH15", "qty": 4}),
    )
    .await;
    let m = inv.expect("inventory_update").await;
    assert_eq!(m["channel"], "public:inventory");
    assert_eq!(m["payload"]["qty"], 4);
    // /ws itself does not subscribe public:inventory.
    node.publish("user:other", "ping_me", json!({})).await;
    assert_eq!(plain.next_json().await.expect("msg")["type"], "ping_me");
    let r = http_client()
        .get(node.http("/ws/nothing"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_limit_evict_oldest_and_reject() {
    let node = TestNode::start_with("", "limits.max_connections_per_user = 1").await;
    let (mut old, _) = Client::authed(&node, "sneaker-fan").await;
    let (mut new, _) = Client::authed(&node, "sneaker-fan").await;
    let closed = old.closed().await;
    assert_eq!(closed.code, Some(4009));
    assert_eq!(
        closed.disconnect.expect("disconnect")["payload"]["reason"],
        "replaced"
    );
    node.publish("user:sneaker-fan", "notification", json!({"t": 1}))
        .await;
    assert_eq!(new.expect("notification").await["payload"]["t"], 1);

    let node = TestNode::start_with(
        "",
        "limits.max_connections_per_user = 1\nlimits.per_user_policy = \"reject\"",
    )
    .await;
    let (_first, _) = Client::authed(&node, "x").await;
    let url = node.ws_url(&format!("/ws?token={}", token("x")));
    assert_eq!(
        Client::try_connect(&url, &[]).await.err().as_deref(),
        Some("429")
    );
}
