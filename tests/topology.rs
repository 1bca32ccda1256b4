//! The deployment without Docker (SPEC 12): a real redis-server, three node
//! processes, and the real nginx with the project's config in front. Clients go
//! through nginx; publishers use the internal API and redis-cli; a node is SIGKILLed
//! and its clients come back through nginx on another node and recover.

use serde_json::json;
use testkit::nginx::Nginx;
use testkit::redis::RedisServer;
use testkit::*;

async fn three_nodes(redis: &RedisServer) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let extra = format!(
            "broker = \"redis\"\nnode_id = \"node{i}\"\nredis.url = \"{}\"",
            redis.url()
        );
        nodes.push(NodeProcess::start(&extra, "").await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_config_upgrades_websockets_and_hides_the_api() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let nginx = Nginx::start(&addrs);
    let public = format!("127.0.0.1:{}", nginx.public);
    let mut seen = std::collections::HashSet::new();
    let mut tokens = Vec::new();
    for i in 0..5 {
        let t = token(&format!("u{i}"));
        let mut c = Client::connect(&format!("ws://{public}/ws?token={t}")).await;
        seen.insert(
            c.expect("auth_success").await["payload"]["node"]
                .as_str()
                .expect("node")
                .to_owned(),
        );
        c.close().await;
        tokens.push(t);
    }
    // SPEC 3: the shipped config logs request lines without their query string.
    let log = eventually("nginx to log the five WebSocket requests", || {
        let log = nginx.access_log();
        async move { (log.matches("GET /ws ").count() >= 5).then_some(log) }
    })
    .await;
    for t in &tokens {
        assert!(
            !log.contains(t.as_str()),
            "a token in nginx's access log:\n{log}"
        );
    }
    assert!(!log.contains("token="), "{log}");
    assert_eq!(
        seen.len(),
        1,
        "ip_hash: one client address, one node: {seen:?}"
    );
    let http = http_client();
    for path in ["/api/stats", "/api/publish", "/metrics"] {
        let r = http
            .get(format!("http://{public}{path}"))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .expect("req");
        assert_eq!(r.status(), 403, "{path} is not public");
    }
    let health = http
        .get(format!("http://{public}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let r = http
        .post(format!("http://127.0.0.1:{}/api/publish", nginx.internal))
        .header("X-API-Key", API_KEY)
        .json(&json!({"channel": "public:x", "type": "t", "payload": 1}))
        .send()
        .await
        .expect("internal publish");
    assert_eq!(r.status(), 200, "the internal server proxies the API");
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_a_killed_node_s_clients_recover_through_nginx() {
    let redis = RedisServer::start();
    let mut nodes = three_nodes(&redis).await;
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let nginx = Nginx::start(&addrs);
    let ws = format!("ws://127.0.0.1:{}/ws", nginx.public);
    let api = format!("http://127.0.0.1:{}/api/publish", nginx.internal);
    let t = token_with("buyer", |c| c.channels = vec!["public:deals".into()]);
    let mut c = Client::connect(&format!("{ws}?token={t}")).await;
    let ok = c.expect("auth_success").await;
    let first_node = ok["payload"]["node"].as_str().expect("node").to_owned();
    let s = c
        .request(json!({"type": "subscribe", "payload": {"channel": "order:77", "token": sub_token("buyer", "order:77")}}), "s")
        .await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    let http = http_client();
    let publish = |status: &'static str| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http
                .post(&api)
                .header("X-API-Key", API_KEY)
                .json(&json!({"channel": "order:77", "type": "order_update", "payload": {"status": status}}))
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 200);
        }
    };
    publish("paid").await;
    assert_eq!(c.expect("order_update").await["offset"], 1);
    tokio::task::block_in_place(|| {
        redis.cli(&[
            "PUBLISH",
            "switchyard:{public:deals}",
            r#"{"type":"deal","payload":{"pct":20}}"#,
        ])
    });
    assert_eq!(c.expect("deal").await["payload"]["pct"], 20);

    let idx: usize = first_node
        .trim_start_matches("node")
        .parse::<usize>()
        .expect("node index")
        - 1;
    let victim = nodes.remove(idx);
    drop(victim); // SIGKILL
    let closed = c.closed().await;
    assert_ne!(closed.code, Some(1000));
    // Published while the client is away, through another node (the API via nginx)
    // and by a service with FCALL.
    publish("packed").await;
    tokio::task::block_in_place(|| {
        redis.cli(&[
            "FCALL",
            "switchyard_publish",
            "1",
            "switchyard:{order:77}",
            r#"{"type":"order_update","payload":{"status":"shipped"}}"#,
            "100",
            "86400",
        ])
    });
    let mut c = eventually("the client to get back in through nginx", || {
        let url = format!("{ws}?token={t}");
        async move { Client::try_connect(&url, &[]).await.ok() }
    })
    .await;
    let ok = c.expect("auth_success").await;
    assert_ne!(
        ok["payload"]["node"],
        first_node.as_str(),
        "landed on a live node"
    );
    let r = c
        .request(
            json!({"type": "subscribe", "payload": {"channel": "order:77", "token": sub_token("buyer", "order:77"), "since": {"offset": 1, "epoch": epoch}}}),
            "re",
        )
        .await;
    assert_eq!(r["payload"]["recovered"], true);
    let statuses: Vec<String> = vec![
        c.expect("order_update").await["payload"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        c.expect("order_update").await["payload"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    assert_eq!(
        statuses,
        vec!["packed", "shipped"],
        "what was published meanwhile, once, in order"
    );
    publish("delivered").await;
    let m = c.expect("order_update").await;
    assert_eq!(
        (m["offset"].as_u64(), m["payload"]["status"].as_str()),
        (Some(4), Some("delivered"))
    );
}
