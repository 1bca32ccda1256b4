//! The scenarios that need more than one server or a failure: reconnect after a Redis
//! restart, three nodes on Redis, and churn.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fanout::{fanout, fanout_on, now_ns};
use crate::fleet::{split, Remote};
use crate::publish::HttpPublisher;
use crate::servers::*;
use crate::wsclient::{find_ts, Frame};
use crate::{open_clients, ratio, Common, Load, Target, API_KEY};
use testkit::redis::RedisServer;
// ---------------------------------------------------------------- reconnect

pub(crate) async fn reconnect(conns: usize) -> Value {
    let mut redis = RedisServer::start();
    let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
    let server = spawn_switchyard(&format!(
        "broker = \"redis\"\nredis.url = \"redis://{redis_addr}\""
    ))
    .await;
    wait_ready(server.addr).await;
    let (clients, _) = open_clients(&server, 0..conns, 1, &[], false).await;
    let delivered = Arc::new(AtomicU64::new(0));
    for (_, mut c) in clients {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Ok(f) = c.next().await {
                if let Frame::Text(t) = f {
                    if t.windows(5).any(|w| w == b"probe") {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    redis.restart();
    let accepting = Instant::now();
    let client = redis::Client::open(format!("redis://{redis_addr}")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    // Probe the last user until a delivery proves the path is back.
    let probe = |i: usize| format!(r#"{{"type":"probe","payload":{{"i":{i}}}}}"#);
    let first_delivery = loop {
        let _: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(format!("switchyard:{{user:u{}}}", conns - 1))
            .arg(probe(conns - 1))
            .query_async(&mut conn)
            .await;
        if delivered.load(Ordering::Relaxed) > 0 {
            break accepting.elapsed();
        }
        assert!(
            accepting.elapsed() < Duration::from_secs(60),
            "never delivered again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Then every user channel, pipelined: each must deliver.
    let before = delivered.load(Ordering::Relaxed);
    let mut pipe = redis::pipe();
    for i in 0..conns {
        pipe.cmd("PUBLISH")
            .arg(format!("switchyard:{{user:u{i}}}"))
            .arg(probe(i))
            .ignore();
    }
    let _: Result<(), _> = pipe.query_async(&mut conn).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered.load(Ordering::Relaxed) < before + conns as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = accepting.elapsed();
    let got = delivered.load(Ordering::Relaxed) - before;
    redis.stop();
    json!({
        "scenario": "reconnect",
        "conns": conns,
        "first_delivery_ms": first_delivery.as_millis() as u64,
        "all_channels_delivered_ms": all.as_millis() as u64,
        "delivered_after_restart": got,
        "missing": (conns as u64).saturating_sub(got),
    })
}

/// `calls` of one command in Redis' INFO commandstats.
pub(crate) async fn redis_calls(conn: &mut redis::aio::MultiplexedConnection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn cluster(
    target: Target,
    node_threads: Option<usize>,
    conns: usize,
    channels: usize,
    load: &Load,
) -> Vec<Value> {
    // The same load on one node with its in-process broker (adapter) first; beyond
    // 19,000 connections one node would exceed its 20,000 open files, so the three
    // nodes run alone.
    let single = if conns <= 19_000 {
        Some(fanout(&Common::new(conns, channels, target), load).await)
    } else {
        None
    };
    let mut redis = RedisServer::start();
    let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().expect("addr");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let n = match target {
            Target::Socketio => spawn_socketio(Some(redis_addr)).await,
            Target::Sockudo => spawn_sockudo(Some(redis_addr)).await,
            _ => {
                let n = spawn_switchyard_threads(
                    &format!("broker = \"redis\"\nredis.url = \"redis://{redis_addr}\""),
                    node_threads,
                )
                .await;
                wait_ready(n.addr).await;
                n
            }
        };
        nodes.push(n);
    }
    let mut clients = Vec::with_capacity(conns);
    let mut remote = Remote::default();
    // Beyond what one generator process may hold, every node's share is held by child
    // processes of at most 19,000 connections each.
    let spread = conns > 19_000;
    let third = conns.div_ceil(3);
    for (k, node) in nodes.iter().enumerate() {
        let ids = (k * third).min(conns)..((k + 1) * third).min(conns);
        if spread {
            let parts = split(ids.clone(), ids.len().div_ceil(19_000));
            remote.absorb(Remote::spawn(
                node.addr,
                node.target,
                &parts,
                channels,
                &[],
                true,
            ));
        } else {
            let (mut c, _) = open_clients(node, ids, channels, &[], true).await;
            clients.append(&mut c);
        }
    }
    remote.await_ready().await;
    let client = redis::Client::open(format!("redis://{redis_addr}")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let before = redis_calls(&mut conn, "publish").await;
    let mut three = fanout_on(&nodes[0], clients, remote, channels, load).await;
    let after = redis_calls(&mut conn, "publish").await;
    let publications = three["publications"].as_u64().unwrap_or(0);
    three["scenario"] = json!("cluster");
    three["nodes"] = json!(3);
    three["node_threads"] = json!(node_threads);
    three["redis_publish_calls"] = json!(after.saturating_sub(before));
    three["redis_publish_calls_per_publication"] =
        json!(after.saturating_sub(before) as f64 / publications.max(1) as f64);
    three["vs_single_node"] = match &single {
        Some(single) => json!(ratio(&three, single, "delivered_per_s")),
        None => Value::Null,
    };
    drop(nodes);
    redis.stop();
    single.into_iter().chain([three]).collect()
}

// ---------------------------------------------------------------- churn

pub(crate) async fn churn(conns: usize, replace: usize, rate: f64, duration: u64) -> Value {
    let server = spawn_switchyard("").await;
    let half = conns / 2;
    let (stable, _) = open_clients(&server, 0..half, 1, &[], true).await;
    let (mut churners, _) = open_clients(&server, half..conns, 1, &[], true).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (_, mut c) in stable {
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(f) = c.next().await {
                if let Frame::Text(t) = f {
                    if find_ts(t).is_some() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut publisher = HttpPublisher::connect(server.addr, API_KEY)
        .await
        .expect("publisher");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut published = 0u64;
    let mut replaced = 0usize;
    let mut next_id = conns;
    let step = (replace / 10).max(1);
    // Two phases with the same connections and the same publishing: a warm-up without
    // churn gives the baseline (queues, buffers and metrics of a node that has been
    // publishing), then the churn; RSS is read after each, once deliveries drained.
    let mut rss = [0u64; 2];
    for (phase, phase_secs) in [(0usize, 5u64), (1, duration)] {
        let until = Instant::now() + Duration::from_secs(phase_secs);
        let mut next_pub = Instant::now();
        let mut next_churn = Instant::now();
        while Instant::now() < until {
            if Instant::now() >= next_pub {
                let body = format!(
                    r#"{{"channel":"public:c0","type":"bench","payload":{{"ts":{}}}}}"#,
                    now_ns()
                );
                if publisher.send("/api/publish", &body).await.is_ok()
                    && matches!(publisher.recv().await, Ok(200))
                {
                    published += 1;
                }
                next_pub += interval;
            }
            if phase == 1 && Instant::now() >= next_churn {
                // Abrupt closes (no close frame), then as many new connections.
                let n = step.min(churners.len());
                churners.drain(..n);
                let (mut fresh, _) =
                    open_clients(&server, next_id..next_id + n, 1, &[], true).await;
                next_id += n;
                replaced += n;
                churners.append(&mut fresh);
                next_churn += Duration::from_millis(100);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let expected = published * half as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The allocator returns freed pages after a decay of about 10 s.
        tokio::time::sleep(Duration::from_secs(12)).await;
        rss[phase] = server.rss_kib();
    }
    let [rss_before, rss_after] = rss;
    let expected = published * half as u64;
    for r in readers {
        r.abort();
    }
    let got = delivered.load(Ordering::Relaxed);
    json!({
        "scenario": "churn",
        "conns": conns,
        "replaced": replaced,
        "publications": published,
        "expected": expected,
        "delivered": got,
        "missing": expected.saturating_sub(got),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_delta_kib_per_conn": (rss_after as f64 - rss_before as f64) / conns as f64,
    })
}
