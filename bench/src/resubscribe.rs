//! Resubscription at scale (issue 11.6, SPEC 8.5): one node holds `channels` channels
//! (spread over connections of `per_conn` subscriptions each), then its subscription
//! path is lost — Redis restarted (one Redis), or every pub/sub connection killed on
//! every master (a 3-master Cluster). Redis' own list of subscribed channels gives the
//! time until the first and the last channel are subscribed again; then every channel
//! is probed once to prove it delivers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use switchyard::auth::{unix_now, MintClaims};
use testkit::redis::{RedisCluster, RedisServer};

use crate::servers::*;
use crate::wsclient::{Frame, WsClient};
use crate::{auth, API_KEY};

enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

fn channel(i: usize) -> String {
    format!("public:r{i}")
}

/// The index in a probe's payload `{"i":N}`.
fn probe_index(text: &[u8]) -> Option<usize> {
    let at = text.windows(4).position(|w| w == b"\"i\":")? + 4;
    let digits: Vec<u8> = text[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn stats_channels(addr: std::net::SocketAddr) -> u64 {
    let r = testkit::http_client()
        .get(format!("http://{addr}/api/stats"))
        .header("X-API-Key", API_KEY)
        .send()
        .await;
    match r {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["node"]["channels"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

pub(crate) async fn resubscribe(channels: usize, per_conn: usize, cluster: bool) -> Value {
    let per_conn = per_conn.max(1);
    let redis = if cluster {
        Redis::Cluster(
            tokio::task::spawn_blocking(RedisCluster::start)
                .await
                .expect("cluster"),
        )
    } else {
        Redis::Single(RedisServer::start())
    };
    let url = match &redis {
        Redis::Single(r) => r.url(),
        Redis::Cluster(c) => c.url(),
    };
    let server = spawn_switchyard(&format!(
        "broker = \"redis\"\nredis.url = \"{url}\"\nredis.cluster = {cluster}\nlimits.max_subscriptions = {}\n",
        per_conn + 8
    ))
    .await;
    wait_ready(server.addr).await;
    let conns = channels.div_ceil(per_conn);
    let auth = auth();
    let setup = Instant::now();
    let clients: Vec<WsClient> = stream::iter(0..conns)
        .map(|c| {
            let owned: Vec<String> = (c * per_conn..((c + 1) * per_conn).min(channels))
                .map(channel)
                .collect();
            let token = auth
                .mint(&MintClaims {
                    sub: format!("r{c}"),
                    exp: unix_now() + 86400,
                    channels: owned,
                    ..MintClaims::default()
                })
                .expect("mint");
            let addr = server.addr;
            async move {
                let mut ws = WsClient::connect(addr, &format!("/ws?token={token}"), None)
                    .await
                    .expect("connect");
                ws.wait_for(b"auth_success").await.expect("auth_success");
                ws
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Own channels (user:) come on top of the probed ones.
    while (stats_channels(server.addr).await as usize) < channels + conns {
        assert!(
            setup.elapsed() < Duration::from_secs(600),
            "subscriptions did not complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let subscribed_in = setup.elapsed();
    let seen: Arc<Vec<AtomicBool>> =
        Arc::new((0..channels).map(|_| AtomicBool::new(false)).collect());
    let delivered = Arc::new(AtomicU64::new(0));
    for mut ws in clients {
        let (seen, delivered) = (seen.clone(), delivered.clone());
        tokio::spawn(async move {
            while let Ok(f) = ws.next().await {
                if let Frame::Text(t) = f {
                    if let Some(i) = probe_index(t).filter(|i| *i < seen.len()) {
                        if !seen[i].swap(true, Ordering::Relaxed) {
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    // The path is lost.
    let lost_at = match &redis {
        Redis::Single(_) => None,
        Redis::Cluster(c) => {
            for n in &c.nodes {
                n.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            }
            Some(Instant::now())
        }
    };
    let mut redis = redis;
    if let Redis::Single(r) = &mut redis {
        r.restart();
    }
    let start = lost_at.unwrap_or_else(Instant::now);
    // Redis itself says when each channel is subscribed again: its pub/sub channel
    // list, polled; then every channel is probed once to prove it delivers.
    let mut first: Option<Duration> = None;
    let mut last: Option<Duration> = None;
    let deadline = start + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n = subscribed_channels(&redis).await;
        if n > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if n >= channels {
            last = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publish_cmd = if cluster { "SPUBLISH" } else { "PUBLISH" };
    let cmds: Vec<redis::Cmd> = (0..channels)
        .map(|i| {
            let mut c = redis::cmd(publish_cmd);
            c.arg(format!("switchyard:{{{}}}", channel(i)))
                .arg(format!(r#"{{"type":"probe","payload":{{"i":{i}}}}}"#));
            c
        })
        .collect();
    publish_all(&redis, cmds).await;
    let probed = Instant::now();
    while (delivered.load(Ordering::Relaxed) as usize) < channels
        && probed.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = delivered.load(Ordering::Relaxed);
    json!({
        "scenario": "resubscribe",
        "redis": if cluster { "cluster-3-masters" } else { "single" },
        "event": if cluster { "CLIENT KILL TYPE pubsub on every master" } else { "redis restart" },
        "channels": channels,
        "connections": conns,
        "subscribe_all_s": subscribed_in.as_secs_f64(),
        "first_channel_back_ms": first.map(|d| d.as_millis() as u64),
        "last_channel_back_ms": last.map(|d| d.as_millis() as u64),
        "delivered": got,
        "missing": (channels as u64).saturating_sub(got),
    })
}

/// How many probed channels Redis has subscribers for (one Redis: PUBSUB CHANNELS;
/// a cluster: PUBSUB SHARDCHANNELS on every master).
async fn subscribed_channels(redis: &Redis) -> usize {
    let pattern = "switchyard:{public:r*";
    let count = |port: u16, cmd: &'static str| async move {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            return 0;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return 0;
        };
        let names: Vec<String> = redis::cmd("PUBSUB")
            .arg(cmd)
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        names.len()
    };
    match redis {
        Redis::Single(r) => count(r.port, "CHANNELS").await,
        Redis::Cluster(c) => {
            let mut total = 0;
            for n in &c.nodes {
                total += count(n.port, "SHARDCHANNELS").await;
            }
            total
        }
    }
}

async fn publish_all(redis: &Redis, cmds: Vec<redis::Cmd>) {
    match redis {
        Redis::Single(r) => {
            let Ok(client) = redis::Client::open(r.url()) else {
                return;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            for chunk in cmds.chunks(5000) {
                let mut pipe = redis::pipe();
                for c in chunk {
                    pipe.add_command(c.clone()).ignore();
                }
                let _: Result<(), _> = pipe.query_async(&mut conn).await;
            }
        }
        Redis::Cluster(c) => {
            let Ok(client) = redis::cluster::ClusterClient::new(vec![c.url()]) else {
                return;
            };
            let Ok(conn) = client.get_async_connection().await else {
                return;
            };
            stream::iter(cmds)
                .for_each_concurrent(512, |cmd| {
                    let mut conn = conn.clone();
                    async move {
                        let _: Result<i64, _> = cmd.query_async(&mut conn).await;
                    }
                })
                .await;
        }
    }
}
