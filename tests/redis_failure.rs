//! SPEC 5.8, 8.5 and 8.6 with real failures: Redis stopped and restarted, the
//! pub/sub connection killed on the Redis side, and a network path that silently
//! stops delivering (a TCP proxy that freezes open connections). Clients never
//! reconnect; what history kept reaches them in order; 4012 only when it lost it.

use serde_json::json;
use switchyard::config::BrokerKind;
use testkit::proxy::Proxy;
use testkit::redis::RedisServer;
use testkit::*;

async fn node_via(url: String, id: &str, extra: &str) -> TestNode {
    let text = format!("{}\n{extra}", config_toml(""));
    let mut c = switchyard::Config::from_toml(&text).expect("config");
    c.broker = BrokerKind::Redis;
    c.redis.url = url;
    c.node_id = id.into();
    TestNode::start_config_with(c).await
}

async fn ready_status(node: &TestNode) -> u16 {
    http_client()
        .get(node.http("/ready"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn fcall(redis: &RedisServer, channel: &str, i: u64, size: &str) -> String {
    let env = format!(r#"{{"type":"tick","payload":{{"i":{i}}}}}"#);
    tokio::task::block_in_place(|| {
        redis.cli(&[
            "FCALL",
            "switchyard_publish",
            "1",
            &format!("switchyard:{{{channel}}}"),
            &env,
            size,
            "3600",
        ])
    })
}

const FEED: &str = "[namespaces.feed]\nsubscribe = \"any\"\nhistory_size = 100\nhistory_ttl = \"1h\"\n[namespaces.tiny]\nsubscribe = \"any\"\nhistory_size = 3\nhistory_ttl = \"1h\"";

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_then_back_without_clients_reconnecting() {
    let mut redis = RedisServer::start();
    let node = node_via(redis.url(), "n", FEED).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("public:live").await;
    redis.stop();
    eventually("/ready to say 503 with redis down", || async {
        (ready_status(&node).await == 503).then_some(())
    })
    .await;
    assert_eq!(metric(&node, "switchyard_broker_up").await, 0.0);
    let (s, body) = api_post(
        &node,
        "/api/publish",
        json!({"channel": "public:live", "type": "x", "payload": 1}),
    )
    .await;
    assert_eq!(s, 503, "never a 200 for a message that was not accepted");
    assert_eq!(body["error"]["code"], "unavailable");
    let p = c.request(json!({"type": "ping"}), "still").await;
    assert_eq!(p["type"], "pong", "sockets stay up");
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "public:other"}}),
            "s2",
        )
        .await;
    assert_eq!(e["payload"]["code"], "unavailable");
    redis.restart();
    eventually(
        "/ready back to 200 once redis accepts connections",
        || async { (ready_status(&node).await == 200).then_some(()) },
    )
    .await;
    assert!(metric(&node, "switchyard_broker_reconnects_total").await >= 1.0);
    assert_eq!(metric(&node, "switchyard_broker_up").await, 1.0);
    node.publish("public:live", "after", json!({"ok": true}))
        .await;
    assert_eq!(
        c.until("after").await["payload"]["ok"],
        true,
        "resubscribed by itself"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_connection_killed_on_the_redis_side_is_noticed_and_resubscribed() {
    let redis = RedisServer::start();
    let node = node_via(redis.url(), "n", FEED).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("public:k").await;
    let before = metric(&node, "switchyard_broker_reconnects_total").await;
    let killed = tokio::task::block_in_place(|| redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]));
    assert_eq!(killed.trim(), "1");
    eventually("the node to count a reconnect", || async {
        (metric(&node, "switchyard_broker_reconnects_total").await > before).then_some(())
    })
    .await;
    node.wait_ready().await;
    node.publish("public:k", "back", json!(1)).await;
    assert_eq!(c.until("back").await["payload"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_path_is_caught_by_the_canary_and_history_fills_the_gap() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().expect("addr")).await;
    let node = node_via(format!("redis://{}", proxy.addr), "n", FEED).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("feed:f").await;
    c.subscribe("public:live").await;
    for i in 1..=3 {
        fcall(&redis, "feed:f", i, "100");
    }
    for i in 1..=3 {
        assert_eq!(c.expect("tick").await["offset"], i);
    }
    let before = metric(&node, "switchyard_broker_reconnects_total").await;
    // The path goes silent, and for a while no new connection gets through either.
    proxy.refuse_new(true);
    proxy.freeze_existing();
    // Published straight into Redis by a service while the node hears nothing.
    for i in 4..=6 {
        fcall(&redis, "feed:f", i, "100");
    }
    eventually(
        "the canary to notice the silent path: /ready 503",
        || async { (ready_status(&node).await == 503).then_some(()) },
    )
    .await;
    assert_eq!(metric(&node, "switchyard_broker_up").await, 0.0);
    proxy.refuse_new(false);
    eventually(
        "the node to reconnect and resubscribe by itself",
        || async {
            (metric(&node, "switchyard_broker_reconnects_total").await > before).then_some(())
        },
    )
    .await;
    for i in 4..=6 {
        let m = c.expect("tick").await;
        assert_eq!(
            (m["offset"].as_u64(), m["payload"]["i"].as_u64()),
            (Some(i), Some(i)),
            "filled from history, in order"
        );
    }
    fcall(&redis, "feed:f", 7, "100");
    assert_eq!(
        c.expect("tick").await["offset"],
        7,
        "then live again, no duplicate"
    );
    node.wait_ready().await;
    node.publish("public:live", "ok", json!(1)).await;
    assert_eq!(
        c.until("ok").await["payload"],
        1,
        "every channel resubscribed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_history_no_longer_holds_closes_4012() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().expect("addr")).await;
    let node = node_via(format!("redis://{}", proxy.addr), "n", FEED).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("tiny:t").await;
    fcall(&redis, "tiny:t", 1, "3");
    assert_eq!(c.expect("tick").await["offset"], 1);
    proxy.freeze_existing();
    for i in 2..=10 {
        fcall(&redis, "tiny:t", i, "3");
    }
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4012));
    let d = closed.disconnect.expect("disconnect");
    assert_eq!(d["payload"]["reason"], "insufficient_state");
    assert_eq!(d["payload"]["reconnect"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lost_in_a_redis_restart_closes_history_subscribers_4012() {
    let mut redis = RedisServer::start();
    let node = node_via(redis.url(), "n", FEED).await;
    let (mut hist, _) = Client::authed(&node, "h").await;
    hist.subscribe("feed:lost").await;
    let (mut live, _) = Client::authed(&node, "l").await;
    live.subscribe("public:plain").await;
    fcall(&redis, "feed:lost", 1, "100");
    assert_eq!(hist.expect("tick").await["offset"], 1);
    redis.restart(); // nothing persisted: the history and its epoch are gone
    let closed = hist.closed().await;
    assert_eq!(
        closed.code,
        Some(4012),
        "offsets of a lost history must not be reused silently"
    );
    node.wait_ready().await;
    node.publish("public:plain", "still", json!(1)).await;
    assert_eq!(
        live.until("still").await["payload"],
        1,
        "channels without history carry on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_rewritten_after_redis_loses_it() {
    let mut redis = RedisServer::start();
    let node = node_via(redis.url(), "n", "presence_ttl = \"3s\"").await;
    let t = token_with("p", |c| c.allow = vec!["chat:*".into()]);
    let mut c = Client::connect(&node.ws_url(&format!("/ws?token={t}"))).await;
    c.expect("auth_success").await;
    c.subscribe("chat:here").await;
    let (_, p) = api_get(&node, "/api/presence/chat:here").await;
    assert_eq!(p["count"], 1);
    redis.restart();
    node.wait_ready().await;
    eventually("the node to write its presence entry again", || async {
        let (s, p) = api_get(&node, "/api/presence/chat:here").await;
        (s == 200 && p["count"] == 1).then_some(())
    })
    .await;
}
