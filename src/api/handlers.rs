//! One handler per endpoint; each validates its input and calls the node.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{read_json, ApiError};
use crate::broker::{Control, Published, Target};
use crate::channel::{ChannelName, Namespace};
use crate::ids::ConnId;
use crate::metrics::PUBLICATIONS;
use crate::node::Node;
use crate::protocol::{
    is_reserved, publications_json, raw_null, CloseCode, Publication, MAX_SAFE_INTEGER,
};

/// Upper bound of `/api/broadcast` channels.
const MAX_BROADCAST: usize = 1000;
/// Upper bound of an `idempotency_key` (SPEC 6).
const MAX_IDEMPOTENCY_KEY: usize = 128;

fn resolve(node: &Node, name: &str) -> Result<(ChannelName, Namespace), ApiError> {
    node.namespaces
        .resolve(name)
        .map(|(c, ns)| (c, ns.clone()))
        .map_err(|_| ApiError::InvalidChannel(name.to_owned()))
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
    /// State channels: the key set (or deleted) (SPEC 16.1).
    key: Option<String>,
    #[serde(default)]
    delete: bool,
    idempotency_key: Option<String>,
    /// `{after, data?}`: an `undelivered` event unless confirmed in time (SPEC 15.3).
    fallback: Option<crate::inbox::FallbackBody>,
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

fn idempotency(node: &Node, key: Option<String>) -> Result<Option<(String, Duration)>, ApiError> {
    match key {
        Some(k) if k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY => {
            Err(ApiError::BadRequest(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
            )))
        }
        Some(k) => Ok(Some((k, node.config.api.idempotency_window))),
        None => Ok(None),
    }
}

fn published_json(r: &Published) -> Value {
    let mut out = json!({});
    if let Some(o) = r.offset {
        out["offset"] = json!(o);
    }
    if let Some(e) = &r.epoch {
        out["epoch"] = json!(e);
    }
    if r.duplicate {
        out["duplicate"] = json!(true);
    }
    out
}

async fn publish_one(
    node: &Node,
    p: Publication,
    ns: &Namespace,
    idempotency: Option<(String, Duration)>,
) -> Result<Value, ApiError> {
    let r = node.publish(p, ns, idempotency).await?;
    if r.duplicate {
        node.metrics.idempotent_duplicates.increment(1);
    } else {
        node.metrics
            .counter(PUBLICATIONS, "source", "api")
            .increment(1);
    }
    Ok(published_json(&r))
}

pub(super) async fn publish(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: PublishBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    check_type(&b.ty)?;
    let (ch, ns) = resolve(&node, &b.channel)?;
    let idem = idempotency(&node, b.idempotency_key)?;
    let fallback = match &b.fallback {
        Some(f) => Some(crate::inbox::check_fallback(&ch, &ns, f).map_err(ApiError::BadRequest)?),
        None => None,
    };
    let mut p = Publication::new(ch.clone(), b.ty, b.payload.unwrap_or_else(raw_null));
    p.volatile = b.volatile;
    p.to = b.to;
    p.key = b.key.map(Into::into);
    if b.delete {
        p.deleted = true;
        p.payload = raw_null();
    }
    let Some((who, after)) = fallback else {
        return publish_one(&node, p, &ns, idem).await.map(Json);
    };
    if !p.storable() {
        return Err(ApiError::BadRequest(
            "a publication with a fallback is stored: it cannot be volatile or targeted".into(),
        ));
    }
    let ty = p.event.clone();
    let payload = p.payload.clone();
    let answer = publish_one(&node, p, &ns, idem).await?;
    let offset = answer["offset"].as_u64().ok_or(ApiError::Internal)?;
    let data = crate::inbox::fallback_data(
        &ch,
        offset,
        &who,
        &ty,
        &payload,
        b.fallback.as_ref().and_then(|f| f.data.as_deref()),
    );
    // Published but not scheduled: 503, and the caller's retry with the same
    // idempotency_key schedules it (scheduling is idempotent per offset).
    crate::inbox::schedule(&node, &ch, offset, who, after, data).await?;
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub(super) struct BroadcastBody {
    channels: Vec<String>,
    #[serde(rename = "type")]
    ty: String,
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    volatile: bool,
    /// State channels: the key set on each channel.
    key: Option<String>,
    idempotency_key: Option<String>,
}

pub(super) async fn broadcast(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = node.config.limits.max_message_size.saturating_mul(4);
    let b: BroadcastBody = read_json(&node, body, limit).await?;
    check_type(&b.ty)?;
    if b.channels.len() > MAX_BROADCAST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BROADCAST} channels"
        )));
    }
    let idem = idempotency(&node, b.idempotency_key)?;
    let payload = b.payload.unwrap_or_else(raw_null);
    let mut results = Vec::with_capacity(b.channels.len());
    let (mut published, mut unavailable) = (0, 0);
    for name in b.channels {
        let r = match resolve(&node, &name) {
            Ok((ch, ns)) => {
                let mut p = Publication::new(ch, b.ty.clone(), payload.clone());
                p.volatile = b.volatile;
                p.key = b.key.as_deref().map(Into::into);
                publish_one(&node, p, &ns, idem.clone()).await
            }
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(mut v) => {
                published += 1;
                v["channel"] = json!(name);
                v
            }
            Err(e) => {
                if matches!(e, ApiError::Unavailable | ApiError::Unknown) {
                    unavailable += 1;
                }
                json!({"channel": name, "error": {"code": e.code(), "message": e.to_string()}})
            }
        });
    }
    // Nothing published because the broker is down: the caller must retry (SPEC 6).
    let status = if published == 0 && unavailable > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "results": results }))).into_response())
}

