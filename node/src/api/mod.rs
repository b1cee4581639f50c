//! The HTTP API: WuKongIM's client endpoints and our `/cluster/...` operator reads.
//!
//! Handlers validate everything a client sends before it reaches a Raft group: bad input of
//! any kind is answered 4xx with `{status, msg, code}`, never a panic.

mod auth;
mod conversation;
pub mod limits;
mod metrics;
mod route;
pub(crate) mod validate;

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use wk_api::*;

use crate::channel::{self, ChannelKey, Header, NewMessage, StoredMessage};
use crate::cluster::Node;
use crate::cluster::rpc::SyncQuery;
use crate::error::NodeError;
use crate::meta::permit::{self, Refusal};
use crate::meta::{self, ChannelRecord, ListEdit, MetaCmd, SenderList};
pub use auth::Auth;
use validate::*;

/// Largest request body; larger ones get 413.
pub const MAX_BODY: usize = 4 << 20;
/// Most messages in one `/message/sendbatch`.
pub const MAX_BATCH: usize = 1000;

/// The HTTP API over `node`; `security` is what `/cluster/nodes` reports about this node.
pub fn router(
    node: Node,
    auth: auth::Auth,
    inflight: std::sync::Arc<limits::InFlight>,
    security: Security,
) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::serve))
        .route("/user/token", post(user_token))
        .route("/channel", post(channel_upsert))
        .route("/channel/subscriber_add", post(subscriber_add))
        .route("/channel/subscriber_remove", post(subscriber_remove))
        .route("/channel/info", post(channel_info))
        .route(
            "/channel/blacklist_add",
            list_route(SenderList::Blacklist, ListEdit::Add),
        )
        .route(
            "/channel/blacklist_remove",
            list_route(SenderList::Blacklist, ListEdit::Remove),
        )
        .route(
            "/channel/blacklist_set",
            list_route(SenderList::Blacklist, ListEdit::Set),
        )
        .route(
            "/channel/whitelist_add",
            list_route(SenderList::Whitelist, ListEdit::Add),
        )
        .route(
            "/channel/whitelist_remove",
            list_route(SenderList::Whitelist, ListEdit::Remove),
        )
        .route(
            "/channel/whitelist_set",
            list_route(SenderList::Whitelist, ListEdit::Set),
        )
        .route("/message/send", post(send))
        .route("/message/sendbatch", post(send_batch))
        .route("/channel/messagesync", post(message_sync))
        .route("/channel/max_message_seq", post(max_seq_post).get(max_seq_get))
        .route("/conversation/sync", post(conversation::sync))
        .route("/conversations/setUnread", post(conversation::set_unread))
        .route("/conversations/clearUnread", post(conversation::clear_unread))
        .route("/conversations/delete", post(conversation::delete))
        .route("/route", get(route::route))
        .route("/route/batch", post(route::route_batch))
        .route("/user/onlinestatus", post(route::online_status))
        .route("/cluster/nodes", get(cluster_nodes))
        .route("/cluster/channels", get(cluster_channels))
        .route("/cluster/join", post(cluster_join))
        .route("/cluster/drill", post(cluster_drill))
        .route("/cluster/nodes/{id}/evacuate", post(cluster_evacuate))
        .route("/cluster/nodes/{id}/remove", post(cluster_remove))
        .route(
            "/cluster/channels/{id}/{ty}/transfer-leader",
            post(cluster_transfer),
        )
        .route("/cluster/snapshot", get(cluster_snapshot))
        .route("/cluster/backlog", get(cluster_backlog))
        .route("/cluster/backlog/drain", post(cluster_drain))
        .route("/cluster/channels/{id}/{ty}/config", get(cluster_channel_config))
        .route(
            "/cluster/channels/{id}/{ty}/replicas",
            get(cluster_channel_replicas),
        )
        .route("/cluster/channels/{id}/{ty}/verify", get(cluster_channel_verify))
        .fallback(|| async {
            ApiErr(NodeError::BadRequest("no such endpoint".into())).with_status(404, ErrorCode::NotFound)
        })
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            refuse_if_removed,
        ))
        .layer(axum::Extension(security))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(metrics::time_requests))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(auth),
            auth::authorize,
        ))
        // Outermost: an overloaded node sheds a request before doing anything for it.
        .layer(axum::middleware::from_fn_with_state(inflight, limits::shed))
        .with_state(node)
}

