//! The shared test kit of `tests/` and the benchmark: a node on port 0 (in process or
//! as the real binary), real redis-server, Redis Cluster and nginx processes stopped by
//! PID, real WebSocket clients (tokio-tungstenite, plus a raw one for malformed frames),
//! token minting, temp dirs and free ports, and waits that poll with a deadline
//! instead of sleeping.

pub mod backend;
pub mod nginx;
pub mod proxy;
pub mod raw;
pub mod receiver;
pub mod redis;

pub use backend::{Backend, Deployment};

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard::auth::{unix_now, Auth, MintClaims};
use switchyard::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-key";
pub const WAIT: Duration = Duration::from_secs(10);

/// A minimal valid config plus `extra` TOML (top-level keys first, then tables).
pub fn config_toml(extra: &str) -> String {
    let node_id = if extra.contains("node_id") {
        ""
    } else {
        "node_id = \"test-node\"\n"
    };
    format!(
        "listen = \"127.0.0.1:0\"\n{node_id}auth.jwt_secret = \"{SECRET}\"\napi.key = \"{API_KEY}\"\n{extra}\n"
    )
}

/// An in-process node on a free port.
pub struct TestNode {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The Redis this node uses when the suite runs on the Redis broker.
    pub redis: Option<std::sync::Arc<redis::RedisServer>>,
}

/// `SWITCHYARD_TEST_BROKER=redis` runs the same suites on the Redis broker (each node
/// with its own redis-server), so both brokers pass one set of tests.
pub fn redis_suite() -> bool {
    std::env::var("SWITCHYARD_TEST_BROKER").is_ok_and(|v| v == "redis")
}

impl TestNode {
    /// Starts with the default test config.
    pub async fn start() -> TestNode {
        Self::start_with("", "").await
    }

