//! SPEC section 7 and 5.6: every limit and kind of bad input, over real sockets, and
//! the slow-consumer policy (a stalled reader never holds up a fast one).

use std::time::Duration;

use serde_json::json;
use testkit::raw::{Frame, RawClient};
use testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn oversize_frame_closes_1009_after_disconnect() {
    let node = TestNode::start_with("", "limits.max_message_size = 1000").await;
    let mut c = RawClient::connect(node.addr, &format!("/ws?token={}", token("1")), None).await;
    c.send_text(&"x".repeat(1001)).await;
    let (code, texts) = c.until_close().await;
    assert_eq!(code, Some(1009));
    let last: serde_json::Value =
        serde_json::from_str(texts.last().expect("disconnect")).expect("json");
    assert_eq!(last["type"], "disconnect");
    assert_eq!(last["payload"]["reason"], "message_too_big");
    assert_eq!(last["payload"]["reconnect"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_closes_1007_and_binary_gets_an_error() {
    let node = TestNode::start().await;
    let mut c = RawClient::connect(node.addr, &format!("/ws?token={}", token("1")), None).await;
    c.send_frame(0x2, &[0, 159, 146, 150]).await;
    loop {
        match c.next_frame().await.expect("frame") {
            Frame::Text(t) if t.contains("invalid_message") => break,
            Frame::Text(_) | Frame::Ping => {}
            other => panic!("expected an error for the binary frame, got {other:?}"),
        }
    }
    c.send_text(r#"{"type":"ping","id":"after-binary"}"#).await;
    loop {
        match c.next_frame().await.expect("frame") {
            Frame::Text(t) if t.contains("after-binary") => break,
            Frame::Text(_) | Frame::Ping => {}
            other => panic!("connection should stay open after a binary frame: {other:?}"),
        }
    }
    c.send_frame(0x1, &[b'{', 0xff, 0xfe, b'}']).await;
    let (code, _) = c.until_close().await;
    assert_eq!(code, Some(1007));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_answers_excess_frames_and_spares_others() {
    let node = TestNode::start_with("", "limits.client_rate = 5\nlimits.client_burst = 5").await;
    let (mut flood, _) = Client::authed(&node, "f").await;
    let (mut calm, _) = Client::authed(&node, "c").await;
    for i in 0..20 {
        flood
            .send(json!({"type": "ping", "id": format!("f{i}")}))
            .await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..20 {
        let m = flood.next_json().await.expect("reply");
        match m["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(m["payload"]["code"], "rate_limited");
                assert!(m["id"].as_str().is_some(), "rate_limited echoes the id");
                limited += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(
        pongs >= 5 && limited >= 10,
        "pongs {pongs}, limited {limited}"
    );
    let p = calm.request(json!({"type": "ping"}), "calm").await;
    assert_eq!(p["type"], "pong", "another connection is not affected");
    assert!(metric(&node, "switchyard_rate_limited_total").await >= limited as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn sustained_abuse_closes_4008() {
    let node = TestNode::start_with("", "limits.client_rate = 5\nlimits.client_burst = 5").await;
    let (mut c, _) = Client::authed(&node, "abuser").await;
    let sender = async {
        let mut i = 0u64;
        loop {
            // ~50 frames a second: ten times the allowed rate, for as long as it takes.
            if c.ws_send_ping_json(i).await.is_err() {
                break;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if i > 1500 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), sender).await;
    let closed = c.closed().await;
    assert_eq!(closed.code, Some(4008));
    let d = closed.disconnect.expect("disconnect");
    assert_eq!(d["payload"]["reason"], "policy_violation");
    assert_eq!(d["payload"]["reconnect"], true);
}

trait PingJson {
    async fn ws_send_ping_json(&mut self, i: u64) -> Result<(), ()>;
}

impl PingJson for Client {
    async fn ws_send_ping_json(&mut self, i: u64) -> Result<(), ()> {
        use futures_util::SinkExt;
        let msg = json!({"type": "ping", "id": i.to_string()}).to_string();
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(msg.into()))
            .await
            .map_err(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_subscriptions_counts_auto_subscriptions() {
    let node = TestNode::start_with("", "limits.max_subscriptions = 3").await;
    let (mut c, _) = Client::authed(&node, "s").await; // user:s is one
    c.subscribe("public:a").await;
    c.subscribe("public:b").await;
    let e = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "public:c"}}),
            "over",
        )
        .await;
    assert_eq!(e["payload"]["code"], "limit_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_per_node_refuses_with_503() {
    let node = TestNode::start_with("", "limits.max_connections = 2").await;
    let (_a, _) = Client::authed(&node, "a").await;
    let (b, _) = Client::authed(&node, "b").await;
    let url = node.ws_url(&format!("/ws?token={}", token("c")));
    assert_eq!(
        Client::try_connect(&url, &[]).await.err().as_deref(),
        Some("503")
    );
    b.close().await;
    eventually("a slot to free up after a close", || {
        let url = url.clone();
        async move { Client::try_connect(&url, &[]).await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pings_keep_a_live_client_and_a_silent_one_is_dropped_without_close() {
    let node = TestNode::start_with(
        "",
        "limits.ping_interval = \"200ms\"\nlimits.pong_timeout = \"1s\"",
    )
    .await;
    let (mut live, _) = Client::authed(&node, "live").await;
    let mut silent =
        RawClient::connect(node.addr, &format!("/ws?token={}", token("silent")), None).await;
    // The live client answers pings (tungstenite does while reading): still up after 8 of them.
    let mut pings = 0;
    while pings < 8 {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(2), live.ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("live client should keep getting pings, got {other:?}"),
        }
    }
    let p = live.request(json!({"type": "ping"}), "still-here").await;
    assert_eq!(p["type"], "pong");
    assert!(
        silent.dropped_without_close(Duration::from_secs(5)).await,
        "silent client dropped with no close frame"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_reader_is_closed_4010_and_never_delays_a_fast_one() {
    let node = TestNode::start_with("", "limits.send_queue = 64").await;
    let mut stalled = RawClient::connect(
        node.addr,
        &format!("/ws?token={}", token("slow")),
        Some(4096),
    )
    .await;
    stalled
        .send_text(r#"{"type":"subscribe","payload":{"channel":"public:flood"}}"#)
        .await;
    let (mut fast, _) = Client::authed(&node, "fast").await;
    fast.subscribe("public:flood").await;
    eventually("both subscribers registered", || async {
        let (_, v) = api_get(&node, "/api/channels?prefix=public:flood").await;
        (v["channels"][0]["subscribers"] == 2).then_some(())
    })
    .await;

    const N: u64 = 2000;
    let blob = "x".repeat(8 * 1024);
    let reader = tokio::spawn(async move {
        let mut next = 0u64;
        while next < N {
            let m = fast.next_json().await.expect("fast client keeps receiving");
            if m["type"] == "tick" {
                assert_eq!(m["payload"]["n"], next, "in order, none missing");
                next += 1;
            }
        }
        next
    });
    let http = http_client();
    for n in 0..N {
        let r = http
            .post(node.http("/api/publish"))
            .header("X-API-Key", API_KEY)
            .json(&json!({"channel": "public:flood", "type": "tick", "payload": {"n": n, "blob": blob}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 200);
    }
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("fast reader finished")
        .expect("task");
    assert_eq!(got, N);
    // The stalled client now reads: the data already written, then disconnect + 4010.
    let (code, texts) = stalled.until_close().await;
    assert_eq!(code, Some(4010));
    let last: serde_json::Value =
        serde_json::from_str(texts.last().expect("disconnect")).expect("json");
    assert_eq!(last["payload"]["reason"], "slow_consumer");
    assert!(
        texts.len() < N as usize,
        "it was cut off, not sent everything"
    );
    assert!(metric(&node, "switchyard_slow_consumers_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_bigger_than_the_write_buffer_reaches_a_fast_reader_whole() {
    // One API call puts 1000 publications of ~1 KB into the reader's queue at once:
    // more than the connection writes per pass, none may be left behind.
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "burst").await;
    c.subscribe("public:burst").await;
    let channels: Vec<&str> = vec!["public:burst"; 1000];
    let (s, _) = api_post(
        &node,
        "/api/broadcast",
        json!({"channels": channels, "type": "b", "payload": {"pad": "y".repeat(1000)}}),
    )
    .await;
    assert_eq!(s, 200);
    for _ in 0..1000 {
        assert_eq!(c.next_json().await.expect("burst message")["type"], "b");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_pings_count_toward_the_rate() {
    let node = TestNode::start_with("", "limits.client_rate = 5\nlimits.client_burst = 5").await;
    let mut c = RawClient::connect(node.addr, &format!("/ws?token={}", token("p")), None).await;
    for _ in 0..50 {
        c.send_frame(0x9, b"hi").await;
    }
    c.send_text(r#"{"type":"ping","id":"marker"}"#).await;
    let mut pongs = 0;
    loop {
        match c.next_frame().await.expect("frame") {
            Frame::Other(0xA) => pongs += 1,
            Frame::Text(t) if t.contains("marker") => break,
            _ => {}
        }
    }
    assert!(
        pongs <= 10,
        "an excess ping gets no pong: {pongs} pongs for 50 pings"
    );
    assert!(pongs >= 5, "within the burst pings are answered: {pongs}");
}

/// SPEC 7 `limits.send_queue_bytes`: a client that asks for history and never reads
/// cannot park more than the byte budget on its socket. On the old code 1,000 history
/// replies of ~100 KB each (under the 1,024-message `send_queue`) were all queued:
/// ~100 MB for one socket, and no close.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_asks_for_history_and_never_reads_is_a_slow_consumer_by_bytes() {
    let node = TestNode::start_with(
        "",
        "[limits]\nclient_rate = 100000\nclient_burst = 100000\nsend_queue_bytes = 2097152",
    )
    .await;
    let blob = "x".repeat(1000);
    for n in 0..100 {
        node.publish("order:big", "e", json!({"n": n, "blob": blob}))
            .await;
    }
    let mut c = RawClient::connect(
        node.addr,
        &format!(
            "/ws?token={}",
            token_with("reader", |c| c.allow = vec!["order:big".into()])
        ),
        Some(4096),
    )
    .await;
    for i in 0..1000 {
        c.send_text(&format!(
            r#"{{"type":"history","id":"h{i}","payload":{{"channel":"order:big"}}}}"#
        ))
        .await;
    }
    let (code, texts) = c.until_close().await;
    assert_eq!(code, Some(4010), "closed as a slow consumer");
    let replies = texts.iter().filter(|t| t.contains("\"history\"")).count();
    assert!(
        replies < 100,
        "cut off after about send_queue_bytes of replies, not {replies}"
    );
}
