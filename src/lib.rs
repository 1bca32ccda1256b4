//! switchyard: a real-time WebSocket gateway for commerce platforms.
//!
//! Bytes travel `ws` (socket, frames) → `protocol` (typed messages) → `ws::session`
//! (what a message means) → `hub` (local registry, fan-out) ↔ `broker` (memory |
//! redis: delivery between nodes, history, presence). `api` is the HTTP surface,
//! `node` the shared state, `server` the accept loop and lifecycle.

pub mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod events;
pub mod hub;
pub mod ids;
pub mod inbox;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod position;
pub mod protocol;
pub mod server;
pub mod session;
pub mod state;
pub mod viewers;
pub mod webhooks;
pub mod ws;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
pub use node::Node;

/// Checks what only the node's parts can judge (namespace rules, routes, key files),
/// naming the bad key, so a node refuses to start before it binds its port.
pub fn check(config: &Config) -> Result<(), config::ConfigError> {
    channel::Namespaces::from_config(config)?;
    auth::Auth::from_config(config)?;
    Ok(())
}

/// Builds a node from `config` and serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let node: Arc<Node> = Node::new(config)?;
    server::serve(node, listener, shutdown).await?;
    Ok(())
}
