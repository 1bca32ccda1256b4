//! SPEC section 2 over real sockets: envelope, every reserved type, `id` echo on every
//! direct reply, error codes, and `disconnect` before a server-initiated close.

use serde_json::json;
use testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn envelope_and_id_echo_on_every_reply() {
    let node = TestNode::start().await;
    let (mut c, ok) = Client::authed(&node, "42").await;
    assert_eq!(ok["payload"]["user_id"], "42");
    assert!(
        ok["payload"]["session_id"].is_null(),
        "token from the start: session_id null"
    );
    assert_eq!(ok["payload"]["node"], "test-node");
    assert!(ok["payload"]["conn_id"].as_str().is_some());
    assert_eq!(ok["payload"]["channels"], json!(["user:42"]));
    assert!(ok["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('T')));

    let pong = c.request(json!({"type": "ping"}), "p1").await;
    assert_eq!(pong["type"], "pong");
    let sub = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "public:news"}}),
            "s1",
        )
        .await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["payload"]["channel"], "public:news");
    let hist = c
        .request(
            json!({"type": "history", "payload": {"channel": "order:1"}}),
            "h1",
        )
        .await;
    assert_eq!(hist["type"], "error", "order: needs a token: {hist}");
    assert_eq!(hist["payload"]["code"], "forbidden");
    let unsub = c
        .request(
            json!({"type": "unsubscribe", "payload": {"channel": "public:news"}}),
            "u1",
        )
        .await;
    assert_eq!(unsub["type"], "unsubscribed");
    assert_eq!(unsub["payload"]["channel"], "public:news");
    let again = c
        .request(
            json!({"type": "unsubscribe", "payload": {"channel": "public:news"}}),
            "u2",
        )
        .await;
    assert_eq!(again["payload"]["code"], "not_subscribed");
    let unknown = c.request(json!({"type": "dance"}), "x1").await;
    assert_eq!(unknown["type"], "error");
    assert_eq!(unknown["payload"]["code"], "unknown_type");
    let reserved = c
        .request(json!({"type": "pong", "channel": "public:news"}), "x2")
        .await;
    assert_eq!(reserved["payload"]["code"], "reserved_type");
    let bad = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": 5}}),
            "x3",
        )
        .await;
    assert_eq!(bad["payload"]["code"], "invalid_payload");
    let invalid = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "no spaces:x y"}}),
            "x4",
        )
        .await;
    assert_eq!(invalid["payload"]["code"], "invalid_channel");
    let unconfigured = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "nowhere:1"}}),
            "x5",
        )
        .await;
    assert_eq!(unconfigured["payload"]["code"], "invalid_channel");
    let forbidden = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "user:43"}}),
            "x6",
        )
        .await;
    assert_eq!(forbidden["payload"]["code"], "forbidden");
    let renew = c
        .request(
            json!({"type": "auth", "payload": {"token": token("42")}}),
            "a1",
        )
        .await;
    assert_eq!(renew["type"], "auth_success");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_get_invalid_message_and_connection_stays() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "1").await;
    for text in [
        "not json",
        "[1,2,3]",
        "{}",
        r#"{"type": 7}"#,
        "\"str\"",
        "{\"type\":\"ping\"",
    ] {
        c.send_text(text).await;
        let e = c.expect("error").await;
        assert_eq!(e["payload"]["code"], "invalid_message", "for {text}: {e}");
    }
    // A huge number and unknown fields are fine.
    c.send_text(
        r#"{"type":"ping","id":"n","extra":{"x":1e999999},"big":123456789012345678901234567890}"#,
    )
    .await;
    let e = c.next_json().await.expect("reply");
    assert!(
        e["type"] == "pong" || e["payload"]["code"] == "invalid_message",
        "{e}"
    );
    let pong = c.request(json!({"type": "ping"}), "still-open").await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn publications_carry_channel_timestamp_and_payload() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "7").await;
    let r = node
        .publish(
            "user:7",
            "notification",
            json!({"title": "hi", "n": 12345678901234567890u64}),
        )
        .await;
    assert!(r.get("offset").is_none(), "user: keeps no history: {r}");
    let p = c.expect("notification").await;
    assert_eq!(p["channel"], "user:7");
    assert_eq!(p["payload"]["title"], "hi");
    assert_eq!(p["payload"]["n"].to_string(), "12345678901234567890");
    assert!(p["timestamp"].as_str().is_some());
    assert!(p.get("id").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_publish_ack_and_from_stamped_by_server() {
    let node = TestNode::start().await;
    let chat = "chat:room1";
    let mut a = Client::connect(&node.ws_url(&format!(
        "/ws?token={}",
        token_with("alice", |c| c.channels = vec![chat.into()])
    )))
    .await;
    a.expect("auth_success").await;
    let mut b = Client::connect(&node.ws_url(&format!(
        "/ws?token={}",
        token_with("bob", |c| c.channels = vec![chat.into()])
    )))
    .await;
    b.expect("auth_success").await;
    // Each sees its own join, then alice sees bob's.
    let j = a.until("join").await;
    assert_eq!(j["payload"]["user_id"], "alice");
    let j = a.until("join").await;
    assert_eq!(j["payload"]["user_id"], "bob");
    assert!(j.get("offset").is_none(), "join/leave are not stored");
    a.send(json!({"type": "chat_message", "id": "m1", "channel": chat, "payload": {"text": "hi"}, "from": {"user_id": "mallory"}}))
        .await;
    // The sender gets both the ack and its own publication (in either order).
    let (first, second) = (
        a.next_json().await.expect("reply"),
        a.next_json().await.expect("reply"),
    );
    let (ack, own) = if first["type"] == "ack" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "m1");
    assert_eq!(ack["payload"]["offset"], 1);
    assert_eq!(own["type"], "chat_message");
    assert_eq!(own["from"]["user_id"], "alice");
    for c in [&mut b] {
        let m = c.until("chat_message").await;
        assert_eq!(m["from"]["user_id"], "alice", "server-made from: {m}");
        assert_eq!(m["offset"], 1);
        assert!(m.get("id").is_none());
    }
    // Without subscribing, publishing to a `subscribers` namespace is refused.
    let (mut c, _) = Client::authed(&node, "carol").await;
    let e = c
        .request(
            json!({"type": "chat_message", "channel": chat, "payload": {}}),
            "m2",
        )
        .await;
    assert_eq!(e["payload"]["code"], "not_subscribed");
    let e = c
        .request(
            json!({"type": "x", "channel": "public:a", "payload": {}}),
            "m3",
        )
        .await;
    assert_eq!(
        e["payload"]["code"], "forbidden",
        "public: publish is none: {e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_message_precedes_server_close() {
    let node = TestNode::start().await;
    let (mut c, ok) = Client::authed(&node, "9").await;
    let conn_id = ok["payload"]["conn_id"]
        .as_str()
        .expect("conn id")
        .to_owned();
    let (status, _) = api_post(
        &node,
        "/api/disconnect",
        json!({"conn_id": conn_id, "reason": "banned"}),
    )
    .await;
    assert_eq!(status, 200);
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4003));
    let d = closed
        .disconnect
        .expect("disconnect message before the close");
    assert_eq!(d["payload"]["code"], 4003);
    assert_eq!(d["payload"]["reason"], "banned");
    assert_eq!(d["payload"]["reconnect"], false);
}

