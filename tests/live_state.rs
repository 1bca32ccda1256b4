//! Live state (SPEC 16.1–16.4) on every broker: keyed channels with snapshots,
//! `since` and `keys`, deltas, conflation instead of 4010, expiry, and fills after an
//! interruption. What a client holds is rebuilt from the frames it got (snapshot,
//! changes, patches applied with json-patch) and compared with `GET /api/state`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use testkit::raw::{Frame, RawClient};
use testkit::*;

const TABLES: &str = r#"
[namespaces.stock]
subscribe = "any"
publish = "any"
state = true
delta = true
state_max_keys = 3

[namespaces.shelf]
subscribe = "any"
state = true

[namespaces.ttl]
subscribe = "any"
state = true
state_ttl = "1s"

[namespaces.ticker]
subscribe = "any"
state = true
conflate = "200ms"

[namespaces.plain]
subscribe = "any"
state = true
"#;

async fn set(node: &TestNode, ch: &str, key: &str, payload: Value) -> u64 {
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": ch, "type": "level", "key": key, "payload": payload}),
    )
    .await;
    assert_eq!(s, 200, "set {ch} {key}: {r}");
    r["offset"].as_u64().expect("a state change has an offset")
}

async fn delete(node: &TestNode, ch: &str, key: &str) -> u64 {
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": ch, "type": "level", "key": key, "delete": true}),
    )
    .await;
    assert_eq!(s, 200, "delete {ch} {key}: {r}");
    r["offset"].as_u64().expect("offset")
}

/// The node's live keys of `ch`, key → payload.
async fn server_state(node: &TestNode, ch: &str) -> BTreeMap<String, Value> {
    let (s, v) = api_get(node, &format!("/api/state/{ch}")).await;
    assert_eq!(s, 200, "{v}");
    entries(&v["entries"])
        .into_iter()
        .filter(|(_, _, deleted, _)| !deleted)
        .map(|(k, _, _, p)| (k, p))
        .collect()
}

/// (key, offset, deleted, payload) of snapshot entries.
fn entries(v: &Value) -> Vec<(String, u64, bool, Value)> {
    v.as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["key"].as_str().expect("key").to_owned(),
                e["offset"].as_u64().expect("offset"),
                e["deleted"] == true,
                e["payload"].clone(),
            )
        })
        .collect()
}

fn keys_of(v: &Value) -> Vec<(String, bool)> {
    entries(v).into_iter().map(|(k, _, d, _)| (k, d)).collect()
}

/// What a client holds of a state channel, rebuilt from the frames it got.
#[derive(Default, Debug)]
struct Model {
    values: BTreeMap<String, Value>,
    versions: BTreeMap<String, u64>,
    offset: u64,
    deltas: usize,
}

impl Model {
    fn snapshot(&mut self, snap: &Value) {
        let p = &snap["payload"];
        if p["full"] == true {
            self.values.clear();
            self.versions.clear();
        }
        for (k, o, deleted, payload) in entries(&p["entries"]) {
            if deleted {
                self.values.remove(&k);
            } else {
                self.values.insert(k.clone(), payload);
            }
            self.versions.insert(k, o);
        }
        self.offset = p["offset"].as_u64().expect("offset");
    }

    /// Applies a change; a delta must be against the version held.
    fn apply(&mut self, m: &Value) {
        let key = m["key"]
            .as_str()
            .expect("a state change has its key")
            .to_owned();
        let offset = m["offset"].as_u64().expect("offset");
        if m["deleted"] == true {
            self.values.remove(&key);
        } else if m["delta"] == true {
            let base = m["base"].as_u64().expect("a delta carries base");
            assert_eq!(self.versions.get(&key), Some(&base), "delta base held: {m}");
            let v = self.values.get_mut(&key).expect("the base value");
            json_patch::merge(v, &m["payload"]);
            self.deltas += 1;
        } else {
            self.values.insert(key.clone(), m["payload"].clone());
        }
        self.versions.insert(key, offset);
        self.offset = offset;
    }
}

