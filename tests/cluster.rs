//! SPEC sections 1, 5 and 8 across nodes on one real redis-server: interest-based
//! subscriptions, per-channel order, history and recovery, presence (and a crashed
//! node's expiry), services publishing with redis-cli (PUBLISH and FCALL), the
//! upstream stream, cluster-wide commands and aggregates.

use serde_json::{json, Value};
use switchyard::config::BrokerKind;
use testkit::redis::RedisServer;
use testkit::*;

async fn node_on(redis: &RedisServer, id: &str, extra: &str) -> TestNode {
    let text = format!("{}\n{extra}", config_toml(""));
    let mut c = switchyard::Config::from_toml(&text).expect("config");
    c.broker = BrokerKind::Redis;
    c.redis.url = redis.url();
    c.node_id = id.into();
    TestNode::start_config_with(c).await
}

async fn pubsub_channels(redis: &RedisServer) -> Vec<String> {
    let out =
        tokio::task::block_in_place(|| redis.cli(&["PUBSUB", "CHANNELS", "switchyard:{public:*"]));
    out.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn publications_cross_nodes_in_order_with_interest_based_subscriptions() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "").await;
    let b = node_on(&redis, "b", "").await;
    assert!(
        pubsub_channels(&redis).await.is_empty(),
        "no interest, no subscription"
    );
    let (mut c, _) = Client::authed(&a, "u1").await;
    c.subscribe("public:x").await;
    assert_eq!(
        pubsub_channels(&redis).await,
        vec!["switchyard:{public:x}".to_owned()]
    );
    for i in 0..300 {
        b.publish("public:x", "tick", json!({"i": i})).await;
    }
    for i in 0..300 {
        assert_eq!(
            c.expect("tick").await["payload"]["i"],
            i,
            "per-channel order across nodes"
        );
    }
    // A client publish on node b reaches node a's subscriber with `from`.
    let t = token_with("u2", |c| c.allow = vec!["chat:*".into()]);
    let mut d = Client::connect(&b.ws_url(&format!("/ws?token={t}"))).await;
    d.expect("auth_success").await;
    d.subscribe("chat:room").await;
    let t = token_with("u1", |c| c.allow = vec!["chat:*".into()]);
    let mut e = Client::connect(&a.ws_url(&format!("/ws?token={t}"))).await;
    e.expect("auth_success").await;
    e.subscribe("chat:room").await;
    d.send(json!({"type": "say", "channel": "chat:room", "payload": {"t": "hi"}}))
        .await;
    let m = e.until("say").await;
    assert_eq!(m["from"]["user_id"], "u2");
    assert_eq!(m["offset"], 1);
    c.request(
        json!({"type": "unsubscribe", "payload": {"channel": "public:x"}}),
        "u",
    )
    .await;
    eventually(
        "node a to drop its redis subscription after the last local one left",
        || async { pubsub_channels(&redis).await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_on_another_node_is_exact() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "").await;
    let b = node_on(&redis, "b", "").await;
    let (mut c, _) = Client::authed(&a, "7").await;
    let s = c
        .request(json!({"type": "subscribe", "payload": {"channel": "order:9", "token": sub_token("7", "order:9")}}), "s")
        .await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    assert!(!epoch.is_empty());
    for i in 1..=3 {
        let r = b.publish("order:9", "order_update", json!({"i": i})).await;
        assert_eq!(
            r["epoch"],
            epoch.as_str(),
            "the epoch given at subscribe is the history's"
        );
    }
    for i in 1..=3 {
        assert_eq!(c.expect("order_update").await["offset"], i);
    }
    c.close().await;
    for i in 4..=8 {
        a.publish("order:9", "order_update", json!({"i": i})).await;
    }
    let (mut d, _) = Client::authed(&b, "7").await;
    let r = d
        .request(
            json!({"type": "subscribe", "payload": {"channel": "order:9", "token": sub_token("7", "order:9"), "since": {"offset": 3, "epoch": epoch}}}),
            "re",
        )
        .await;
    assert_eq!(r["payload"]["recovered"], true);
    for i in 4..=8 {
        let m = d.expect("order_update").await;
        assert_eq!(
            (m["offset"].as_u64(), m["payload"]["i"].as_u64()),
            (Some(i), Some(i))
        );
    }
    b.publish("order:9", "order_update", json!({"i": 9})).await;
    assert_eq!(
        d.expect("order_update").await["offset"],
        9,
        "live after the replay, no duplicate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn services_publish_with_redis_cli_publish_and_fcall() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "").await;
    let (mut c, _) = Client::authed(&a, "7").await;
    c.request(json!({"type": "subscribe", "payload": {"channel": "order:123", "token": sub_token("7", "order:123")}}), "s")
        .await;
    let n = tokio::task::block_in_place(|| {
        redis.cli(&[
            "PUBLISH",
            "switchyard:{order:123}",
            r#"{"type":"order_update","payload":{"status":"shipped"}}"#,
        ])
    });
    assert_eq!(n.trim(), "1", "one node subscribed");
    let m = c.expect("order_update").await;
    assert_eq!(m["payload"]["status"], "shipped");
    assert_eq!(m["channel"], "order:123");
    assert!(m["timestamp"].as_str().is_some(), "nodes add the timestamp");
    assert!(m.get("offset").is_none(), "plain PUBLISH writes no history");
    let out = tokio::task::block_in_place(|| {
        redis.cli(&[
            "FCALL",
            "switchyard_publish",
            "1",
            "switchyard:{order:123}",
            r#"{"type":"order_update","payload":{"status":"delivered","n":12345678901234567891}}"#,
            "100",
            "86400",
        ])
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("1"),
        "FCALL returns [offset, epoch]: {out}"
    );
    let m = c.expect("order_update").await;
    assert_eq!(m["offset"], 1);
    assert_eq!(m["payload"]["status"], "delivered");
    assert_eq!(
        m["payload"]["n"].to_string(),
        "12345678901234567891",
        "payload never re-encoded"
    );
    let (_, h) = api_get(&a, "/api/history/order:123").await;
    assert_eq!(h["offset"], 1);
    assert_eq!(h["epoch"], lines[1]);
    // Garbage into Redis is dropped and counted, and never disturbs the node.
    tokio::task::block_in_place(|| {
        redis.cli(&["PUBLISH", "switchyard:{order:123}", "not json"]);
        redis.cli(&[
            "PUBLISH",
            "switchyard:{order:123}",
            r#"{"type":"subscribed","payload":{}}"#,
        ]);
        redis.cli(&[
            "PUBLISH",
            "switchyard:{order:123}",
            r#"{"type":"after_garbage","payload":1}"#,
        ]);
    });
    assert_eq!(c.expect("after_garbage").await["payload"], 1);
    let metrics = http_client()
        .get(a.http("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("switchyard_publications_total{source=\"redis\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_publications_total{source=\"malformed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_stream_for_forward_namespaces() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "").await;
    tokio::task::block_in_place(|| {
        redis.cli(&[
            "XGROUP",
            "CREATE",
            "switchyard:upstream",
            "backend",
            "$",
            "MKSTREAM",
        ])
    });
    let t = token_with("u9", |c| c.allow = vec!["chat:*".into()]);
    let mut c = Client::connect(&a.ws_url(&format!("/ws?token={t}"))).await;
    let ok = c.expect("auth_success").await;
    let conn_id = ok["payload"]["conn_id"]
        .as_str()
        .expect("conn id")
        .to_owned();
    c.subscribe("chat:support").await;
    c.request(
        json!({"type": "typing", "channel": "chat:support", "volatile": true, "payload": {}}),
        "t",
    )
    .await;
    c.request(
        json!({"type": "chat_message", "channel": "chat:support", "payload": {"text": "hello"}}),
        "m",
    )
    .await;
    let out = eventually("the message in the upstream stream", || {
        let out = tokio::task::block_in_place(|| {
            redis.cli(&[
                "XREADGROUP",
                "GROUP",
                "backend",
                "c1",
                "COUNT",
                "10",
                "STREAMS",
                "switchyard:upstream",
                ">",
            ])
        });
        let o = out.clone();
        async move { o.contains("chat_message").then_some(o) }
    })
    .await;
    let lines: Vec<&str> = out.lines().collect();
    let field = |name: &str| {
        lines
            .iter()
            .position(|l| *l == name)
            .and_then(|i| lines.get(i + 1))
            .copied()
    };
    assert_eq!(field("channel"), Some("chat:support"));
    assert_eq!(field("type"), Some("chat_message"));
    assert_eq!(field("payload"), Some(r#"{"text":"hello"}"#));
    assert_eq!(field("user_id"), Some("u9"));
    assert_eq!(field("session_id"), Some(""));
    assert_eq!(field("conn_id"), Some(conn_id.as_str()));
    assert_eq!(field("node"), Some("a"));
    assert!(field("ts").is_some_and(|t| t.ends_with('Z')));
    assert!(
        !out.contains("typing"),
        "volatile publications are not forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_commands_and_aggregates() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "").await;
    let b = node_on(&redis, "b", "").await;
    let (mut on_a, _) = Client::authed(&a, "shared").await;
    let (mut on_b, _) = Client::authed(&b, "shared").await;
    let (mut other, _) = Client::authed(&b, "other").await;
    // Subscribe from node a's API: the connection on node b gets it too.
    let (s, _) = api_post(
        &a,
        "/api/subscribe",
        json!({"user_id": "shared", "channel": "public:promo"}),
    )
    .await;
    assert_eq!(s, 200);
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(
            c.until("subscribed").await["payload"]["channel"],
            "public:promo"
        );
    }
    let stats = eventually("both nodes' heartbeats with their connections", || async {
        let (_, v) = api_get(&a, "/api/stats").await;
        (v["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
            && v["cluster"]["connections"] == 3)
            .then_some(v)
    })
    .await;
    assert_eq!(stats["node"]["node_id"], "a");
    assert_eq!(stats["node"]["connections"], 1);
    assert_eq!(
        stats["cluster"]["users"], 2,
        "distinct users: `shared` on a and b counts once, `other` on b (SPEC 6)"
    );
    let channels = eventually("channel counts aggregated over nodes", || async {
        let (_, v) = api_get(&b, "/api/channels?prefix=public:").await;
        (v["channels"] == json!([{"channel": "public:promo", "subscribers": 2}])).then_some(v)
    })
    .await;
    assert_eq!(channels["channels"][0]["subscribers"], 2);
    let (s, _) = api_post(
        &b,
        "/api/unsubscribe",
        json!({"user_id": "shared", "channel": "public:promo"}),
    )
    .await;
    assert_eq!(s, 200);
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(
            c.until("unsubscribed").await["payload"]["channel"],
            "public:promo"
        );
    }
    // Disconnect through node b reaches the user's connection on node a.
    let (s, _) = api_post(&b, "/api/disconnect", json!({"user_id": "shared"})).await;
    assert_eq!(s, 200);
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.closed().await.code, Some(4003));
    }
    let p = other.request(json!({"type": "ping"}), "p").await;
    assert_eq!(p["type"], "pong", "other users untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_cluster_wide_and_a_crashed_nodes_entries_expire() {
    let redis = RedisServer::start();
    let a = node_on(&redis, "a", "presence_ttl = \"2s\"").await;
    let crashed = NodeProcess::start(
        &format!(
            "broker = \"redis\"\npresence_ttl = \"2s\"\nnode_id = \"doomed\"\nredis.url = \"{}\"",
            redis.url()
        ),
        "",
    )
    .await;
    let t = |u: &str| token_with(u, |c| c.allow = vec!["chat:*".into()]);
    let mut x = Client::connect(&a.ws_url(&format!("/ws?token={}", t("x")))).await;
    x.expect("auth_success").await;
    x.subscribe("chat:p").await;
    let mut y = Client::connect(&format!("ws://{}/ws?token={}", crashed.addr, t("y"))).await;
    y.expect("auth_success").await;
    y.subscribe("chat:p").await;
    let j: Value = loop {
        let j = x.until("join").await;
        if j["payload"]["user_id"] == "y" {
            break j;
        }
    };
    assert_eq!(j["channel"], "chat:p", "join crosses nodes");
    let (_, p) = api_get(&a, "/api/presence/chat:p").await;
    assert_eq!(p["count"], 2);
    drop(crashed); // SIGKILL: no cleanup, no leave
    eventually("the crashed node's presence entry to expire", || async {
        let (_, p) = api_get(&a, "/api/presence/chat:p").await;
        (p["count"] == 1).then_some(())
    })
    .await;
    // An absence check: the live node keeps refreshing its own entry past the TTL.
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let (_, p) = api_get(&a, "/api/presence/chat:p").await;
    assert_eq!(p["count"], 1, "a live node's entries do not expire");
    assert_eq!(p["clients"][0]["user_id"], "x");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_user_connection_limit_is_cluster_wide() {
    let redis = RedisServer::start();
    let limit = "limits.max_connections_per_user = 1";
    let a = node_on(&redis, "a", limit).await;
    let b = node_on(&redis, "b", limit).await;
    let (mut first, _) = Client::authed(&a, "fan").await;
    let (mut second, _) = Client::authed(&b, "fan").await;
    let closed = first.closed().await;
    assert_eq!(
        closed.code,
        Some(4009),
        "the older connection on the other node is replaced"
    );
    let p = second.request(json!({"type": "ping"}), "p").await;
    assert_eq!(p["type"], "pong");

    let reject = "limits.max_connections_per_user = 1\nlimits.per_user_policy = \"reject\"";
    let c = node_on(&redis, "c", reject).await;
    let d = node_on(&redis, "d", reject).await;
    let (_held, _) = Client::authed(&c, "solo").await;
    let url = d.ws_url(&format!("/ws?token={}", token("solo")));
    assert_eq!(
        Client::try_connect(&url, &[]).await.err().as_deref(),
        Some("429"),
        "refused on another node"
    );
}
