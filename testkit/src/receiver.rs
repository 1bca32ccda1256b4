//! A real HTTP receiver for webhooks: records every request (headers, body, when)
//! and answers as the test says: 200, a status for the next requests, or never.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::sync::{Mutex, MutexGuard};

/// Poisoning ignored: a test panicking elsewhere must not hide what was received.
fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// This status for the next `n` requests, then 200.
    Status(u16, usize),
    /// Never answers (the connection stays open).
    Hang,
    /// Every `every`-th request gets 500 (the others 200).
    FailEvery(usize),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    /// The `events` of the body.
    pub fn events(&self) -> Vec<serde_json::Value> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["events"].as_array().cloned())
            .unwrap_or_default()
    }
}

struct Inner {
    answer: Answer,
    hits: Vec<Hit>,
    count: usize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            answer,
            hits: Vec::new(),
            count: 0,
        }));
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set(&self, answer: Answer) {
        lock(&self.inner).answer = answer;
    }

    /// Every request so far (answered or not).
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.inner).hits.clone()
    }

    /// The events of the requests that were answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        lock(&self.inner)
            .hits
            .iter()
            .filter(|h| !h.timestamp.is_empty())
            .flat_map(Hit::events)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = {
        let mut i = lock(&inner);
        i.count += 1;
        let answer = match i.answer {
            Answer::Status(code, n) if n > 0 => {
                i.answer = Answer::Status(code, n - 1);
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Answer::FailEvery(k) if k > 0 && i.count.is_multiple_of(k) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Answer::Hang => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::OK,
        };
        let ok = answer.is_success();
        i.hits.push(Hit {
            // A failed request's events are not delivered: its timestamp is blanked
            // in the record (`delivered` skips it), the signature kept.
            timestamp: if ok {
                header("x-switchyard-timestamp")
            } else {
                String::new()
            },
            signature: header("x-switchyard-signature"),
            body,
            at: Instant::now(),
        });
        (answer, i.answer == Answer::Hang)
    };
    if answer.1 {
        std::future::pending::<()>().await;
    }
    answer.0
}