/// Subscribes with `payload` extras; returns `subscribed` and `snapshot`.
async fn subscribe_state(c: &mut Client, ch: &str, extra: Value) -> (Value, Value) {
    let mut payload = json!({"channel": ch});
    if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let sub = c
        .request(json!({"type": "subscribe", "payload": payload}), ch)
        .await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    let snap = c.expect("snapshot").await;
    assert_eq!(snap["payload"]["channel"], ch);
    assert_eq!(snap["payload"]["offset"], sub["payload"]["offset"]);
    (sub, snap)
}

async fn state_channels_keep_the_newest_value_of_each_key(b: Backend) {
    let d = b.start(1, TABLES).await;
    let node = d.node();
    // A key is required on a state channel, and only there.
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": "stock:s", "type": "level", "payload": {}}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("invalid_payload")),
        "{r}"
    );
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": "public:x", "type": "t", "key": "k", "payload": {}}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("invalid_payload")),
        "{r}"
    );
    let (s, _) = api_post(
        node,
        "/api/publish",
        json!({"channel": "stock:s", "type": "level", "key": "bad key", "payload": {}}),
    )
    .await;
    assert_eq!(s, 400, "a key has a channel name's characters");

    assert_eq!(
        set(node, "stock:s", "a", json!({"n": 1})).await,
        1,
        "offsets start at 1"
    );
    set(node, "stock:s", "b", json!({"n": 2})).await;
    set(node, "stock:s", "c", json!({"n": 3})).await;
    // state_max_keys = 3: a fourth key is refused, a change of one held is not.
    let (s, r) = api_post(
        node,
        "/api/publish",
        json!({"channel": "stock:s", "type": "level", "key": "d", "payload": {}}),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("limit_exceeded")),
        "{r}"
    );
    set(node, "stock:s", "a", json!({"n": 4})).await;
    assert_eq!(delete(node, "stock:s", "b").await, 5);
    assert_eq!(
        set(node, "stock:s", "d", json!({"n": 6})).await,
        6,
        "room again"
    );

    let (mut c, _) = Client::authed(node, "u").await;
    let (sub, snap) = subscribe_state(&mut c, "stock:s", json!({})).await;
    assert_eq!(sub["payload"]["offset"], 6);
    assert!(
        sub["payload"]["recovered"].is_null(),
        "no since, no recovered"
    );
    assert_eq!(snap["payload"]["full"], true);
    assert_eq!(
        keys_of(&snap["payload"]["entries"]),
        [
            ("c".into(), false),
            ("a".into(), false),
            ("d".into(), false)
        ],
        "live keys in offset order"
    );
    let first = &snap["payload"]["entries"][0];
    assert_eq!(
        (first["type"].as_str(), &first["payload"]),
        (Some("level"), &json!({"n": 3}))
    );
    assert!(first["timestamp"].is_string());
    let epoch = sub["payload"]["epoch"].as_str().expect("epoch").to_owned();

    // Client publishes on the channel: a key is required, max_keys holds.
    let e = c
        .request(
            json!({"type": "level", "channel": "stock:s", "payload": {}}),
            "nokey",
        )
        .await;
    assert_eq!(
        (e["type"].as_str(), e["payload"]["code"].as_str()),
        (Some("error"), Some("invalid_payload"))
    );
    let e = c
        .request(
            json!({"type": "level", "channel": "stock:s", "key": "e", "payload": {}}),
            "full",
        )
        .await;
    assert_eq!(e["payload"]["code"], "limit_exceeded", "{e}");
    c.send(
        json!({"type": "level", "channel": "stock:s", "key": "a", "payload": {"n": 7}, "id": "ok"}),
    )
    .await;
    // The ack and the change itself, in either order.
    let (mut acked, mut seen) = (None, None);
    while acked.is_none() || seen.is_none() {
        let m = c.next_json().await.expect("open");
        match m["type"].as_str() {
            Some("ack") => acked = m["payload"]["offset"].as_u64(),
            Some("level") => seen = Some((m["key"].clone(), m["offset"].as_u64())),
            _ => {}
        }
    }
    assert_eq!(acked, Some(7));
    assert_eq!(seen, Some((json!("a"), Some(7))));
    delete(node, "stock:s", "c").await;
    let gone = c.until("level").await;
    assert_eq!(
        (gone["deleted"].as_bool(), gone["offset"].as_u64()),
        (Some(true), Some(8))
    );
    assert!(
        gone.get("payload").is_none(),
        "a deletion has no payload: {gone}"
    );

    // `state` and GET /api/state answer the same entries, narrowed by keys alike.
    let st = c
        .request(json!({"type": "state", "channel": "stock:s"}), "st")
        .await;
    assert_eq!(st["type"], "state");
    let (_, api) = api_get(node, "/api/state/stock:s").await;
    assert_eq!(st["payload"]["entries"], api["entries"]);
    assert_eq!(
        (api["offset"].as_u64(), api["epoch"].as_str()),
        (Some(8), Some(epoch.as_str()))
    );
    assert_eq!(
        keys_of(&api["entries"]),
        [("d".into(), false), ("a".into(), false)]
    );
    let (_, narrowed) = api_get(node, "/api/state/stock:s?keys=d,zz").await;
    assert_eq!(keys_of(&narrowed["entries"]), [("d".into(), false)]);
    let st = c
        .request(
            json!({"type": "state", "channel": "stock:s", "payload": {"keys": ["a"]}}),
            "st2",
        )
        .await;
    assert_eq!(keys_of(&st["payload"]["entries"]), [("a".into(), false)]);
    let (s, _) = api_get(node, "/api/state/public:x").await;
    assert_eq!(s, 404, "not a state channel");

    // since: the changes after it, tombstones included; else everything.
    let (mut r, _) = Client::authed(node, "r").await;
    let (sub, snap) = subscribe_state(
        &mut r,
        "stock:s",
        json!({"since": {"offset": 5, "epoch": epoch}}),
    )
    .await;
    assert_eq!(sub["payload"]["recovered"], true);
    assert_eq!(snap["payload"]["full"], false);
    assert_eq!(
        keys_of(&snap["payload"]["entries"]),
        [("d".into(), false), ("a".into(), false), ("c".into(), true)]
    );
    for (since, why) in [
        (json!({"offset": 5, "epoch": "other"}), "another epoch"),
        (json!({"offset": 0, "epoch": epoch}), "offset 0"),
        (
            json!({"offset": 99, "epoch": epoch}),
            "above the newest: a rollback",
        ),
    ] {
        let (mut x, _) = Client::authed(node, "x").await;
        let (sub, snap) = subscribe_state(&mut x, "stock:s", json!({"since": since})).await;
        assert_eq!(sub["payload"]["recovered"], false, "{why}");
        assert_eq!(snap["payload"]["full"], true, "{why}");
        assert_eq!(
            keys_of(&snap["payload"]["entries"]),
            [("d".into(), false), ("a".into(), false)],
            "{why}"
        );
    }
    // keys narrows the snapshot only: other keys still arrive live.
    let (mut k, _) = Client::authed(node, "k").await;
    let (_, snap) = subscribe_state(&mut k, "stock:s", json!({"keys": ["d", "zz"]})).await;
    assert_eq!(keys_of(&snap["payload"]["entries"]), [("d".into(), false)]);
    set(node, "stock:s", "a", json!({"n": 9})).await;
    assert_eq!(k.until("level").await["key"], "a");
    // Subscribing again answers again, with a fresh snapshot.
    let (_, snap) = subscribe_state(&mut k, "stock:s", json!({})).await;
    assert_eq!(keys_of(&snap["payload"]["entries"]).len(), 2);
    assert_eq!(
        metric(node, "switchyard_state_keys").await,
        2.0,
        "this node's replica"
    );

    // A service writes straight into Redis with one function call.
    if let Some(out) = d.cli(&[
        "FCALL",
        "switchyard_set",
        "1",
        "switchyard:{stock:s}",
        r#"{"type":"level","key":"d","payload":{"n":10}}"#,
        "3",
        "0",
    ]) {
        assert!(out.starts_with("10\n"), "[offset, epoch]: {out}");
        let m = k.until("level").await;
        assert_eq!(
            (m["key"].as_str(), m["offset"].as_u64(), &m["payload"]),
            (Some("d"), Some(10), &json!({"n": 10}))
        );
        let refused = d
            .cli(&[
                "FCALL",
                "switchyard_set",
                "1",
                "switchyard:{stock:s}",
                r#"{"type":"level","payload":{}}"#,
                "3",
                "0",
            ])
            .unwrap_or_default();
        assert!(refused.contains("key"), "no key: {refused}");
    }
}

