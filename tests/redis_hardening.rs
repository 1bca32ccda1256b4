//! The holes a review found on the Redis path (issue 11), each closed and held by a
//! test against a real redis-server: reads that left state behind, garbage written by
//! services, a lost function library, holes and reused offsets in history, per-user
//! races, acknowledgements before the fact, cleanup that held sockets hostage,
//! presence reads that hammered Redis, and an outcome that could not be known.

use std::time::Duration;

use serde_json::json;
use switchyard::config::BrokerKind;
use testkit::proxy::Proxy;
use testkit::raw::RawClient;
use testkit::redis::RedisServer;
use testkit::*;

async fn node_on(url: String, id: &str, tables: &str) -> TestNode {
    let text = format!("{}\n{tables}", config_toml(""));
    let mut c = switchyard::Config::from_toml(&text).expect("config");
    c.broker = BrokerKind::Redis;
    c.redis.url = url;
    c.node_id = id.into();
    TestNode::start_config_with(c).await
}

fn cli(redis: &RedisServer, args: &[&str]) -> String {
    tokio::task::block_in_place(|| redis.cli(args))
}

const NS: &str = "[namespaces.feed]\nsubscribe = \"any\"\nhistory_size = 100\nhistory_ttl = \"1h\"\n[namespaces.room]\nsubscribe = \"any\"\npublish = \"subscribers\"\npresence = true\nforward = true\nhistory_size = 10\nhistory_ttl = \"1h\"\n[limits]\nclient_rate = 10000\nclient_burst = 10000";

fn fcall(redis: &RedisServer, channel: &str, envelope: &str) -> String {
    cli(
        redis,
        &[
            "FCALL",
            "switchyard_publish",
            "1",
            &format!("switchyard:{{{channel}}}"),
            envelope,
            "100",
            "3600",
        ],
    )
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    cli(redis, &["--scan", "--pattern", pattern])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// SPEC 7: a `history`, `presence` or `subscribe` on a channel that has none writes
/// nothing to Redis that outlives its subscribers. (It used to leave a `:meta` key
/// for 25 hours.)
#[tokio::test(flavor = "multi_thread")]
async fn reads_leave_nothing_behind_in_redis() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    let h = c
        .request(
            json!({"type": "history", "payload": {"channel": "feed:fresh"}}),
            "h",
        )
        .await;
    assert_eq!(h["payload"]["offset"], 0);
    let p = c
        .request(
            json!({"type": "presence", "payload": {"channel": "room:fresh"}}),
            "p",
        )
        .await;
    assert_eq!(p["payload"]["count"], 0);
    assert!(
        keys(&redis, "switchyard:{*fresh}*").is_empty(),
        "history and presence read nothing into being"
    );
    // A subscriber's epoch lives with the subscription, and goes with it.
    let s = c.subscribe("feed:fresh").await;
    assert!(s["payload"]["epoch"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    c.request(
        json!({"type": "unsubscribe", "payload": {"channel": "feed:fresh"}}),
        "u",
    )
    .await;
    eventually("nothing left of feed:fresh in Redis", || async {
        keys(&redis, "switchyard:{feed:fresh}*")
            .is_empty()
            .then_some(())
    })
    .await;
}

/// SPEC 7 `limits.upstream_maxlen` bounds the upstream stream (it was fixed at 100,000).
#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_stream_is_bounded_by_the_configured_maxlen() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", &format!("{NS}\nupstream_maxlen = 10")).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("room:1").await;
    for i in 0..400 {
        c.send(json!({"type": "say", "channel": "room:1", "id": format!("m{i}"), "payload": i}))
            .await;
    }
    loop {
        let r = c.next_json().await.expect("acks");
        if r["id"] == "m399" {
            break;
        }
    }
    let len: usize = cli(&redis, &["XLEN", "switchyard:upstream"])
        .trim()
        .parse()
        .expect("XLEN");
    assert!(
        len < 250,
        "MAXLEN ~ 10 trims whole stream nodes, not {len} of 400 kept"
    );
}

/// SPEC 8.2: the function refuses what is not a valid envelope; nothing is stored or
/// published, and the channel's subscribers never notice. (The issue's envelope,
/// with an `offset` of its own, used to be stored, rejected by every node, and then
/// close every subscriber with 4012 at the next publication.)
#[tokio::test(flavor = "multi_thread")]
async fn garbage_from_a_service_is_refused_and_hurts_nobody() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("feed:1").await;
    for bad in [
        r#"{"type":"x","offset":1}"#,
        r#"{"type":"x","channel":"feed:2"}"#,
        r#"{"type":"x","from":{"user_id":"admin"}}"#,
        r#"{"type":"subscribed"}"#,
        r#"{"payload":1}"#,
        r#"[1,2]"#,
        "not json",
        &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
    ] {
        let out = fcall(&redis, "feed:1", bad);
        assert!(out.contains("ERR"), "{bad:.40}: refused, got {out}");
    }
    let h = cli(&redis, &["XLEN", "switchyard:{feed:1}:history"]);
    assert_eq!(h.trim(), "0", "nothing stored");
    // Garbage on the PUBLISH path is dropped and counted, never fatal.
    cli(
        &redis,
        &["PUBLISH", "switchyard:{feed:1}", "{\"no type\":1}"],
    );
    let out = fcall(&redis, "feed:1", r#"{"type":"ok","payload":{"n":1}}"#);
    assert!(out.starts_with('1'), "{out}");
    let m = c.until("ok").await;
    assert_eq!(m["offset"], 1);
    node.publish("feed:1", "ok", json!({"n": 2})).await;
    assert_eq!(
        c.until("ok").await["offset"],
        2,
        "no 4012: the subscriber is fine"
    );
    assert!(
        metric(&node, "switchyard_publications_total{source=\"malformed\"}").await >= 1.0,
        "counted"
    );
}

/// SPEC 8.2: a node that finds the function missing loads it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_loads_the_function_again_when_redis_lost_it() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    cli(&redis, &["FUNCTION", "FLUSH"]);
    let r = node.publish("feed:1", "e", json!(1)).await;
    assert_eq!(r["offset"], 1);
    let h = api_get(&node, "/api/history/feed:1").await;
    assert_eq!(h.1["offset"], 1);
}

