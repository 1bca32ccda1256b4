//! The fan-out scenario: subscribers read and time every publication (per-thread HDR
//! histograms), one pipelined publisher, bounded outstanding deliveries or a rate.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fleet::Remote;
use crate::publish::{HttpPublisher, Publisher, PusherPublisher};
use crate::servers::*;
use crate::wsclient::WsClient;
use crate::wsclient::{find_ts, Frame};
use crate::{open_fleet, Common, Load, Target, API_KEY, PUSHER_APP_ID, PUSHER_KEY, SECRET};

thread_local! {
    /// This thread's histogram and the run it belongs to.
    static HIST: RefCell<Option<(usize, SharedHistogram)>> = const { RefCell::new(None) };
}

pub(crate) type SharedHistogram = Arc<Mutex<Histogram<u64>>>;

/// Per-thread latency histograms (no contention on the hot path), merged at the end.
#[derive(Clone, Default)]
pub(crate) struct Latencies(Arc<Mutex<Vec<SharedHistogram>>>);

impl Latencies {
    pub(crate) fn record(&self, us: u64) {
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

    pub(crate) fn merged(&self) -> Histogram<u64> {
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

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One reader task per client: counts and times every benchmark publication.
pub(crate) fn spawn_readers(
    clients: Vec<(usize, WsClient)>,
    delivered: &Arc<AtomicU64>,
    lat: &Latencies,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut readers = Vec::with_capacity(clients.len());
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
    readers
}

/// Runs fan-out against an already started server with open clients, some of them
/// possibly held by other generator processes (`remote`).
pub(crate) async fn fanout_on(
    server: &Server,
    clients: Vec<(usize, WsClient)>,
    mut remote: Remote,
    channels: usize,
    load: &Load,
) -> Value {
    let conns = clients.len() + remote.ids.len();
    let local_delivered = Arc::new(AtomicU64::new(0));
    let lat = Latencies::default();
    let mut per_channel = vec![0u64; channels.max(1)];
    for i in clients.iter().map(|(i, _)| i).chain(remote.ids.iter()) {
        per_channel[i % channels.max(1)] += 1;
    }
    let readers = spawn_readers(clients, &local_delivered, &lat);
    let delivered = || local_delivered.load(Ordering::Relaxed) + remote.delivered();
    let pad = "x".repeat(load.payload.saturating_sub(30));
    let mut publisher = publisher_for(server).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(load.duration);
    let mut published = 0u64;
    let mut expected = 0u64;
    let mut errors = 0u64;
    let interval = load.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_at = Instant::now();
    let mut ch = 0usize;
    while Instant::now() < until {
        let outstanding = expected.saturating_sub(delivered());
        let window_msgs = load.window * (conns as u64 / channels.max(1) as u64).max(1);
        let may_send = match interval {
            Some(_) => Instant::now() >= next_at,
            None => outstanding < window_msgs,
        };
        if may_send && publisher.in_flight() < load.depth {
            let payload = format!(r#"{{"ts":{},"pad":"{pad}"}}"#, now_ns());
            // Switchyard batches through /api/broadcast, Sockudo through an event's
            // `channels` list (at most 100); the others publish one by one.
            let batch = match server.target {
                Target::Switchyard => load.batch.clamp(1, channels.max(1)),
                Target::Sockudo => load.batch.clamp(1, channels.clamp(1, 100)),
                _ => 1,
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
                Target::Sockudo => {
                    let list: Vec<String> = (0..batch)
                        .map(|j| format!("c{}", (ch + j) % channels.max(1)))
                        .collect();
                    let body = json!({"name": "bench", "channels": list, "data": payload});
                    (String::new(), body.to_string())
                }
                // The ceiling sends the bytes a node would: the same envelope, pre-encoded.
                Target::Ceiling => (
                    format!("/publish?ch={ch}"),
                    format!(
                        r#"{{"type":"bench","channel":"public:c{ch}","payload":{payload},"timestamp":"2026-01-01T00:00:00.000Z"}}"#
                    ),
                ),
            };
            if publisher.send(&path, body).await.is_err() {
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
        if publisher.in_flight() > 0 {
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
    while publisher.in_flight() > 0 {
        if !matches!(publisher.recv().await, Ok(200)) {
            errors += 1;
        }
    }
    let publish_time = start.elapsed();
    // Drain: wait (bounded) for every expected delivery.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while delivered() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = start.elapsed();
    let got = delivered();
    for r in readers {
        r.abort();
    }
    let mut h = lat.merged();
    remote.finish(&mut h).await;
    json!({
        "scenario": "fanout",
        "target": format!("{:?}", server.target).to_lowercase(),
        "conns": conns,
        "generator_processes": 1 + remote.processes(),
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

/// The publisher a target takes.
pub(crate) async fn publisher_for(server: &Server) -> Publisher {
    match server.target {
        Target::Sockudo => Publisher::Pusher(PusherPublisher::new(
            server.addr,
            PUSHER_APP_ID,
            PUSHER_KEY,
            SECRET,
        )),
        _ => Publisher::Http(
            HttpPublisher::connect(server.addr, API_KEY)
                .await
                .expect("publisher"),
        ),
    }
}

pub(crate) async fn fanout(c: &Common, load: &Load) -> Value {
    let server = spawn(c.target, "").await;
    let (clients, remote, _) = open_fleet(&server, c, true).await;
    fanout_on(&server, clients, remote, c.channels, load).await
}