    /// `top`: top-level keys; `tables`: more TOML tables (may repeat [auth] keys via dotted keys).
    pub async fn start_with(top: &str, tables: &str) -> TestNode {
        let text = format!("{}\n{tables}", config_toml(top));
        let config =
            Config::from_toml(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        Self::start_config(config).await
    }

    pub async fn start_config(mut config: Config) -> TestNode {
        let redis = redis_suite().then(|| {
            let r = std::sync::Arc::new(redis::RedisServer::start());
            config.broker = switchyard::config::BrokerKind::Redis;
            config.redis.url = r.url();
            r
        });
        let mut node = Self::start_config_with(config).await;
        node.redis = redis;
        node
    }

    /// Starts a node exactly as configured (used for several nodes on one Redis).
    pub async fn start_config_with(config: Config) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            switchyard::run(config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("node run");
        });
        let node = TestNode {
            addr,
            shutdown: Some(tx),
            task: Some(task),
            redis: None,
        };
        node.wait_ready().await;
        node
    }

    /// Waits until `/ready` says 200 (the broker is up).
    pub async fn wait_ready(&self) {
        let url = self.http("/ready");
        eventually("the node to be ready", || {
            let url = url.clone();
            async move {
                http_client()
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            }
        })
        .await;
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and returns the task that ends once the node drained.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }

    pub async fn publish(&self, channel: &str, ty: &str, payload: Value) -> Value {
        let r = api_post(
            self,
            "/api/publish",
            json!({"channel": channel, "type": ty, "payload": payload}),
        )
        .await;
        assert_eq!(r.0, 200, "publish failed: {}", r.1);
        r.1
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A series' value in the node's `/metrics` (unlabelled name, or name with labels);
/// -1 when absent.
pub async fn metric(node: &TestNode, series: &str) -> f64 {
    let text = http_client()
        .get(node.http("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("http client")
}

pub async fn api_post(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    let r = http_client()
        .post(node.http(path))
        .header("X-API-Key", API_KEY)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn api_get(node: &TestNode, path: &str) -> (u16, Value) {
    let r = http_client()
        .get(node.http(path))
        .header("Authorization", format!("apikey {API_KEY}"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn auth() -> Auth {
    auth_with_secret(SECRET)
}

/// The token minter of a node configured with `secret` (the benchmark has its own).
pub fn auth_with_secret(secret: &str) -> Auth {
    let c = Config::from_toml(&format!("auth.jwt_secret = \"{secret}\"")).expect("config");
    Auth::from_config(&c).expect("auth")
}

/// A connection token for `sub`, valid for an hour, with extra claims.
pub fn token_with(sub: &str, f: impl FnOnce(&mut MintClaims)) -> String {
    let mut c = MintClaims {
        sub: sub.into(),
        exp: unix_now() + 3600,
        ..MintClaims::default()
    };
    f(&mut c);
    auth().mint(&c).expect("mint")
}

pub fn token(sub: &str) -> String {
    token_with(sub, |_| {})
}

/// A subscription token granting `sub` the channel.
pub fn sub_token(sub: &str, channel: &str) -> String {
    token_with(sub, |c| c.channel = Some(channel.into()))
}

/// Polls `f` until it returns `Some`, failing with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client.
pub struct Client {
    pub ws: Ws,
    pub pings: usize,
}

/// How a connection ended, as the client saw it.
#[derive(Debug)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
    /// The `disconnect` message received just before, if any.
    pub disconnect: Option<Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Self::try_connect(url, &[])
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    pub async fn connect_headers(url: &str, headers: &[(&str, &str)]) -> Client {
        Self::try_connect(url, headers)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Connects; an HTTP refusal comes back as `Err(status)` text.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        for (k, v) in headers {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => Err("connect timed out".into()),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                Err(resp.status().as_u16().to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok((ws, _))) => Ok(Client { ws, pings: 0 }),
        }
    }

    /// Connects with a token in the query and reads `auth_success`.
    pub async fn authed(node: &TestNode, sub: &str) -> (Client, Value) {
        let mut c = Client::connect(&node.ws_url(&format!("/ws?token={}", token(sub)))).await;
        let ok = c.expect("auth_success").await;
        (c, ok)
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next JSON message, or `None` if the connection closed first.
    pub async fn next_json(&mut self) -> Result<Value, Closed> {
        self.next_json_within(WAIT).await
    }

    pub async fn next_json_within(&mut self, wait: Duration) -> Result<Value, Closed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {wait:?}"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Some(Ok(Message::Ping(_))) => self.pings += 1,
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    return Err(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        disconnect: None,
                    })
                }
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(e)) => {
                    return Err(Closed {
                        code: None,
                        reason: e.to_string(),
                        disconnect: None,
                    })
                }
                None => {
                    return Err(Closed {
                        code: None,
                        reason: "eof".into(),
                        disconnect: None,
                    })
                }
            }
        }
    }

    /// The next message, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        match self.next_json().await {
            Ok(v) if v["type"] == ty => v,
            Ok(v) => panic!("expected `{ty}`, got {v}"),
            Err(c) => panic!("expected `{ty}`, connection closed: {c:?}"),
        }
    }

    /// Skips other messages until one of type `ty` arrives.
    pub async fn until(&mut self, ty: &str) -> Value {
        loop {
            match self.next_json().await {
                Ok(v) if v["type"] == ty => return v,
                Ok(_) => {}
                Err(c) => panic!("waiting for `{ty}`, connection closed: {c:?}"),
            }
        }
    }

    /// Sends a request and returns the reply carrying its id (other messages skipped).
    pub async fn request(&mut self, mut v: Value, id: &str) -> Value {
        v["id"] = json!(id);
        self.send(v).await;
        loop {
            match self.next_json().await {
                Ok(r) if r["id"] == id => return r,
                Ok(_) => {}
                Err(c) => panic!("waiting for reply {id}: closed {c:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let id = format!("sub-{channel}");
        let r = self
            .request(
                json!({"type": "subscribe", "payload": {"channel": channel}}),
                &id,
            )
            .await;
        assert_eq!(r["type"], "subscribed", "subscribe {channel}: {r}");
        r
    }

    /// Unsubscribes (waiting for `unsubscribed`), then closes normally.
    pub async fn unsubscribe_and_close(mut self, channel: &str) {
        let r = self
            .request(
                json!({"type": "unsubscribe", "payload": {"channel": channel}}),
                "unsub",
            )
            .await;
        assert_eq!(r["type"], "unsubscribed", "unsubscribe {channel}: {r}");
        self.close().await;
    }

    /// Reads until the connection closes; returns the close and the `disconnect` before it.
    pub async fn closed(&mut self) -> Closed {
        let mut disconnect = None;
        loop {
            match self.next_json().await {
                Ok(v) if v["type"] == "disconnect" => disconnect = Some(v),
                Ok(_) => {}
                Err(mut c) => {
                    c.disconnect = disconnect;
                    return c;
                }
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// The `switchyard` binary: `SWITCHYARD_BIN`, else the one cargo built beside the
/// running executable (`target/<profile>/` for the benchmark, its parent for tests in
/// `target/<profile>/deps/`).
pub fn binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join("switchyard"), dir.join("../switchyard")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no switchyard binary beside {}: run `cargo build --bins` or set SWITCHYARD_BIN",
                exe.display()
            )
        })
}

/// The real binary as a child process with a config file; stopped by PID on drop.
pub struct NodeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "switchyard-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).expect("tempdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) ^ (unix_now() << 16)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl NodeProcess {
    /// Starts the binary with `extra` config (see `config_toml`) on a free port and
    /// waits until `/health` answers.
    pub async fn start(extra: &str, tables: &str) -> NodeProcess {
        let port = free_port();
        let dir = TempDir::new("node");
        let text = config_toml(extra).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
        let path = dir.0.join("switchyard.toml");
        std::fs::write(&path, format!("{text}\n{tables}")).expect("write config");
        let log = std::fs::File::create(dir.0.join("stderr.log")).expect("log file");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .env_remove("SWITCHYARD_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut p = NodeProcess {
            child,
            addr,
            _dir: dir,
        };
        let url = format!("http://{addr}/health");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                let log = std::fs::read_to_string(p._dir.0.join("stderr.log")).unwrap_or_default();
                panic!("switchyard exited with {status} before answering /health:\n{log}");
            }
            if http_client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "node process did not answer /health"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
