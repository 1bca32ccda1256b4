//! The accept loop and the node's lifecycle (SPEC section 11). The caller passes the
//! listener and the shutdown future, so tests bind port 0 and trigger shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::node::Node;
use crate::protocol::CloseCode;

/// Serves until `shutdown` resolves, then drains every connection and returns.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = crate::api::router(node.clone());
    let service = TowerToHyperService::new(router);
    let upkeep = tokio::spawn({
        let node = node.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                node.metrics.upkeep();
                // The registry heartbeat: stats, users and channels for /api/stats and
                // /api/channels on every node.
                if let Err(e) = node.broker.report(&node.report()).await {
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
            let service = service.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
            });
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
    node.broker.deregister().await;
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
