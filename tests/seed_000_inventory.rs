//! Seed 000 (iShop inventory) on one node: `/ws/inventory` auto-subscribes
//! `public:inventory` for a token given in the query; the backend publishes inventory
//! changes through the API; `/api/stats` gives connection statistics.

use serde_json::json;
use testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn inventory_route_feed_and_stats() {
    let node = TestNode::start_with(
        "",
        "[[routes]]\npath = \"/ws/inventory\"\nsubscribe = [\"public:inventory\"]",
    )
    .await;
    let mut shoppers = Vec::new();
    for i in 0..3 {
        let mut c = Client::connect(
            &node.ws_url(&format!("/ws/inventory?token={}", token(&format!("s{i}")))),
        )
        .await;
        let ok = c.expect("auth_success").await;
        assert!(ok["payload"]["channels"]
            .as_array()
            .expect("channels")
            .contains(&json!("public:inventory")));
        shoppers.push(c);
    }
    for qty in [5, 4, 3] {
        node.publish(
            "public:inventory",
            "inventory_update",
            json!({"product_id": "prod_123", "quantity": qty}),
        )
        .await;
    }
    for c in &mut shoppers {
        for qty in [5, 4, 3] {
            let m = c.expect("inventory_update").await;
            assert_eq!(m["payload"]["quantity"], qty, "in publish order");
        }
        let p = c.request(json!({"type": "ping"}), "hb").await;
        assert_eq!(p["type"], "pong");
    }
    let (s, stats) = api_get(&node, "/api/stats").await;
    assert_eq!(s, 200);
    assert_eq!(stats["node"]["connections"], 3);
    assert_eq!(stats["cluster"]["connections"], 3);
    let (_, ch) = api_get(&node, "/api/channels?prefix=public:").await;
    assert_eq!(
        ch["channels"],
        json!([{"channel": "public:inventory", "subscribers": 3}])
    );
}
