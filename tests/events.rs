//! Lifecycle events and webhooks (SPEC 17) and revocation (SPEC 6) on every broker,
//! observed where a backend sees them: a real HTTP receiver behind `[[webhooks]]`
//! (and the events stream in Redis).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use testkit::receiver::{Answer, Receiver};
use testkit::*;

const HOOK_SECRET: &str = "whsec-test-0123456789";

fn hook(r: &Receiver, extra: &str) -> String {
    format!(
        "[[webhooks]]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\n{extra}\n",
        r.url()
    )
}

/// The delivered events of one kind and channel (or user), in order.
fn of(events: &[Value], kind: &str, key: &str, value: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && e[key] == value)
        .cloned()
        .collect()
}

async fn delivered_until(r: &Receiver, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually(what, || async {
        let d = r.delivered();
        done(&d).then_some(d)
    })
    .await
}

async fn transitions_are_events_once_across_nodes(b: Backend) {
    let r = Receiver::start(Answer::Ok).await;
    let d = b.start(3, &hook(&r, "")).await;
    let at = |i: usize| &d.nodes[i % d.nodes.len()];
    // Three subscribers of one channel on three nodes, then all gone.
    let mut watchers = Vec::new();
    for i in 0..3 {
        let (mut c, _) = Client::authed(at(i), &format!("w{i}")).await;
        c.subscribe("public:watch").await;
        watchers.push(c);
    }
    for c in watchers {
        c.close().await;
    }
    // One user on two nodes.
    let (a1, _) = Client::authed(at(0), "alice").await;
    let (a2, _) = Client::authed(at(1), "alice").await;
    a1.close().await;
    a2.close().await;
    // A channel that is occupied and vacated again and again: in order.
    for _ in 0..5 {
        let (mut c, _) = Client::authed(at(2), "cycler").await;
        c.subscribe("public:cycle").await;
        c.unsubscribe_and_close("public:cycle").await;
    }
    let all = delivered_until(&r, "every transition", |d| {
        of(d, "vacated", "channel", "public:watch").len() == 1
            && of(d, "user_offline", "user_id", "alice").len() == 1
            && of(d, "vacated", "channel", "public:cycle").len() == 5
    })
    .await;
    let occupied = of(&all, "occupied", "channel", "public:watch");
    assert_eq!(
        occupied.len(),
        1,
        "{b:?}: once, however many nodes subscribe"
    );
    let e = &occupied[0];
    assert_eq!(e["data"], json!({"channel": "public:watch"}));
    assert!(e["node"].is_string() && e["ts"].is_string());
    assert_eq!(
        of(&all, "user_online", "user_id", "alice").len(),
        1,
        "{b:?}"
    );
    let order: Vec<&str> = all
        .iter()
        .filter(|e| e["channel"] == "public:cycle")
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(
        order,
        ["occupied", "vacated"].repeat(5),
        "{b:?}: in transition order"
    );
    let alice: Vec<&str> = all
        .iter()
        .filter(|e| e["user_id"] == "alice")
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(alice, ["user_online", "user_offline"]);
    if let Some(stream) = d.events().await {
        let e = stream
            .iter()
            .find(|e| e["event"] == "occupied" && e["channel"] == "public:watch")
            .expect("in the stream too");
        let mut fields: Vec<&str> = e.keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "channel",
                "conn_id",
                "data",
                "event",
                "node",
                "session_id",
                "ts",
                "user_id"
            ]
        );
    }
}