/// A publisher hammers the channel while subscribers arrive one after another: each
/// gets a snapshot and then exactly the changes after its offset, none missing, none
/// twice, and ends holding what the node holds.
async fn snapshot_then_every_change_while_a_publisher_hammers(b: Backend) {
    let d = b.start(2, TABLES).await;
    let publisher_node = &d.nodes[0];
    let reader_node = d.nodes.last().expect("a node");
    for k in 0..20 {
        set(publisher_node, "shelf:s", &format!("k{k}"), json!({"i": 0})).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for w in 0..2u64 {
        let (stop, done) = (stop.clone(), done.clone());
        let url = publisher_node.http("/api/publish");
        publishers.push(tokio::spawn(async move {
            let http = http_client();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let body = if i % 7 == 3 {
                    json!({"channel": "shelf:s", "type": "level", "key": format!("k{}", i % 20), "delete": true})
                } else {
                    json!({"channel": "shelf:s", "type": "level", "key": format!("k{}", i % 20), "payload": {"i": i}})
                };
                let r = http.post(&url).header("X-API-Key", API_KEY).json(&body).send().await.expect("publish");
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
                i += 2;
            }
        }));
    }
    let mut readers = Vec::new();
    for n in 0..8u64 {
        // Each arrives after more changes went by.
        eventually("the publishers to move on", || async {
            (done.load(Ordering::Relaxed) >= 40 * (n + 1)).then_some(())
        })
        .await;
        let (mut c, _) = Client::authed(reader_node, &format!("r{n}")).await;
        let (_, snap) = subscribe_state(&mut c, "shelf:s", json!({})).await;
        readers.push(tokio::spawn(async move {
            let mut model = Model::default();
            model.snapshot(&snap);
            loop {
                let m = c.next_json().await.expect("open");
                if m["channel"] != "shelf:s" {
                    continue;
                }
                let o = m["offset"].as_u64().expect("offset");
                assert_eq!(
                    o,
                    model.offset + 1,
                    "reader {n}: no gap, no duplicate after the snapshot"
                );
                if m["key"] == "end" {
                    return model;
                }
                model.apply(&m);
            }
        }));
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher");
    }
    let expected = server_state(publisher_node, "shelf:s").await;
    set(publisher_node, "shelf:s", "end", json!({})).await;
    for r in readers {
        let model = r.await.expect("reader");
        assert_eq!(
            model.values, expected,
            "the reader holds what the node holds"
        );
    }
}

