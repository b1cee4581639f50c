//! What one poll of the cluster saw: plain data, built by the poller and consumed by
//! [`App::update`](crate::app::App::update). No I/O and no clocks here; times are fields.

use std::fmt;
use std::time::{Instant, SystemTime};

use wk_api::{ChannelList, ChannelReplicas, NodesResp};

/// A channel's identity as the operator API names it: `GET /cluster/channels/{id}/{type}/...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelKey {
    pub id: String,
    /// WuKongIM channel type (1 person, 2 group, ...).
    pub ty: u8,
}

impl ChannelKey {
    pub fn new(id: impl Into<String>, ty: u8) -> ChannelKey {
        ChannelKey { id: id.into(), ty }
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.id, self.ty)
    }
}

/// The sync backlog as `GET /cluster/backlog` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Backlog {
    /// The node does not serve the endpoint (404 from an older node), or nothing was asked yet.
    #[default]
    NotReported,
    /// The node's answer: totals per target node, the first entries, the drain's state.
    Report(wk_api::Backlog),
    /// The request failed for another reason (shown, the rest of the snapshot still counts).
    Failed(String),
}

/// One complete look at the cluster, taken by [`crate::poller`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the poll started (monotonic): the data's age and message rates come from it.
    pub at: Instant,
    /// The same moment on the wall clock: event timestamps come from it.
    pub wall: SystemTime,
    /// `GET /cluster/nodes`: every node as the answering node sees it.
    pub nodes: NodesResp,
    /// `GET /cluster/channels?limit=N`, or why it failed (the node view is still worth showing).
    pub channels: Result<ChannelList, String>,
    /// `GET /cluster/channels/{id}/{type}/replicas` for the channels polled this time: the
    /// visible ones plus a rotating share of the rest, so large clusters cost a bounded number
    /// of requests per refresh.
    pub replicas: Vec<ChannelReplicas>,
    /// Channels whose replica poll failed, with the reason.
    pub replica_errors: Vec<(ChannelKey, String)>,
    /// The sync backlog.
    pub backlog: Backlog,
}
