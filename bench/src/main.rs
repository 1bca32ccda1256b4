//! switchyard-bench: a load generator that measures a switchyard node (or cluster)
//! and, in the same run, the ceiling — a minimal fan-out server on the same socket
//! stack — so every figure is also a ratio. One JSON line per run, then a summary.
//!
//!   switchyard-bench idle   --conns 19000 --channels 100
//!   switchyard-bench fanout --conns 10000 --channels 1 --payload 100 --duration 10
//!   switchyard-bench reconnect --conns 19000
//!   switchyard-bench suite  --conns 10000        (everything above, with ratios)

mod ceiling;
mod fanout;
mod fleet;
mod publish;
mod resubscribe;
mod scenarios;
mod servers;
mod wsclient;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use switchyard::auth::{unix_now, Auth, MintClaims};

use fanout::fanout;
use scenarios::{churn, cluster, reconnect};
use servers::*;
use wsclient::WsClient;

const SECRET: &str = "bench-secret";
const API_KEY: &str = "bench-key";
/// Sockudo's default app (its REST API is signed with `SECRET`).
const PUSHER_APP_ID: &str = "bench";
const PUSHER_KEY: &str = "bench-key";

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
    /// Sockudo, Pusher protocol (`bench/peers/install.sh` installs it from crates.io).
    Sockudo,
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
    /// Generator processes sharing the connections (each may hold at most 20,000
    /// open files); the default takes one per 19,000 connections.
    #[arg(long)]
    procs: Option<usize>,
}

impl Common {
    /// One generator process's worth of options: no extra source addresses.
    fn new(conns: usize, channels: usize, target: Target) -> Common {
        Common {
            conns,
            channels,
            target,
            sources: Vec::new(),
            procs: None,
        }
    }