/// Deltas: a patch against the key's previous version when smaller, with `base`; the
/// full value for a subscriber that did not get the base live, and where a patch
/// cannot say the change.
async fn deltas_are_sent_to_those_who_hold_the_base(b: Backend) {
    let d = b.start(1, TABLES).await;
    let node = d.node();
    let product = |price: Value| json!({"sku": "SH-1", "name": "Runner", "description": "x".repeat(2000), "price": price, "sizes": [40, 41, 42]});
    // A subscribes first and gets every version live.
    let (mut a, _) = Client::authed(node, "a").await;
    let (_, snap) = subscribe_state(&mut a, "stock:p", json!({})).await;
    let mut model_a = Model::default();
    model_a.snapshot(&snap);
    let v1 = set(node, "stock:p", "SH-1", product(json!(100))).await;
    let m = a.until("level").await;
    assert!(m.get("delta").is_none(), "a new key: the full value");
    model_a.apply(&m);
    let v2 = set(node, "stock:p", "SH-1", product(json!(101))).await;
    let m = a.until("level").await;
    assert_eq!(
        (m["delta"].as_bool(), m["base"].as_u64()),
        (Some(true), Some(v1)),
        "{m}"
    );
    assert_eq!(m["payload"], json!({"price": 101}), "only what changed");
    model_a.apply(&m);
    // B joins after v2: the next change is a patch against v2, which B never got live.
    let (mut bb, _) = Client::authed(node, "b").await;
    let (_, snap) = subscribe_state(&mut bb, "stock:p", json!({})).await;
    let mut model_b = Model::default();
    model_b.snapshot(&snap);
    set(node, "stock:p", "SH-1", product(json!(102))).await;
    let ma = a.until("level").await;
    assert_eq!(
        (ma["delta"].as_bool(), ma["base"].as_u64()),
        (Some(true), Some(v2))
    );
    model_a.apply(&ma);
    let mb = bb.until("level").await;
    assert!(
        mb.get("delta").is_none() && mb["payload"]["description"].is_string(),
        "B gets the full value: {mb}"
    );
    model_b.apply(&mb);
    // A member set to null: no merge patch says that, so the full value goes.
    set(node, "stock:p", "SH-1", product(Value::Null)).await;
    let ma = a.until("level").await;
    assert!(ma.get("delta").is_none(), "{ma}");
    model_a.apply(&ma);
    // A small payload whose patch is not smaller: full.
    set(node, "stock:p", "tiny", json!({"a": 1})).await;
    set(node, "stock:p", "tiny", json!({"b": 2})).await;
    for _ in 0..2 {
        let m = a.until("level").await;
        assert!(m.get("delta").is_none(), "{m}");
        model_a.apply(&m);
    }
    assert_eq!(model_a.deltas, 2);
    let expected = server_state(node, "stock:p").await;
    assert_eq!(model_a.values, expected);
    assert!(metric(node, "switchyard_delta_bytes_saved_total").await > 3000.0);
}

