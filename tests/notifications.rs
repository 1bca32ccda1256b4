//! Notifications that reach people (SPEC 15) on every broker: read state that agrees
//! on every device across nodes, receipts once per user, fallbacks that fire exactly
//! once unless confirmed, and idempotent publishing across nodes.

use serde_json::{json, Value};
use testkit::*;

const NS: &str = r#"
api.idempotency_window = "2s"

[namespaces.inbox]
subscribe = "owner"
history_size = 100
history_ttl = "1h"
read_state = true
receipts = true

[namespaces.user]
history_size = 100
history_ttl = "1h"
receipts = true
read_state = true

[namespaces.brief]
subscribe = "owner"
history_size = 10
history_ttl = "1h"
read_state = true
read_state_ttl = "1s"

[namespaces.plain]
subscribe = "any"
history_size = 10
history_ttl = "1h"
"#;

async fn subscribed(c: &mut Client, ch: &str) -> Value {
    c.subscribe(ch).await["payload"].clone()
}

async fn mark_read(c: &mut Client, ch: &str, offset: u64, id: &str) -> Value {
    c.request(
        json!({"type": "mark_read", "payload": {"channel": ch, "offset": offset}}),
        id,
    )
    .await
}

/// Publishes a marker and reads until it: what came before it, in order.
async fn frames_until_marker(node: &TestNode, c: &mut Client, ch: &str) -> Vec<Value> {
    node.publish(ch, "marker", json!({})).await;
    let mut seen = Vec::new();
    loop {
        let m = c.next_json().await.expect("open");
        if m["type"] == "marker" {
            return seen;
        }
        seen.push(m);
    }
}

/// The sum of a series over the nodes.
async fn total(d: &Deployment, series: &str) -> f64 {
    let mut sum = 0.0;
    for n in &d.nodes {
        sum += metric(n, series).await.max(0.0);
    }
    sum
}