async fn emit_and_channel_events_choose_what_is_sent(b: Backend) {
    let r = Receiver::start(Answer::Ok).await;
    let tables = format!(
        "[events]\nemit = [\"connect\", \"disconnect\", \"subscribe\", \"unsubscribe\", \"occupied\", \"vacated\"]\n[namespaces.quiet]\nsubscribe = \"any\"\nchannel_events = false\n{}",
        hook(&r, "")
    );
    let d = b.start(1, &tables).await;
    let (mut c, ok) = Client::authed(d.node(), "z").await;
    let conn = ok["payload"]["conn_id"]
        .as_str()
        .expect("conn id")
        .to_owned();
    c.subscribe("quiet:a").await;
    c.subscribe("public:b").await;
    c.unsubscribe_and_close("public:b").await;
    let all = delivered_until(&r, "the disconnect", |d| {
        d.iter().any(|e| e["event"] == "disconnect")
    })
    .await;
    let mine: Vec<(String, String)> = all
        .iter()
        .filter(|e| e["conn_id"] == conn.as_str())
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["channel"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("connect", ""),
        ("subscribe", "user:z"),
        ("subscribe", "quiet:a"),
        ("subscribe", "public:b"),
        ("unsubscribe", "public:b"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        mine[..5],
        expected[..],
        "{b:?}: one connection's events in order"
    );
    let last = all
        .iter()
        .rev()
        .find(|e| e["conn_id"] == conn.as_str())
        .expect("events");
    assert_eq!(last["event"], "disconnect");
    assert_eq!(
        (
            last["data"]["code"].as_u64(),
            last["data"]["user_id"].as_str()
        ),
        (Some(1000), Some("z"))
    );
    assert!(of(&all, "occupied", "channel", "public:b").len() == 1);
    assert!(
        of(&all, "occupied", "channel", "quiet:a").is_empty(),
        "channel_events = false"
    );
    assert!(
        all.iter().all(|e| e["event"] != "user_online"),
        "not in [events] emit"
    );
}

/// 2xx-only delivery in batches of at most 100, each signed over `<ts>.<body>`, after
/// retries with backoff; nothing twice.
async fn webhooks_batch_sign_and_retry(b: Backend) {
    let r = Receiver::start(Answer::Status(500, 3)).await;
    let tables = format!(
        "[events]\nemit = [\"connect\", \"disconnect\"]\n{}",
        hook(&r, "")
    );
    let d = b.start(1, &tables).await;
    const N: usize = 130;
    for i in 0..N {
        let (c, _) = Client::authed(d.node(), &format!("b{i}")).await;
        c.close().await;
    }
    let all = delivered_until(&r, "every event, after the failures", |d| d.len() >= 2 * N).await;
    assert_eq!(all.len(), 2 * N, "{b:?}: each event once");
    let hits = r.hits();
    assert!(
        hits.iter().all(|h| h.events().len() <= 100),
        "{b:?}: at most 100 per request"
    );
    assert!(hits.len() >= 3 + 2, "{b:?}: three failures, then batches");
    for h in &hits {
        let ts = h
            .signature
            .strip_prefix("sha256=")
            .expect("signature header");
        let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("key");
        let stamp = if h.timestamp.is_empty() {
            None
        } else {
            Some(h.timestamp.clone())
        };
        if let Some(stamp) = stamp {
            mac.update(format!("{stamp}.").as_bytes());
            mac.update(&h.body);
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, ts, "signed over <timestamp>.<body>");
        }
    }
    // Retried after waiting (200 ms, then 400 ms, each times 0.5 to 1.5).
    assert!(
        hits[2].at - hits[0].at >= Duration::from_millis(250),
        "{b:?}: backoff"
    );
    assert_eq!(
        metric(
            d.node(),
            "switchyard_webhook_requests_total{status=\"500\"}"
        )
        .await,
        3.0
    );
    assert!(metric(d.node(), "switchyard_events_total{event=\"connect\"}").await >= N as f64);
}

