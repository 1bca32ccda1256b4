//! switchyard-bench: a load generator that measures a switchyard node (or cluster)
//! and, in the same run, the ceiling — a minimal fan-out server on the same socket
//! stack — so every figure is also a ratio. One JSON line per run, then a summary.
//!
//!   switchyard-bench idle   --conns 19000 --channels 100
//!   switchyard-bench fanout --conns 10000 --channels 1 --payload 100 --duration 10
//!   switchyard-bench reconnect --conns 19000
//!   switchyard-bench suite  --conns 10000        (everything above, with ratios)

mod ceiling;
mod publish;
mod servers;
mod wsclient;

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use switchyard::auth::{unix_now, Auth, MintClaims};
use switchyard::Config;

use publish::HttpPublisher;
use servers::*;
use wsclient::{find_ts, Frame, WsClient};

const SECRET: &str = "bench-secret";
const API_KEY: &str = "bench-key";

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Load generator for switchyard, with the ceiling beside it"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Switchyard,
    Ceiling,
    /// Socket.IO 4 (`bench/peers/install.sh` installs it from npm).
    Socketio,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Subscribed connections.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Channels the connections spread over (`public:c<n>`).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    #[arg(long, value_enum, default_value_t = Target::Switchyard)]
    target: Target,
    /// Client source addresses, round-robin (127.0.0.2,... beyond one address's ports).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Idle connections: server RSS per connection and the connect+auth+subscribe rate.
    Idle(Common),
    /// Fan-out throughput, latency and missing deliveries.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
    },
    /// A node with one `user:` channel per connection: time to deliver again after a
    /// Redis restart.
    Reconnect {
        #[arg(long, default_value_t = 19_000)]
        conns: usize,
    },
    /// Fan-out over three nodes on one Redis (subscribers spread, publisher on the
    /// first node) beside a single memory-broker node, with Redis' command counts.
    Cluster {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 1)]
        channels: usize,
        #[command(flatten)]
        load: Load,
    },
    /// Steady connect/disconnect while publishing: stable subscribers lose nothing and
    /// the server's RSS returns to where it was with the same number of connections.
    Churn {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Connections replaced per second (closed abruptly, opened anew).
        #[arg(long, default_value_t = 1000)]
        replace: usize,
        /// Publications per second to the channel everyone is on.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Idle and fan-out on the ceiling and on switchyard in one run, with ratios.
    Suite {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// (internal) run the ceiling server.
    CeilingServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Publications per second in total; as fast as accepted when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Publications whose deliveries may be outstanding at once (max-rate mode).
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// Pipelined HTTP requests per publisher connection.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Channels per request through `/api/broadcast` (switchyard; 1 = `/api/publish`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match cli.cmd {
            Cmd::CeilingServer { listen } => {
                let l = tokio::net::TcpListener::bind(listen).await.expect("bind");
                ceiling::serve(l).await;
            }
            Cmd::Idle(c) => {
                report(&idle(&c).await);
            }
            Cmd::Fanout { common, load } => {
                report(&fanout(&common, &load).await);
            }
            Cmd::Reconnect { conns } => {
                report(&reconnect(conns).await);
            }
            Cmd::Churn {
                conns,
                replace,
                rate,
                duration,
            } => {
                report(&churn(conns, replace, rate, duration).await);
            }
            Cmd::Cluster {
                conns,
                channels,
                load,
            } => {
                for r in cluster(conns, channels, &load).await {
                    report(&r);
                }
            }
            Cmd::Suite { conns, duration } => suite(conns, duration).await,
        }
    });
}

/// Prints the JSON line and a one-line human summary.
fn report(v: &Value) {
    println!("{v}");
    eprintln!("{}", summary(v));
}

