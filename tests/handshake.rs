//! SPEC 7, handshake limits: a connection that does not complete its HTTP request in
//! `limits.handshake_timeout` is dropped (slowloris); beyond
//! `limits.max_pending_handshakes` connections still waiting for their request are
//! dropped at once, oldest first, so a flood never locks new clients out; request
//! headers over 16 KiB are answered 431. Raw TCP clients, because a proper client
//! cannot misbehave.

use std::time::Duration;

use serde_json::json;
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF or a reset; false if the connection is still open at `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (408/400) before the close is fine: keep reading to EOF.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_upgrade_is_dropped_within_the_handshake_timeout() {
    let node = TestNode::start_with("", "limits.handshake_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(node.addr).await.expect("connect");
    // Headers started and never finished.
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Up")
        .await
        .expect("write");
    assert!(
        closed_by_server(&mut s, WAIT).await,
        "an unfinished request kept its connection past limits.handshake_timeout"
    );
    // An API body that trickles in is held to the same timeout.
    let mut s = TcpStream::connect(node.addr).await.expect("connect");
    s.write_all(
        format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"chan")
            .as_bytes(),
    )
    .await
    .expect("write");
    assert!(
        closed_by_server(&mut s, WAIT).await,
        "an unfinished body kept its connection"
    );
}

/// The status line of the answer to `request`.
async fn status_of(node: &TestNode, request: &[u8]) -> String {
    let mut s = TcpStream::connect(node.addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_headers_over_16_kib_get_431() {
    let node = TestNode::start().await;
    let big = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let line = status_of(&node, big.as_bytes()).await;
    assert!(line.contains(" 431 "), "oversized headers: {line}");
    let fine = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(15 * 1024)
    );
    let line = status_of(&node, fine.as_bytes()).await;
    assert!(
        line.contains(" 200 "),
        "15 KiB of headers is allowed: {line}"
    );
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn publish_to(addr: std::net::SocketAddr, channel: &str, ty: &str) {
    let r = http_client()
        .post(format!("http://{addr}/api/publish"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"channel": channel, "type": ty, "payload": {}}))
        .send()
        .await
        .expect("publish during the flood");
    assert_eq!(r.status(), 200);
}

/// The node as its own process, so its open files can be counted: 5,000 sockets that
/// connect and never send a byte hold at most `max_pending_handshakes` of them (the
/// handshake timeout is long here, so only the cap can explain it; the slowloris test
/// covers the timeout), while normal clients keep connecting and receiving.
#[tokio::test(flavor = "multi_thread")]
async fn idle_half_open_connections_do_not_stop_a_normal_client() {
    let node = NodeProcess::start(
        "",
        "[limits]\nhandshake_timeout = \"60s\"\nmax_pending_handshakes = 1024",
    )
    .await;
    let pid = node.child.id();
    let ws = |sub: &str| format!("ws://{}/ws?token={}", node.addr, token(sub));
    let mut before = Client::connect(&ws("before")).await;
    before.expect("auth_success").await;
    let baseline = open_files(pid);
    let idle: Vec<TcpStream> = futures_util::future::join_all(
        (0..5000).map(|_| async { TcpStream::connect(node.addr).await.ok() }),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(idle.len() > 4000, "opened {} idle sockets", idle.len());
    // Dropping the oldest is asynchronous: the count settles within moments.
    eventually(
        "the node to hold at most the cap of idle sockets",
        || async move { (open_files(pid) <= baseline + 1024 + 16).then_some(()) },
    )
    .await;
    // A connection made before the flood keeps receiving during it.
    publish_to(node.addr, "user:before", "during").await;
    before.until("during").await;
    // A new client gets in at once (its slot is taken from the oldest idle socket)
    // and receives.
    let mut after = Client::connect(&ws("after")).await;
    after.expect("auth_success").await;
    publish_to(node.addr, "user:after", "hello").await;
    after.until("hello").await;
    drop(idle);
}
