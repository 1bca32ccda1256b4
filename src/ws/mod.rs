//! WebSocket endpoints: the HTTP upgrade (origin, limits, token checks that can still
//! answer with an HTTP status), then one task per connection ([`conn`]) that runs the
//! socket ([`conn`]), what its frames mean ([`dispatch`]), authentication ([`auth`])
//! and channel requests ([`requests`]). Decisions are the `session` module's.

mod auth;
pub mod codec;
mod conn;
mod dispatch;
mod inbox;
mod requests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth::ConnClaims;
use crate::channel::ChannelName;
use crate::config::PerUserPolicy;
use crate::hub::ConnHandle;
use crate::metrics::{AUTH_FAILURES, CONNECTIONS_REJECTED};
use crate::node::Node;

/// What the upgrade learned, handed to the connection task.
pub(crate) struct Setup {
    pub claims: Option<ConnClaims>,
    /// A `resume` query parameter (checked by the session, ignored if invalid).
    pub resume: Option<String>,
    /// Channels the route auto-subscribes (`[[routes]]`).
    pub route: Arc<[ChannelName]>,
}

/// Why an upgrade is refused: each mapped to its HTTP status, metric reason and
/// message in one place (`respond`).
#[derive(Debug)]
enum Refusal {
    /// Not a WebSocket upgrade (method, headers).
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` is not 13 (426 with the version to use).
    Version,
    /// `Sec-WebSocket-Key` missing.
    NoKey,
    /// The node is shutting down.
    Draining,
    /// `Origin` not in `auth.allowed_origins`.
    Origin,
    /// `limits.max_connections` reached.
    Full,
    /// A token given with the upgrade did not verify.
    Token(crate::auth::AuthError),
    /// `per_user_policy = "reject"` and the user has `max_connections_per_user`.
    PerUser,
    /// The connection cannot be taken over by the WebSocket task.
    NotUpgradable,
}

impl Refusal {
    fn respond(self, node: &Node) -> Response {
        let (status, reason, message): (StatusCode, &'static str, String) = match &self {
            Refusal::NotAnUpgrade => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "expected a WebSocket upgrade".into(),
            ),
            Refusal::Version => (
                StatusCode::UPGRADE_REQUIRED,
                "bad_request",
                "WebSocket version 13 required".into(),
            ),
            Refusal::NoKey => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Sec-WebSocket-Key missing".into(),
            ),
            Refusal::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "node is shutting down".into(),
            ),
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin", "origin not allowed".into()),
            Refusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "max_connections",
                "node is full".into(),
            ),
            Refusal::Token(e) => {
                node.metrics
                    .counter(AUTH_FAILURES, "reason", e.reason())
                    .increment(1);
                (StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            Refusal::PerUser => (
                StatusCode::TOO_MANY_REQUESTS,
                "per_user_limit",
                "too many connections for this user".into(),
            ),
            Refusal::NotUpgradable => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "connection cannot be upgraded".into(),
            ),
        };
        node.metrics
            .counter(CONNECTIONS_REJECTED, "reason", reason)
            .increment(1);
        let body = serde_json::json!({"error": {"code": reason, "message": message}});
        let mut r = (status, axum::Json(body)).into_response();
        if matches!(self, Refusal::Version) {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                header::HeaderValue::from_static("13"),
            );
        }
        r
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Handles `GET /ws` (and every `[[routes]]` path): checks, then switches protocols.
pub(crate) async fn upgrade(
    node: Arc<Node>,
    route: Arc<[ChannelName]>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    if req.method() != Method::GET
        || !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return Refusal::NotAnUpgrade.respond(&node);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Refusal::Version.respond(&node);
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return Refusal::NoKey.respond(&node);
    };
    if node.is_draining() {
        return Refusal::Draining.respond(&node);
    }
    let origins = &node.config.auth.allowed_origins;
    if !origins.is_empty() {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| origins.iter().any(|a| a == o)) {
            return Refusal::Origin.respond(&node);
        }
    }
    let max = node.config.limits.max_connections;
    if max > 0 && node.hub.connection_count() >= max {
        return Refusal::Full.respond(&node);
    }
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let token = bearer(headers).or_else(|| query.get("token").cloned().filter(|t| !t.is_empty()));
    let claims = match token {
        Some(t) => match node.verify_connection(&t) {
            Ok(c) => Some(c),
            Err(e) => return Refusal::Token(e).respond(&node),
        },
        None => None,
    };
    let per_user = node.config.limits.max_connections_per_user;
    if let Some(c) = &claims {
        if per_user > 0 && node.config.limits.per_user_policy == PerUserPolicy::Reject {
            let open = node
                .brokers
                .cluster
                .user_connections(&format!("u:{}", c.user_id))
                .await
                .map(|v| v.len())
                .unwrap_or(0);
            if open >= per_user {
                return Refusal::PerUser.respond(&node);
            }
        }
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Refusal::NotUpgradable.respond(&node);
    };
    let setup = Setup {
        claims,
        resume: query.get("resume").cloned(),
        route,
    };
    let handle = Arc::new(ConnHandle::new(
        node.hub.next_conn_id(),
        node.config.limits.send_queue,
        node.config.limits.send_queue_bytes,
    ));
    // Registered before the 101 so concurrent upgrades see each other in the limits.
    node.hub.register(handle.clone());
    node.metrics.connections_accepted.increment(1);
    let task_node = node.clone();
    let fut = async move {
        let stream = match on_upgrade.await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                // Copied out: the leftover is a slice of hyper's 8 KiB read buffer, and
                // holding it would keep that buffer alive for the connection's life.
                Ok(parts) => Some((parts.io.into_inner(), parts.read_buf.to_vec())),
                Err(_) => {
                    tracing::error!("upgraded connection is not a TCP stream");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                None
            }
        };
        match stream {
            Some((tcp, leftover)) => conn::run(task_node, handle, tcp, leftover, setup).await,
            None => task_node.hub.unregister(&handle),
        }
    };
    tokio::spawn(fut);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, codec::accept_key(&key))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
