//! SPEC section 11: SIGTERM and SIGINT drain the node: /ready 503, no new upgrades,
//! every socket gets `disconnect {shutdown, reconnect: true}` and 1001, spread over
//! `drain_period`, then exit 0.

use std::time::{Duration, Instant};

use testkit::*;

async fn drain_on(sig: &str) {
    let node = NodeProcess::start("drain_period = \"1500ms\"", "").await;
    let base = format!("ws://{}", node.addr);
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(&format!("{base}/ws?token={}", token(&format!("u{i}")))).await;
        c.expect("auth_success").await;
        clients.push(c);
    }
    let signalled = Instant::now();
    node.signal(sig);
    let ready = format!("http://{}/ready", node.addr);
    eventually("/ready to turn 503 while draining", || {
        let ready = ready.clone();
        async move {
            let r = http_client().get(&ready).send().await.ok()?;
            (r.status() == 503).then_some(())
        }
    })
    .await;
    let refused = Client::try_connect(&format!("{base}/ws?token={}", token("late")), &[]).await;
    assert!(refused.is_err(), "no new upgrades while draining");
    // Each client waits for its close on its own task, so the times are when it came.
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { (c.closed().await, signalled.elapsed()) }))
        .collect();
    let mut closed_at = Vec::new();
    for t in tasks {
        let (closed, at) = t.await.expect("client task");
        closed_at.push(at);
        assert_eq!(closed.code, Some(1001));
        let d = closed.disconnect.expect("disconnect before 1001");
        assert_eq!(d["payload"]["reason"], "shutdown");
        assert_eq!(d["payload"]["reconnect"], true);
    }
    closed_at.sort();
    let (first, last) = (closed_at[0], *closed_at.last().expect("some"));
    assert!(
        last <= Duration::from_millis(1500 + 1000),
        "last close within drain_period (+slack): {last:?}"
    );
    assert!(
        last - first >= Duration::from_millis(500),
        "closes spread over the period, not all at once: {closed_at:?}"
    );
    let mut node = node;
    let status = eventually("the process to exit", || {
        let s = node.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0), "exit 0 after draining");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    drain_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_drains_and_exits_zero() {
    drain_on("INT").await;
}