/// An error answer: WuKongIM's `{status, msg}` plus our stable `code`.
pub struct ApiErr(pub NodeError);

impl ApiErr {
    fn with_status(self, status: u16, code: ErrorCode) -> Response {
        crate::stats::http_error(code);
        let body = ApiError {
            status,
            msg: self.0.to_string(),
            code: code.as_str().into(),
            retry_after: None,
        };
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(body),
        )
            .into_response()
    }
}

impl From<NodeError> for ApiErr {
    fn from(e: NodeError) -> Self {
        ApiErr(e)
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let body = self.0.to_api();
        crate::stats::http_error(self.0.code());
        if body.status >= 500 && body.retry_after.is_none() {
            tracing::warn!(error = %self.0, "request failed");
        }
        let retry_after = body
            .retry_after
            .map(|s| [(axum::http::header::RETRY_AFTER, s.to_string())]);
        (
            StatusCode::from_u16(body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after,
            Json(body),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiErr>;

/// A JSON body whose every failure (size, syntax, types, missing fields) is our 4xx.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Set by `limits::shed`; a router without it (none today) reads without a deadline.
        let deadline = req
            .extensions()
            .get::<limits::BodyTimeout>()
            .map_or(std::time::Duration::MAX, |t| t.0);
        let read = tokio::time::timeout(deadline, axum::body::Bytes::from_request(req, state));
        let Ok(bytes) = read.await else {
            let msg = format!("request body not received within {deadline:?}");
            return Err(ApiErr(NodeError::BadRequest(msg)).with_status(408, ErrorCode::RequestTimeout));
        };
        let bytes = bytes.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiErr(NodeError::PayloadTooLarge(format!(
                    "request body over {MAX_BODY} bytes"
                )))
            } else {
                ApiErr(NodeError::BadRequest(rej.body_text()))
            }
            .into_response()
        })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiErr(NodeError::BadRequest(format!("invalid JSON body: {e}"))).into_response())
    }
}

/// A node removed from the cluster answers every request but `/health` with `removed`: its
/// metadata stopped following the cluster's, so anything it served would be stale.
async fn refuse_if_removed(State(node): State<Node>, req: Request, next: axum::middleware::Next) -> Response {
    if node.is_removed() && req.uri().path() != "/health" {
        return ApiErr(NodeError::Removed(node.id)).into_response();
    }
    next.run(req).await
}

async fn health(State(node): State<Node>) -> Json<Health> {
    let state = if node.is_removed() {
        "removed"
    } else if node.is_joining() {
        "joining"
    } else {
        "serving"
    };
    Json(Health {
        status: "ok".into(),
        node_id: node.id,
        state: state.into(),
        meta_leader: node.meta.metrics().borrow_watched().current_leader,
    })
}

async fn user_token(State(node): State<Node>, Body(req): Body<UserTokenReq>) -> ApiResult<Ok200> {
    check_id("uid", &req.uid)?;
    if req.uid == channel::SYSTEM_UID {
        return Err(NodeError::BadRequest("uid is reserved".into()).into());
    }
    if req.token.is_empty() {
        return Err(NodeError::BadRequest("token must not be empty".into()).into());
    }
    check_len("token", &req.token, MAX_TOKEN)?;
    if req.device_flag > 2 || req.device_level > 1 {
        return Err(NodeError::BadRequest("device_flag must be 0..=2 and device_level 0..=1".into()).into());
    }
    let cmd = MetaCmd::SetToken {
        uid: req.uid,
        token: req.token,
        device_flag: req.device_flag,
        device_level: req.device_level,
    };
    node.meta_write(cmd).await?;
    Ok(Json(Ok200::default()))
}