    fn procs(&self) -> usize {
        self.procs.unwrap_or(self.conns.div_ceil(19_000)).max(1)
    }
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
    /// One node with many channels loses its subscription path (a Redis restart, or
    /// every pub/sub connection killed on a 3-master Cluster): time until the first
    /// and the last channel deliver again.
    Resubscribe {
        #[arg(long, default_value_t = 100_000)]
        channels: usize,
        /// Subscriptions per connection.
        #[arg(long, default_value_t = 200)]
        per_conn: usize,
        /// A 3-master Redis Cluster instead of one Redis.
        #[arg(long)]
        cluster: bool,
    },
    /// Fan-out over three nodes on one Redis (subscribers spread, publisher on the
    /// first node) beside a single memory-broker node, with Redis' command counts.
    Cluster {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// switchyard, or a peer on its Redis adapter (socketio, sockudo).
        #[arg(long, value_enum, default_value_t = Target::Switchyard)]
        target: Target,
        /// Worker threads of each of the 3 nodes (TOKIO_WORKER_THREADS); the default
        /// is one per core, i.e. 6 threads for 3 nodes on this 2-core machine.
        #[arg(long)]
        node_threads: Option<usize>,
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
        /// Rounds (each runs the ceiling and switchyard back to back); the final line
        /// gives each ratio's median over the rounds and its range.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// (internal) hold a share of the connections for a parent benchmark process.
    Clients {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long)]
        from: usize,
        #[arg(long)]
        to: usize,
        #[arg(long)]
        channels: usize,
        #[arg(long, value_delimiter = ',')]
        sources: Vec<IpAddr>,
        #[arg(long)]
        no_subscribe: bool,
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
            Cmd::Clients {
                addr,
                target,
                from,
                to,
                channels,
                sources,
                no_subscribe,
            } => {
                fleet::run_child(addr, target, from..to, channels, &sources, !no_subscribe).await;
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
            Cmd::Resubscribe {
                channels,
                per_conn,
                cluster,
            } => {
                report(&resubscribe::resubscribe(channels, per_conn, cluster).await);
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
                target,
                node_threads,
                channels,
                load,
            } => {
                for r in cluster(target, node_threads, conns, channels, &load).await {
                    report(&r);
                }
            }
            Cmd::Suite {
                conns,
                duration,
                repeat,
            } => suite(conns, duration, repeat).await,
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
            "cluster {} 3 nodes x{}: {:.0} msg/s ({} one in-memory node), {:.2} redis PUBLISH per publication, missing {}",
            v["target"], v["conns"], v["delivered_per_s"].as_f64().unwrap_or(0.0),
            v["vs_single_node"].as_f64().map_or("no".to_owned(), |r| format!("{r:.2}x")),
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

pub(crate) fn auth() -> Auth {
    testkit::auth_with_secret(SECRET)
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
    open_clients_at(server.addr, server.target, ids, k, sources, subscribe).await
}

/// Opens `c.conns` connections over `c.procs()` generator processes at once: this
/// one's share locally, the rest in child processes. Returns the local clients, the
/// remote ones, and the time until the slowest share was connected.
async fn open_fleet(
    server: &Server,
    c: &Common,
    subscribe: bool,
) -> (Vec<(usize, WsClient)>, fleet::Remote, Duration) {
    let parts = fleet::split(0..c.conns, c.procs());
    let mut remote = fleet::Remote::spawn(
        server.addr,
        server.target,
        &parts[1..],
        c.channels,
        &c.sources,
        subscribe,
    );
    let (clients, took) =
        open_clients(server, parts[0].clone(), c.channels, &c.sources, subscribe).await;
    let remote_took = remote.await_ready().await;
    (clients, remote, took.max(remote_took))
}

async fn open_clients_at(
    addr: SocketAddr,
    target: Target,
    ids: std::ops::Range<usize>,
    k: usize,
    sources: &[IpAddr],
    subscribe: bool,
) -> (Vec<(usize, WsClient)>, Duration) {
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
                Target::Sockudo => {
                    format!("/app/{PUSHER_KEY}?protocol=7&client=bench&version=1&ch={ch}")
                }
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
                    // Pusher: connection_established, then subscribe to public `c<n>`.
                    Target::Sockudo => {
                        c.wait_for(b"connection_established")
                            .await
                            .expect("pusher connected");
                        let ch = i % k.max(1);
                        c.send_text(&format!(
                            r#"{{"event":"pusher:subscribe","data":{{"channel":"c{ch}"}}}}"#
                        ))
                        .await
                        .expect("pusher subscribe");
                        c.wait_for(b"subscription_succeeded")
                            .await
                            .expect("pusher subscribed");
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
    let (clients, mut remote, took) = open_fleet(&server, c, true).await;
    // Let allocator and kernel settle before reading RSS again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    drop(clients);
    remote
        .finish(&mut hdrhistogram::Histogram::new(3).expect("histogram"))
        .await;
    json!({
        "scenario": "idle",
        "target": format!("{:?}", c.target).to_lowercase(),
        "conns": c.conns,
        "generator_processes": c.procs(),
        "channels": c.channels,
        "subscriptions_per_conn": if c.target == Target::Switchyard { 2 } else { 0 },
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after.saturating_sub(before)) as f64 / c.conns as f64,
        "connect_rate": c.conns as f64 / took.as_secs_f64(),
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

/// Runs `repeat` rounds of the suite and prints the median of every ratio, with the
/// lowest and highest: on a shared 2-core machine one round moves by ±20 %.
async fn suite(conns: usize, duration: u64, repeat: usize) {
    let mut rounds = Vec::new();
    for round in 1..=repeat.max(1) {
        let r = suite_round(conns, duration).await;
        println!("{r}");
        eprintln!("round {round}: {r}");
        rounds.push(r);
    }
    let keys = [
        "idle_kib_per_conn",
        "connect_rate_vs_ceiling",
        "fanout_1ch_msgs_vs_ceiling",
        "fanout_1000ch_pubs_vs_ceiling",
        "p99_at_half_rate_vs_ceiling",
    ];
    let mut summary = serde_json::Map::new();
    summary.insert("scenario".into(), json!("suite"));
    summary.insert("rounds".into(), json!(rounds.len()));
    for key in keys {
        let mut v: Vec<f64> = rounds.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        summary.insert(
            key.into(),
            json!({"median": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1]}),
        );
    }
    let missing: u64 = rounds
        .iter()
        .map(|r| r["missing"].as_u64().unwrap_or(0))
        .sum();
    summary.insert("missing".into(), json!(missing));
    let summary = Value::Object(summary);
    println!("{summary}");
    eprintln!("suite: {summary:#}");
}

async fn suite_round(conns: usize, duration: u64) -> Value {
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
        let c = Common::new(conns, 1, target);
        let r = idle(&c).await;
        report(&r);
        results.push(r);
    }
    for channels in [1usize, 1000] {
        for target in [Target::Ceiling, Target::Switchyard] {
            let c = Common::new(conns, channels, target);
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
        let c = Common::new(conns, 1, target);
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
    ratios
}
