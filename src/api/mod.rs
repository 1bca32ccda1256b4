//! The HTTP API (SPEC section 6): publish, broadcast, disconnect, server-side
//! subscribe, presence, history, channels, stats; plus `/health`, `/ready` and
//! `/metrics`. Errors are one enum mapped to status and body in one place.

mod demo;
mod handlers;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::channel::ChannelName;
use crate::node::Node;

/// Every way an API call fails; `status()` and `code()` are its only mapping.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or query is not what the endpoint takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// A malformed channel name or one of an unconfigured namespace (400).
    #[error("invalid channel {0:?}")]
    InvalidChannel(String),
    /// A publication named like a reserved message type (400).
    #[error("`{0}` is a reserved type")]
    ReservedType(String),
    /// A publication that is not valid on its channel, e.g. a state channel's without
    /// a `key` (400, `invalid_payload` as on the socket).
    #[error("{0}")]
    InvalidPayload(String),
    /// A configured limit refused it, e.g. `state_max_keys` (400).
    #[error("{0}")]
    LimitExceeded(String),
    /// No API key, a wrong one, or a node without `api.key` (401).
    #[error("missing or wrong API key")]
    Unauthorized,
    /// No such endpoint, or a feature the namespace does not have (404).
    #[error("{0}")]
    NotFound(String),
    /// A body over `limits.max_message_size` (413).
    #[error("body larger than limits.max_message_size")]
    TooLarge,
    /// A body that did not arrive within `limits.handshake_timeout` (408).
    #[error("request body not received within limits.handshake_timeout")]
    Timeout,
    /// The broker is unreachable: nothing was done, retry (503).
    #[error("broker unavailable: not done, retry")]
    Unavailable,
    /// The broker got the request but did not answer in time: it may have been done;
    /// a retry with the same idempotency_key is safe (503).
    #[error("broker did not answer in time: the outcome is unknown; retry with the same idempotency_key")]
    Unknown,
    /// A bug or an unexpected broker answer (500).
    #[error("internal error")]
    Internal,
}

impl From<crate::broker::BrokerError> for ApiError {
    fn from(e: crate::broker::BrokerError) -> ApiError {
        use crate::broker::BrokerError;
        match e {
            BrokerError::Unavailable(_) => ApiError::Unavailable,
            BrokerError::Unknown(_) => ApiError::Unknown,
            BrokerError::Refused(m) => ApiError::InvalidPayload(m),
            BrokerError::Limit(m) => ApiError::LimitExceeded(m),
            BrokerError::Internal(m) => {
                tracing::error!(error = %m, "broker error in API call");
                ApiError::Internal
            }
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_)
            | ApiError::InvalidChannel(_)
            | ApiError::ReservedType(_)
            | ApiError::InvalidPayload(_)
            | ApiError::LimitExceeded(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable | ApiError::Unknown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidChannel(_) => "invalid_channel",
            ApiError::ReservedType(_) => "reserved_type",
            ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::LimitExceeded(_) => "limit_exceeded",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge => "too_large",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable | ApiError::Unknown => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), Json(body)).into_response()
    }
}

/// Which endpoint a path is, as a bounded metric label.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/api/publish" => "publish",
        "/api/broadcast" => "broadcast",
        "/api/disconnect" => "disconnect",
        "/api/subscribe" => "subscribe",
        "/api/unsubscribe" => "unsubscribe",
        "/api/channels" => "channels",
        "/api/stats" => "stats",
        "/api/revoke" => "revoke",
        p if p.starts_with("/api/presence/") => "presence",
        p if p.starts_with("/api/history/") => "history",
        p if p.starts_with("/api/state/") => "state",
        p if p.starts_with("/api/unread/") => "unread",
        _ => "other",
    }
}

fn key_matches(headers: &HeaderMap, key: &str) -> bool {
    let from_auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("apikey"))
        .map(|(_, k)| k.trim());
    let from_header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    // Constant-time compare: the key must not leak through response timing.
    let eq = |given: &str| {
        given.len() == key.len()
            && given
                .bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    };
    !key.is_empty() && (from_auth.is_some_and(eq) || from_header.is_some_and(eq))
}

/// API key check and request metrics for every `/api/*` call.
async fn api_guard(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = endpoint_label(req.uri().path());
    let resp = if key_matches(req.headers(), &node.config.api.key) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    };
    node.metrics
        .api_request(endpoint, resp.status().as_u16(), start.elapsed());
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// The whole HTTP surface of a node: API, probes, metrics and WebSocket paths.
pub fn router(node: Arc<Node>) -> Router {
    let api = Router::new()
        .route("/api/publish", post(handlers::publish))
        .route("/api/broadcast", post(handlers::broadcast))
        .route("/api/disconnect", post(handlers::disconnect))
        .route("/api/revoke", post(handlers::revoke))
        .route("/api/subscribe", post(handlers::subscribe))
        .route("/api/unsubscribe", post(handlers::unsubscribe))
        .route("/api/presence/{channel}", get(handlers::presence))
        .route("/api/history/{channel}", get(handlers::history))
        .route("/api/state/{channel}", get(handlers::state))
        .route("/api/unread/{user_id}", get(handlers::unread))
        .route("/api/channels", get(handlers::channels))
        .route("/api/stats", get(handlers::stats))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .route_layer(middleware::from_fn_with_state(node.clone(), api_guard));
    let mut router = Router::new()
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        .merge(api);
    if node.config.dev_mode {
        router = router.merge(demo::routes());
    }
    let mut paths: Vec<(String, Arc<[ChannelName]>)> = vec![("/ws".into(), Arc::from(Vec::new()))];
    for r in &node.config.routes {
        let subs: Vec<ChannelName> = r
            .subscribe
            .iter()
            .filter_map(|c| ChannelName::parse(c).ok())
            .collect();
        match paths.iter_mut().find(|(p, _)| *p == r.path) {
            Some(existing) => existing.1 = Arc::from(subs),
            None => paths.push((r.path.clone(), Arc::from(subs))),
        }
    }
    for (path, subs) in paths {
        let n = node.clone();
        router = router.route(
            &path,
            get(move |req: Request| crate::ws::upgrade(n.clone(), subs.clone(), req)),
        );
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            let body = serde_json::json!({"error": {"code": "method_not_allowed", "message": "method not allowed"}});
            (StatusCode::METHOD_NOT_ALLOWED, Json(body))
        })
        .with_state(node)
}

/// Reads a JSON body no larger than `limit` bytes, within `within` (a body that
/// trickles in is a slowloris too).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    node: &Node,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let within = node.config.limits.handshake_timeout;
    let bytes = tokio::time::timeout(within, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(|_| ApiError::TooLarge)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}