fn summary(v: &Value) -> String {
    match v["scenario"].as_str() {
        Some("idle") => format!(
            "idle {} x{}: {:.2} KiB/conn, {:.0} conn/s",
            v["target"], v["conns"], v["kib_per_conn"].as_f64().unwrap_or(0.0), v["connect_rate"].as_f64().unwrap_or(0.0)
        ),
        Some("reconnect") => format!(
            "reconnect x{}: first delivery {} ms, all {} channels {} ms after redis accepted connections, missing {}",
            v["conns"], v["first_delivery_ms"], v["conns"], v["all_channels_delivered_ms"], v["missing"]
        ),
        Some("cluster") => format!(
            "cluster 3 nodes x{}: {:.0} msg/s ({:.2}x one memory node), {:.2} redis PUBLISH per publication, missing {}",
            v["conns"], v["delivered_per_s"].as_f64().unwrap_or(0.0), v["vs_single_node"].as_f64().unwrap_or(0.0),
            v["redis_publish_calls_per_publication"].as_f64().unwrap_or(0.0), v["missing"]
        ),
        Some("churn") => format!(
            "churn x{}: {} connections replaced, RSS {} -> {} KiB ({:+.2} KiB/conn), stable subscribers missing {}",
            v["conns"], v["replaced"], v["rss_before_kib"], v["rss_after_kib"],
            v["rss_delta_kib_per_conn"].as_f64().unwrap_or(0.0), v["missing"]
        ),
        Some("fanout") => format!(
            "fanout {} x{} over {} ch: {:.0} msg/s, {:.0} pub/s, p50 {} us p99 {} us max {} us, missing {}",
            v["target"], v["conns"], v["channels"], v["delivered_per_s"].as_f64().unwrap_or(0.0),
            v["pubs_per_s"].as_f64().unwrap_or(0.0), v["latency_us"]["p50"], v["latency_us"]["p99"], v["latency_us"]["max"], v["missing"]
        ),
        _ => v.to_string(),
    }
}

// ---------------------------------------------------------------- clients

fn auth() -> Auth {
    let c = Config::from_toml(&format!("auth.jwt_secret = \"{SECRET}\"")).expect("config");
    Auth::from_config(&c).expect("auth")
}

