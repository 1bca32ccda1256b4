//! One handler per endpoint; each validates its input and calls the node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{read_json, ApiError};
use crate::broker::BrokerError;
use crate::channel::{ChannelName, Namespace};
use crate::hub::{parse_conn_id, ConnHandle, Item};
use crate::metrics::PUBLICATIONS;
use crate::node::{publications_json, Node};
use crate::protocol::{is_reserved, CloseCode, Publication};

/// Upper bound of `/api/broadcast` channels.
const MAX_BROADCAST: usize = 1000;

fn resolve(node: &Node, name: &str) -> Result<(ChannelName, Namespace), ApiError> {
    node.namespaces
        .resolve(name)
        .map(|(c, ns)| (c, ns.clone()))
        .map_err(|_| ApiError::InvalidChannel(name.to_owned()))
}

fn broker_err(e: BrokerError) -> ApiError {
    match e {
        BrokerError::Unavailable(_) => ApiError::Unavailable,
        BrokerError::Internal(m) => {
            tracing::error!(error = %m, "broker error in API call");
            ApiError::Internal
        }
    }
}

#[derive(Deserialize)]
pub(super) struct PublishBody {
    channel: String,
    #[serde(rename = "type")]
    ty: String,
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    volatile: bool,
    to: Option<String>,
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

fn check_type(ty: &str) -> Result<(), ApiError> {
    if ty.is_empty() {
        return Err(ApiError::BadRequest("`type` must not be empty".into()));
    }
    if is_reserved(ty) {
        return Err(ApiError::ReservedType(ty.to_owned()));
    }
    Ok(())
}

async fn publish_one(
    node: &Node,
    ch: &ChannelName,
    ns: &Namespace,
    ty: String,
    payload: Box<RawValue>,
    volatile: bool,
    to: Option<String>,
) -> Result<Value, ApiError> {
    let mut p = Publication::new(ch.arc().clone(), ty, payload);
    p.volatile = volatile;
    p.to = to;
    let r = node.publish(p, ns).await.map_err(broker_err)?;
    node.metrics
        .counter(PUBLICATIONS, "source", "api")
        .increment(1);
    let mut out = json!({});
    if let Some(o) = r.offset {
        out["offset"] = json!(o);
    }
    if let Some(e) = r.epoch {
        out["epoch"] = json!(e);
    }
    Ok(out)
}

pub(super) async fn publish(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: PublishBody = read_json(body, node.config.limits.max_message_size).await?;
    check_type(&b.ty)?;
    let (ch, ns) = resolve(&node, &b.channel)?;
    let payload = b.payload.unwrap_or_else(null);
    publish_one(&node, &ch, &ns, b.ty, payload, b.volatile, b.to)
        .await
        .map(Json)
}

#[derive(Deserialize)]
pub(super) struct BroadcastBody {
    channels: Vec<String>,
    #[serde(rename = "type")]
    ty: String,
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    volatile: bool,
}

pub(super) async fn broadcast(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let limit = node.config.limits.max_message_size.saturating_mul(4);
    let b: BroadcastBody = read_json(body, limit).await?;
    check_type(&b.ty)?;
    if b.channels.len() > MAX_BROADCAST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BROADCAST} channels"
        )));
    }
    let payload = b.payload.unwrap_or_else(null);
    let mut results = Vec::with_capacity(b.channels.len());
    for name in b.channels {
        let r = match resolve(&node, &name) {
            Ok((ch, ns)) => {
                publish_one(
                    &node,
                    &ch,
                    &ns,
                    b.ty.clone(),
                    payload.clone(),
                    b.volatile,
                    None,
                )
                .await
            }
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(mut v) => {
                v["channel"] = json!(name);
                v
            }
            Err(e) => {
                json!({"channel": name, "error": {"code": e.code(), "message": e.to_string()}})
            }
        });
    }
    Ok(Json(json!({ "results": results })))
}