/// Conflation: a stalled reader of a conflated channel keeps one publication per key
/// instead of a backlog and is never closed; the same reader of a channel without
/// conflation is a slow consumer (4010).
async fn conflation_replaces_instead_of_closing(b: Backend) {
    let d = b
        .start(1, &format!("{TABLES}\n[limits]\nsend_queue = 8"))
        .await;
    let node = d.node();
    let mut stalled = Vec::new();
    for ch in ["ticker:t", "plain:t"] {
        let mut r = RawClient::connect(
            node.addr,
            &format!("/ws?token={}", token("slow")),
            Some(4096),
        )
        .await;
        r.send_text(&json!({"type": "subscribe", "payload": {"channel": ch}}).to_string())
            .await;
        stalled.push(r);
    }
    eventually("both subscribed", || async {
        let (_, a) = api_get(node, "/api/channels?prefix=ticker:").await;
        let (_, b) = api_get(node, "/api/channels?prefix=plain:").await;
        (a["channels"][0]["subscribers"] == 1 && b["channels"][0]["subscribers"] == 1).then_some(())
    })
    .await;
    // More than the kernel's socket buffers hold, so the queue itself fills.
    let blob = "x".repeat(16 * 1024);
    let http = http_client();
    const N: u64 = 600;
    for i in 1..=N {
        for ch in ["ticker:t", "plain:t"] {
            let key = ["bid", "ask", "last"][(i % 3) as usize];
            let r = http
                .post(node.http("/api/publish"))
                .header("X-API-Key", API_KEY)
                .json(&json!({"channel": ch, "type": "tick", "key": key, "payload": {"i": i, "blob": blob}}))
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 200);
        }
    }
    let mut plain = stalled.pop().expect("plain");
    let (code, _) = plain.until_close().await;
    assert_eq!(code, Some(4010), "no conflation: a slow consumer");
    let mut ticker = stalled.pop().expect("ticker");
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    let (mut frames, mut conflated) = (0, 0);
    while newest.values().filter(|&&i| i + 3 > N).count() < 3 {
        match tokio::time::timeout(WAIT, ticker.next_frame())
            .await
            .expect("a frame")
        {
            Some(Frame::Text(t)) => {
                let m: Value = serde_json::from_str(&t).expect("json");
                if m["type"] == "tick" {
                    frames += 1;
                    conflated += usize::from(m["conflated"] == true);
                    newest.insert(
                        m["key"].as_str().expect("key").into(),
                        m["payload"]["i"].as_u64().expect("i"),
                    );
                }
            }
            Some(Frame::Close(code)) => panic!("conflated subscriber closed: {code:?}"),
            Some(_) => {}
            None => panic!("conflated subscriber dropped"),
        }
    }
    assert!(
        frames < N as usize / 2,
        "{frames} frames for {N} publications"
    );
    assert!(conflated > 0, "some replaced older ones");
    assert!(metric(node, "switchyard_conflated_total").await > 0.0);
}

