//! Starting what the benchmark measures: switchyard nodes, the ceiling server and
//! redis-server as child processes on free loopback ports, stopped on drop; their RSS.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use testkit::{free_port, TempDir};

use crate::publish::HttpPublisher;
use crate::{Target, API_KEY, PUSHER_APP_ID, PUSHER_KEY, SECRET};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) target: Target,
    pub(crate) _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn spawn_switchyard(extra: &str) -> Server {
    spawn_switchyard_threads(extra, None).await
}

/// A node whose runtime has `threads` worker threads (tokio's default: one per core).
pub(crate) async fn spawn_switchyard_threads(extra: &str, threads: Option<usize>) -> Server {
    let port = free_port();
    let dir = TempDir::new("bench");
    let path = dir.0.join("switchyard.toml");
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nnode_id = \"bench-{port}\"\nauth.jwt_secret = \"{SECRET}\"\napi.key = \"{API_KEY}\"\nlog.level = \"warn\"\nlimits.client_rate = 1000\nlimits.client_burst = 1000\n{extra}\n"
    );
    std::fs::write(&path, config).expect("config");
    let mut cmd = Command::new(testkit::binary());
    if let Some(n) = threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let child = cmd
        .arg("--config")
        .arg(&path)
        .env_remove("SWITCHYARD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn switchyard (build it with `cargo build --release`)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(addr).await;
    Server {
        child,
        addr,
        target: Target::Switchyard,
        _dir: dir,
    }
}

pub(crate) async fn spawn_ceiling() -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .arg("ceiling-server")
        .arg("--listen")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ceiling");
    wait_listening(addr).await;
    Server {
        child,
        addr,
        target: Target::Ceiling,
        _dir: TempDir::new("bench"),
    }
}

pub(crate) async fn spawn_socketio(redis: Option<SocketAddr>) -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/socketio/server.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script).arg("--port").arg(port.to_string());
    if let Some(r) = redis {
        cmd.arg("--redis").arg(format!("redis://{r}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node bench/peers/socketio/server.mjs (run bench/peers/install.sh)");
    wait_listening(addr).await;
    Server {
        child,
        addr,
        target: Target::Socketio,
        _dir: TempDir::new("bench"),
    }
}

/// Sockudo from `bench/peers/sockudo` (installed by `bench/peers/install.sh`), set up
/// through its environment: one app, no rate limits or per-app caps that would refuse
/// a load test, no queue or metrics listener; the Redis adapter when `redis` is given.
pub(crate) async fn spawn_sockudo(redis: Option<SocketAddr>) -> Server {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/sockudo/bin/sockudo");
    // An empty working directory: Sockudo reads ./config/config.{toml,json} if present.
    let dir = TempDir::new("bench");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(&dir.0)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("SOCKUDO_DEFAULT_APP_ID", PUSHER_APP_ID)
        .env("SOCKUDO_DEFAULT_APP_KEY", PUSHER_KEY)
        .env("SOCKUDO_DEFAULT_APP_SECRET", SECRET)
        .env("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", "0")
        .env("SOCKUDO_MAX_CONNECTIONS", "0")
        .env("SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND", "0")
        .env("SOCKUDO_DEFAULT_APP_MAX_EVENT_PAYLOAD_IN_KB", "1024")
        .env("SOCKUDO_DEFAULT_APP_MAX_CHANNEL_NAME_LENGTH", "200")
        .env("SOCKUDO_DEFAULT_APP_MAX_EVENT_NAME_LENGTH", "200")
        .env("SOCKUDO_DEFAULT_APP_MAX_EVENT_CHANNELS_AT_ONCE", "100")
        .env("SOCKUDO_DEFAULT_APP_MAX_EVENT_BATCH_SIZE", "1000")
        .env("QUEUE_DRIVER", "none")
        .env("CACHE_DRIVER", "memory")
        .env("RATE_LIMITER_ENABLED", "false")
        .env("METRICS_ENABLED", "false")
        .env("SOCKUDO_OTEL_ENABLED", "false")
        .env("SSL_ENABLED", "false")
        .env("DEBUG", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match redis {
        Some(r) => cmd
            .env("ADAPTER_DRIVER", "redis")
            .env("REDIS_URL", format!("redis://{r}"))
            .env("ADAPTER_FALLBACK_TO_LOCAL", "false")
            // Its clustered mode refuses a node-local cache.
            .env("CACHE_DRIVER", "redis"),
        None => cmd.env("ADAPTER_DRIVER", "local"),
    };
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run bench/peers/install.sh sockudo)",
            bin.display()
        )
    });
    wait_listening(addr).await;
    Server {
        child,
        addr,
        target: Target::Sockudo,
        _dir: dir,
    }
}

pub(crate) async fn spawn(target: Target, extra: &str) -> Server {
    match target {
        Target::Switchyard => spawn_switchyard(extra).await,
        Target::Ceiling => spawn_ceiling().await,
        Target::Socketio => spawn_socketio(None).await,
        Target::Sockudo => spawn_sockudo(None).await,
    }
}

pub(crate) async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut p) = HttpPublisher::connect(addr, API_KEY).await {
            if p.get_status("/ready").await.unwrap_or(0) == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
