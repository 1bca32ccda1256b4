//! Seed 002 (sneaker marketplace) on one node: token in query or header,
//! `auth_success` on connect, ping/pong, `/health` with `ws_connections`, one
//! connection per user, and 10,000 concurrent authenticated connections. The node
//! runs as its own process (the per-process limit is 20,000 open files).

use futures_util::{stream, StreamExt};
use serde_json::json;
use testkit::*;

const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_authenticated_connections_on_one_node() {
    let node = NodeProcess::start(
        "",
        "limits.max_connections_per_user = 1\nlimits.ping_interval = \"120s\"",
    )
    .await;
    let base = format!("ws://{}", node.addr);
    // Half by query parameter, half by Authorization header; each must see auth_success.
    let clients: Vec<(usize, Client)> = stream::iter(0..N)
        .map(|i| {
            let base = base.clone();
            async move {
                let t = token(&format!("buyer{i}"));
                let mut c = if i % 2 == 0 {
                    Client::connect(&format!("{base}/ws?token={t}")).await
                } else {
                    Client::connect_headers(
                        &format!("{base}/ws"),
                        &[("Authorization", &format!("Bearer {t}"))],
                    )
                    .await
                };
                let ok = c.expect("auth_success").await;
                assert_eq!(ok["payload"]["user_id"], format!("buyer{i}"));
                (i, c)
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut clients = clients;
    clients.sort_by_key(|(i, _)| *i);
    let mut clients: Vec<Client> = clients.into_iter().map(|(_, c)| c).collect();
    assert_eq!(clients.len(), N);
    let health_url = format!("http://{}/health", node.addr);
    let h: serde_json::Value = http_client()
        .get(&health_url)
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["ws_connections"], N, "every connection counted");

    // A backend notification reaches exactly its user, and ping/pong works at this load.
    let target = 4321;
    let r = http_client()
        .post(format!("http://{}/api/publish", node.addr))
        .header("X-API-Key", API_KEY)
        .json(&json!({"channel": format!("user:buyer{target}"), "type": "notification",
                      "payload": {"notification_type": "match_created", "title": "Your bid has been matched!"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    let n = clients[target].expect("notification").await;
    assert_eq!(n["payload"]["notification_type"], "match_created");
    for i in [0, N / 2, N - 1] {
        let p = clients[i].request(json!({"type": "ping"}), "hb").await;
        assert_eq!(p["type"], "pong");
    }
    // One connection per user: a second one for buyer0 replaces the first.
    let mut again = Client::connect(&format!("{base}/ws?token={}", token("buyer0"))).await;
    again.expect("auth_success").await;
    let closed = clients[0].closed().await;
    assert_eq!(closed.code, Some(4009));
}
