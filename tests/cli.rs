//! SPEC section 10 through the real binary: config errors name the key, environment
//! overrides, `switchyard token`, and development mode with no config at all.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use testkit::*;

fn run_with_config(text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = TempDir::new("cli");
    let path = dir.0.join("c.toml");
    std::fs::write(&path, text).expect("write");
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(&path)
        .env_remove("SWITCHYARD_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_config_refuses_to_start_and_names_the_key() {
    let base = "auth.jwt_secret = \"s\"\n";
    for (extra, key) in [
        ("[limits]\nsend_queue = \"many\"", "limits.send_queue"),
        ("[limits]\nsned_queue = 5", "limits.sned_queue"),
        ("[limits]\nping_interval = \"soon\"", "limits.ping_interval"),
        ("listen = \"nowhere\"", "listen"),
        (
            "[namespaces.x]\nsubscribe = \"everyone\"",
            "namespaces.x.subscribe",
        ),
        (
            "[[routes]]\npath = \"/ws/x\"\nsubscribe = [\"bad channel\"]",
            "routes[0].subscribe",
        ),
        ("broker = \"kafka\"", "broker"),
    ] {
        let text = if extra.starts_with('[') {
            format!("{base}{extra}")
        } else {
            format!("{extra}\n{base}")
        };
        let (code, err) = run_with_config(&text, &[]);
        assert_ne!(code, 0, "{extra} should be refused");
        assert!(
            err.contains(key),
            "error for {extra:?} should name {key}: {err}"
        );
    }
    let (code, err) = run_with_config(base, &[("SWITCHYARD_LIMITS__CLIENT_RATE", "fast")]);
    assert_ne!(code, 0);
    assert!(err.contains("limits.client_rate"), "{err}");
}

#[test]
fn token_command_prints_only_a_verifiable_token() {
    let dir = TempDir::new("tok");
    let path = dir.0.join("c.toml");
    std::fs::write(&path, format!("auth.jwt_secret = \"{SECRET}\"\n")).expect("write");
    let out = Command::new(binary())
        .args([
            "token",
            "--sub",
            "42",
            "--tenant",
            "t1",
            "--role",
            "admin",
            "--subscribe",
            "public:a",
            "--ttl",
            "2h",
        ])
        .arg("--config")
        .arg(&path)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let tok = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout");
    let cfg =
        switchyard::Config::from_toml(&format!("auth.jwt_secret = \"{SECRET}\"")).expect("cfg");
    let claims = switchyard::auth::Auth::from_config(&cfg)
        .expect("auth")
        .verify_connection(tok)
        .expect("valid token");
    assert_eq!(claims.user_id, "42");
    assert_eq!(claims.tenant_id.as_deref(), Some("t1"));
    assert_eq!(claims.roles, vec!["admin"]);
    assert_eq!(claims.channels, vec!["public:a"]);
    assert!(claims.exp > switchyard::auth::unix_now() + 7000);
    // --channel mints a subscription token instead.
    let out = Command::new(binary())
        .args(["token", "--sub", "7", "--channel", "order:1"])
        .env("SWITCHYARD_CONFIG", &path)
        .output()
        .expect("run");
    let sub = String::from_utf8(out.stdout).expect("utf8");
    let who = switchyard::channel::Identity {
        user_id: Some("7".into()),
        ..Default::default()
    };
    switchyard::auth::Auth::from_config(&cfg)
        .expect("auth")
        .verify_subscription(sub.trim(), "order:1", &who)
        .expect("subscription token");
}

#[tokio::test(flavor = "multi_thread")]
async fn development_mode_prints_a_working_token_and_curl() {
    let port = free_port();
    let mut child = Command::new(binary())
        .env_remove("SWITCHYARD_CONFIG")
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_NOT_A_KEY", "1")
        .env("SWITCHYARD_LOG__LEVEL", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(5)
            .collect()
    })
    .await
    .expect("read banner");
    let text = lines.join("\n");
    let token = text
        .split("token=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a token in the banner")
        .to_owned();
    let key = text
        .split("X-API-Key: ")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("an API key in the curl command")
        .to_owned();
    assert!(
        text.contains("curl") && text.contains("/api/publish"),
        "{text}"
    );
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={token}")).await;
    assert_eq!(c.expect("auth_success").await["payload"]["user_id"], "dev");
    let r = http_client()
        .post(format!("http://127.0.0.1:{port}/api/publish"))
        .header("X-API-Key", &key)
        .json(&json!({"channel": "user:dev", "type": "hello", "payload": {"text": "hi"}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    assert_eq!(c.until("hello").await["payload"]["text"], "hi");
    // The demo's inventory table: a state channel with deltas, development mode only.
    for body in [
        json!({"channel": "inventory:demo", "type": "sku", "key": "SKU-01", "payload": {"stock": 9, "price": 120}}),
        json!({"channel": "inventory:demo", "type": "sku", "key": "SKU-01", "payload": {"stock": 8, "price": 120}}),
    ] {
        let r = http_client()
            .post(format!("http://127.0.0.1:{port}/api/publish"))
            .header("X-API-Key", &key)
            .json(&body)
            .send()
            .await
            .expect("keyed publish");
        assert_eq!(r.status(), 200, "{body}");
    }
    c.send(json!({"type": "subscribe", "id": "inv", "payload": {"channel": "inventory:demo"}}))
        .await;
    let snapshot = c.until("snapshot").await;
    assert_eq!(snapshot["payload"]["entries"][0]["key"], "SKU-01");
    assert_eq!(snapshot["payload"]["entries"][0]["payload"]["stock"], 8);
    // The first change after the snapshot goes whole (its base was not sent live);
    // the next is a merge patch against it.
    let mut changes = Vec::new();
    for stock in [7, 6] {
        let r = http_client()
            .post(format!("http://127.0.0.1:{port}/api/publish"))
            .header("X-API-Key", &key)
            .json(&json!({"channel": "inventory:demo", "type": "sku", "key": "SKU-01", "payload": {"stock": stock, "price": 120}}))
            .send()
            .await
            .expect("keyed publish");
        assert_eq!(r.status(), 200);
        changes.push(c.until("sku").await);
    }
    assert_eq!(changes[0]["payload"], json!({"stock": 7, "price": 120}));
    assert_eq!(changes[1]["delta"], true, "deltas are on: {}", changes[1]);
    assert_eq!(changes[1]["payload"], json!({"stock": 6}));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SWITCHYARD_NOT_A_KEY"),
        "unknown variable warned about: {stderr}"
    );
    assert!(
        !stderr.contains(&token) && !stderr.contains(&key),
        "secrets never logged"
    );
}

/// SPEC 10: a node configured by environment alone (docker-compose's case before this
/// fix) is a production node: no /demo, no token minting over HTTP, nothing secret
/// printed. On the old code it ran in development mode and `/demo/session?user=admin`
/// answered the API key and a token for any user.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_configured_by_environment_alone_is_a_production_node() {
    let port = free_port();
    let mut child = Command::new(binary())
        .env_remove("SWITCHYARD_CONFIG")
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_AUTH__JWT_SECRET", "env-only-secret")
        .env("SWITCHYARD_API__KEY", "env-only-key")
        .env("SWITCHYARD_LOG__LEVEL", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    eventually("the env-only node to answer /health", || {
        let url = format!("{base}/health");
        async move {
            http_client()
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        }
    })
    .await;
    for path in ["/demo", "/demo/session?user=admin", "/demo/sdk/index.js"] {
        let r = http_client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 404, "{path} exists only in development mode");
    }
    // The secrets it was given work, so it is that node and not a dev one.
    let r = http_client()
        .get(format!("{base}/api/stats"))
        .header("X-API-Key", "env-only-key")
        .send()
        .await
        .expect("stats");
    assert_eq!(r.status(), 200);
    // The demo's state namespace is not there: the channel is refused.
    let r = http_client()
        .post(format!("{base}/api/publish"))
        .header("X-API-Key", "env-only-key")
        .json(&json!({"channel": "inventory:demo", "type": "sku", "key": "SKU-01", "payload": {"stock": 1}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 400, "no inventory namespace in production");
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("token=") && !stdout.contains("X-API-Key"),
        "no banner: {stdout}"
    );
    for secret in ["env-only-secret", "env-only-key"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed"
        );
    }
}

/// SPEC 10: development mode (no config, no secret) refuses a non-loopback `listen`.
#[test]
fn development_mode_refuses_a_public_listen_address() {
    let port = free_port();
    let mut child = Command::new(binary())
        .env_remove("SWITCHYARD_CONFIG")
        .env("SWITCHYARD_LISTEN", format!("0.0.0.0:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a development node listening on 0.0.0.0 kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a public dev node must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen") && stderr.contains("development mode"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed: no token, no key");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_overrides_the_file() {
    let port = free_port();
    let dir = TempDir::new("env");
    let path = dir.0.join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\nauth.jwt_secret = \"from-file\"\napi.key = \"k\"\n",
    )
    .expect("write");
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_AUTH__JWT_SECRET", SECRET)
        .env("SWITCHYARD_NODE_ID", "from-env")
        .env("SWITCHYARD_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let health = eventually("node on the overridden port", || async move {
        let r = http_client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()?;
        r.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(health["node"], "from-env");
    let mut c = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={}", token("e"))).await;
    c.expect("auth_success").await;
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the node logs its start");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log.format = json: {l}: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
}
