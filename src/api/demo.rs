//! The demo storefront (`/demo`), served only by a node in development mode: the page,
//! the JavaScript SDK it imports, and `/demo/session`, which mints tokens with the
//! node's generated secret so the page works with no backend at all.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{unix_now, MintClaims};
use crate::config::DEMO_STATE_NAMESPACE;
use crate::node::Node;

const PAGE: &str = include_str!("../../examples/demo/index.html");
const SDK: &[(&str, &str)] = &[
    ("index.js", include_str!("../../clients/js/src/index.js")),
    ("client.js", include_str!("../../clients/js/src/client.js")),
    (
        "subscription.js",
        include_str!("../../clients/js/src/subscription.js"),
    ),
    (
        "emitter.js",
        include_str!("../../clients/js/src/emitter.js"),
    ),
    (
        "backoff.js",
        include_str!("../../clients/js/src/backoff.js"),
    ),
    ("errors.js", include_str!("../../clients/js/src/errors.js")),
    ("values.js", include_str!("../../clients/js/src/values.js")),
    (
        "receipts.js",
        include_str!("../../clients/js/src/receipts.js"),
    ),
    (
        "protocol.js",
        include_str!("../../clients/js/src/protocol.js"),
    ),
];
/// The demo's order, granted to every demo user with a subscription token.
const ORDER: &str = "order:demo-1001";
/// The live stream whose audience the viewers badge counts (`stream` counts presence).
const STREAM: &str = "stream:demo";

pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/sdk/{file}", get(sdk))
        .route("/demo/session", get(session))
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn sdk(Path(file): Path<String>) -> Response {
    match SDK.iter().find(|(name, _)| *name == file) {
        Some((_, text)) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            *text,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct SessionQuery {
    user: Option<String>,
}

async fn session(State(node): State<Arc<Node>>, Query(q): Query<SessionQuery>) -> Response {
    let user: String = q
        .user
        .unwrap_or_else(|| "guest".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(32)
        .collect();
    if user.is_empty() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let exp = unix_now() + 3600;
    let token = node.auth.mint(&MintClaims {
        sub: user.clone(),
        exp,
        allow: vec!["chat:lobby".into()],
        info: Some(json!({ "name": user })),
        ..MintClaims::default()
    });
    let order_token = node.auth.mint(&MintClaims {
        sub: user.clone(),
        exp,
        channel: Some(ORDER.into()),
        ..MintClaims::default()
    });
    match (token, order_token) {
        (Ok(token), Ok(order_token)) => Json(json!({
            "user": user,
            "token": token,
            "order_token": order_token,
            "order_channel": ORDER,
            "inventory_channel": format!("{DEMO_STATE_NAMESPACE}:demo"),
            "stream_channel": STREAM,
            // Development mode only: the page shows working curl commands.
            "api_key": node.config.api.key,
        }))
        .into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::SDK;

    /// The page imports `index.js`; every module it reaches must be served too, or
    /// the demo breaks only in a browser.
    #[test]
    fn every_sdk_module_the_page_imports_is_served() {
        for (name, text) in SDK {
            for line in text.lines() {
                let Some(rest) = line.split(" from './").nth(1) else {
                    continue;
                };
                let Some(target) = rest.split('\'').next() else {
                    continue;
                };
                assert!(
                    SDK.iter().any(|(served, _)| *served == target),
                    "{name} imports {target}, which /demo/sdk/ does not serve"
                );
            }
        }
    }
}