/// Opens `n` connections: on switchyard each authenticates (HS256 token in the
/// query), is auto-subscribed to `user:u<i>` and subscribes to `public:c<i % k>`.
async fn open_clients(
    server: &Server,
    ids: std::ops::Range<usize>,
    k: usize,
    sources: &[IpAddr],
    subscribe: bool,
) -> (Vec<(usize, WsClient)>, Duration) {
    let addr = server.addr;
    let target = server.target;
    let sources: Arc<[IpAddr]> = Arc::from(sources.to_vec());
    // Tokens are minted before the clock starts: the rate measures the server.
    // Subscribed through the token's `channels` claim: connect, auth and both
    // subscriptions in one round trip, as a real app would do it.
    let auth = auth();
    let paths: Vec<(usize, String)> = ids
        .map(|i| {
            let ch = i % k.max(1);
            let path = match target {
                Target::Ceiling => format!("/ws?ch={ch}"),
                Target::Socketio => format!("/socket.io/?EIO=4&transport=websocket&ch={ch}"),
                Target::Switchyard => {
                    let channels = if subscribe {
                        vec![format!("public:c{ch}")]
                    } else {
                        Vec::new()
                    };
                    let claims = MintClaims {
                        sub: format!("u{i}"),
                        exp: unix_now() + 86400,
                        channels,
                        ..MintClaims::default()
                    };
                    format!("/ws?token={}", auth.mint(&claims).expect("mint"))
                }
            };
            (i, path)
        })
        .collect();
    let start = Instant::now();
    let clients: Vec<(usize, WsClient)> = stream::iter(paths)
        .map(|(i, path)| {
            let sources = sources.clone();
            async move {
                let src = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                let mut c = WsClient::connect(addr, &path, src)
                    .await
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                match target {
                    Target::Switchyard => c.wait_for(b"auth_success").await.expect("auth_success"),
                    // Engine.IO open, then connect to the default namespace.
                    Target::Socketio => {
                        c.wait_for(b"\"sid\"").await.expect("engine.io open");
                        c.send_text("40").await.expect("socket.io connect");
                        c.wait_for(b"\"sid\"").await.expect("socket.io connected");
                    }
                    Target::Ceiling => {}
                }
                c.shrink();
                (i, c)
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    (clients, start.elapsed())
}

// ---------------------------------------------------------------- idle

async fn idle(c: &Common) -> Value {
    let server = spawn(c.target, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let (clients, took) = open_clients(&server, 0..c.conns, c.channels, &c.sources, true).await;
    // Let allocator and kernel settle before reading RSS again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    drop(clients);
    json!({
        "scenario": "idle",
        "target": format!("{:?}", c.target).to_lowercase(),
        "conns": c.conns,
        "channels": c.channels,
        "subscriptions_per_conn": if c.target == Target::Switchyard { 2 } else { 0 },
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after.saturating_sub(before)) as f64 / c.conns as f64,
        "connect_rate": c.conns as f64 / took.as_secs_f64(),
    })
}

// ---------------------------------------------------------------- fan-out

thread_local! {
    /// This thread's histogram and the run it belongs to.
    static HIST: RefCell<Option<(usize, SharedHistogram)>> = const { RefCell::new(None) };
}

type SharedHistogram = Arc<Mutex<Histogram<u64>>>;

/// Per-thread latency histograms (no contention on the hot path), merged at the end.
#[derive(Clone, Default)]
struct Latencies(Arc<Mutex<Vec<SharedHistogram>>>);

impl Latencies {
    fn record(&self, us: u64) {
        let run = Arc::as_ptr(&self.0) as usize;
        HIST.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(r, _)| *r != run) {
                let new = Arc::new(Mutex::new(
                    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
                ));
                if let Ok(mut all) = self.0.lock() {
                    all.push(new.clone());
                }
                *slot = Some((run, new));
            }
            let Some((_, hist)) = slot.as_ref().map(|(r, h)| (*r, h.clone())) else {
                return;
            };
            drop(slot);
            let mut guard = match hist.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let _ = guard.record(us.max(1));
        });
    }

    fn merged(&self) -> Histogram<u64> {
        let mut out = Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram");
        if let Ok(all) = self.0.lock() {
            for h in all.iter() {
                if let Ok(h) = h.lock() {
                    let _ = out.add(&*h);
                }
            }
        }
        out
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs fan-out against an already started server with open clients.
async fn fanout_on(
    server: &Server,
    clients: Vec<(usize, WsClient)>,
    channels: usize,
    load: &Load,
) -> Value {
    let conns = clients.len();
    let delivered = Arc::new(AtomicU64::new(0));
    let lat = Latencies::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut per_channel = vec![0u64; channels.max(1)];
    for (i, _) in &clients {
        per_channel[i % channels.max(1)] += 1;
    }
    let mut readers = Vec::with_capacity(conns);
    for (_, mut c) in clients {
        let delivered = delivered.clone();
        let lat = lat.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match c.next().await {
                    Ok(Frame::Text(t)) => {
                        if let Some(ts) = find_ts(t) {
                            lat.record(now_ns().saturating_sub(ts) / 1000);
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Frame::Close(_)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }));
    }
    let pad = "x".repeat(load.payload.saturating_sub(30));
    let mut publisher = HttpPublisher::connect(server.addr, API_KEY)
        .await
        .expect("publisher");
    let start = Instant::now();
    let until = start + Duration::from_secs(load.duration);
    let mut published = 0u64;
    let mut expected = 0u64;
    let mut errors = 0u64;
    let interval = load.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_at = Instant::now();
    let mut ch = 0usize;
    while Instant::now() < until {
        let outstanding = expected.saturating_sub(delivered.load(Ordering::Relaxed));
        let window_msgs = load.window * (conns as u64 / channels.max(1) as u64).max(1);
        let may_send = match interval {
            Some(_) => Instant::now() >= next_at,
            None => outstanding < window_msgs,
        };
        if may_send && publisher.in_flight < load.depth {
            let payload = format!(r#"{{"ts":{},"pad":"{pad}"}}"#, now_ns());
            let batch = if server.target == Target::Switchyard {
                load.batch.clamp(1, channels.max(1))
            } else {
                1
            };
            let (path, body) = match server.target {
                Target::Switchyard if batch > 1 => {
                    let list: Vec<String> = (0..batch)
                        .map(|j| format!("\"public:c{}\"", (ch + j) % channels.max(1)))
                        .collect();
                    (
                        "/api/broadcast".to_owned(),
                        format!(
                            r#"{{"channels":[{}],"type":"bench","payload":{payload}}}"#,
                            list.join(",")
                        ),
                    )
                }
                Target::Switchyard => (
                    "/api/publish".to_owned(),
                    format!(r#"{{"channel":"public:c{ch}","type":"bench","payload":{payload}}}"#),
                ),
                Target::Socketio => (format!("/publish?ch={ch}"), payload.clone()),
                // The ceiling sends the bytes a node would: the same envelope, pre-encoded.
                Target::Ceiling => (
                    format!("/publish?ch={ch}"),
                    format!(
                        r#"{{"type":"bench","channel":"public:c{ch}","payload":{payload},"timestamp":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                ),
            };
            if publisher.send(&path, &body).await.is_err() {
                errors += 1;
                break;
            }
            for _ in 0..batch {
                published += 1;
                expected += per_channel[ch];
                ch = (ch + 1) % channels.max(1);
            }
            if let Some(i) = interval {
                next_at += i;
            }
            continue;
        }
        if publisher.in_flight > 0 {
            match publisher.recv().await {
                Ok(200) => {}
                Ok(_) | Err(_) => errors += 1,
            }
        } else if interval.is_some() {
            tokio::time::sleep_until(next_at.into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    while publisher.in_flight > 0 {
        if !matches!(publisher.recv().await, Ok(200)) {
            errors += 1;
        }
    }
    let publish_time = start.elapsed();
    // Drain: wait (bounded) for every expected delivery.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.abort();
    }
    let got = delivered.load(Ordering::Relaxed);
    let h = lat.merged();
    json!({
        "scenario": "fanout",
        "target": format!("{:?}", server.target).to_lowercase(),
        "conns": conns,
        "channels": channels,
        "payload": load.payload,
        "rate": load.rate,
        "batch": load.batch,
        "publications": published,
        "publish_errors": errors,
        "expected": expected,
        "delivered": got,
        "missing": expected.saturating_sub(got),
        "pubs_per_s": published as f64 / publish_time.as_secs_f64(),
        "delivered_per_s": got as f64 / total.as_secs_f64(),
        "latency_us": {
            "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99), "max": h.max(),
        },
    })
}

async fn fanout(c: &Common, load: &Load) -> Value {
    let server = spawn(c.target, "").await;
    let (clients, _) = open_clients(&server, 0..c.conns, c.channels, &c.sources, true).await;
    fanout_on(&server, clients, c.channels, load).await
}

// ---------------------------------------------------------------- reconnect

async fn reconnect(conns: usize) -> Value {
    let redis_port = free_port();
    let redis_dir = TempDir::new();
    let start_redis = || start_redis(redis_port, &redis_dir);
    let mut redis = start_redis();
    let redis_addr: SocketAddr = format!("127.0.0.1:{redis_port}").parse().expect("addr");
    wait_listening(redis_addr).await;
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
    let _ = redis.kill();
    let _ = redis.wait();
    let mut redis = start_redis();
    wait_listening(redis_addr).await;
    let accepting = Instant::now();
    let client =
        deadpool_redis::redis::Client::open(format!("redis://{redis_addr}")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    // Probe the last user until a delivery proves the path is back.
    let probe = |i: usize| format!(r#"{{"type":"probe","payload":{{"i":{i}}}}}"#);
    let first_delivery = loop {
        let _: Result<i64, _> = deadpool_redis::redis::cmd("PUBLISH")
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
    let mut pipe = deadpool_redis::redis::pipe();
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
    let _ = redis.kill();
    let _ = redis.wait();
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
async fn redis_calls(
    conn: &mut deadpool_redis::redis::aio::MultiplexedConnection,
    cmd: &str,
) -> u64 {
    let info: String = deadpool_redis::redis::cmd("INFO")
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

async fn cluster(conns: usize, channels: usize, load: &Load) -> Vec<Value> {
    // The same load on one memory-broker node first.
    let single = fanout(
        &Common {
            conns,
            channels,
            target: Target::Switchyard,
            sources: Vec::new(),
        },
        load,
    )
    .await;
    let redis_port = free_port();
    let redis_dir = TempDir::new();
    let mut redis = start_redis(redis_port, &redis_dir);
    let redis_addr: SocketAddr = format!("127.0.0.1:{redis_port}").parse().expect("addr");
    wait_listening(redis_addr).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let n = spawn_switchyard(&format!(
            "broker = \"redis\"\nredis.url = \"redis://{redis_addr}\""
        ))
        .await;
        wait_ready(n.addr).await;
        nodes.push(n);
    }
    let mut clients = Vec::with_capacity(conns);
    let third = conns.div_ceil(3);
    for (k, node) in nodes.iter().enumerate() {
        let ids = (k * third).min(conns)..((k + 1) * third).min(conns);
        let (mut c, _) = open_clients(node, ids, channels, &[], true).await;
        clients.append(&mut c);
    }
    let client =
        deadpool_redis::redis::Client::open(format!("redis://{redis_addr}")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let before = redis_calls(&mut conn, "publish").await;
    let mut three = fanout_on(&nodes[0], clients, channels, load).await;
    let after = redis_calls(&mut conn, "publish").await;
    let publications = three["publications"].as_u64().unwrap_or(0);
    three["scenario"] = json!("cluster");
    three["nodes"] = json!(3);
    three["redis_publish_calls"] = json!(after.saturating_sub(before));
    three["redis_publish_calls_per_publication"] =
        json!(after.saturating_sub(before) as f64 / publications.max(1) as f64);
    three["vs_single_node"] = json!(ratio(&three, &single, "delivered_per_s"));
    drop(nodes);
    let _ = redis.kill();
    let _ = redis.wait();
    vec![single, three]
}

// ---------------------------------------------------------------- churn

async fn churn(conns: usize, replace: usize, rate: f64, duration: u64) -> Value {
    let server = spawn_switchyard("").await;
    let half = conns / 2;
    let (stable, _) = open_clients(&server, 0..half, 1, &[], true).await;
    let (mut churners, _) = open_clients(&server, half..conns, 1, &[], true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = server.rss_kib();
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
    let start = Instant::now();
    let until = start + Duration::from_secs(duration);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next_pub = Instant::now();
    let mut next_churn = Instant::now();
    let mut published = 0u64;
    let mut replaced = 0usize;
    let mut next_id = conns;
    let step = (replace / 10).max(1);
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
        if Instant::now() >= next_churn {
            // Abrupt closes (no close frame), then as many new connections.
            let n = step.min(churners.len());
            churners.drain(..n);
            let (mut fresh, _) = open_clients(&server, next_id..next_id + n, 1, &[], true).await;
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = server.rss_kib();
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

// ---------------------------------------------------------------- suite

fn ratio(a: &Value, b: &Value, key: &str) -> f64 {
    let x = a[key].as_f64().unwrap_or(0.0);
    let y = b[key].as_f64().unwrap_or(0.0);
    if y == 0.0 {
        0.0
    } else {
        x / y
    }
}

async fn suite(conns: usize, duration: u64) {
    let load = Load {
        payload: 100,
        duration,
        rate: None,
        window: 8,
        depth: 16,
        batch: 1,
    };
    let mut results = Vec::new();
    for target in [Target::Ceiling, Target::Switchyard] {
        let c = Common {
            conns,
            channels: 1,
            target,
            sources: Vec::new(),
        };
        let r = idle(&c).await;
        report(&r);
        results.push(r);
    }
    for channels in [1usize, 1000] {
        for target in [Target::Ceiling, Target::Switchyard] {
            let c = Common {
                conns,
                channels,
                target,
                sources: Vec::new(),
            };
            // Many small channels: publishers batch with /api/broadcast (SPEC 6 offers
            // it); the ceiling has no such thing and publishes one by one.
            let (batch, window) = if channels > 1 {
                (100, 2000)
            } else {
                (1, load.window)
            };
            let r = fanout(
                &c,
                &Load {
                    batch,
                    window,
                    ..load.clone()
                },
            )
            .await;
            report(&r);
            results.push(r);
        }
    }
    // Latency at half the switchyard max rate (1 channel), on both.
    let half = results[3]["pubs_per_s"].as_f64().unwrap_or(100.0) / 2.0;
    for target in [Target::Ceiling, Target::Switchyard] {
        let c = Common {
            conns,
            channels: 1,
            target,
            sources: Vec::new(),
        };
        let l = Load {
            rate: Some(half),
            ..load.clone()
        };
        let r = fanout(&c, &l).await;
        report(&r);
        results.push(r);
    }
    let ratios = json!({
        "scenario": "ratios",
        "idle_kib_per_conn": results[1]["kib_per_conn"],
        "connect_rate_vs_ceiling": ratio(&results[1], &results[0], "connect_rate"),
        "fanout_1ch_msgs_vs_ceiling": ratio(&results[3], &results[2], "delivered_per_s"),
        "fanout_1000ch_pubs_vs_ceiling": ratio(&results[5], &results[4], "pubs_per_s"),
        "p99_at_half_rate_vs_ceiling": results[7]["latency_us"]["p99"].as_f64().unwrap_or(0.0)
            / results[6]["latency_us"]["p99"].as_f64().unwrap_or(1.0).max(1.0),
        "missing": results.iter().map(|r| r["missing"].as_u64().unwrap_or(0)).sum::<u64>(),
    });
    println!("{ratios}");
    eprintln!("ratios: {ratios:#}");
}