#[derive(Deserialize)]
pub(super) struct RevokeBody {
    user_id: String,
    before: Option<u64>,
}

/// `POST /api/revoke` (SPEC 6): refuses the user's tokens issued before `before`
/// (default now) for `auth.revocation_ttl`, on every node, and closes its
/// connections on such tokens with 4003.
pub(super) async fn revoke(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: RevokeBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    if b.user_id.is_empty() {
        return Err(ApiError::BadRequest("user_id must not be empty".into()));
    }
    let now = crate::auth::unix_now();
    let before = b.before.unwrap_or(now);
    if before > MAX_SAFE_INTEGER {
        return Err(ApiError::BadRequest("before is Unix seconds".into()));
    }
    let until = now + node.config.auth.revocation_ttl.as_secs();
    // Stored first: a node that misses the command reloads it from there.
    node.brokers
        .cluster
        .revoke(&b.user_id, before, until)
        .await?;
    node.brokers
        .cluster
        .control(Control::Revoke {
            user_id: b.user_id,
            before,
            until,
        })
        .await?;
    Ok(Json(json!({})))
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
    let target = match (b.user_id, b.session_id, b.conn_id) {
        (Some(u), None, None) => Target::User(u),
        (None, Some(s), None) => Target::Session(s),
        (None, None, Some(c)) => Target::Conn(
            ConnId::parse(&c)
                .ok_or_else(|| ApiError::BadRequest("conn_id is 16 hex digits".into()))?,
        ),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of user_id, session_id, conn_id".into(),
            ))
        }
    };
    let cmd = Control::Disconnect {
        target,
        code,
        reason: b.reason,
    };
    node.brokers.cluster.control(cmd).await?;
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
    let (channel, _) = resolve(&node, &b.channel)?;
    let cmd = Control::Subscribe {
        user_id: b.user_id,
        channel,
    };
    node.brokers.cluster.control(cmd).await?;
    Ok(Json(json!({})))
}

pub(super) async fn unsubscribe(
    State(node): State<Arc<Node>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: UserChannelBody = read_json(&node, body, node.config.limits.max_message_size).await?;
    let (channel, _) = resolve(&node, &b.channel)?;
    let cmd = Control::Unsubscribe {
        user_id: b.user_id,
        channel,
    };
    node.brokers.cluster.control(cmd).await?;
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
    let view = node.presence(&ch, &ns).await?;
    Ok(Json(
        json!({"count": view.count, "users": view.users, "clients": view.clients}),
    ))
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<u64>,
    since: Option<u64>,
}

pub(super) async fn history(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::BadRequest(format!(
            "limit and since are integers from 0 to 2^53-1: {e}"
        ))
    })?;
    for v in [q.limit, q.since].into_iter().flatten() {
        if v > MAX_SAFE_INTEGER {
            return Err(ApiError::BadRequest(
                "limit and since are integers from 0 to 2^53-1".into(),
            ));
        }
    }
    let (ch, ns) = resolve(&node, &channel)?;
    let limit = q.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    match node.history(&ch, &ns, q.since, limit).await? {
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
pub(super) struct UnreadQuery {
    channels: Option<String>,
}

pub(super) async fn unread(
    State(node): State<Arc<Node>>,
    Path(user): Path<String>,
    Query(q): Query<UnreadQuery>,
) -> Result<Json<Value>, ApiError> {
    let named = match q.channels {
        Some(list) => {
            let mut channels = Vec::new();
            for name in list.split(',').filter(|n| !n.is_empty()) {
                channels.push(resolve(&node, name)?.0);
            }
            Some(channels)
        }
        None => None,
    };
    let u = crate::inbox::unread_of(&node, &format!("u:{user}"), named)
        .await
        .map_err(|r| match r.code {
            crate::protocol::ErrorCode::Unavailable => ApiError::Unavailable,
            crate::protocol::ErrorCode::LimitExceeded => ApiError::LimitExceeded(r.message),
            crate::protocol::ErrorCode::Internal => ApiError::Internal,
            _ => ApiError::BadRequest(r.message),
        })?;
    Ok(Json(json!({ "channels": u.channels })))
}

#[derive(Deserialize)]
pub(super) struct StateQuery {
    keys: Option<String>,
}

pub(super) async fn state(
    State(node): State<Arc<Node>>,
    Path(channel): Path<String>,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>, ApiError> {
    let (ch, ns) = resolve(&node, &channel)?;
    let keys: Option<Vec<String>> = q.keys.map(|k| {
        k.split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    });
    match node.state(&ch, &ns, keys.as_deref()).await? {
        Some(s) => Ok(Json(json!({
            "channel": s.channel,
            "offset": s.offset,
            "epoch": s.epoch,
            "entries": s.entries,
        }))),
        None => Err(ApiError::NotFound(format!(
            "state is not enabled for namespace {}",
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
    for report in node.cluster().await? {
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
    let reports = node.cluster().await?;
    // Distinct users and sessions connected anywhere: a user on two nodes counts once.
    let users = node.brokers.cluster.user_count().await?;
    let mut channels: HashSet<&str> = HashSet::new();
    let mut connections = 0u64;
    for r in &reports {
        connections += r.node["connections"].as_u64().unwrap_or(0);
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