/// SPEC 5.3: recovery needs the whole replayed page contiguous, not only its first
/// entry (a hole in the middle used to be recovered as if complete).
#[tokio::test(flavor = "multi_thread")]
async fn recovery_refuses_a_page_with_a_hole() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    let s = c.subscribe("feed:h").await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=6 {
        node.publish("feed:h", "e", json!(i)).await;
    }
    cli(&redis, &["XDEL", "switchyard:{feed:h}:history", "4-1"]);
    let (mut d, _) = Client::authed(&node, "v").await;
    let r = d
        .request(
            json!({"type": "subscribe", "payload": {"channel": "feed:h", "since": {"offset": 2, "epoch": epoch}}}),
            "r",
        )
        .await;
    assert_eq!(r["payload"]["recovered"], false, "{r}");
}

/// SPEC 8.5: a promoted replica that missed writes, then new publications given the
/// same offsets: subscribers end with 4012 and `recovered: false`, and never receive
/// the new ones as if they followed what they saw. (The new 4 and 5 used to be
/// dropped as duplicates and 6 delivered: a silent gap.)
#[tokio::test(flavor = "multi_thread")]
async fn offsets_reused_after_a_failover_end_in_4012_and_recovered_false() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    let s = c.subscribe("feed:f").await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=5 {
        node.publish("feed:f", "e", json!(i)).await;
    }
    for i in 1..=5 {
        assert_eq!(c.until("e").await["offset"], i);
    }
    // What the replica has: offsets 1 to 3 only. Then new writes take 4, 5 and 6.
    cli(
        &redis,
        &["XDEL", "switchyard:{feed:f}:history", "4-1", "5-1"],
    );
    cli(&redis, &["XSETID", "switchyard:{feed:f}:history", "3-1"]);
    cli(&redis, &["HSET", "switchyard:{feed:f}:meta", "top", "3"]);
    for i in [40, 50, 60] {
        fcall(
            &redis,
            "feed:f",
            &format!(r#"{{"type":"e","payload":{i}}}"#),
        );
    }
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4012), "{closed:?}");
    let (mut d, _) = Client::authed(&node, "v").await;
    let r = d
        .request(
            json!({"type": "subscribe", "payload": {"channel": "feed:f", "since": {"offset": 5, "epoch": epoch}}}),
            "r",
        )
        .await;
    assert_eq!(r["payload"]["recovered"], false, "{r}");
}

