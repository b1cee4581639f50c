//! The node's error type at its boundaries (HTTP and forwarded requests). Variants say what
//! the caller must do; each maps to an HTTP status and a stable `code`.

use serde::{Deserialize, Serialize};

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
}

/// Every stable `code` an HTTP error answer may carry (`NodeError::code`, plus `not_found` for
/// an unknown endpoint); the metrics count error answers by these.
pub const CODES: [&str; 10] = [
    "bad_request",
    "payload_too_large",
    "forbidden",
    "unauthorized",
    "channel_not_found",
    "not_leader",
    "unavailable",
    "storage",
    "internal",
    "not_found",
];

impl NodeError {
    pub fn status(&self) -> u16 {
        match self {
            NodeError::BadRequest(_) => 400,
            NodeError::PayloadTooLarge(_) => 413,
            NodeError::Forbidden(_) => 403,
            NodeError::Unauthorized(_) => 401,
            NodeError::ChannelNotFound(_) => 404,
            NodeError::NotLeader { .. }
            | NodeError::Unavailable(_)
            | NodeError::Corrupt(_)
            | NodeError::Overloaded { .. } => 503,
            NodeError::Storage(_) | NodeError::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            NodeError::BadRequest(_) => "bad_request",
            NodeError::PayloadTooLarge(_) => "payload_too_large",
            NodeError::Forbidden(_) => "forbidden",
            NodeError::Unauthorized(_) => "unauthorized",
            NodeError::ChannelNotFound(_) => "channel_not_found",
            NodeError::NotLeader { .. } => "not_leader",
            NodeError::Unavailable(_) => "unavailable",
            NodeError::Corrupt(_) => "corrupt",
            NodeError::Storage(_) => "storage",
            NodeError::Internal(_) => "internal",
            NodeError::Overloaded { .. } => "overloaded",
        }
    }

    pub fn to_api(&self) -> wk_api::ApiError {
        wk_api::ApiError {
            status: self.status(),
            msg: self.to_string(),
            code: self.code().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed() {
        let all = [
            NodeError::BadRequest(String::new()),
            NodeError::PayloadTooLarge(String::new()),
            NodeError::Forbidden(String::new()),
            NodeError::Unauthorized(String::new()),
            NodeError::ChannelNotFound(String::new()),
            NodeError::NotLeader { leader_hint: None },
            NodeError::Unavailable(String::new()),
            NodeError::Storage(String::new()),
            NodeError::Internal(String::new()),
        ];
        for e in all {
            assert!(CODES.contains(&e.code()), "{} is not in CODES", e.code());
        }
    }
}