async fn read_state_agrees_on_every_device(b: Backend) {
    let d = b.start(2, NS).await;
    let (a, other) = (&d.nodes[0], d.nodes.last().expect("node"));
    for i in 1..=3 {
        a.publish("inbox:u1", "message", json!({"i": i})).await;
    }
    let (mut laptop, _) = Client::authed(a, "u1").await;
    let (mut phone, _) = Client::authed(other, "u1").await;
    for c in [&mut laptop, &mut phone] {
        let s = subscribed(c, "inbox:u1").await;
        assert_eq!(
            (
                s["offset"].as_u64(),
                s["read_offset"].as_u64(),
                s["unread"].as_u64()
            ),
            (Some(3), Some(0), Some(3)),
            "{s}"
        );
    }
    let r = mark_read(&mut laptop, "inbox:u1", 2, "m1").await;
    assert_eq!(r["type"], "read");
    assert_eq!(
        r["payload"],
        json!({"channel": "inbox:u1", "read_offset": 2, "unread": 1})
    );
    let pushed = phone.until("read").await;
    assert!(pushed.get("id").is_none(), "pushed, not a reply: {pushed}");
    assert_eq!(
        pushed["payload"], r["payload"],
        "the phone's badge follows the laptop"
    );
    // Backwards is a no-op (answered with the position), beyond the newest an error.
    let r = mark_read(&mut laptop, "inbox:u1", 1, "m2").await;
    assert_eq!(
        (
            r["payload"]["read_offset"].as_u64(),
            r["payload"]["unread"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let e = mark_read(&mut laptop, "inbox:u1", 9, "m3").await;
    assert_eq!(
        (e["type"].as_str(), e["payload"]["code"].as_str()),
        (Some("error"), Some("invalid_payload"))
    );
    let between = frames_until_marker(a, &mut phone, "inbox:u1").await;
    assert!(
        between.iter().all(|m| m["type"] != "read"),
        "no read for a no-op: {between:?}"
    );
    // The badge without subscribing: `unread`, with and without channels, and the API.
    let expected = json!([{"channel": "inbox:u1", "offset": 4, "read_offset": 2, "unread": 2}]);
    let u = laptop.request(json!({"type": "unread"}), "u1").await;
    assert_eq!(u["payload"]["channels"], expected, "{u}");
    let u = laptop
        .request(
            json!({"type": "unread", "payload": {"channels": ["inbox:u1"]}}),
            "u2",
        )
        .await;
    assert_eq!(u["payload"]["channels"], expected);
    let (s, api) = api_get(other, "/api/unread/u1").await;
    assert_eq!((s, &api["channels"]), (200, &expected));
    let (_, api) = api_get(other, "/api/unread/u1?channels=inbox:u1").await;
    assert_eq!(api["channels"], expected);
    let e = laptop
        .request(
            json!({"type": "unread", "payload": {"channels": ["inbox:u2"]}}),
            "u3",
        )
        .await;
    assert_eq!(e["payload"]["code"], "forbidden", "another user's channel");
    // A third device starts from the position.
    let (mut tablet, _) = Client::authed(other, "u1").await;
    let s = subscribed(&mut tablet, "inbox:u1").await;
    assert_eq!(
        (s["read_offset"].as_u64(), s["unread"].as_u64()),
        (Some(2), Some(2))
    );
    if let Some(events) = d.events().await {
        let reads: Vec<_> = events.iter().filter(|e| e["event"] == "read").collect();
        assert_eq!(reads.len(), 1, "one read event for the one move");
        assert_eq!(
            (reads[0]["user_id"].as_str(), reads[0]["data"].as_str()),
            ("u1", r#"{"read_offset":2}"#)
        );
    }
}

async fn read_positions_expire(b: Backend) {
    let d = b.start(1, NS).await;
    let node = d.node();
    node.publish("brief:u5", "message", json!({})).await;
    let (mut c, _) = Client::authed(node, "u5").await;
    subscribed(&mut c, "brief:u5").await;
    let r = mark_read(&mut c, "brief:u5", 1, "m").await;
    assert_eq!(r["payload"]["unread"], 0);
    eventually("the position to expire after read_state_ttl", || async {
        let (_, u) = api_get(node, "/api/unread/u5?channels=brief:u5").await;
        (u["channels"][0]["read_offset"] == 0 && u["channels"][0]["unread"] == 1).then_some(())
    })
    .await;
}

async fn receipts_count_once_per_user(b: Backend) {
    let d = b.start(2, NS).await;
    let (a, other) = (&d.nodes[0], d.nodes.last().expect("node"));
    let (mut one, _) = Client::authed(a, "u2").await;
    let (mut two, _) = Client::authed(other, "u2").await;
    for c in [&mut one, &mut two] {
        subscribed(c, "inbox:u2").await;
        subscribed(c, "plain:x").await;
    }
    for i in 1..=2 {
        a.publish("inbox:u2", "message", json!({"i": i})).await;
    }
    for c in [&mut one, &mut two] {
        for _ in 0..2 {
            c.until("message").await;
        }
    }
    one.send(json!({"type": "received", "payload": {"channel": "inbox:u2", "offset": 1}}))
        .await;
    one.send(json!({"type": "received", "payload": {"channel": "inbox:u2", "offsets": [1, 2]}}))
        .await;
    two.send(json!({"type": "received", "payload": {"channel": "inbox:u2", "offsets": [2, 1]}}))
        .await;
    eventually("one receipt per (user, offset)", || async {
        (total(&d, "switchyard_receipts_total").await == 2.0).then_some(())
    })
    .await;
    // Bad input: the SPEC's error, and no event.
    let e = one
        .request(
            json!({"type": "received", "payload": {"channel": "inbox:u2", "offset": 9}}),
            "r1",
        )
        .await;
    assert_eq!(
        e["payload"]["code"], "invalid_payload",
        "an offset that does not exist"
    );
    let e = one
        .request(
            json!({"type": "received", "payload": {"channel": "plain:x", "offset": 1}}),
            "r2",
        )
        .await;
    assert_eq!(
        e["payload"]["code"], "invalid_payload",
        "a namespace without receipts"
    );
    let (mut three, _) = Client::authed(a, "u2").await;
    let e = three
        .request(
            json!({"type": "received", "payload": {"channel": "inbox:u2", "offset": 1}}),
            "r3",
        )
        .await;
    assert_eq!(e["payload"]["code"], "not_subscribed");
    // A receipt from a device that the events have already been written for: still 2.
    frames_until_marker(a, &mut one, "inbox:u2").await;
    assert_eq!(total(&d, "switchyard_receipts_total").await, 2.0);
    if let Some(events) = d.events().await {
        let mut got: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e["event"] == "received")
            .map(|e| (e["user_id"].as_str(), e["data"].as_str()))
            .collect();
        got.sort();
        assert_eq!(got, [("u2", r#"{"offset":1}"#), ("u2", r#"{"offset":2}"#)]);
    }
}

async fn fallbacks_fire_once_unless_confirmed(b: Backend) {
    let d = b.start(3, NS).await;
    let node = d.node();
    // Refused before anything is published, saying why.
    for (body, why) in [
        (
            json!({"channel": "public:x", "type": "t", "payload": {}, "fallback": {"after": "1s"}}),
            "receipts",
        ),
        (
            json!({"channel": "plain:x", "type": "t", "payload": {}, "fallback": {"after": "1s"}}),
            "receipts",
        ),
        (
            json!({"channel": "user:u9", "type": "t", "payload": {}, "fallback": {"after": "500ms"}}),
            "1s to 7d",
        ),
        (
            json!({"channel": "user:u9", "type": "t", "payload": {}, "fallback": {"after": "8d"}}),
            "1s to 7d",
        ),
    ] {
        let (s, r) = api_post(node, "/api/publish", body).await;
        assert_eq!(s, 400, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(why)),
            "{r}"
        );
    }
    // u8 is online and confirms; u9 is not.
    let (mut u8, _) = Client::authed(d.nodes.last().expect("node"), "u8").await;
    subscribed(&mut u8, "user:u8").await;
    let fallback = json!({"after": "1s", "data": {"push": "Your order shipped"}});
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": "user:u8", "type": "order", "payload": {"id": 1}, "fallback": fallback}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let got = u8.until("order").await;
    u8.send(
        json!({"type": "received", "payload": {"channel": "user:u8", "offset": got["offset"]}}),
    )
    .await;
    let (s, _) = api_post(
        node,
        "/api/publish",
        json!({"channel": "user:u9", "type": "order", "payload": {"id": 2}, "fallback": fallback}),
    )
    .await;
    assert_eq!(s, 200);
    let series = "switchyard_fallbacks_total{outcome=\"undelivered\"}";
    eventually("u9's fallback to fire", || async {
        (total(&d, series).await >= 1.0).then_some(())
    })
    .await;
    // u8's was scheduled first with the same delay: had it fired, it would have by now.
    assert_eq!(
        total(&d, series).await,
        1.0,
        "exactly one, for the unconfirmed one"
    );
    assert_eq!(
        total(&d, "switchyard_fallbacks_total{outcome=\"confirmed\"}").await,
        1.0
    );
    if let Some(events) = d.events().await {
        let fired: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "undelivered")
            .collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0]["channel"].as_str(), fired[0]["user_id"].as_str()),
            ("user:u9", "u9")
        );
        let data: Value = serde_json::from_str(&fired[0]["data"]).expect("data");
        assert_eq!(data["offset"], 1);
        assert_eq!(
            (data["type"].as_str(), &data["payload"]),
            (Some("order"), &json!({"id": 2}))
        );
        assert_eq!(data["data"]["push"], "Your order shipped");
    }
}

async fn idempotent_publishing_across_nodes(b: Backend) {
    let d = b.start(2, NS).await;
    let (a, other) = (&d.nodes[0], d.nodes.last().expect("node"));
    let (mut c, _) = Client::authed(a, "u3").await;
    subscribed(&mut c, "plain:idem").await;
    let body = json!({"channel": "plain:idem", "type": "order", "payload": {"n": 1}, "idempotency_key": "order-7-shipped"});
    let (s, first) = api_post(a, "/api/publish", body.clone()).await;
    assert_eq!(s, 200);
    let (s, again) = api_post(other, "/api/publish", body.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        (&again["offset"], &again["epoch"]),
        (&first["offset"], &first["epoch"])
    );
    let frames = frames_until_marker(a, &mut c, "plain:idem").await;
    assert_eq!(
        frames.iter().filter(|m| m["type"] == "order").count(),
        1,
        "delivered once"
    );
    let (_, h) = api_get(a, "/api/history/plain:idem").await;
    assert_eq!(
        h["publications"].as_array().map(Vec::len),
        Some(2),
        "stored once (and the marker)"
    );
    let long = json!({"channel": "plain:idem", "type": "order", "payload": {}, "idempotency_key": "k".repeat(129)});
    assert_eq!(api_post(a, "/api/publish", long).await.0, 400);
    // Through FCALL too: the same key answers the first offset, flagged.
    if let Some(out) = d.cli(&[
        "FCALL",
        "switchyard_publish",
        "1",
        "switchyard:{plain:fc}",
        r#"{"type":"t","payload":{}}"#,
        "10",
        "3600",
        "svc-1",
        "60",
    ]) {
        let again = d
            .cli(&[
                "FCALL",
                "switchyard_publish",
                "1",
                "switchyard:{plain:fc}",
                r#"{"type":"t","payload":{}}"#,
                "10",
                "3600",
                "svc-1",
                "60",
            ])
            .unwrap_or_default();
        let first: Vec<&str> = out.lines().collect();
        let second: Vec<&str> = again.lines().collect();
        assert_eq!(first[..2], second[..2], "same offset and epoch");
        assert_eq!(second.get(2), Some(&"1"), "flagged duplicate: {again}");
    }
    // Remembered for api.idempotency_window (2 s here), then a new publication.
    let fresh = eventually("the key to be forgotten after the window", || {
        let body = body.clone();
        async move {
            let (_, r) = api_post(a, "/api/publish", body).await;
            (r["duplicate"] != true).then_some(r)
        }
    })
    .await;
    assert!(fresh["offset"].as_u64() > first["offset"].as_u64());
}

every_broker!(
    read_state_agrees_on_every_device,
    read_positions_expire,
    receipts_count_once_per_user,
    fallbacks_fire_once_unless_confirmed,
    idempotent_publishing_across_nodes,
);

/// The node that accepted the publish dies at once (SIGKILL): the deadline lives in
/// Redis, and another node fires it, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_fires_once_after_the_accepting_node_is_killed() {
    let redis = tokio::task::block_in_place(testkit::redis::RedisServer::start);
    let top = format!("broker = \"redis\"\nredis.url = \"{}\"", redis.url());
    let tables = NS.replace("api.idempotency_window = \"2s\"", "");
    let a = NodeProcess::start(&format!("{top}\nnode_id = \"a\""), &tables).await;
    let _b = NodeProcess::start(&format!("{top}\nnode_id = \"b\""), &tables).await;
    let _c = NodeProcess::start(&format!("{top}\nnode_id = \"c\""), &tables).await;
    let r = http_client()
        .post(format!("http://{}/api/publish", a.addr))
        .header("X-API-Key", API_KEY)
        .json(&json!({"channel": "user:u7", "type": "order", "payload": {}, "fallback": {"after": "1s"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    a.signal("KILL");
    let count = || {
        let out = redis.cli(&["XRANGE", "switchyard:events", "-", "+"]);
        out.lines().filter(|l| *l == "undelivered").count()
    };
    eventually("another node to fire it", || async {
        (tokio::task::block_in_place(count) >= 1).then_some(())
    })
    .await;
    // Both survivors keep claiming due fallbacks every 200 ms: a second copy would show
    // once they have each run several times more (absence check, bounded wait).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(tokio::task::block_in_place(count), 1, "exactly once");
}
