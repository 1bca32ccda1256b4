//! Seed 004 (live commerce) on one node: anonymous viewers with server-issued session
//! ids and an admin with a JWT role in `stream:<id>`; the viewer count from counting
//! presence (`presence_count` pushes, `presence` with a sample, SPEC 16.5); chat
//! with history on join; pinned products from the API; WebRTC offer/answer/ICE relayed
//! with `to`; support chat customer → staff and staff → `session:<id>`.

use serde_json::json;
use testkit::*;

async fn anonymous(node: &TestNode) -> (Client, String) {
    let mut c = Client::connect(&node.ws_url("/ws")).await;
    let ok = c.expect("auth_success").await;
    assert_eq!(ok["payload"]["anonymous"], true);
    let sid = ok["payload"]["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    (c, sid)
}

/// Waits for a pushed `presence_count` of `n` viewers (no join/leave on the way).
async fn pushed_count(c: &mut Client, n: u64) {
    loop {
        let m = c.next_json().await.expect("open");
        assert!(m["type"] != "join" && m["type"] != "leave", "{m}");
        if m["type"] == "presence_count" && m["payload"]["count"] == n {
            assert_eq!(m["payload"]["channel"], "stream:s1");
            return;
        }
    }
}

/// Asks for the viewer count until it is `n`: counts are reported in batches, so a
/// viewer who just joined shows within a moment.
async fn viewer_count(c: &mut Client, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let p = c
            .request(
                json!({"type": "presence", "payload": {"channel": "stream:s1"}}),
                "viewers",
            )
            .await;
        if p["payload"]["count"] == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "viewer count {p}, not {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_stream_viewers_chat_pins_and_signaling() {
    let node = TestNode::start_with("", "auth.allow_anonymous = true").await;
    let admin_token = token_with("admin-1", |c| {
        c.roles = vec!["admin".into()];
        c.info = Some(json!({"username": "Admin", "isAdmin": true}));
    });
    let mut admin = Client::connect(&node.ws_url(&format!("/ws?token={admin_token}"))).await;
    admin.expect("auth_success").await;
    admin.subscribe("stream:s1").await;
    let (mut v1, sid1) = anonymous(&node).await;
    v1.subscribe("stream:s1").await;
    viewer_count(&mut admin, 2).await;

    // Chat before the second viewer arrives.
    for text in ["Welcome!", "Today: serums"] {
        let a = admin
            .request(
                json!({"type": "chat_message", "channel": "stream:s1", "payload": {"text": text}}),
                text,
            )
            .await;
        assert!(a["payload"]["offset"].as_u64().is_some());
    }
    let (mut v2, sid2) = anonymous(&node).await;
    v2.subscribe("stream:s1").await;
    let h = v2
        .request(
            json!({"type": "history", "payload": {"channel": "stream:s1"}}),
            "h",
        )
        .await;
    let texts: Vec<&str> = h["payload"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["payload"]["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        vec!["Welcome!", "Today: serums"],
        "chat history on join"
    );
    viewer_count(&mut v2, 3).await;
    pushed_count(&mut admin, 3).await;

    // Viewers chat too; `from` carries their session id, not a user id.
    v2.send(
        json!({"type": "chat_message", "channel": "stream:s1", "payload": {"text": "love it"}}),
    )
    .await;
    let m = loop {
        let m = v1.until("chat_message").await;
        if m["payload"]["text"] == "love it" {
            break m;
        }
    };
    assert_eq!(m["from"]["session_id"], sid2.as_str());

    // Pinned products from the backend.
    node.publish(
        "stream:s1",
        "pinned_products_updated",
        json!({"pinnedProducts": [{"id": "p1", "price": 49.99}]}),
    )
    .await;
    for c in [&mut v1, &mut v2] {
        assert_eq!(
            c.until("pinned_products_updated").await["payload"]["pinnedProducts"][0]["id"],
            "p1"
        );
    }

    // WebRTC signaling with `to`: admin → viewer 1 (session id), viewer 1 → admin (user id).
    admin.send(json!({"type": "webrtc_offer", "channel": "stream:s1", "to": sid1, "payload": {"type": "offer", "sdp": "o"}})).await;
    let offer = v1.until("webrtc_offer").await;
    assert_eq!(offer["payload"]["sdp"], "o");
    v1.send(json!({"type": "webrtc_answer", "channel": "stream:s1", "to": "admin-1", "payload": {"type": "answer", "sdp": "a"}})).await;
    assert_eq!(
        admin.until("webrtc_answer").await["from"]["session_id"],
        sid1.as_str()
    );
    v1.send(json!({"type": "webrtc_ice_candidate", "channel": "stream:s1", "to": "admin-1", "payload": {"candidate": "c", "sdpMLineIndex": 0}})).await;
    assert_eq!(
        admin.until("webrtc_ice_candidate").await["payload"]["candidate"],
        "c"
    );
    // Viewer 2 saw none of the signaling: the next thing it gets is a marker.
    node.publish("stream:s1", "marker", json!({})).await;
    loop {
        let m = v2.next_json().await.expect("message");
        assert!(
            !m["type"].as_str().unwrap_or_default().starts_with("webrtc"),
            "signaling leaked: {m}"
        );
        if m["type"] == "marker" {
            break;
        }
    }
    // A viewer leaves: the count follows, pushed and asked.
    drop(v2);
    pushed_count(&mut admin, 2).await;
    let (_, p) = api_get(&node, "/api/presence/stream:s1").await;
    assert_eq!(
        (p["count"].as_u64(), p["users"].as_u64()),
        (Some(2), Some(2)),
        "{p}"
    );
    assert!(!p["clients"].as_array().expect("a sample").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn support_chat_customer_to_staff_and_staff_to_session() {
    let node = TestNode::start_with("", "auth.allow_anonymous = true").await;
    let (mut customer, sid) = anonymous(&node).await;
    let support = format!("support:{sid}");
    customer.subscribe(&support).await;
    let staff_token = token_with("staff-1", |c| c.roles = vec!["admin".into()]);
    let mut staff = Client::connect(&node.ws_url(&format!("/ws?token={staff_token}"))).await;
    staff.expect("auth_success").await;
    staff.subscribe(&support).await;
    // Another anonymous customer may not read this support chat.
    let (mut stranger, _) = anonymous(&node).await;
    let e = stranger
        .request(
            json!({"type": "subscribe", "payload": {"channel": support}}),
            "peek",
        )
        .await;
    assert_eq!(e["payload"]["code"], "forbidden");

    let ack = customer
        .request(json!({"type": "customer_message", "channel": support, "payload": {"message": "I need help with my order"}}), "c1")
        .await;
    assert_eq!(
        ack["payload"]["offset"], 1,
        "support history keeps the conversation"
    );
    let m = staff.until("customer_message").await;
    assert_eq!(m["payload"]["message"], "I need help with my order");
    assert_eq!(m["from"]["session_id"], sid.as_str());

    // Staff reply through the backend to the customer's own session channel.
    node.publish(
        &format!("session:{sid}"),
        "staff_reply",
        json!({"message": "I'll help you with that right away!"}),
    )
    .await;
    assert_eq!(
        customer.until("staff_reply").await["payload"]["message"],
        "I'll help you with that right away!"
    );
    // Or in the support channel itself (publish rule owner or role:admin).
    staff.send(json!({"type": "staff_message", "channel": support, "payload": {"content": "Order found"}})).await;
    assert_eq!(
        customer.until("staff_message").await["payload"]["content"],
        "Order found"
    );
    let (_, h) = api_get(&node, &format!("/api/history/{support}")).await;
    assert_eq!(h["publications"].as_array().map(Vec::len), Some(2));
}
