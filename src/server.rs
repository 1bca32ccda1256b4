//! The accept loop and the node's lifecycle (SPEC section 11). The caller passes the
//! listener and the shutdown future, so tests bind port 0 and trigger shutdown.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::CONNECTIONS_REJECTED;
use crate::node::Node;
use crate::protocol::CloseCode;

/// Request headers beyond this are answered 431 (SPEC 7).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connections accepted whose first request has not arrived yet, oldest first. At
/// the cap the oldest is dropped to make room: a flood of idle sockets then only ever
/// costs the flood its own slots, and a normal client, whose request follows its
/// connect within a round trip, is never the oldest for long.
#[derive(Default)]
struct Pending {
    // A sync mutex: taken for a few pointer moves at accept and at each connection's
    // first request, never across an await.
    inner: parking_lot::Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    next: u64,
    live: HashMap<u64, AbortHandle>,
    /// Accept order; ids already freed are skipped (and compacted away).
    order: VecDeque<u64>,
}

impl Pending {
    /// Registers a new connection; returns its id and, at the cap, the oldest
    /// pending connection to drop.
    fn admit(&self, task: AbortHandle, cap: usize) -> (u64, Option<AbortHandle>) {
        let mut p = self.inner.lock();
        let mut evicted = None;
        if p.live.len() >= cap {
            while let Some(old) = p.order.pop_front() {
                if let Some(h) = p.live.remove(&old) {
                    evicted = Some(h);
                    break;
                }
            }
        }
        let id = p.next;
        p.next += 1;
        p.live.insert(id, task);
        p.order.push_back(id);
        if p.order.len() > 2 * p.live.len() + 64 {
            let PendingInner { live, order, .. } = &mut *p;
            order.retain(|i| live.contains_key(i));
        }
        (id, evicted)
    }

    /// The connection's request arrived (or it ended): it no longer holds a slot.
    fn free(&self, id: u64) {
        self.inner.lock().live.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().live.len()
    }
}

/// Serves until `shutdown` resolves, then drains every connection and returns.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = crate::api::router(node.clone());
    let limits = node.config.limits.clone();
    let pending = Arc::new(Pending::default());
    let upkeep = tokio::spawn({
        let node = node.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                node.metrics.upkeep();
                // The registry heartbeat: stats, users and channels for /api/stats and
                // /api/channels on every node.
                if let Err(e) = node.brokers.cluster.report(&node.report()).await {
                    tracing::debug!(error = %e, "registry heartbeat failed");
                }
            }
        }
    });
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small API responses must not wait for Nagle and delayed ACKs.
            let _ = stream.set_nodelay(true);
            // The connection's task waits for its id before it serves, so a slot is
            // never freed before it was taken.
            let (id_tx, id_rx) = tokio::sync::oneshot::channel::<u64>();
            let pending_for_task = pending.clone();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.handshake_timeout)
                .max_header_size(MAX_HEADER_BYTES);
            let router = router.clone();
            let task = tokio::spawn(async move {
                let Ok(id) = id_rx.await else { return };
                let freed = Arc::new(AtomicBool::new(false));
                let on_request = {
                    let (pending, freed) = (pending_for_task.clone(), freed.clone());
                    move |req: axum::extract::Request<hyper::body::Incoming>| {
                        if !freed.swap(true, Ordering::Relaxed) {
                            pending.free(id);
                        }
                        req
                    }
                };
                let service = TowerToHyperService::new(router.map_request(on_request));
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                if !freed.load(Ordering::Relaxed) {
                    pending_for_task.free(id);
                }
            });
            let (id, evicted) = pending.admit(task.abort_handle(), limits.max_pending_handshakes);
            let _ = id_tx.send(id);
            if let Some(oldest) = evicted {
                node.metrics
                    .counter(CONNECTIONS_REJECTED, "reason", "pending_handshakes")
                    .increment(1);
                oldest.abort();
            }
        }
    };
    tokio::pin!(accept);
    tokio::select! {
        _ = &mut accept => {}
        _ = shutdown => {}
    }
    tracing::info!(
        connections = node.hub.connection_count(),
        "shutting down: draining connections"
    );
    // Keep answering HTTP (/ready says 503) while the sockets are closed.
    tokio::select! {
        _ = &mut accept => {}
        _ = drain(&node) => {}
    }
    upkeep.abort();
    node.brokers.cluster.deregister().await;
    tracing::info!("drained, exiting");
    Ok(())
}

/// Closes every socket with 1001, spread evenly over `drain_period` so the clients'
/// reconnects do not stampede the other nodes, then waits for the tasks to end.
pub async fn drain(node: &Node) {
    node.start_draining();
    let start = Instant::now();
    let period = node.config.drain_period;
    let conns = node.hub.all_conns();
    let n = conns.len().max(1) as u32;
    for (i, c) in conns.iter().enumerate() {
        tokio::time::sleep_until(start + period * i as u32 / n).await;
        c.close(CloseCode::Shutdown, None);
    }
    // Connections that arrived during the spread (none should) are closed too.
    for c in node.hub.all_conns() {
        c.close(CloseCode::Shutdown, None);
    }
    let limit = Instant::now() + node.config.limits.write_timeout + Duration::from_secs(3);
    while node.hub.connection_count() > 0 && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_pending_connection_goes() {
        let p = Pending::default();
        let mut tasks: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        let (a, none) = p.admit(tasks[0].abort_handle(), 2);
        assert!(none.is_none());
        let (b, none) = p.admit(tasks[1].abort_handle(), 2);
        assert!(none.is_none());
        p.free(a);
        let (_, none) = p.admit(tasks[2].abort_handle(), 2);
        assert!(none.is_none(), "a freed slot is not counted");
        let extra = tokio::spawn(std::future::pending::<()>());
        let (_, evicted) = p.admit(extra.abort_handle(), 2);
        evicted.expect("oldest still pending").abort();
        assert!(
            tasks.remove(1).await.expect_err("aborted").is_cancelled(),
            "b was the oldest"
        );
        let _ = b;
        assert_eq!(p.len(), 2);
    }
}