/// A key past its state_ttl goes: subscribers get a tombstone without any write.
async fn expired_keys_arrive_as_tombstones(b: Backend) {
    let d = b.start(1, TABLES).await;
    let node = d.node();
    let (mut c, _) = Client::authed(node, "u").await;
    subscribe_state(&mut c, "ttl:t", json!({})).await;
    set(node, "ttl:t", "flash-sale", json!({"pct": 20})).await;
    assert_eq!(c.until("level").await["key"], "flash-sale");
    let gone = c.until("level").await;
    assert_eq!(
        (gone["key"].as_str(), gone["deleted"].as_bool()),
        (Some("flash-sale"), Some(true))
    );
    assert!(server_state(node, "ttl:t").await.is_empty());
}

const STREAM: &str = r#"
[namespaces.stream]
subscribe = "any"
presence = "counts"
presence_push_interval = "200ms"
join_leave = true
"#;

/// Waits for a `presence_count` of `(count, users)`; a join or leave on the way fails.
async fn sees_count(c: &mut Client, count: u64, users: u64) {
    loop {
        let m = c.next_json().await.expect("open");
        assert!(
            m["type"] != "join" && m["type"] != "leave",
            "no join/leave per viewer: {m}"
        );
        if m["type"] == "presence_count" {
            let p = &m["payload"];
            assert_eq!(p["channel"], "stream:show");
            if (p["count"].as_u64(), p["users"].as_u64()) == (Some(count), Some(users)) {
                return;
            }
        }
    }
}

/// Counting presence (16.5) through nodes: pushes instead of join/leave, `presence`
/// with a sample, and viewers leaving the count.
async fn viewer_counts_across_nodes(b: Backend) {
    let d = b.start(3, STREAM).await;
    let mut viewers = Vec::new();
    for i in 0..30 {
        let node = &d.nodes[i % d.nodes.len()];
        let (mut c, _) = Client::authed(node, &format!("u{}", i % 20)).await;
        c.subscribe("stream:show").await;
        viewers.push(c);
    }
    sees_count(&mut viewers[0], 30, 20).await;
    let r = viewers[1]
        .request(json!({"type": "presence", "channel": "stream:show"}), "p")
        .await;
    let p = &r["payload"];
    assert_eq!(
        (p["count"].as_u64(), p["users"].as_u64()),
        (Some(30), Some(20)),
        "{r}"
    );
    let sample = p["clients"].as_array().expect("clients").len();
    assert!((1..=100).contains(&sample), "a sample: {sample}");
    let (_, api) = api_get(d.node(), "/api/presence/stream:show").await;
    assert_eq!(
        (api["count"].as_u64(), api["users"].as_u64()),
        (Some(30), Some(20))
    );
    // The second connections of u0..u9 go: 20 connections of 20 users.
    for c in viewers.drain(20..) {
        c.close().await;
    }
    sees_count(&mut viewers[0], 20, 20).await;
}

every_broker!(
    viewer_counts_across_nodes,
    state_channels_keep_the_newest_value_of_each_key,
    snapshot_then_every_change_while_a_publisher_hammers,
    deltas_are_sent_to_those_who_hold_the_base,
    conflation_replaces_instead_of_closing,
    expired_keys_arrive_as_tombstones,
);

