//! SPEC section 6 on one node: every endpoint, the API key, status codes and bodies.

use serde_json::json;
use testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn api_key_is_required_in_either_header() {
    let node = TestNode::start().await;
    let http = http_client();
    let body = json!({"channel": "public:a", "type": "t", "payload": 1});
    let no_key = http
        .post(node.http("/api/publish"))
        .json(&body)
        .send()
        .await
        .expect("req");
    assert_eq!(no_key.status(), 401);
    let v: serde_json::Value = no_key.json().await.expect("json body");
    assert_eq!(v["error"]["code"], "unauthorized");
    let wrong = http
        .post(node.http("/api/publish"))
        .header("X-API-Key", "nope")
        .json(&body)
        .send()
        .await
        .expect("req");
    assert_eq!(wrong.status(), 401);
    let auth = http
        .post(node.http("/api/publish"))
        .header("Authorization", format!("apikey {API_KEY}"))
        .json(&body)
        .send()
        .await
        .expect("req");
    assert_eq!(auth.status(), 200);
    let (s, _) = api_get(&node, "/api/stats").await;
    assert_eq!(s, 200);
    let unknown = http
        .get(node.http("/api/nothing"))
        .send()
        .await
        .expect("req");
    assert_eq!(
        unknown.status(),
        401,
        "unknown /api/ paths need the key too"
    );
    let (s, v) = api_get(&node, "/api/nothing").await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_api_key_refuses_every_api_call() {
    let mut cfg = switchyard::Config::from_toml(&config_toml("")).expect("config");
    cfg.api.key = String::new();
    let node = TestNode::start_config(cfg).await;
    let r = http_client()
        .get(node.http("/api/stats"))
        .header("X-API-Key", "")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.expect("body");
    assert_eq!(v["error"]["code"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_errors_have_codes_and_statuses() {
    let node = TestNode::start_with("", "limits.max_message_size = 2000").await;
    let cases = [
        (
            json!({"channel": "bad channel", "type": "t", "payload": 1}),
            400,
            "invalid_channel",
        ),
        (
            json!({"channel": "nowhere:1", "type": "t", "payload": 1}),
            400,
            "invalid_channel",
        ),
        (
            json!({"channel": "public:a", "type": "subscribed", "payload": 1}),
            400,
            "reserved_type",
        ),
        (json!({"channel": "public:a"}), 400, "bad_request"),
        (
            json!({"channel": "public:a", "type": "t", "payload": "x".repeat(3000)}),
            413,
            "too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = api_post(&node, "/api/publish", body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let r = http_client()
        .post(node.http("/api/publish"))
        .header("X-API-Key", API_KEY)
        .body("{not json")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_with_history_returns_offset_and_epoch_and_history_endpoint() {
    let node = TestNode::start().await;
    let a = node
        .publish("order:1", "order_update", json!({"s": 1}))
        .await;
    let b = node
        .publish("order:1", "order_update", json!({"s": 2}))
        .await;
    assert_eq!(a["offset"], 1);
    assert_eq!(b["offset"], 2);
    assert_eq!(a["epoch"], b["epoch"]);
    let (s, h) = api_get(&node, "/api/history/order:1").await;
    assert_eq!(s, 200);
    assert_eq!(h["offset"], 2);
    assert_eq!(h["epoch"], a["epoch"]);
    assert_eq!(h["publications"][0]["payload"]["s"], 1);
    assert_eq!(h["publications"][1]["offset"], 2);
    let (_, h) = api_get(&node, "/api/history/order:1?since=1").await;
    assert_eq!(h["publications"].as_array().map(Vec::len), Some(1));
    let (_, h) = api_get(&node, "/api/history/order:1?limit=1").await;
    assert_eq!(h["publications"][0]["offset"], 2);
    let (s, _) = api_get(&node, "/api/history/public:x").await;
    assert_eq!(s, 404, "no history in public:");
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_fails_only_invalid_entries() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "1").await;
    c.subscribe("public:a").await;
    let (s, v) = api_post(
        &node,
        "/api/broadcast",
        json!({"channels": ["public:a", "bad chan", "order:9"], "type": "promo", "payload": {"x": 1}}),
    )
    .await;
    assert_eq!(s, 200);
    let r = v["results"].as_array().expect("results");
    assert_eq!(r[0]["channel"], "public:a");
    assert!(r[0].get("error").is_none());
    assert_eq!(r[1]["error"]["code"], "invalid_channel");
    assert_eq!(r[2]["offset"], 1);
    assert_eq!(c.until("promo").await["channel"], "public:a");
    let many: Vec<String> = (0..1001).map(|i| format!("public:c{i}")).collect();
    let (s, _) = api_post(
        &node,
        "/api/broadcast",
        json!({"channels": many, "type": "t", "payload": 1}),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_by_user_session_conn_and_code_rules() {
    let node = TestNode::start().await;
    let (mut a1, _) = Client::authed(&node, "u").await;
    let (mut a2, _) = Client::authed(&node, "u").await;
    let (mut other, _) = Client::authed(&node, "v").await;
    let (s, _) = api_post(
        &node,
        "/api/disconnect",
        json!({"user_id": "u", "code": 4010}),
    )
    .await;
    assert_eq!(s, 200);
    for c in [&mut a1, &mut a2] {
        let closed = c.closed().await;
        assert_eq!(closed.code, Some(4010));
        assert_eq!(
            closed.disconnect.expect("disconnect")["payload"]["reconnect"],
            true
        );
    }
    let (s, _) = api_post(
        &node,
        "/api/disconnect",
        json!({"user_id": "v", "code": 1000}),
    )
    .await;
    assert_eq!(s, 400, "codes outside 4000-4999 are refused");
    let (s, _) = api_post(
        &node,
        "/api/disconnect",
        json!({"user_id": "v", "code": 4321, "reason": "custom"}),
    )
    .await;
    assert_eq!(s, 200);
    let closed = other.closed().await;
    assert_eq!(closed.code, Some(4321));
    let d = closed.disconnect.expect("disconnect");
    assert_eq!(
        d["payload"]["reconnect"], false,
        "codes outside the close table: reconnect false"
    );
    assert_eq!(d["payload"]["reason"], "custom");
    let (s, _) = api_post(&node, "/api/disconnect", json!({})).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_subscribe_and_unsubscribe_reach_every_connection_of_a_user() {
    let node = TestNode::start().await;
    let (mut a, _) = Client::authed(&node, "u").await;
    let (mut b, _) = Client::authed(&node, "u").await;
    let (s, _) = api_post(
        &node,
        "/api/subscribe",
        json!({"user_id": "u", "channel": "order:5"}),
    )
    .await;
    assert_eq!(s, 200);
    for c in [&mut a, &mut b] {
        let m = c.until("subscribed").await;
        assert_eq!(m["payload"]["channel"], "order:5");
        assert!(m.get("id").is_none());
    }
    node.publish("order:5", "order_update", json!({"status": "paid"}))
        .await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.until("order_update").await["payload"]["status"], "paid");
    }
    let (s, _) = api_post(
        &node,
        "/api/unsubscribe",
        json!({"user_id": "u", "channel": "order:5"}),
    )
    .await;
    assert_eq!(s, 200);
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.until("unsubscribed").await["payload"]["channel"],
            "order:5"
        );
    }
    let (s, v) = api_post(
        &node,
        "/api/subscribe",
        json!({"user_id": "u", "channel": "bad chan"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_channel"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_channels_stats_health_ready() {
    let node = TestNode::start().await;
    let t = |u: &str| token_with(u, |c| c.channels = vec!["chat:lobby".into()]);
    let mut a = Client::connect(&node.ws_url(&format!("/ws?token={}", t("a")))).await;
    a.expect("auth_success").await;
    let mut b = Client::connect(&node.ws_url(&format!("/ws?token={}", t("b")))).await;
    b.expect("auth_success").await;
    let mut b2 = Client::connect(&node.ws_url(&format!("/ws?token={}", t("b")))).await;
    b2.expect("auth_success").await;
    let (s, p) = eventually("three presence entries", || async {
        let (s, p) = api_get(&node, "/api/presence/chat:lobby").await;
        (p["count"] == 3).then_some((s, p))
    })
    .await;
    assert_eq!(s, 200);
    assert_eq!(p["users"], 2);
    assert_eq!(p["clients"].as_array().map(Vec::len), Some(3));
    let (_, ch) = api_get(&node, "/api/channels?prefix=chat:").await;
    assert_eq!(
        ch["channels"],
        json!([{"channel": "chat:lobby", "subscribers": 3}])
    );
    let (_, st) = api_get(&node, "/api/stats").await;
    assert_eq!(st["node"]["node_id"], "test-node");
    assert_eq!(st["node"]["connections"], 3);
    assert_eq!(st["node"]["subscriptions"], 6);
    assert_eq!(st["cluster"]["connections"], 3);
    assert_eq!(st["cluster"]["users"], 2);
    assert_eq!(st["cluster"]["channels"], 3, "chat:lobby, user:a, user:b");
    assert!(st["node"]["uptime_s"].as_u64().is_some());
    b2.close().await;
    eventually("presence entry removed on disconnect", || async {
        let (_, p) = api_get(&node, "/api/presence/chat:lobby").await;
        (p["count"] == 2).then_some(())
    })
    .await;
    let h: serde_json::Value = http_client()
        .get(node.http("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["node"], "test-node");
    assert_eq!(h["ws_connections"], 2);
    let r = http_client()
        .get(node.http("/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(r.status(), 200);
    let (s, _) = api_get(&node, "/api/presence/public:x").await;
    assert_eq!(s, 404, "presence is off in public:");
}
