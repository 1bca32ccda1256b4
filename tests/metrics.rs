//! SPEC section 9: metric names, series present from the start, labelled series after
//! their first event, and no unbounded labels (channel names, user ids).

use serde_json::json;
use testkit::*;

async fn scrape(node: &TestNode) -> String {
    let r = http_client()
        .get(node.http("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    r.text().await.expect("text")
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn unlabelled_series_exist_from_the_start() {
    let node = TestNode::start().await;
    let text = scrape(&node).await;
    for name in [
        "switchyard_connections",
        "switchyard_connections_accepted_total",
        "switchyard_subscriptions",
        "switchyard_channels",
        "switchyard_messages_out_total",
        "switchyard_broker_up",
        "switchyard_broker_reconnects_total",
        "switchyard_slow_consumers_total",
        "switchyard_rate_limited_total",
    ] {
        assert!(
            value(&text, name).is_some(),
            "{name} missing at start:\n{text}"
        );
    }
    assert_eq!(value(&text, "switchyard_broker_up"), Some(1.0));
    for hist in [
        "switchyard_delivery_latency_seconds",
        "switchyard_broker_publish_seconds",
        "switchyard_api_request_seconds",
    ] {
        assert!(
            text.contains(&format!("{hist}_bucket")),
            "{hist} buckets missing:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_move_the_right_series() {
    let node = TestNode::start().await;
    let (mut c, _) = Client::authed(&node, "secret-user-42").await;
    c.subscribe("public:some-channel-name").await;
    c.request(json!({"type": "ping"}), "p").await;
    c.send_text("junk").await;
    c.expect("error").await;
    node.publish("public:some-channel-name", "evt", json!({}))
        .await;
    c.until("evt").await;
    assert!(Client::try_connect(&node.ws_url("/ws?token=bad"), &[])
        .await
        .is_err());
    c.close().await;
    let text = eventually("the closed connection to be counted", || async {
        let t = scrape(&node).await;
        (value(&t, "switchyard_connections") == Some(0.0)).then_some(t)
    })
    .await;
    assert_eq!(
        value(&text, "switchyard_connections_accepted_total"),
        Some(1.0)
    );
    assert!(
        value(&text, "switchyard_disconnects_total{code=\"1000\"}").is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "switchyard_messages_in_total{type=\"ping\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "switchyard_messages_in_total{type=\"subscribe\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "switchyard_messages_in_total{type=\"invalid\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "switchyard_publications_total{source=\"api\"}"),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "switchyard_auth_failures_total{reason=\"malformed\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(value(
        &text,
        "switchyard_connections_rejected_total{reason=\"unauthorized\"}"
    )
    .is_some());
    assert!(value(&text, "switchyard_messages_out_total").unwrap_or(0.0) >= 4.0);
    assert!(
        text.contains("switchyard_api_requests_total{endpoint=\"publish\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("switchyard_delivery_latency_seconds_count"));
    assert!(
        !text.contains("some-channel-name"),
        "channel names never appear in labels"
    );
    assert!(
        !text.contains("secret-user-42"),
        "user ids never appear in labels"
    );
}

/// Clients choose their own close codes (3000–4999): as labels they would grow the
/// metric by up to 2,000 series. Codes outside the close table share a bucket.
#[tokio::test(flavor = "multi_thread")]
async fn client_close_codes_never_become_unbounded_labels() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let node = TestNode::start().await;
    for (i, code) in [4567u16, 4321, 3999].into_iter().enumerate() {
        let (mut c, _) = Client::authed(&node, &format!("c{i}")).await;
        use futures_util::SinkExt;
        let _ =
            c.ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(
                CloseFrame {
                    code: CloseCode::from(code),
                    reason: "".into(),
                },
            )))
            .await;
        let _ = c.closed().await;
    }
    let text = eventually("the closes counted", || async {
        let text = scrape(&node).await;
        let n = value(&text, "switchyard_disconnects_total{code=\"4xxx\"}").unwrap_or(0.0)
            + value(&text, "switchyard_disconnects_total{code=\"3xxx\"}").unwrap_or(0.0);
        (n >= 3.0).then_some(text)
    })
    .await;
    for raw in ["4567", "4321", "3999"] {
        assert!(
            !text.contains(&format!("code=\"{raw}\"")),
            "{raw} became a label"
        );
    }
}