/// A group-like channel (any type but person) named by the request.
fn group_key(channel_id: &str, channel_type: u8) -> Result<ChannelKey, ApiErr> {
    check_id("channel_id", channel_id)?;
    check_type(channel_type)?;
    if channel_type == CHANNEL_TYPE_PERSON {
        return Err(NodeError::BadRequest("person channels have no subscribers to manage".into()).into());
    }
    Ok(ChannelKey {
        channel_id: channel_id.into(),
        channel_type,
    })
}

/// A call's list of uids (`subscribers`, `uids`).
fn check_uids(name: &str, uids: &[String]) -> Result<(), ApiErr> {
    if uids.len() > MAX_SUBSCRIBERS_PER_CALL {
        return Err(
            NodeError::BadRequest(format!("at most {MAX_SUBSCRIBERS_PER_CALL} {name} per call")).into(),
        );
    }
    for u in uids {
        check_id(name, u)?;
    }
    Ok(())
}

async fn upsert(node: &Node, key: ChannelKey, subscribers: Vec<String>, reset: bool) -> ApiResult<Ok200> {
    check_uids("subscribers", &subscribers)?;
    node.meta_write(MetaCmd::UpsertChannel {
        key,
        subscribers,
        reset,
        replication: node.replication,
    })
    .await?;
    Ok(Json(Ok200::default()))
}

async fn channel_upsert(State(node): State<Node>, Body(req): Body<ChannelReq>) -> ApiResult<Ok200> {
    let key = group_key(&req.channel_id, req.channel_type)?;
    upsert(&node, key, req.subscribers, req.reset == 1).await
}

async fn subscriber_add(State(node): State<Node>, Body(req): Body<SubscribersReq>) -> ApiResult<Ok200> {
    let key = group_key(&req.channel_id, req.channel_type)?;
    if req.subscribers.is_empty() {
        return Err(NodeError::BadRequest("subscribers must not be empty".into()).into());
    }
    upsert(&node, key, req.subscribers, req.reset == 1).await
}

async fn subscriber_remove(State(node): State<Node>, Body(req): Body<SubscribersReq>) -> ApiResult<Ok200> {
    let key = group_key(&req.channel_id, req.channel_type)?;
    if req.subscribers.is_empty() {
        return Err(NodeError::BadRequest("subscribers must not be empty".into()).into());
    }
    check_uids("subscribers", &req.subscribers)?;
    node.meta_write(MetaCmd::RemoveSubscribers {
        key,
        subscribers: req.subscribers,
    })
    .await?;
    Ok(Json(Ok200::default()))
}

/// One of WuKongIM's `/channel/blacklist_*` and `/channel/whitelist_*` endpoints. The channel
/// need not exist; a person channel's lists (`channel_id` a uid) are that user's.
fn list_route(list: SenderList, edit: ListEdit) -> axum::routing::MethodRouter<Node> {
    post(
        move |State(node): State<Node>, Body(req): Body<SenderListReq>| async move {
            check_id("channel_id", &req.channel_id)?;
            check_type(req.channel_type)?;
            // As WuKongIM: only `_set` takes an empty list (it clears).
            if edit != ListEdit::Set && req.uids.is_empty() {
                return Err(ApiErr(NodeError::BadRequest("uids must not be empty".into())));
            }
            check_uids("uids", &req.uids)?;
            let key = ChannelKey {
                channel_id: req.channel_id,
                channel_type: req.channel_type,
            };
            let cmd = MetaCmd::EditSenderList {
                key,
                list,
                edit,
                uids: req.uids,
            };
            node.meta_write(cmd).await?;
            Ok(Json(Ok200::default()))
        },
    )
}

fn info_of(rec: &ChannelRecord) -> ChannelInfo {
    ChannelInfo {
        channel_id: rec.key.channel_id.clone(),
        channel_type: rec.key.channel_type,
        subscribers: rec.subscribers.iter().cloned().collect(),
        group_id: rec.group_id,
        replicas: rec.replicas.clone(),
    }
}