/// SPEC 16.2 with 5.8: the broker path goes silent while a service writes state
/// straight into Redis; once the node is back, its subscriber gets the newest
/// version of every key changed meanwhile (tombstones included), in offset order,
/// before anything newer, and then live changes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_channel_is_caught_up_from_its_state_after_a_silent_path() {
    use testkit::proxy::Proxy;
    use testkit::redis::RedisServer;
    let redis = tokio::task::block_in_place(RedisServer::start);
    let proxy = Proxy::start(format!("127.0.0.1:{}", redis.port).parse().expect("addr")).await;
    let text = format!("{}\n{TABLES}", config_toml(""));
    let mut config = switchyard::Config::from_toml(&text).expect("config");
    config.broker = switchyard::config::BrokerKind::Redis;
    config.redis.url = format!("redis://{}", proxy.addr);
    let node = TestNode::start_config_with(config).await;
    let set = |key: &str, v: Option<u64>| {
        let env = match v {
            Some(v) => json!({"type": "level", "key": key, "payload": {"v": v}}),
            None => json!({"type": "level", "key": key, "delete": true}),
        };
        let out = tokio::task::block_in_place(|| {
            redis.cli(&[
                "FCALL",
                "switchyard_set",
                "1",
                "switchyard:{shelf:g}",
                &env.to_string(),
                "100",
                "0",
            ])
        });
        out.lines()
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .expect("offset")
    };
    let (mut c, _) = Client::authed(&node, "u").await;
    subscribe_state(&mut c, "shelf:g", json!({})).await;
    for k in ["a", "b", "c"] {
        set(k, Some(1));
        c.until("level").await;
    }
    let before = metric(&node, "switchyard_broker_reconnects_total").await;
    proxy.refuse_new(true);
    proxy.freeze_existing();
    set("a", Some(2));
    let a3 = set("a", Some(3));
    let b_gone = set("b", None);
    let d1 = set("d", Some(1));
    eventually("the node to notice the silent path", || async {
        let r = http_client().get(node.http("/ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    proxy.refuse_new(false);
    eventually("the node to reconnect", || async {
        (metric(&node, "switchyard_broker_reconnects_total").await > before).then_some(())
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = c.until("level").await;
        got.push((
            m["key"].as_str().map(str::to_owned),
            m["offset"].as_u64(),
            m["deleted"] == true,
        ));
    }
    assert_eq!(
        got,
        [
            (Some("a".into()), Some(a3), false),
            (Some("b".into()), Some(b_gone), true),
            (Some("d".into()), Some(d1), false),
        ],
        "the newest of each changed key, in offset order; a's intermediate version skipped"
    );
    let e1 = set("e", Some(1));
    let m = c.until("level").await;
    assert_eq!(
        (m["key"].as_str(), m["offset"].as_u64()),
        (Some("e"), Some(e1)),
        "live again, nothing twice"
    );
}

/// A node that crashes (SIGKILL: no cleanup) takes its viewers out of the count
/// within presence_ttl.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_nodes_viewers_leave_the_count() {
    let redis = tokio::task::block_in_place(testkit::redis::RedisServer::start);
    let top = format!(
        "presence_ttl = \"2s\"\nbroker = \"redis\"\nredis.url = \"{}\"",
        redis.url()
    );
    let a = NodeProcess::start(&format!("{top}\nnode_id = \"a\""), STREAM).await;
    let b = NodeProcess::start(&format!("{top}\nnode_id = \"b\""), STREAM).await;
    let url = |n: &NodeProcess, user: &str| format!("ws://{}/ws?token={}", n.addr, token(user));
    let mut watcher = Client::connect(&url(&a, "w")).await;
    watcher.expect("auth_success").await;
    watcher.subscribe("stream:show").await;
    let mut on_b = Vec::new();
    for i in 0..10 {
        let mut c = Client::connect(&url(&b, &format!("v{i}"))).await;
        c.expect("auth_success").await;
        c.subscribe("stream:show").await;
        on_b.push(c);
    }
    sees_count(&mut watcher, 11, 11).await;
    b.signal("KILL");
    sees_count(&mut watcher, 1, 1).await;
}