async fn a_webhook_that_keeps_failing_dead_letters(b: Backend) {
    let r = Receiver::start(Answer::Status(500, usize::MAX)).await;
    let tables = format!(
        "[events]\nemit = [\"connect\"]\n{}",
        hook(&r, "max_attempts = 2")
    );
    let d = b.start(1, &tables).await;
    let (_c, _) = Client::authed(d.node(), "dl").await;
    eventually("the event to be dead-lettered", || async {
        (metric(d.node(), "switchyard_webhook_dead_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(r.hits().len(), 2, "max_attempts");
    if let Some(url) = d
        .redis
        .as_ref()
        .map(|r| r.url())
        .or(d.cluster.as_ref().map(|c| c.url()))
    {
        let _ = url;
        let out = d
            .cli(&["XRANGE", "switchyard:events:dead", "-", "+"])
            .unwrap_or_default();
        assert!(out.contains("HTTP 500") && out.contains(&r.url()), "{out}");
    }
}

/// Revocation (SPEC 6): every node closes the user's connections with 4003 and
/// refuses older tokens; a fresh one works; it lasts auth.revocation_ttl.
async fn revoke_closes_everywhere_and_refuses_older_tokens(b: Backend) {
    let d = b.start(2, "auth.revocation_ttl = \"3s\"").await;
    let old = token_with("mallory", |c| c.iat = Some(auth_now() - 10));
    let connect = |i: usize, t: &str| {
        let url = d.nodes[i % d.nodes.len()].ws_url(&format!("/ws?token={t}"));
        async move { Client::try_connect(&url, &[]).await }
    };
    let mut conns = Vec::new();
    for i in 0..2 {
        let mut c = connect(i, &old)
            .await
            .expect("connects before the revocation");
        c.expect("auth_success").await;
        conns.push(c);
    }
    let (s, _) = api_post(d.node(), "/api/revoke", json!({"user_id": "mallory"})).await;
    assert_eq!(s, 200);
    for mut c in conns {
        let closed = c.closed().await;
        assert_eq!(closed.code, Some(4003), "{b:?}: closed on every node");
    }
    for i in 0..2 {
        let refused = connect(i, &old).await.err();
        assert_eq!(
            refused.as_deref(),
            Some("401"),
            "{b:?}: an older token is refused"
        );
    }
    let fresh = token("mallory");
    let mut c = connect(1, &fresh).await.expect("a fresh token works");
    c.expect("auth_success").await;
    let (s, _) = api_post(d.node(), "/api/revoke", json!({"user_id": ""})).await;
    assert_eq!(s, 400);
    eventually("the revocation to expire after revocation_ttl", || async {
        connect(0, &old).await.ok().map(|_| ())
    })
    .await;
}

fn auth_now() -> u64 {
    switchyard::auth::unix_now()
}

every_broker!(
    transitions_are_events_once_across_nodes,
    emit_and_channel_events_choose_what_is_sent,
    webhooks_batch_sign_and_retry,
    a_webhook_that_keeps_failing_dead_letters,
    revoke_closes_everywhere_and_refuses_older_tokens,
);

/// A node dies (SIGKILL) with the last subscriber of a channel and with a user's
/// last connection: `vacated` and `user_offline` still come, within presence_ttl.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_channels_are_vacated() {
    let r = Receiver::start(Answer::Ok).await;
    let redis = tokio::task::block_in_place(testkit::redis::RedisServer::start);
    let top = format!(
        "presence_ttl = \"6s\"\nbroker = \"redis\"\nredis.url = \"{}\"",
        redis.url()
    );
    let a = NodeProcess::start(&format!("{top}\nnode_id = \"a\""), &hook(&r, "")).await;
    let b = NodeProcess::start(&format!("{top}\nnode_id = \"b\""), &hook(&r, "")).await;
    let mut on_b = Client::connect(&format!("ws://{}/ws?token={}", b.addr, token("kim"))).await;
    on_b.expect("auth_success").await;
    on_b.subscribe("public:doomed").await;
    delivered_until(&r, "occupied", |d| {
        !of(d, "occupied", "channel", "public:doomed").is_empty()
    })
    .await;
    b.signal("KILL");
    let all = delivered_until(&r, "vacated after the crash", |d| {
        !of(d, "vacated", "channel", "public:doomed").is_empty()
            && !of(d, "user_offline", "user_id", "kim").is_empty()
    })
    .await;
    assert_eq!(of(&all, "vacated", "channel", "public:doomed").len(), 1);
    assert_eq!(
        of(&all, "vacated", "channel", "public:doomed")[0]["node"],
        "b",
        "on behalf of the dead node"
    );
    drop(a);
}

/// Several nodes, one webhook: each event is sent once; when the node delivering
/// dies mid-request, another takes over what it left unacknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_webhook_holder_is_taken_over() {
    let r = Receiver::start(Answer::Ok).await;
    let redis = tokio::task::block_in_place(testkit::redis::RedisServer::start);
    let top = format!("broker = \"redis\"\nredis.url = \"{}\"", redis.url());
    let tables = format!("[events]\nemit = [\"connect\"]\n{}", hook(&r, ""));
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(NodeProcess::start(&format!("{top}\nnode_id = \"{id}\""), &tables).await);
    }
    let connect_on = |i: usize, user: String| {
        let url = format!("ws://{}/ws?token={}", nodes[i].addr, token(&user));
        async move {
            let mut c = Client::connect(&url).await;
            c.expect("auth_success").await;
            c
        }
    };
    let mut keep = Vec::new();
    for i in 0..30 {
        keep.push(connect_on(i % 3, format!("first{i}")).await);
    }
    let all = delivered_until(&r, "30 connects", |d| d.len() >= 30).await;
    let mut users: Vec<&str> = all.iter().filter_map(|e| e["user_id"].as_str()).collect();
    users.sort();
    users.dedup();
    assert_eq!(
        (all.len(), users.len()),
        (30, 30),
        "each event once, from one of the nodes"
    );
    // The holder's next request never gets an answer; then the holder dies.
    r.set(Answer::Hang);
    for i in 0..6 {
        keep.push(connect_on(i % 3, format!("second{i}")).await);
    }
    eventually("the holder to be sending", || async {
        (r.hits().len() > all.len().div_ceil(100).max(1)).then_some(())
    })
    .await;
    let lease = format!(
        "{{switchyard:events}}:lease:{}",
        switchyard::webhooks::group_of(&r.url())
    );
    let holder = tokio::task::block_in_place(|| redis.cli(&["GET", &lease]))
        .trim()
        .to_owned();
    let idx = ["a", "b", "c"]
        .iter()
        .position(|n| *n == holder)
        .expect("a holder");
    keep.retain(|_| true);
    r.set(Answer::Ok);
    nodes[idx].signal("KILL");
    let after = delivered_until(&r, "the dead holder's batch, from another node", |d| {
        d.iter()
            .filter(|e| {
                e["user_id"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("second"))
            })
            .count()
            >= 6
    })
    .await;
    let seconds: Vec<&Value> = after
        .iter()
        .filter(|e| {
            e["user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("second"))
        })
        .collect();
    assert_eq!(seconds.len(), 6, "delivered once after the takeover");
}

/// A receiver that never answers slows nothing: 10,000 clients connect and publish
/// while every event piles up unsent.
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_receiver_never_slows_sockets_or_the_api() {
    use futures_util::{stream, StreamExt};
    let r = Receiver::start(Answer::Hang).await;
    let redis = tokio::task::block_in_place(testkit::redis::RedisServer::start);
    let top = format!(
        "broker = \"redis\"\nredis.url = \"{}\"\nlimits.ping_interval = \"120s\"",
        redis.url()
    );
    let tables = format!(
        "[events]\nemit = [\"connect\", \"disconnect\", \"subscribe\", \"unsubscribe\", \"user_online\", \"user_offline\"]\n[namespaces.load]\nsubscribe = \"any\"\npublish = \"any\"\n{}",
        hook(&r, "timeout = \"60s\"")
    );
    let node = NodeProcess::start(&top, &tables).await;
    let base = format!("ws://{}", node.addr);
    let mut listener = Client::connect(&format!("{base}/ws?token={}", token("listener"))).await;
    listener.expect("auth_success").await;
    listener.subscribe("load:all").await;
    const N: usize = 10_000;
    let clients: Vec<Client> = stream::iter(0..N)
        .map(|i| {
            let base = base.clone();
            async move {
                let mut c =
                    Client::connect(&format!("{base}/ws?token={}", token(&format!("p{i}")))).await;
                c.expect("auth_success").await;
                c.send(json!({"type": "load", "channel": "load:all", "payload": {"i": i}}))
                    .await;
                c
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut got = 0;
    while got < N {
        let m = listener
            .next_json()
            .await
            .expect("the listener keeps receiving");
        if m["type"] == "load" {
            got += 1;
        }
    }
    let started = std::time::Instant::now();
    let (s, _) = {
        let url = format!("http://{}/api/publish", node.addr);
        let resp = http_client()
            .post(url)
            .header("X-API-Key", API_KEY)
            .json(&json!({"channel": "load:all", "type": "api", "payload": {}}))
            .send()
            .await
            .expect("publish");
        (resp.status().as_u16(), ())
    };
    assert_eq!(s, 200);
    assert!(started.elapsed() < WAIT, "the API answers");
    assert!(
        r.delivered().is_empty(),
        "the receiver still has not answered"
    );
    let pending = tokio::task::block_in_place(|| redis.cli(&["XLEN", "switchyard:events"]));
    assert!(
        pending.trim().parse::<usize>().unwrap_or(0) >= 2 * N,
        "the events wait in the stream: {pending}"
    );
    drop(clients);
}