async fn channel_info(State(node): State<Node>, Body(req): Body<ChannelRef>) -> ApiResult<ChannelInfo> {
    let key = reader_key(&req.channel_id, req.channel_type, &req.login_uid)?;
    match node.resolve_channel(&key, false).await? {
        Some(rec) => Ok(Json(info_of(&rec))),
        None => Err(NodeError::ChannelNotFound(key.to_string()).into()),
    }
}

/// One message as its sender hands it in, before any check: what `/message/send` carries
/// (payload base64-decoded) and what the client gateway's SEND carries (payload decrypted).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Empty: a system message.
    pub from_uid: String,
    /// For person channels the other party's uid.
    pub channel_id: String,
    pub channel_type: u8,
    /// The idempotency key (generated when empty).
    pub client_msg_no: String,
    pub header: Header,
    /// The plaintext payload.
    pub payload: Vec<u8>,
    /// The client connection it came from (none over HTTP): it gets no RECV of it.
    pub origin: Option<crate::gateway::deliver::ConnRef>,
}

/// One validated message and where it goes.
struct Prepared {
    /// The channel it is stored in (person channels: the `a@b` key).
    key: ChannelKey,
    /// Person channels: the recipient, whose own lists decide who may send to them.
    recipient: Option<String>,
    msg: NewMessage,
}

/// Validate a send and build its message; `Err` is the client's mistake.
fn prepare(node: &Node, req: &SendReq) -> Result<Prepared, NodeError> {
    let payload = decode_payload(&req.payload)?;
    prepare_outgoing(
        node,
        Outgoing {
            from_uid: req.from_uid.clone(),
            channel_id: req.channel_id.clone(),
            channel_type: req.channel_type,
            client_msg_no: req.client_msg_no.clone(),
            header: Header {
                no_persist: req.header.no_persist,
                red_dot: req.header.red_dot,
                sync_once: req.header.sync_once,
            },
            payload,
            origin: None,
        },
    )
}

/// The checks and the channel key of one message, whatever surface it came in on.
fn prepare_outgoing(node: &Node, m: Outgoing) -> Result<Prepared, NodeError> {
    let from_uid = if m.from_uid.is_empty() {
        channel::SYSTEM_UID.to_string()
    } else {
        m.from_uid
    };
    check_id("from_uid", &from_uid)?;
    check_id("channel_id", &m.channel_id)?;
    check_type(m.channel_type)?;
    check_len("client_msg_no", &m.client_msg_no, MAX_CLIENT_MSG_NO)?;
    if m.payload.is_empty() {
        return Err(NodeError::BadRequest("payload must not be empty".into()));
    }
    if m.payload.len() > MAX_PAYLOAD {
        return Err(NodeError::PayloadTooLarge(format!(
            "payload over {MAX_PAYLOAD} bytes"
        )));
    }
    let (key, recipient) = if m.channel_type == CHANNEL_TYPE_PERSON {
        let key = ChannelKey {
            channel_id: channel::person_channel_id(&from_uid, &m.channel_id),
            channel_type: CHANNEL_TYPE_PERSON,
        };
        (key, Some(m.channel_id))
    } else {
        let key = ChannelKey {
            channel_id: m.channel_id,
            channel_type: m.channel_type,
        };
        (key, None)
    };
    let msg = node.new_message(NewMessage {
        message_id: 0,
        client_msg_no: m.client_msg_no,
        from_uid,
        header: m.header,
        timestamp: 0,
        payload: m.payload,
    })?;
    Ok(Prepared { key, recipient, msg })
}