#[derive(Deserialize)]
pub(super) struct DisconnectBody {
    user_id: Option<String>,
    session_id: Option<String>,
    conn_id: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

/// The local connections a `{user_id | session_id | conn_id}` body names.
fn targets(
    node: &Node,
    user: Option<&str>,
    session: Option<&str>,
    conn: Option<&str>,
) -> Result<Vec<Arc<ConnHandle>>, ApiError> {
    match (user, session, conn) {
        (Some(u), None, None) => Ok(node.hub.user_conns(u)),
        (None, Some(s), None) => Ok(node.hub.session_conns(s)),
        (None, None, Some(c)) => Ok(parse_conn_id(c)
            .and_then(|id| node.hub.get(id))
            .into_iter()
            .collect()),
        _ => Err(ApiError::BadRequest(
            "give exactly one of user_id, session_id, conn_id".into(),
        )),
    }
}

pub(super) async fn disconnect(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: DisconnectBody = read_json(body, node.config.limits.max_message_size).await?;
    let code = match b.code {
        None => CloseCode::Forbidden,
        Some(c @ 4000..=4999) => CloseCode::from_code(c),
        Some(c) => {
            return Err(ApiError::BadRequest(format!(
                "code {c} is not in 4000-4999"
            )))
        }
    };
    for c in targets(
        &node,
        b.user_id.as_deref(),
        b.session_id.as_deref(),
        b.conn_id.as_deref(),
    )? {
        c.close(code, b.reason.clone());
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub(super) struct UserChannelBody {
    user_id: String,
    channel: String,
}

pub(super) async fn subscribe(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: UserChannelBody = read_json(body, node.config.limits.max_message_size).await?;
    let (ch, _) = resolve(&node, &b.channel)?;
    for c in node.hub.user_conns(&b.user_id) {
        c.outbox.push_control(Item::Subscribe(ch.clone()));
    }
    Ok(Json(json!({})))
}

pub(super) async fn unsubscribe(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: UserChannelBody = read_json(body, node.config.limits.max_message_size).await?;
    let (ch, _) = resolve(&node, &b.channel)?;
    for c in node.hub.user_conns(&b.user_id) {
        c.outbox.push_control(Item::Unsubscribe(ch.clone()));
    }
    Ok(Json(json!({})))
}

pub(super) async fn presence(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (ch, ns) = resolve(&node, &channel)?;
    if !ns.presence {
        return Err(ApiError::NotFound(format!(
            "presence is not enabled for namespace {}",
            ch.namespace()
        )));
    }
    let view = node.presence(&ch).await.map_err(broker_err)?;
    Ok(Json(
        json!({"count": view.count, "users": view.users, "clients": view.clients}),
    ))
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<usize>,
    since: Option<u64>,
}

pub(super) async fn history(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let (ch, ns) = resolve(&node, &channel)?;
    match node
        .history(&ch, &ns, q.since, q.limit)
        .await
        .map_err(broker_err)?
    {
        Some(page) => Ok(Json(json!({
            "publications": publications_json(&page.publications),
            "offset": page.offset,
            "epoch": page.epoch,
        }))),
        None => Err(ApiError::NotFound(format!(
            "history is not enabled for namespace {}",
            ch.namespace()
        ))),
    }
}

#[derive(Deserialize)]
pub(super) struct ChannelsQuery {
    prefix: Option<String>,
}

pub(super) async fn channels(
    State(node): State<Arc<Node>>,
    Query(q): Query<ChannelsQuery>,
) -> Json<Value> {
    let list: Vec<Value> = node
        .hub
        .channels(q.prefix.as_deref())
        .into_iter()
        .map(|(channel, subscribers)| json!({"channel": channel, "subscribers": subscribers}))
        .collect();
    Json(json!({ "channels": list }))
}

pub(super) async fn stats(State(node): State<Arc<Node>>) -> Json<Value> {
    let me = node.stats();
    Json(json!({
        "node": me,
        "cluster": {
            "nodes": [me],
            "connections": node.hub.connection_count(),
            "users": node.hub.user_count(),
            "channels": node.hub.channel_count(),
        }
    }))
}

pub(super) async fn health(State(node): State<Arc<Node>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "node": node.node_id(),
        "ws_connections": node.hub.connection_count(),
    }))
}

pub(super) async fn ready(State(node): State<Arc<Node>>) -> Response {
    let (status, body) = if node.is_ready() {
        (StatusCode::OK, json!({"status": "ready"}))
    } else if node.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "broker_unavailable"}),
        )
    };
    (status, Json(body)).into_response()
}

pub(super) async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}
