//! The node's error type at its boundaries (HTTP and forwarded requests). Variants say what
//! the caller must do; each maps to an HTTP status and a stable [`ErrorCode`].

use serde::{Deserialize, Serialize};
use wk_api::ErrorCode;

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum NodeError {
    /// The request is malformed; fix it, do not retry.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The node refuses this operation by configuration.
    #[error("{0}")]
    Forbidden(String),
    /// A missing or wrong token.
    #[error("{0}")]
    Unauthorized(String),
    #[error("channel {0} not found")]
    ChannelNotFound(String),
    /// This node does not lead the group; retry on `leader_hint` (internal, between nodes).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<u64> },
    /// No leader or no quorum right now; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This replica's copy of the group failed its checksums: it serves nothing of it until
    /// repaired; another replica can (routing skips this one, as for `Unavailable`).
    #[error("corrupt replica: {0}")]
    Corrupt(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("internal: {0}")]
    Internal(String),
    /// This node has as much in flight as it accepts (`what`); retry after `retry_after` s.
    #[error("overloaded: too many {what} in flight; retry in {retry_after}s")]
    Overloaded { what: String, retry_after: u64 },
    // New variants go last: peers exchange this enum (postcard encodes the variant index).
    /// The sender may not send there (`meta::permit`): add it to the group first.
    #[error("{0} is not a subscriber of the channel")]
    NotSubscriber(String),
    /// The sender may not send there while on the blacklist.
    #[error("{0} is on the channel's blacklist")]
    InBlacklist(String),
    /// The sender may not send there unless added to the whitelist.
    #[error("{0} is not on the channel's whitelist")]
    NotInWhitelist(String),
    /// This node was removed from the cluster and serves nothing: its metadata is stale. Ask
    /// another node.
    #[error(
        "node {0} was removed from the cluster (wkctl node remove): it serves nothing; ask another node, or wipe its data dir to add it again"
    )]
    Removed(u64),
}

impl NodeError {
    pub fn status(&self) -> u16 {
        match self {
            NodeError::BadRequest(_) => 400,
            NodeError::PayloadTooLarge(_) => 413,
            NodeError::Forbidden(_) => 403,
            NodeError::Unauthorized(_) => 401,
            NodeError::ChannelNotFound(_) => 404,
            NodeError::NotSubscriber(_) | NodeError::InBlacklist(_) | NodeError::NotInWhitelist(_) => 403,
            NodeError::NotLeader { .. }
            | NodeError::Unavailable(_)
            | NodeError::Corrupt(_)
            | NodeError::Overloaded { .. } => 503,
            NodeError::Storage(_) | NodeError::Internal(_) => 500,
            NodeError::Removed(_) => 410,
        }
    }

    /// The stable `code` of the answer; exhaustive, so a new variant must choose one.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::BadRequest(_) => ErrorCode::BadRequest,
            NodeError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            NodeError::Forbidden(_) => ErrorCode::Forbidden,
            NodeError::Unauthorized(_) => ErrorCode::Unauthorized,
            NodeError::ChannelNotFound(_) => ErrorCode::ChannelNotFound,
            NodeError::NotSubscriber(_) => ErrorCode::NotSubscriber,
            NodeError::InBlacklist(_) => ErrorCode::InBlacklist,
            NodeError::NotInWhitelist(_) => ErrorCode::NotInWhitelist,
            NodeError::NotLeader { .. } => ErrorCode::NotLeader,
            NodeError::Unavailable(_) => ErrorCode::Unavailable,
            NodeError::Corrupt(_) => ErrorCode::Corrupt,
            NodeError::Storage(_) => ErrorCode::Storage,
            NodeError::Internal(_) => ErrorCode::Internal,
            NodeError::Overloaded { .. } => ErrorCode::Overloaded,
            NodeError::Removed(_) => ErrorCode::Removed,
        }
    }

    pub fn to_api(&self) -> wk_api::ApiError {
        wk_api::ApiError {
            status: self.status(),
            msg: self.to_string(),
            code: self.code().as_str().into(),
            retry_after: match self {
                NodeError::Overloaded { retry_after, .. } => Some(*retry_after),
                _ => None,
            },
        }
    }
}

impl From<crate::store::StoreError> for NodeError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Corrupt { .. } => NodeError::Corrupt(e.to_string()),
            _ => NodeError::Storage(e.to_string()),
        }
    }
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;