/// SPEC 5.7: connections of one user arriving at the same moment on two nodes leave
/// exactly the limit open: the newest under `evict_oldest`, the first under `reject`
/// (they used to evict each other: both 4009).
#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_connections_on_two_nodes_leave_exactly_the_limit() {
    let redis = RedisServer::start();
    for policy in ["evict_oldest", "reject"] {
        let tables =
            format!("[limits]\nmax_connections_per_user = 1\nper_user_policy = \"{policy}\"");
        let a = node_on(redis.url(), &format!("a-{policy}"), &tables).await;
        let b = node_on(redis.url(), &format!("b-{policy}"), &tables).await;
        for round in 0..6 {
            let user = format!("{policy}-{round}");
            let t = token(&user);
            let (url_a, url_b) = (
                a.ws_url(&format!("/ws?token={t}")),
                b.ws_url(&format!("/ws?token={t}")),
            );
            let (x, y) = tokio::join!(
                Client::try_connect(&url_a, &[]),
                Client::try_connect(&url_b, &[]),
            );
            // Both may upgrade (the `reject` check at the upgrade sees neither yet).
            let mut clients = Vec::new();
            for c in [x, y].into_iter().flatten() {
                let mut c = c;
                let first = c.next_json().await;
                if let Ok(v) = first {
                    if v["type"] == "auth_success" {
                        let id = v["payload"]["conn_id"]
                            .as_str()
                            .expect("conn_id")
                            .to_owned();
                        clients.push((id, c));
                    }
                }
            }
            let key = format!("switchyard:who:{{u:{user}}}");
            let survivor = eventually("the registry to settle on one connection", || {
                let members = cli(&redis, &["ZRANGE", &key, "0", "-1"]);
                async move {
                    let m: Vec<&str> = members.lines().filter(|l| !l.is_empty()).collect();
                    (m.len() == 1).then(|| m[0].split('|').nth(1).unwrap_or("").to_owned())
                }
            })
            .await;
            assert!(
                clients.iter().any(|(id, _)| *id == survivor),
                "{policy} round {round}: the survivor is one of the two"
            );
            for (id, mut c) in clients {
                if id == survivor {
                    let p = c.request(json!({"type": "ping"}), "alive").await;
                    assert_eq!(
                        p["type"], "pong",
                        "{policy} round {round}: the survivor is open"
                    );
                } else {
                    let closed = c.closed().await;
                    let want = if policy == "reject" { 4001 } else { 4009 };
                    assert_eq!(
                        closed.code,
                        Some(want),
                        "{policy} round {round}: {closed:?}"
                    );
                }
            }
        }
    }
}

/// SPEC 8.5: a forwarded publication is acknowledged only once it is in the upstream
/// stream; a subscribe while the broker is down is `unavailable` even with local
/// subscribers; a broadcast that published nothing is 503; a broker error that is not
/// unavailability reaches the client as `internal`.
#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledgement_before_the_fact() {
    let mut redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    c.subscribe("room:1").await;
    // The upstream stream cannot take it (a service broke the key): no ack, and the
    // publication is not delivered either.
    cli(&redis, &["SET", "switchyard:upstream", "not a stream"]);
    let r = c
        .request(
            json!({"type": "say", "channel": "room:1", "payload": "hi"}),
            "f",
        )
        .await;
    assert_eq!(r["type"], "error", "{r}");
    cli(&redis, &["DEL", "switchyard:upstream"]);
    let ok = c
        .request(
            json!({"type": "say", "channel": "room:1", "payload": "again"}),
            "g",
        )
        .await;
    assert_eq!(ok["type"], "ack");
    // A history the node cannot read is an internal error, not `unavailable`.
    cli(
        &redis,
        &["HSET", "switchyard:{feed:broken}:meta", "epoch", "e"],
    );
    cli(
        &redis,
        &["SET", "switchyard:{feed:broken}:history", "not a stream"],
    );
    let e = c
        .request(
            json!({"type": "history", "payload": {"channel": "feed:broken"}}),
            "h",
        )
        .await;
    assert_eq!(e["payload"]["code"], "internal", "{e}");
    // Redis down: a subscribe to a channel this node already has subscribers of.
    redis.stop();
    eventually("the node to notice", || async {
        let r = http_client().get(node.http("/ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let (mut d, _) = Client::authed(&node, "v").await;
    let s = d
        .request(
            json!({"type": "subscribe", "payload": {"channel": "room:1"}}),
            "s",
        )
        .await;
    assert_eq!(s["payload"]["code"], "unavailable", "{s}");
    let (status, body) = api_post(
        &node,
        "/api/broadcast",
        json!({"channels": ["feed:a", "feed:b"], "type": "x", "payload": 1}),
    )
    .await;
    assert_eq!(status, 503, "nothing published: {body}");
}

/// Closing a connection never waits for Redis: the socket and the hub slot go at
/// once, the broker cleanup follows in the background (it used to wait up to 2 s per
/// subscription for a pool connection when Redis was unreachable). Unreachable here
/// means silent: connections are accepted and never answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_closing_connection_never_waits_for_redis() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().expect("addr")).await;
    let node = node_on(format!("redis://{}", proxy.addr), "n", NS).await;
    let (mut c, _) = Client::authed(&node, "u").await;
    for i in 0..40 {
        c.subscribe(&format!("room:{i}")).await;
    }
    proxy.blackhole_new(true);
    proxy.freeze_existing();
    c.close().await;
    eventually("the node to let go of the closed connection", || async {
        let (_, h) = api_get(&node, "/health").await;
        (h["ws_connections"] == 0).then_some(())
    })
    .await;
}

/// SPEC 6, 8.2 and issue 11.14: when Redis took the publish but answered too late,
/// the caller is told the outcome is unknown (503), and a retry with the same
/// idempotency key is safe: one stored publication, `duplicate: true`.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_outcome_is_reported_and_the_retry_is_safe() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    node.publish("feed:slow", "warm", json!(0)).await;
    let port = redis.port.to_string();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "4.5"])
            .output()
    });
    // The publish goes once Redis is asleep: a PING then gets no answer. (The 300 ms
    // is how long an absence counts as one; the poll has its deadline.)
    let addr = format!("127.0.0.1:{}", redis.port);
    eventually("redis to be asleep", || {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let answer = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
            answer.is_err().then_some(())
        }
    })
    .await;
    let body = json!({"channel": "feed:slow", "type": "e", "payload": 1, "idempotency_key": "k1"});
    let (status, first) = api_post(&node, "/api/publish", body.clone()).await;
    assert_eq!(status, 503, "{first}");
    assert!(
        first["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown")),
        "{first}"
    );
    let _ = sleeper.join();
    let (status, again) = api_post(&node, "/api/publish", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["duplicate"], true,
        "the first call had published: {again}"
    );
    assert_eq!(again["offset"], 2);
    let (_, h) = api_get(&node, "/api/history/feed:slow").await;
    assert_eq!(
        h["publications"].as_array().map(Vec::len),
        Some(2),
        "stored once"
    );
}

