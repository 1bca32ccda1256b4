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
use crate::hub::Control;
use crate::metrics::PUBLICATIONS;
use crate::node::{publications_json, Node};
use crate::protocol::{is_reserved, CloseCode, Publication};
use std::collections::{BTreeMap, HashSet};

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
    let b: PublishBody = read_json(&node, body, node.config.limits.max_message_size).await?;
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
    let b: BroadcastBody = read_json(&node, body, limit).await?;
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

pub(super) async fn disconnect(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: DisconnectBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    let code = match b.code {
        None => CloseCode::Forbidden.code(),
        Some(c @ 4000..=4999) => c,
        Some(c) => {
            return Err(ApiError::BadRequest(format!(
                "code {c} is not in 4000-4999"
            )))
        }
    };
    let given = [&b.user_id, &b.session_id, &b.conn_id]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(ApiError::BadRequest(
            "give exactly one of user_id, session_id, conn_id".into(),
        ));
    }
    let cmd = Control::Disconnect {
        user_id: b.user_id,
        session_id: b.session_id,
        conn_id: b.conn_id,
        code,
        reason: b.reason,
    };
    node.broker.control(cmd).await.map_err(broker_err)?;
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
    let b: UserChannelBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    let (ch, _) = resolve(&node, &b.channel)?;
    let cmd = Control::Subscribe {
        user_id: b.user_id,
        channel: ch.to_string(),
    };
    node.broker.control(cmd).await.map_err(broker_err)?;
    Ok(Json(json!({})))
}

pub(super) async fn unsubscribe(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: UserChannelBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    let (ch, _) = resolve(&node, &b.channel)?;
    let cmd = Control::Unsubscribe {
        user_id: b.user_id,
        channel: ch.to_string(),
    };
    node.broker.control(cmd).await.map_err(broker_err)?;
    Ok(Json(json!({})))
}

pub(super) async fn presence(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (ch, ns) = resolve(&node, &channel)?;
    if !ns.tracks_presence() {
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
) -> Result<Json<Value>, ApiError> {
    let mut totals: BTreeMap<String, usize> = BTreeMap::new();
    for report in node.cluster().await.map_err(broker_err)? {
        for (channel, n) in report.channels {
            if q.prefix.as_deref().is_none_or(|p| channel.starts_with(p)) {
                *totals.entry(channel).or_default() += n;
            }
        }
    }
    let list: Vec<Value> = totals
        .into_iter()
        .map(|(channel, subscribers)| json!({"channel": channel, "subscribers": subscribers}))
        .collect();
    Ok(Json(json!({ "channels": list })))
}

pub(super) async fn stats(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    let reports = node.cluster().await.map_err(broker_err)?;
    let mut channels: HashSet<&str> = HashSet::new();
    let (mut connections, mut users) = (0u64, 0usize);
    for r in &reports {
        connections += r.node["connections"].as_u64().unwrap_or(0);
        // Summed per node: a user connected to two nodes counts on each.
        users += r.users;
        channels.extend(r.channels.iter().map(|(c, _)| c.as_str()));
    }
    let nodes: Vec<&Value> = reports.iter().map(|r| &r.node).collect();
    Ok(Json(json!({
        "node": reports[0].node,
        "cluster": {
            "nodes": nodes,
            "connections": connections,
            "users": users,
            "channels": channels.len(),
        }
    })))
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
