//! SPEC section 5 on the memory broker: history bounds, recovery with concurrent
//! publishers (exact sequence, no gap, no duplicate), presence with join/leave,
//! client publish (`from`, ack, volatile, `to`).

use std::collections::HashSet;

use serde_json::{json, Value};
use testkit::*;

const NS: &str = r#"
[namespaces.feed]
subscribe = "any"
history_size = 1000
history_ttl = "1h"
[namespaces.small]
subscribe = "any"
history_size = 3
history_ttl = "1h"
[namespaces.brief]
subscribe = "any"
history_size = 10
history_ttl = "1s"
"#;

async fn node() -> TestNode {
    TestNode::start_with("", NS).await
}

fn offsets(pubs: &Value) -> Vec<u64> {
    pubs.as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn history_offsets_epoch_size_and_ttl() {
    let node = node().await;
    for i in 1..=5 {
        let r = node.publish("small:a", "e", json!({"i": i})).await;
        assert_eq!(r["offset"], i);
    }
    let (mut c, _) = Client::authed(&node, "h").await;
    let h = c
        .request(
            json!({"type": "history", "payload": {"channel": "small:a"}}),
            "h1",
        )
        .await;
    assert_eq!(h["type"], "history");
    assert_eq!(h["payload"]["channel"], "small:a");
    assert_eq!(
        offsets(&h["payload"]["publications"]),
        vec![3, 4, 5],
        "bounded by history_size"
    );
    assert_eq!(h["payload"]["offset"], 5);
    let h = c
        .request(
            json!({"type": "history", "payload": {"channel": "small:a", "limit": 2}}),
            "h2",
        )
        .await;
    assert_eq!(
        offsets(&h["payload"]["publications"]),
        vec![4, 5],
        "limit keeps the newest"
    );
    let h = c
        .request(
            json!({"type": "history", "payload": {"channel": "small:a", "since": 4}}),
            "h3",
        )
        .await;
    assert_eq!(offsets(&h["payload"]["publications"]), vec![5]);

    let first = node.publish("brief:a", "e", json!(1)).await;
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    // TTL: expired publications leave the history; offsets and epoch carry on, so a
    // client whose gap expired is told `recovered: false`.
    eventually("history_ttl to expire the publication", || async {
        let (_, h) = api_get(&node, "/api/history/brief:a").await;
        (h["publications"] == json!([])).then_some(())
    })
    .await;
    let again = node.publish("brief:a", "e", json!(2)).await;
    assert_eq!(again["offset"], 2, "offsets never go backwards");
    assert_eq!(again["epoch"], epoch.as_str());
    let r = c
        .request(json!({"type": "subscribe", "payload": {"channel": "brief:a", "since": {"offset": 0, "epoch": epoch}}}), "late")
        .await;
    assert_eq!(
        r["payload"]["recovered"], false,
        "offset 1 expired: the gap cannot be filled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_during_concurrent_publishing_is_exact() {
    let node = node().await;
    let (mut c, _) = Client::authed(&node, "r").await;
    let s = c.subscribe("feed:live").await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=20 {
        node.publish("feed:live", "tick", json!({"i": i})).await;
    }
    let mut last = 0;
    while last < 20 {
        let m = c.until("tick").await;
        last = m["offset"].as_u64().expect("offset");
    }
    c.close().await;

    // Publishers keep going while the client comes back with `since`.
    const TOTAL: u64 = 600;
    let addr = node.addr;
    let publisher = tokio::spawn(async move {
        let http = http_client();
        for i in 21..=TOTAL {
            let r = http
                .post(format!("http://{addr}/api/publish"))
                .header("X-API-Key", API_KEY)
                .json(&json!({"channel": "feed:live", "type": "tick", "payload": {"i": i}}))
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 200);
        }
    });
    // Let some publications land before the client returns.
    eventually("the feed to move on", || async {
        let (_, h) = api_get(&node, "/api/history/feed:live?limit=1").await;
        (h["offset"].as_u64() >= Some(80)).then_some(())
    })
    .await;
    let (mut c, _) = Client::authed(&node, "r").await;
    c.send(json!({"type": "subscribe", "id": "re", "payload": {"channel": "feed:live", "since": {"offset": 20, "epoch": epoch}}}))
        .await;
    let sub = c.expect("subscribed").await;
    assert_eq!(sub["id"], "re");
    assert_eq!(sub["payload"]["recovered"], true);
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < TOTAL {
        let m = c.next_json().await.expect("publication");
        if m["type"] == "tick" {
            seen.push(m["offset"].as_u64().expect("offset"));
            assert_eq!(m["payload"]["i"], m["offset"], "payload matches its offset");
        }
    }
    publisher.await.expect("publisher");
    let expected: Vec<u64> = (21..=TOTAL).collect();
    assert_eq!(
        seen, expected,
        "every missed and live publication once, in order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_refused_when_history_cannot_fill_the_gap() {
    let node = node().await;
    let (mut c, _) = Client::authed(&node, "x").await;
    let s = c.subscribe("small:b").await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=6 {
        node.publish("small:b", "e", json!(i)).await;
    }
    let (mut d, _) = Client::authed(&node, "y").await;
    let cases = [
        (
            json!({"offset": 1, "epoch": epoch}),
            false,
            "gap older than history (size 3)",
        ),
        (json!({"offset": 3, "epoch": epoch}), true, "gap still kept"),
        (
            json!({"offset": 2, "epoch": "other"}),
            false,
            "epoch differs",
        ),
        (
            json!({"offset": 99, "epoch": epoch}),
            false,
            "offset above the newest: rolled back",
        ),
    ];
    for (i, (since, recovered, why)) in cases.into_iter().enumerate() {
        let r = d
            .request(
                json!({"type": "subscribe", "payload": {"channel": "small:b", "since": since}}),
                &format!("c{i}"),
            )
            .await;
        assert_eq!(r["payload"]["recovered"], recovered, "{why}: {r}");
        assert_eq!(r["payload"]["offset"], 6);
        if recovered {
            for o in 4..=6 {
                assert_eq!(d.expect("e").await["offset"], o);
            }
        }
        d.request(
            json!({"type": "unsubscribe", "payload": {"channel": "small:b"}}),
            &format!("u{i}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_join_leave_and_cleanup() {
    let node = node().await;
    let t = |u: &str| {
        token_with(u, |c| {
            c.allow = vec!["chat:*".into()];
            c.info = Some(json!({"name": u}));
        })
    };
    let mut a = Client::connect(&node.ws_url(&format!("/ws?token={}", t("ann")))).await;
    a.expect("auth_success").await;
    a.subscribe("chat:c1").await;
    let mut b = Client::connect(&node.ws_url(&format!("/ws?token={}", t("bob")))).await;
    b.expect("auth_success").await;
    b.subscribe("chat:c1").await;
    let j = a.until("join").await;
    let j = if j["payload"]["user_id"] == "ann" {
        a.until("join").await
    } else {
        j
    };
    assert_eq!(j["channel"], "chat:c1");
    assert_eq!(j["payload"]["user_id"], "bob");
    assert_eq!(j["payload"]["info"]["name"], "bob");
    let p = a
        .request(
            json!({"type": "presence", "payload": {"channel": "chat:c1"}}),
            "p",
        )
        .await;
    assert_eq!(p["payload"]["count"], 2);
    assert_eq!(p["payload"]["users"], 2);
    let names: HashSet<String> = p["payload"]["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["info"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, HashSet::from(["ann".to_owned(), "bob".to_owned()]));
    assert!(p["payload"]["clients"][0]["conn_id"].as_str().is_some());
    b.request(
        json!({"type": "unsubscribe", "payload": {"channel": "chat:c1"}}),
        "u",
    )
    .await;
    let l = a.until("leave").await;
    assert_eq!(l["payload"]["user_id"], "bob");
    let (_, p) = api_get(&node, "/api/presence/chat:c1").await;
    assert_eq!(p["count"], 1, "removed on unsubscribe");
    b.subscribe("chat:c1").await;
    a.until("join").await;
    drop(b);
    let l = a.until("leave").await;
    assert_eq!(l["payload"]["user_id"], "bob");
    let (_, p) = api_get(&node, "/api/presence/chat:c1").await;
    assert_eq!(p["count"], 1, "removed on disconnect");
    // Presence is not history: join/leave got no offsets and are not stored.
    let (_, h) = api_get(&node, "/api/history/chat:c1").await;
    assert_eq!(h["publications"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn volatile_and_targeted_publications_are_not_stored() {
    let node = TestNode::start_with(
        "",
        "auth.allow_anonymous = true\n[namespaces.room]\nsubscribe = \"any\"\npublish = \"subscribers\"",
    )
    .await;
    let mut viewer = Client::connect(&node.ws_url("/ws")).await;
    let v = viewer.expect("auth_success").await;
    let viewer_sid = v["payload"]["session_id"].as_str().expect("sid").to_owned();
    viewer.subscribe("stream:s1").await;
    let mut other = Client::connect(&node.ws_url("/ws")).await;
    other.expect("auth_success").await;
    other.subscribe("stream:s1").await;
    let (mut host, _) = Client::authed(&node, "host").await;
    host.subscribe("stream:s1").await;

    let ack = host
        .request(
            json!({"type": "typing", "channel": "stream:s1", "volatile": true, "payload": {}}),
            "t",
        )
        .await;
    assert_eq!(ack["type"], "ack");
    assert!(
        ack["payload"].get("offset").is_none(),
        "volatile: no offset"
    );
    assert!(viewer.until("typing").await.get("offset").is_none());
    let ack = host
        .request(json!({"type": "webrtc_offer", "channel": "stream:s1", "to": viewer_sid, "payload": {"sdp": "v=0"}}), "o")
        .await;
    assert!(
        ack["payload"].get("offset").is_none(),
        "targeted: no offset"
    );
    let offer = viewer.until("webrtc_offer").await;
    assert_eq!(offer["payload"]["sdp"], "v=0");
    assert_eq!(offer["from"]["user_id"], "host");
    let stored = host
        .request(
            json!({"type": "chat", "channel": "stream:s1", "payload": {"t": "hi"}}),
            "c",
        )
        .await;
    assert_eq!(stored["payload"]["offset"], 1);
    // `other` sees the typing and the chat, never the offer meant for the viewer.
    let mut types = Vec::new();
    while types.last() != Some(&"chat".to_owned()) {
        let m = other.next_json().await.expect("message");
        types.push(m["type"].as_str().unwrap_or_default().to_owned());
    }
    assert!(!types.contains(&"webrtc_offer".to_owned()), "{types:?}");
    let (_, h) = api_get(&node, "/api/history/stream:s1").await;
    assert_eq!(offsets(&h["publications"]), vec![1]);
    // Without allow_to, `to` is refused and reaches nobody.
    host.subscribe("room:r").await;
    other.subscribe("room:r").await;
    let e = host
        .request(
            json!({"type": "x", "channel": "room:r", "to": viewer_sid, "payload": {}}),
            "n",
        )
        .await;
    assert_eq!(e["payload"]["code"], "forbidden");
    host.request(
        json!({"type": "after", "channel": "room:r", "payload": {}}),
        "a",
    )
    .await;
    assert_eq!(
        other.until("after").await["type"],
        "after",
        "the refused one never arrived first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribing_again_with_since_replays_like_a_first_subscribe() {
    let node = node().await;
    let (mut c, _) = Client::authed(&node, "again").await;
    let s = c.subscribe("feed:again").await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=3 {
        node.publish("feed:again", "e", json!(i)).await;
    }
    for o in 1..=3 {
        assert_eq!(c.expect("e").await["offset"], o);
    }
    c.send(json!({"type": "subscribe", "id": "r", "payload": {"channel": "feed:again", "since": {"offset": 1, "epoch": epoch}}}))
        .await;
    let r = c.expect("subscribed").await;
    assert_eq!(r["payload"]["recovered"], true);
    assert_eq!(r["payload"]["offset"], 3);
    assert_eq!(c.expect("e").await["offset"], 2);
    assert_eq!(c.expect("e").await["offset"], 3);
    node.publish("feed:again", "e", json!(4)).await;
    assert_eq!(
        c.expect("e").await["offset"],
        4,
        "still subscribed once, no duplicate"
    );
}
