//! Seed 001 (messaging and notifications) on one node: conversation rooms joined with
//! authorization, join/leave, messages, volatile typing indicators, notifications
//! and unread counts on `user:`, and online presence.

use serde_json::json;
use testkit::*;

fn member(user: &str, conv: &str) -> String {
    // The backend grants the room with a subscription token (authorization on join).
    sub_token(user, &format!("chat:{conv}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_room_messages_typing_and_unread_counts() {
    let node = TestNode::start().await;
    let (mut alice, _) = Client::authed(&node, "alice").await;
    let (mut bob, _) = Client::authed(&node, "bob").await;
    let (mut eve, _) = Client::authed(&node, "eve").await;

    // joinConversation: with the backend's grant; without it, refused.
    for (c, u) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let r = c
            .request(json!({"type": "subscribe", "payload": {"channel": "chat:conv_1", "token": member(u, "conv_1")}}), "join")
            .await;
        assert_eq!(r["type"], "subscribed");
    }
    let r = eve
        .request(
            json!({"type": "subscribe", "payload": {"channel": "chat:conv_1"}}),
            "join",
        )
        .await;
    assert_eq!(r["payload"]["code"], "forbidden");
    let j = loop {
        let j = alice.until("join").await;
        if j["payload"]["user_id"] == "bob" {
            break j;
        }
    };
    assert_eq!(j["channel"], "chat:conv_1");

    // Presence: who is online in the conversation.
    let p = alice
        .request(
            json!({"type": "presence", "payload": {"channel": "chat:conv_1"}}),
            "who",
        )
        .await;
    assert_eq!(p["payload"]["users"], 2);

    // typing / stop_typing are volatile: delivered, never stored.
    alice.send(json!({"type": "typing", "channel": "chat:conv_1", "volatile": true, "payload": {"conversationId": "conv_1"}})).await;
    let t = bob.until("typing").await;
    assert_eq!(t["from"]["user_id"], "alice");
    alice.send(json!({"type": "stop_typing", "channel": "chat:conv_1", "volatile": true, "payload": {}})).await;
    bob.until("stop_typing").await;

    // sendMessage: stored with an offset, delivered to both members.
    let ack = alice
        .request(json!({"type": "new_message", "channel": "chat:conv_1", "payload": {"content": "Hi Bob"}}), "m1")
        .await;
    assert_eq!(ack["payload"]["offset"], 1);
    let m = bob.until("new_message").await;
    assert_eq!(m["payload"]["content"], "Hi Bob");
    assert_eq!(m["from"]["user_id"], "alice");
    let (_, h) = api_get(&node, "/api/history/chat:conv_1").await;
    assert_eq!(
        h["publications"].as_array().map(Vec::len),
        Some(1),
        "typing not stored"
    );

    // Notifications and the unread count go from the backend to bob's user channel.
    node.publish(
        "user:bob",
        "notification",
        json!({"title": "New message from alice"}),
    )
    .await;
    node.publish("user:bob", "unread_count", json!(3)).await;
    assert_eq!(
        bob.until("notification").await["payload"]["title"],
        "New message from alice"
    );
    assert_eq!(bob.until("unread_count").await["payload"], 3);

    // leaveConversation.
    bob.request(
        json!({"type": "unsubscribe", "payload": {"channel": "chat:conv_1"}}),
        "leave",
    )
    .await;
    let l = alice.until("leave").await;
    assert_eq!(l["payload"]["user_id"], "bob");
}

/// Seed 001's navbar badge (`useRealtimeNotifications().unreadCount`): one `unread`
/// call answers every conversation with a read position, without subscribing to any
/// of them, and it agrees with what the other device marked read.
#[tokio::test(flavor = "multi_thread")]
async fn seed_001_navbar_badge_from_one_unread_call() {
    let node = TestNode::start_with(
        "",
        "[namespaces.chat]\nread_state = true\nhistory_size = 100\nhistory_ttl = \"7d\"",
    )
    .await;
    // The backend lets Alice into her conversations (the `allow` claim); she read
    // conv_1 and conv_2 up to some point on her laptop.
    let alice = token_with("alice", |c| c.allow = vec!["chat:*".into()]);
    let connect = || async {
        let mut c = Client::connect(&node.ws_url(&format!("/ws?token={alice}"))).await;
        c.expect("auth_success").await;
        c
    };
    let mut laptop = connect().await;
    for conv in ["conv_1", "conv_2", "conv_3"] {
        for i in 0..3 {
            node.publish(&format!("chat:{conv}"), "message", json!({"i": i}))
                .await;
        }
    }
    for (conv, upto) in [("conv_1", 3), ("conv_2", 1)] {
        let r = laptop
            .request(
                json!({"type": "mark_read", "payload": {"channel": format!("chat:{conv}"), "offset": upto}}),
                conv,
            )
            .await;
        assert_eq!(r["type"], "read", "{r}");
    }
    node.publish("chat:conv_1", "message", json!({"i": 3}))
        .await;
    // The phone's navbar: one call, no subscription.
    let mut phone = connect().await;
    let u = phone.request(json!({"type": "unread"}), "badge").await;
    assert_eq!(
        u["payload"]["channels"],
        json!([
            {"channel": "chat:conv_1", "offset": 4, "read_offset": 3, "unread": 1},
            {"channel": "chat:conv_2", "offset": 3, "read_offset": 1, "unread": 2}
        ]),
        "conversations with a read position; conv_3 was never opened"
    );
    let badge: u64 = u["payload"]["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .filter_map(|c| c["unread"].as_u64())
        .sum();
    assert_eq!(badge, 3);
    let (_, subs) = api_get(&node, "/api/channels?prefix=chat:").await;
    assert_eq!(
        subs["channels"],
        json!([]),
        "nothing subscribed for the badge"
    );
}
