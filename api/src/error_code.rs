//! The stable `code` of every error answer: the one list the node answers with, counts in
//! `/metrics` (one counter per code) and that `wkctl` and the dashboard branch on.

use serde::{Deserialize, Serialize};

/// Defines [`ErrorCode`], its wire string ([`ErrorCode::as_str`], also its serde form) and
/// [`ErrorCode::ALL`] from one list, so none of them can miss a code.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $wire:literal,)*) => {
        /// The stable machine-readable reason of an error answer: the `code` of the JSON body
        /// ([`crate::ApiError`]), a snake_case string on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order: `code as usize` is its index here.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The string the JSON body's `code` carries.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// The request is malformed (400); fix it, do not retry.
    BadRequest = "bad_request",
    /// The body is over the size limit (413).
    PayloadTooLarge = "payload_too_large",
    /// The node refuses this operation by configuration (403).
    Forbidden = "forbidden",
    /// A missing or wrong token (401).
    Unauthorized = "unauthorized",
    /// The channel does not exist (404).
    ChannelNotFound = "channel_not_found",
    /// The node does not lead the group (503); retry, on the leader if a hint came with it.
    NotLeader = "not_leader",
    /// No leader or no quorum right now (503); retry later.
    Unavailable = "unavailable",
    /// This replica's copy failed its checksums and serves nothing until repaired (503).
    Corrupt = "corrupt",
    /// The node's storage failed (500).
    Storage = "storage",
    /// A bug or an unexpected state on the node (500).
    Internal = "internal",
    /// Too much in flight on the node (503); retry after the answer's `retry_after`.
    Overloaded = "overloaded",
    /// No such endpoint (404).
    NotFound = "not_found",
    /// The request body did not arrive within the node's body timeout (408).
    RequestTimeout = "request_timeout",
    /// The sender does not subscribe to the group it sends to (403; SENDACK
    /// SubscriberNotExist).
    NotSubscriber = "not_subscriber",
    /// The sender is on the channel's blacklist, or a person's (403; SENDACK InBlacklist).
    InBlacklist = "in_blacklist",
    /// The channel's (or a person's) whitelist is not empty and lacks the sender (403; SENDACK
    /// NotInWhitelist).
    NotInWhitelist = "not_in_whitelist",
    /// The node was removed from the cluster (`wkctl node remove`) and serves nothing (410):
    /// its data is stale. Ask another node; wipe its data dir to add it again.
    Removed = "removed",
}

impl ErrorCode {
    /// The code whose [`ErrorCode::as_str`] is `s`; `None` for a string this build does not
    /// know (e.g. the `http` of an answer that did not come from a node).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_is_the_wire_string() {
        for &c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).expect("serializes");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("parses"), c);
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("http"), None);
    }
}