/// Refuse a message its sender may not send (`meta::permit`). Reads this node's copy of the
/// metadata (cached); a group this node does not know yet is asked of the metadata leader
/// (`resolve_channel`), so a channel just created elsewhere is found.
async fn admit(node: &Node, p: &Prepared) -> Result<(), NodeError> {
    let from = p.msg.from_uid.as_str();
    let verdict = match &p.recipient {
        Some(to) => {
            let theirs = ChannelKey {
                channel_id: to.clone(),
                channel_type: CHANNEL_TYPE_PERSON,
            };
            let lists = node.sender_lists(&theirs).await?;
            permit::may_send(from, permit::Target::Person { recipient: &lists })
        }
        None => {
            let lists = node.sender_lists(&p.key).await?;
            let rec = node.resolve_channel(&p.key, false).await?;
            let target = permit::Target::Group {
                subscribers: rec.as_ref().map(|r| &r.subscribers),
                lists: &lists,
            };
            permit::may_send(from, target)
        }
    };
    verdict.map_err(|r| match r {
        Refusal::ChannelNotExist => NodeError::ChannelNotFound(p.key.to_string()),
        Refusal::SubscriberNotExist => NodeError::NotSubscriber(from.into()),
        Refusal::InBlacklist => NodeError::InBlacklist(from.into()),
        Refusal::NotInWhitelist => NodeError::NotInWhitelist(from.into()),
    })
}

/// Store one message: validation, the sender's permission (`admit`), the channel (person
/// channels and system messages create it on first use), its leader, the
/// `(from_uid, client_msg_no)` dedup. Answers after the quorum commit. `/message/send` and the
/// client gateway's SEND both come through here, so they cannot drift apart.
pub async fn send_message(node: &Node, m: Outgoing) -> Result<SendResp, NodeError> {
    let origin = m.origin;
    let p = prepare_outgoing(node, m)?;
    send_prepared(node, p, origin).await
}

async fn send_prepared(
    node: &Node,
    p: Prepared,
    origin: Option<crate::gateway::deliver::ConnRef>,
) -> Result<SendResp, NodeError> {
    admit(node, &p).await?;
    let rec = node
        .resolve_channel(&p.key, true)
        .await?
        .ok_or_else(|| NodeError::ChannelNotFound(p.key.to_string()))?;
    let client_msg_no = p.msg.client_msg_no.clone();
    let sent = node.send(&rec, vec![p.msg], origin).await?;
    let s = sent
        .first()
        .ok_or_else(|| NodeError::Internal("empty send result".into()))?;
    Ok(SendResp {
        message_id: s.message_id,
        message_seq: s.message_seq,
        client_msg_no,
    })
}

async fn send(State(node): State<Node>, Body(req): Body<SendReq>) -> ApiResult<SendResp> {
    let p = prepare(&node, &req)?;
    Ok(Json(send_prepared(&node, p, None).await?))
}

async fn send_batch(State(node): State<Node>, Body(req): Body<SendBatchReq>) -> ApiResult<SendBatchResp> {
    if req.messages.len() > MAX_BATCH {
        return Err(NodeError::BadRequest(format!("at most {MAX_BATCH} messages per batch")).into());
    }
    let mut results: Vec<Option<SendBatchItem>> = vec![None; req.messages.len()];
    let failed = |e: &NodeError| SendBatchItem {
        ok: None,
        error: Some(e.to_api()),
    };
    // Valid messages grouped by channel, in request order, so each channel gets one entry.
    let mut by_channel: BTreeMap<ChannelKey, Vec<(usize, Prepared)>> = BTreeMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        match prepare(&node, m) {
            Ok(p) => by_channel.entry(p.key.clone()).or_default().push((i, p)),
            Err(e) => results[i] = Some(failed(&e)),
        }
    }
    let node_ref = &node;
    let outcomes = futures::future::join_all(by_channel.into_iter().map(|(key, items)| async move {
        // Each message's sender is checked; the refused ones fail alone.
        let mut refused = Vec::new();
        let mut admitted = Vec::with_capacity(items.len());
        for (i, p) in items {
            match admit(node_ref, &p).await {
                Ok(()) => admitted.push((i, p.msg)),
                Err(e) => refused.push((i, e)),
            }
        }
        let sent = if admitted.is_empty() {
            Ok(Vec::new())
        } else {
            match node_ref.resolve_channel(&key, true).await {
                Ok(Some(rec)) => {
                    node_ref
                        .send(&rec, admitted.iter().map(|(_, m)| m.clone()).collect(), None)
                        .await
                }
                Ok(None) => Err(NodeError::ChannelNotFound(key.to_string())),
                Err(e) => Err(e),
            }
        };
        (refused, admitted, sent)
    }))
    .await;
    for (refused, admitted, sent) in outcomes {
        for (i, e) in refused {
            results[i] = Some(failed(&e));
        }
        for (n, (i, msg)) in admitted.into_iter().enumerate() {
            results[i] = Some(match &sent {
                Ok(s) => match s.get(n) {
                    Some(s) => SendBatchItem {
                        ok: Some(SendResp {
                            message_id: s.message_id,
                            message_seq: s.message_seq,
                            client_msg_no: msg.client_msg_no,
                        }),
                        error: None,
                    },
                    None => failed(&NodeError::Internal("short send result".into())),
                },
                Err(e) => failed(e),
            });
        }
    }
    Ok(Json(SendBatchResp {
        results: results
            .into_iter()
            .map(|r| r.expect("every slot is filled"))
            .collect(),
    }))
}