fn fcall_calls(redis: &RedisServer) -> (u64, u64) {
    let info = cli(redis, &["INFO", "commandstats"]);
    let calls = |name: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (calls("fcall"), calls("hgetall"))
}

/// Presence cannot be used to hammer Redis: counts come from HLEN (never from reading
/// every entry) and a crowd asking at once is answered from a short cache.
#[tokio::test(flavor = "multi_thread")]
async fn presence_requests_cannot_hammer_redis() {
    let redis = RedisServer::start();
    let node = node_on(redis.url(), "n", NS).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        let (mut c, _) = Client::authed(&node, &format!("u{i}")).await;
        c.subscribe("room:crowd").await;
        clients.push(c);
    }
    let (_, first) = api_get(&node, "/api/presence/room:crowd").await;
    assert_eq!(first["count"], 30);
    let before = fcall_calls(&redis);
    let asks: Vec<_> = (0..200)
        .map(|_| {
            let url = node.http("/api/presence/room:crowd");
            tokio::spawn(async move {
                http_client()
                    .get(url)
                    .header("X-API-Key", API_KEY)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.expect("task").expect("presence"), 200);
    }
    let after = fcall_calls(&redis);
    assert_eq!(after.1, before.1, "no HGETALL of every entry");
    assert!(
        after.0 - before.0 < 20,
        "200 presence requests cost {} function calls",
        after.0 - before.0
    );
}

/// SPEC 5.7: a user's registry entry whose removal failed (Redis unreachable at the
/// time) does not lock a `reject` user out: the node removes it once Redis is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_registry_removal_does_not_lock_a_user_out() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().expect("addr")).await;
    let tables = "[limits]\nmax_connections_per_user = 1\nper_user_policy = \"reject\"";
    let a = node_on(format!("redis://{}", proxy.addr), "a", tables).await;
    let b = node_on(redis.url(), "b", tables).await;
    let mut on_a = RawClient::connect(a.addr, &format!("/ws?token={}", token("solo")), None).await;
    on_a.next_frame().await.expect("auth_success");
    proxy.refuse_new(true);
    proxy.freeze_existing();
    drop(on_a);
    // Node a has let go of the connection (its one attempt at the removal is over);
    // Redis comes back before the registry would consider node a dead.
    eventually("node a to see the connection closed", || async {
        let (_, h) = api_get(&a, "/health").await;
        (h["ws_connections"] == 0).then_some(())
    })
    .await;
    proxy.refuse_new(false);
    let mut c = eventually("node b to admit the user again", || {
        let url = b.ws_url(&format!("/ws?token={}", token("solo")));
        async move { Client::try_connect(&url, &[]).await.ok() }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), c.next_json()).await;
}
