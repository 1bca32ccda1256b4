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
