//! `GET /route` and `POST /route/batch`: where an IM client connects, answered like WuKongIM
//! (`{tcp_addr, ws_addr, wss_addr}`); `POST /user/onlinestatus`: who is connected, from the
//! presence directory (`cluster::presence`). Every node's gateway accepts every user, so the answer is
//! this node's own gateway addresses, whoever asks; they come in as an `Extension` set by
//! `crate::run` once the listeners are bound (a router without one answers empty addresses).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::{Extension, Query};
use wk_api::{OnlineStatus, RouteBatchItem, RouteResp};

use super::validate::{MAX_SUBSCRIBERS_PER_CALL, check_id};
use super::{ApiErr, ApiResult, Body};
use crate::cluster::Node;
use crate::error::NodeError;

/// `GET /route?uid=U` (`intranet=1` is accepted and answered the same: one address per node).
pub async fn route(
    addrs: Option<Extension<RouteResp>>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<RouteResp> {
    let Query(q) = q.map_err(|e| NodeError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    if let Some(uid) = q.get("uid") {
        check_id("uid", uid)?;
    }
    Ok(Json(addrs.map(|Extension(a)| a).unwrap_or_default()))
}

/// `POST /route/batch` with a JSON array of uids: one item holding them all.
pub async fn route_batch(
    addrs: Option<Extension<RouteResp>>,
    Body(uids): Body<Vec<String>>,
) -> ApiResult<Vec<RouteBatchItem>> {
    check_uids(&uids)?;
    let route = addrs.map(|Extension(a)| a).unwrap_or_default();
    Ok(Json(vec![RouteBatchItem { uids, route }]))
}

/// `POST /user/onlinestatus` with a JSON array of uids: one item per (uid, device flag) online
/// anywhere in the cluster, ordered by uid.
pub async fn online_status(
    State(node): State<Node>,
    Body(uids): Body<Vec<String>>,
) -> ApiResult<Vec<OnlineStatus>> {
    check_uids(&uids)?;
    let mut online: Vec<OnlineStatus> = node
        .locate(uids)
        .await
        .into_values()
        .flatten()
        .flat_map(|(uid, flags)| {
            flags.into_iter().map(move |device_flag| OnlineStatus {
                uid: uid.clone(),
                device_flag,
                online: 1,
            })
        })
        .collect();
    online.sort();
    online.dedup();
    Ok(Json(online))
}

fn check_uids(uids: &[String]) -> Result<(), ApiErr> {
    if uids.len() > MAX_SUBSCRIBERS_PER_CALL {
        return Err(ApiErr(NodeError::BadRequest(format!(
            "at most {MAX_SUBSCRIBERS_PER_CALL} uids per call"
        ))));
    }
    for uid in uids {
        check_id("uid", uid)?;
    }
    Ok(())
}