/// The JavaScript SDK's lists of message types are the server's: one list each, held
/// to the Rust ones here (SPEC 2).
#[test]
fn the_javascript_sdk_knows_every_message_type() {
    let js = std::fs::read_to_string(format!(
        "{}/clients/js/src/protocol.js",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("clients/js/src/protocol.js");
    let list = |name: &str| -> Vec<String> {
        let start = js
            .find(&format!("export const {name} = ["))
            .unwrap_or_else(|| panic!("{name} in protocol.js"));
        let body = &js[start..];
        let body = &body[body.find('[').expect("[") + 1..body.find(']').expect("]")];
        body.split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    assert_eq!(list("SERVER_TYPES"), switchyard::protocol::SERVER_TYPES);
    assert_eq!(list("CLIENT_TYPES"), switchyard::protocol::CLIENT_TYPES);
}

/// An offset a JavaScript client cannot hold (beyond 2^53) or a negative one is
/// `invalid_payload`, never a wrap to "everything" or a 503.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_beyond_2_53_are_invalid_payload() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "u").await;
    for since in [json!(1u64 << 60), json!(-1), json!(9007199254740992u64)] {
        let r = c
            .request(
                json!({"type": "history", "payload": {"channel": "order:1", "since": since}}),
                "h",
            )
            .await;
        assert_eq!(r["payload"]["code"], "invalid_payload", "{since}: {r}");
        let s = c
            .request(
                json!({"type": "subscribe", "payload": {"channel": "public:a", "since": {"offset": since, "epoch": "e"}}}),
                "s",
            )
            .await;
        assert_eq!(s["payload"]["code"], "invalid_payload", "{since}: {s}");
    }
    let (status, _) = api_get(&node, "/api/history/order:1?since=1152921504606846976").await;
    assert_eq!(status, 400);
}