fn to_message(rec: &ChannelRecord, m: StoredMessage) -> Message {
    let channel_id = if rec.key.channel_type == CHANNEL_TYPE_PERSON {
        channel::person_display_id(&rec.key.channel_id, &m.from_uid)
    } else {
        rec.key.channel_id.clone()
    };
    Message {
        header: MessageHeader {
            no_persist: m.header.no_persist,
            red_dot: m.header.red_dot,
            sync_once: m.header.sync_once,
        },
        message_id: m.message_id,
        message_idstr: m.message_id.to_string(),
        message_seq: m.message_seq,
        client_msg_no: m.client_msg_no,
        from_uid: if m.from_uid == channel::SYSTEM_UID {
            String::new()
        } else {
            m.from_uid
        },
        channel_id,
        channel_type: rec.key.channel_type,
        timestamp: m.timestamp,
        payload: base64::engine::general_purpose::STANDARD.encode(&m.payload),
    }
}

async fn message_sync(State(node): State<Node>, Body(req): Body<SyncReq>) -> ApiResult<SyncResp> {
    let key = reader_key(&req.channel_id, req.channel_type, &req.login_uid)?;
    if req.pull_mode > PULL_MODE_UP {
        return Err(NodeError::BadRequest("pull_mode must be 0 (down) or 1 (up)".into()).into());
    }
    let limit = match req.limit {
        0 => DEFAULT_SYNC_LIMIT,
        n => n.min(MAX_SYNC_LIMIT),
    } as u64;
    let empty = SyncResp {
        start_message_seq: req.start_message_seq,
        end_message_seq: req.end_message_seq,
        more: 0,
        messages: Vec::new(),
    };
    let Some(rec) = node.resolve_channel(&key, false).await? else {
        return Ok(Json(empty));
    };
    let q = SyncQuery {
        start: req.start_message_seq,
        end: req.end_message_seq,
        limit,
        pull_up: req.pull_mode == PULL_MODE_UP,
    };
    let r = node.sync(&rec, q).await?;
    Ok(Json(SyncResp {
        more: r.more as u8,
        messages: r.messages.into_iter().map(|m| to_message(&rec, m)).collect(),
        ..empty
    }))
}

async fn max_seq(node: &Node, req: ChannelRef) -> ApiResult<MaxSeqResp> {
    let key = reader_key(&req.channel_id, req.channel_type, &req.login_uid)?;
    let Some(rec) = node.resolve_channel(&key, false).await? else {
        return Ok(Json(MaxSeqResp { message_seq: 0 }));
    };
    let r = node
        .sync(
            &rec,
            SyncQuery {
                start: 0,
                end: 0,
                limit: 1,
                pull_up: true,
            },
        )
        .await?;
    Ok(Json(MaxSeqResp {
        message_seq: r.last_seq,
    }))
}

async fn max_seq_post(State(node): State<Node>, Body(req): Body<ChannelRef>) -> ApiResult<MaxSeqResp> {
    max_seq(&node, req).await
}

