//! Redis Cluster mode (`redis.cluster = true`) against a real 3-master cluster:
//! sharded pub/sub across nodes, a channel's keys in one slot, the function loaded on
//! every master (FCALL from redis-cli), recovery, presence, cluster-wide commands.

use serde_json::json;
use switchyard::config::BrokerKind;
use testkit::redis::RedisCluster;
use testkit::*;

async fn node_on(cluster: &RedisCluster, id: &str) -> TestNode {
    let mut c = switchyard::Config::from_toml(&config_toml("")).expect("config");
    c.broker = BrokerKind::Redis;
    c.redis.url = cluster.url();
    c.redis.cluster = true;
    c.node_id = id.into();
    TestNode::start_config_with(c).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_pubsub_history_and_commands_across_nodes() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let a = node_on(&cluster, "a").await;
    let b = node_on(&cluster, "b").await;
    // Channels spread over the three masters.
    let channels: Vec<String> = (0..12).map(|i| format!("public:c{i}")).collect();
    let (mut c, _) = Client::authed(&a, "u").await;
    for ch in &channels {
        c.subscribe(ch).await;
    }
    let shard_channels = tokio::task::block_in_place(|| {
        cluster
            .nodes
            .iter()
            .map(|n| {
                n.cli(&["PUBSUB", "SHARDCHANNELS"])
                    .lines()
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .collect::<Vec<_>>()
    });
    assert!(
        shard_channels.iter().filter(|n| **n > 0).count() >= 2,
        "subscriptions live on several shards: {shard_channels:?}"
    );
    for round in 0..3 {
        for ch in &channels {
            b.publish(ch, "t", json!({"round": round, "ch": ch})).await;
        }
    }
    let mut per_channel: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..channels.len() * 3 {
        let m = c.expect("t").await;
        per_channel
            .entry(m["channel"].as_str().expect("channel").to_owned())
            .or_default()
            .push(m["payload"]["round"].as_u64().expect("round"));
    }
    for ch in &channels {
        assert_eq!(per_channel[ch], vec![0, 1, 2], "order per channel on {ch}");
    }

    // History: FCALL from a service (redis-cli -c follows the slot) and the API.
    let (mut o, _) = Client::authed(&a, "7").await;
    let s = o
        .request(json!({"type": "subscribe", "payload": {"channel": "order:5", "token": sub_token("7", "order:5")}}), "s")
        .await;
    let epoch = s["payload"]["epoch"].as_str().expect("epoch").to_owned();
    let out = tokio::task::block_in_place(|| {
        cluster.cli(&[
            "FCALL",
            "switchyard_publish",
            "1",
            "switchyard:{order:5}",
            r#"{"type":"order_update","payload":{"s":1}}"#,
            "100",
            "3600",
        ])
    });
    assert!(out.starts_with('1'), "FCALL on the slot's master: {out}");
    b.publish("order:5", "order_update", json!({"s": 2})).await;
    for i in 1..=2 {
        assert_eq!(o.expect("order_update").await["offset"], i);
    }
    o.close().await;
    b.publish("order:5", "order_update", json!({"s": 3})).await;
    let (mut o2, _) = Client::authed(&b, "7").await;
    let r = o2
        .request(
            json!({"type": "subscribe", "payload": {"channel": "order:5", "token": sub_token("7", "order:5"), "since": {"offset": 2, "epoch": epoch}}}),
            "re",
        )
        .await;
    assert_eq!(r["payload"]["recovered"], true);
    assert_eq!(o2.expect("order_update").await["payload"]["s"], 3);
    let slots: Vec<String> = [
        "switchyard:{order:5}",
        "switchyard:{order:5}:history",
        "switchyard:{order:5}:meta",
    ]
    .iter()
    .map(|k| {
        tokio::task::block_in_place(|| cluster.cli(&["CLUSTER", "KEYSLOT", k]))
            .trim()
            .to_owned()
    })
    .collect();
    assert!(
        slots.iter().all(|s| *s == slots[0]),
        "a channel's keys share one slot: {slots:?}"
    );

    // Nothing above may have cost a node its subscription path (an own unsubscribe is
    // not a lost subscription).
    for node in [&a, &b] {
        assert_eq!(
            metric(node, "switchyard_broker_reconnects_total").await,
            0.0,
            "no spurious reconnects"
        );
    }

    // Cluster-wide disconnect through the other node.
    let (s, _) = api_post(&b, "/api/disconnect", json!({"user_id": "u"})).await;
    assert_eq!(s, 200);
    assert_eq!(c.closed().await.code, Some(4003));
}