/// WuKongIM serves this one as GET with query parameters.
async fn max_seq_get(
    State(node): State<Node>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<MaxSeqResp> {
    let Query(q) = q.map_err(|e| NodeError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    let channel_type = match q.get("channel_type").map(|t| t.parse::<u8>()) {
        Some(Ok(t)) => t,
        Some(Err(_)) => return Err(NodeError::BadRequest("channel_type must be a number".into()).into()),
        None => CHANNEL_TYPE_GROUP,
    };
    let req = ChannelRef {
        channel_id: q.get("channel_id").cloned().unwrap_or_default(),
        channel_type,
        login_uid: q.get("login_uid").cloned().unwrap_or_default(),
    };
    max_seq(&node, req).await
}

/// `GET /cluster/snapshot`: this node's data as of one read transaction, streamed in the
/// `wk_api::snapshot` format (admin token only: it holds every user's token).
async fn cluster_snapshot(State(node): State<Node>) -> Response {
    use axum::http::header;
    let body = axum::body::Body::from_stream(crate::snapshot::stream(&node));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"wukong.snapshot\"",
            ),
        ],
        body,
    )
        .into_response()
}

async fn cluster_nodes(
    State(node): State<Node>,
    axum::Extension(security): axum::Extension<Security>,
) -> ApiResult<NodesResp> {
    let mut resp = node.cluster_nodes().await?;
    resp.security = Some(security);
    Ok(Json(resp))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// `?limit=N`, with a malformed query answered as our JSON 400.
fn list_limit(
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<usize, ApiErr> {
    let Query(q) = q.map_err(|e| NodeError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    Ok(q.limit.unwrap_or(100).min(10_000))
}

/// `GET /cluster/channels?limit=N&after=CURSOR` (`channels_page`).
#[derive(Deserialize)]
struct ChannelsQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// One page of the channel table, in key order: up to `limit` (default 100, at most 10,000)
/// channels after the cursor `after` (the `next` of the previous page), and the cursor of the
/// next page if there is one. `total` counts every channel.
async fn cluster_channels(
    State(node): State<Node>,
    q: Result<Query<ChannelsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ChannelList> {
    let Query(q) = q.map_err(|e| NodeError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let after = q.after.as_deref().map(channel_cursor).transpose()?;
    let (total, mut recs) = node
        .store
        .read(move |r| {
            let total = r.count(crate::store::Table::Channels)?;
            Ok((total, meta::channels(r, after.as_ref(), limit.saturating_add(1))?))
        })
        .await
        .map_err(NodeError::from)?;
    let next = (recs.len() > limit).then(|| {
        recs.truncate(limit);
        recs.last()
            .map(|r| format!("{}:{}", r.key.channel_type, r.key.channel_id))
            .unwrap_or_default()
    });
    Ok(Json(ChannelList {
        total,
        channels: recs.iter().map(info_of).collect(),
        next,
    }))
}

/// A `/cluster/channels` cursor, `TYPE:CHANNEL_ID`, as the channel key it names.
fn channel_cursor(c: &str) -> Result<ChannelKey, ApiErr> {
    let bad = || {
        NodeError::BadRequest(format!(
            "bad cursor {c:?}: want TYPE:CHANNEL_ID from a page's next"
        ))
    };
    let (ty, id) = c.split_once(':').ok_or_else(bad)?;
    Ok(ChannelKey {
        channel_id: id.to_string(),
        channel_type: ty.parse().map_err(|_| bad())?,
    })
}

async fn cluster_join(State(node): State<Node>, Body(req): Body<JoinReq>) -> ApiResult<JoinResp> {
    crate::config::parse_member(&format!("{}@{}", req.node_id, req.cluster_addr))
        .map_err(|e| NodeError::BadRequest(format!("{e:#}")))?;
    if !req.http_addr.is_empty() && !req.http_addr.contains(':') {
        return Err(NodeError::BadRequest("http_addr must be HOST:PORT".into()).into());
    }
    let rec = meta::NodeRecord {
        id: req.node_id,
        http_addr: req.http_addr,
        cluster_addr: req.cluster_addr,
    };
    if req.wait {
        return Ok(Json(node.join(rec).await?));
    }
    // The node owns the join from here: it outlives this request, and shutdown stops it.
    let id = rec.id;
    let joiner = node.clone();
    node.spawn_task(async move {
        match joiner.join(rec).await {
            Ok(resp) => tracing::info!(node_id = id, ?resp, "join finished (asked not to wait)"),
            Err(e) => tracing::warn!(node_id = id, error = %e, "join failed (asked not to wait)"),
        }
    });
    Ok(Json(JoinResp {
        node_id: id,
        voter: false,
        metadata_ms: 0,
        active_migrated: 0,
        backlog: 0,
        pending: true,
    }))
}

async fn cluster_backlog(
    State(node): State<Node>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Backlog> {
    Ok(Json(node.backlog_view(list_limit(q)?).await?))
}

async fn cluster_drain(State(node): State<Node>, Body(req): Body<DrainReq>) -> ApiResult<Ok200> {
    if !req.rate.is_finite() || req.rate < 0.0 || req.rate > 1_000_000.0 {
        return Err(NodeError::BadRequest("rate must be 0 (stop) to 1000000 channels/s".into()).into());
    }
    let rate_milli = (req.rate > 0.0).then(|| ((req.rate * 1000.0) as u64).max(1));
    node.meta_write(MetaCmd::SetDrain { rate_milli }).await?;
    Ok(Json(Ok200::default()))
}

fn node_id(id: &str) -> Result<u64, ApiErr> {
    id.parse()
        .map_err(|_| NodeError::BadRequest(format!("node id {id:?} is not a number")).into())
}

async fn cluster_drill(State(node): State<Node>, Body(req): Body<DrillReq>) -> ApiResult<Ok200> {
    node.drill(req).await?;
    Ok(Json(Ok200::default()))
}

async fn cluster_evacuate(State(node): State<Node>, Path(id): Path<String>) -> ApiResult<EvacuateResp> {
    Ok(Json(node.evacuate(node_id(&id)?).await?))
}

async fn cluster_remove(
    State(node): State<Node>,
    Path(id): Path<String>,
    Body(req): Body<RemoveNodeReq>,
) -> ApiResult<RemoveNodeResp> {
    Ok(Json(node.remove_node(node_id(&id)?, req.dry_run).await?))
}

async fn cluster_transfer(
    State(node): State<Node>,
    Path((id, ty)): Path<(String, String)>,
    Body(req): Body<TransferLeaderReq>,
) -> ApiResult<ChannelConfig> {
    let rec = stored_channel(&node, &id, &ty).await?;
    Ok(Json(node.transfer_leader(&rec, req.to).await?))
}

async fn stored_channel(node: &Node, id: &str, ty: &str) -> Result<ChannelRecord, ApiErr> {
    let channel_type: u8 = ty
        .parse()
        .map_err(|_| NodeError::BadRequest(format!("channel type {ty:?} is not a number")))?;
    check_type(channel_type)?;
    check_len("channel_id", id, MAX_ID)?;
    let key = ChannelKey {
        channel_id: id.to_string(),
        channel_type,
    };
    node.resolve_channel(&key, false)
        .await?
        .map(std::sync::Arc::unwrap_or_clone)
        .ok_or_else(|| NodeError::ChannelNotFound(key.to_string()).into())
}

async fn cluster_channel_config(
    State(node): State<Node>,
    Path((id, ty)): Path<(String, String)>,
) -> ApiResult<ChannelConfig> {
    let rec = stored_channel(&node, &id, &ty).await?;
    Ok(Json(node.channel_config(&rec).await))
}

async fn cluster_channel_replicas(
    State(node): State<Node>,
    Path((id, ty)): Path<(String, String)>,
) -> ApiResult<ChannelReplicas> {
    let rec = stored_channel(&node, &id, &ty).await?;
    Ok(Json(node.channel_replicas(&rec).await))
}

async fn cluster_channel_verify(
    State(node): State<Node>,
    Path((id, ty)): Path<(String, String)>,
) -> ApiResult<wk_api::ChannelVerify> {
    let rec = stored_channel(&node, &id, &ty).await?;
    Ok(Json(node.channel_verify(&rec).await))
}
