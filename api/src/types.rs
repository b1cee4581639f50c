//! JSON bodies. Field names follow WuKongIM's HTTP API so existing backends can switch over;
//! the `/cluster/...` types are ours.

use serde::{Deserialize, Serialize};

/// WuKongIM channel type 1: a one-to-one conversation, keyed by the unordered pair of uids.
pub const CHANNEL_TYPE_PERSON: u8 = 1;
/// WuKongIM channel type 2: a group.
pub const CHANNEL_TYPE_GROUP: u8 = 2;
/// WuKongIM defines channel types 1..=11 (person, group, customer service, community, ...).
pub const MAX_CHANNEL_TYPE: u8 = 11;

/// `messagesync` pull mode 0: from `start_message_seq` towards older messages.
pub const PULL_MODE_DOWN: u8 = 0;
/// `messagesync` pull mode 1: from `start_message_seq` towards newer messages.
pub const PULL_MODE_UP: u8 = 1;

/// The error body of every non-2xx answer: WuKongIM's `{status, msg}` plus a stable `code`
/// that tools branch on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub msg: String,
    /// Stable machine-readable reason: an [`ErrorCode`](crate::ErrorCode)'s string from a node,
    /// kept as text so a body from anything else (a proxy) still decodes.
    #[serde(default)]
    pub code: String,
    /// With 503 `overloaded`: seconds to wait before retrying (also the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The [`ErrorCode`](crate::ErrorCode) of `code`; `None` if it is not one.
    pub fn error_code(&self) -> Option<crate::ErrorCode> {
        crate::ErrorCode::parse(&self.code)
    }
}

/// `{"status":200}`: WuKongIM's answer to writes that return no data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ok200 {
    pub status: u16,
}

impl Default for Ok200 {
    fn default() -> Self {
        Ok200 { status: 200 }
    }
}

/// `POST /user/token`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserTokenReq {
    pub uid: String,
    pub token: String,
    /// 0 app, 1 web, 2 pc (WuKongIM's device flags); one token per uid and flag.
    #[serde(default)]
    pub device_flag: u8,
    /// 0 slave, 1 master.
    #[serde(default)]
    pub device_level: u8,
}

/// `POST /channel`: create or update a channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelReq {
    pub channel_id: String,
    pub channel_type: u8,
    #[serde(default)]
    pub subscribers: Vec<String>,
    /// 1: replace the subscriber list instead of adding to it.
    #[serde(default)]
    pub reset: u8,
}

/// `POST /channel/subscriber_add` and `/channel/subscriber_remove`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscribersReq {
    pub channel_id: String,
    pub channel_type: u8,
    pub subscribers: Vec<String>,
    /// `subscriber_add` only: 1 replaces the list.
    #[serde(default)]
    pub reset: u8,
}

/// `POST /channel/blacklist_add|remove|set` and `/channel/whitelist_add|remove|set`
/// (WuKongIM's): a channel's sender lists. For a person channel (type 1) `channel_id` is a uid
/// and the lists are that user's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SenderListReq {
    pub channel_id: String,
    pub channel_type: u8,
    #[serde(default)]
    pub uids: Vec<String>,
}

/// `POST /channel/info`: read a channel's metadata (ours; WuKongIM has no such read).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelRef {
    pub channel_id: String,
    pub channel_type: u8,
    /// For person channels: the uid reading, so `channel_id` names the other party.
    #[serde(default)]
    pub login_uid: String,
}

/// A channel's metadata as stored in the metadata group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelInfo {
    pub channel_id: String,
    pub channel_type: u8,
    pub subscribers: Vec<String>,
    pub group_id: u64,
    pub replicas: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageHeader {
    #[serde(default)]
    pub no_persist: u8,
    #[serde(default)]
    pub red_dot: u8,
    #[serde(default)]
    pub sync_once: u8,
}

/// `POST /message/send`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendReq {
    #[serde(default)]
    pub header: MessageHeader,
    /// The client's idempotency key: a retry with the same `(from_uid, client_msg_no)` on the
    /// same channel returns the original message instead of storing a duplicate.
    #[serde(default)]
    pub client_msg_no: String,
    pub from_uid: String,
    pub channel_id: String,
    pub channel_type: u8,
    /// Base64 (standard alphabet).
    pub payload: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendResp {
    pub message_id: u64,
    pub message_seq: u64,
    pub client_msg_no: String,
}

/// `POST /message/sendbatch`: many messages, any channels, one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendBatchReq {
    pub messages: Vec<SendReq>,
}

/// One result per request message, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendBatchResp {
    pub results: Vec<SendBatchItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendBatchItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<SendResp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// `POST /channel/messagesync`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncReq {
    /// The reader; required for person channels, where `channel_id` is the other party.
    #[serde(default)]
    pub login_uid: String,
    pub channel_id: String,
    pub channel_type: u8,
    /// With `end_message_seq` also 0: the newest `limit` messages, in either pull mode (as in
    /// WuKongIM v2). In pull mode 1 with an end set, 0 means "from the first".
    #[serde(default)]
    pub start_message_seq: u64,
    /// 0 means unbounded.
    #[serde(default)]
    pub end_message_seq: u64,
    /// 0 means the default (100); capped at 10,000.
    #[serde(default)]
    pub limit: u32,
    #[serde(default)]
    pub pull_mode: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncResp {
    pub start_message_seq: u64,
    pub end_message_seq: u64,
    /// 1 when the range holds more messages than `limit` returned.
    pub more: u8,
    /// Ascending by `message_seq`, whatever the pull mode.
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    #[serde(default)]
    pub header: MessageHeader,
    pub message_id: u64,
    /// `message_id` as a string, for JavaScript clients that lose precision above 2^53.
    pub message_idstr: String,
    pub message_seq: u64,
    pub client_msg_no: String,
    pub from_uid: String,
    pub channel_id: String,
    pub channel_type: u8,
    /// Unix seconds, set by the channel leader.
    pub timestamp: u64,
    /// Base64.
    pub payload: String,
}

/// `POST /conversation/sync`: the user's conversations changed since `version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConversationSyncReq {
    pub uid: String,
    /// The largest `version` the client holds; 0 (or absent) for every conversation.
    #[serde(default)]
    pub version: u64,
    /// WuKongIM's `channel_id:channel_type:last_msg_seq` entries joined by `|`: the newest
    /// seq the client holds per channel; `recents` then holds only newer messages.
    #[serde(default)]
    pub last_msg_seqs: String,
    /// How many of the newest messages each conversation carries in `recents` (0: none).
    #[serde(default)]
    pub msg_count: u32,
}

/// One conversation of a user, as WuKongIM's `/conversation/sync` answers it (an array of
/// these). For person channels `channel_id` is the other user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conversation {
    pub channel_id: String,
    pub channel_type: u8,
    /// Messages after `readed_to_msg_seq` (the user's own count as read).
    pub unread: u64,
    /// Unix seconds of the last message.
    pub timestamp: u64,
    pub last_msg_seq: u64,
    pub last_client_msg_no: String,
    /// Always 0: clearing a channel's history per user is not modelled.
    #[serde(default)]
    pub offset_msg_seq: u64,
    pub readed_to_msg_seq: u64,
    /// Grows with every change of this conversation (microseconds, roughly wall-clock).
    pub version: u64,
    /// The newest messages, oldest first, at most `msg_count`.
    #[serde(default)]
    pub recents: Vec<Message>,
}

/// `POST /conversations/setUnread`, `/conversations/clearUnread`, `/conversations/delete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConversationReq {
    pub uid: String,
    /// For person channels: the other user.
    pub channel_id: String,
    pub channel_type: u8,
    /// `setUnread`: how many of the newest messages count as unread.
    #[serde(default)]
    pub unread: u64,
    /// `clearUnread`: read up to this seq (0: everything).
    #[serde(default)]
    pub message_seq: u64,
}

/// `POST /channel/max_message_seq`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MaxSeqResp {
    pub message_seq: u64,
}

/// `GET /health`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    pub node_id: u64,
    /// `serving`, `joining` while a `--seed` node waits to be admitted, or `removed` once the
    /// node was removed from the cluster (it then answers every other request `removed`).
    pub state: String,
    pub meta_leader: Option<u64>,
}

/// A node's role in one Raft group.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// The group is hibernating on this node (nothing runs; its state is on disk).
    Hibernated,
    /// The node did not answer.
    Unknown,
    /// The node was removed from the cluster but still runs (it answered `removed`).
    Removed,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Hibernated => "hibernated",
            Role::Unknown => "unknown",
            Role::Removed => "removed",
        }
    }
}

/// One node in `GET /cluster/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub http_addr: String,
    pub cluster_addr: String,
    /// Its client gateway for TCP clients, `HOST:PORT`, as its `/route` answers (empty: off,
    /// or not registered yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcp_addr: String,
    /// Its client gateway for WebSocket clients, `ws://HOST:PORT` (empty: off, or not
    /// registered yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ws_addr: String,
    /// Whether the node answered the status request just now.
    pub online: bool,
    /// Its role in the metadata group.
    pub role: Role,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub channels_led: u64,
    pub channels_replicated: u64,
    /// Authenticated client connections (IM SDKs) on its gateway; 0 from nodes that predate it.
    #[serde(default)]
    pub connections: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodesResp {
    pub meta_leader: Option<u64>,
    pub nodes: Vec<NodeStatus>,
    /// How the node that answered is exposed; absent from nodes that predate it. A cluster
    /// runs TLS on every node or on none (peers must speak it), so one node's answer holds for
    /// the transport; `insecure` is per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
}

impl NodesResp {
    /// The metadata leader's last log index: what a node must have applied to hold all the
    /// metadata there is (a joining or restarted node's catch-up target). None without a leader.
    pub fn meta_leader_last_index(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|n| Some(n.id) == self.meta_leader)
            .map(|n| n.last_log_index)
    }
}

/// A node's exposure settings, for `wkctl cluster status`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Security {
    /// HTTPS, and mutual TLS between nodes (`--tls-cert`, `--tls-key`, `--tls-ca`).
    pub tls: bool,
    /// Started with `--insecure`: may serve beyond loopback without tokens.
    pub insecure: bool,
}

/// `GET /cluster/channels/{id}/{type}/config`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelConfig {
    pub channel_id: String,
    pub channel_type: u8,
    pub group_id: u64,
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    pub term: u64,
}

/// One replica in `GET /cluster/channels/{id}/{type}/replicas`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub node_id: u64,
    pub online: bool,
    pub role: Role,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Entries behind the leader's last log index, as the leader sees it; None when unknown.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard an acknowledgement from this replica.
    pub last_ack_ms: Option<u64>,
    /// Highest message seq applied.
    pub message_seq: u64,
    /// Running hash over every applied message (hex): equal on replicas that applied the same
    /// messages.
    pub checksum: String,
    /// Set when this replica's copy failed its checksums: it serves nothing of the channel
    /// until the leader has replaced it with a fresh copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
}

/// One replica's answer to `GET /cluster/channels/{id}/{type}/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaVerify {
    pub node_id: u64,
    /// The replica answered.
    pub online: bool,
    /// Highest message seq applied on this replica.
    pub message_seq: u64,
    /// Messages re-read and checked (`1..=verified_seq`): the seq every replica has.
    pub verified_seq: u64,
    /// Running checksum recomputed from the stored messages up to `verified_seq` (hex).
    pub checksum: String,
    /// Raft log entries re-read and checked.
    pub log_entries: u64,
    /// Why this replica's copy is corrupt, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
    /// Why the replica could not be verified (offline, error), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /cluster/channels/{id}/{type}/verify`: every replica re-reads its copy; like
/// `etcdctl endpoint hashkv`, the checksums up to a common seq must agree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelVerify {
    pub channel_id: String,
    pub channel_type: u8,
    pub group_id: u64,
    /// The lowest `message_seq` among the replicas that answered: what all are compared on.
    pub common_seq: u64,
    /// Every replica answered, none is corrupt and all checksums agree.
    pub ok: bool,
    pub replicas: Vec<ReplicaVerify>,
}

/// `wkctl cluster verify --output json`: every channel verified (up to `--limit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterVerify {
    /// Channels in the cluster.
    pub total: u64,
    /// Channels verified here.
    pub checked: u64,
    /// Channels whose verification failed (mismatch, corruption, or a replica not answering).
    pub failed: u64,
    pub channels: Vec<ChannelVerify>,
    /// Channels that could not be asked at all: (channel key, error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelReplicas {
    pub channel_id: String,
    pub channel_type: u8,
    pub group_id: u64,
    pub leader: Option<u64>,
    pub replicas: Vec<ReplicaStatus>,
}

/// `GET /cluster/channels?limit=N&after=CURSOR`: one page of the channel table, in key order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelList {
    /// Every channel in the cluster, not only this page's.
    pub total: u64,
    pub channels: Vec<ChannelInfo>,
    /// The cursor of the next page (`after=`), absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /cluster/join`: admit a node started with `--seed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinReq {
    pub node_id: u64,
    pub cluster_addr: String,
    /// The node's HTTP address, if known (the node also registers it itself once admitted).
    #[serde(default)]
    pub http_addr: String,
    /// Answer once the node caught up and the active channels moved (the default); false:
    /// answer at once, the join runs on in the cluster (`JoinResp::pending`).
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinResp {
    pub node_id: u64,
    /// Whether the node became a voter of the metadata group (voters are kept odd, up to 5).
    pub voter: bool,
    /// Time until the node had applied the metadata leader's log.
    pub metadata_ms: u64,
    /// Active channels whose placement now includes the node and that were migrated at once.
    pub active_migrated: u64,
    /// Inactive channels left in the sync backlog for the node.
    pub backlog: u64,
    /// The join was asked not to wait (`JoinReq::wait` false): it runs on in the cluster and
    /// the figures above are zero; `/cluster/nodes` shows the node once it is admitted.
    #[serde(default)]
    pub pending: bool,
}

/// One channel in the sync backlog: its replica set differs from the desired placement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BacklogEntry {
    pub channel_id: String,
    pub channel_type: u8,
    pub group_id: u64,
    pub replicas: Vec<u64>,
    pub desired: Vec<u64>,
    /// Log entries a new replica must copy (the channel's last applied index), if known.
    pub entries: Option<u64>,
    /// Payload bytes stored in the channel, if known.
    pub bytes: Option<u64>,
    /// Fewer than a quorum of the current replicas are on nodes that answer: drain it first.
    pub at_risk: bool,
}

/// Backlog totals for one target node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BacklogTarget {
    pub node_id: u64,
    pub channels: u64,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrainStatus {
    /// Channels per second the drain may migrate.
    pub rate: f64,
    /// Channels migrated by this drain since it (re)started on the current leader.
    pub migrated: u64,
    /// Failed migrations (retried later).
    pub errors: u64,
}

/// `GET /cluster/backlog`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backlog {
    pub total: u64,
    pub at_risk: u64,
    pub targets: Vec<BacklogTarget>,
    /// The first `limit` entries, at-risk ones first, then by group id (oldest first).
    pub entries: Vec<BacklogEntry>,
    /// Set while a drain runs.
    pub drain: Option<DrainStatus>,
}

/// `POST /cluster/backlog/drain`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrainReq {
    /// Channels per second; 0 stops a running drain.
    pub rate: f64,
}

/// `POST /cluster/channels/{id}/{type}/transfer-leader`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferLeaderReq {
    pub to: u64,
}

/// `POST /cluster/nodes/{id}/evacuate`: move every channel leadership off a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EvacuateResp {
    pub node_id: u64,
    /// Channels the node led when the evacuation started.
    pub led: u64,
    /// Of those, how many now have a leader on another node.
    pub moved: u64,
    /// Channels that still had their leader on the node at the end.
    pub stuck: Vec<String>,
}

/// `POST /cluster/nodes/{id}/remove`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoveNodeReq {
    /// Only compute and return the plan.
    #[serde(default)]
    pub dry_run: bool,
}

/// One planned replica move of a node removal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaMove {
    pub channel_id: String,
    pub channel_type: u8,
    pub from: Vec<u64>,
    pub to: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoveNodeResp {
    pub node_id: u64,
    pub dry_run: bool,
    pub plan: Vec<ReplicaMove>,
    /// Channels moved off the node.
    pub moved: u64,
    /// Channels that could not be moved (the node stays a member until they are).
    pub stuck: Vec<String>,
    /// Whether the node left the metadata group.
    pub removed: bool,
}

/// `POST /cluster/drill` on the node that should suffer the fault (needs `--allow-drills`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DrillReq {
    /// Abort the process at once, as `kill -9` would.
    Crash,
    /// Drop all cluster traffic to and from `peers` (empty: every peer) for `duration_ms`.
    Isolate {
        #[serde(default)]
        peers: Vec<u64>,
        duration_ms: u64,
    },
    /// Delay every LMDB commit by `delay_ms` for `duration_ms`.
    SlowDisk { delay_ms: u64, duration_ms: u64 },
    /// End every running fault now.
    Heal,
}

/// `GET /route?uid=U`: where a client connects, WuKongIM's shape. The answering node's own
/// client gateway: any node accepts any user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteResp {
    /// `HOST:PORT` of the binary protocol over TCP; empty when that listener is off.
    pub tcp_addr: String,
    /// `ws://HOST:PORT` of the binary protocol over WebSocket; empty when that listener is off.
    pub ws_addr: String,
    /// `wss://...`: always empty (no TLS on the gateway yet); the JS demo falls back to `ws_addr`.
    pub wss_addr: String,
}

/// One item of `POST /user/onlinestatus` (body: a JSON array of uids), WuKongIM's shape: one per
/// (uid, device flag) with a connection somewhere in the cluster; offline uids are left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnlineStatus {
    pub uid: String,
    /// 0 app, 1 web, 2 pc.
    pub device_flag: u8,
    /// Always 1 (only online devices are listed).
    pub online: u8,
}

/// One answer of `POST /route/batch` (body: a JSON array of uids): the uids that connect to
/// these addresses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteBatchItem {
    pub uids: Vec<String>,
    #[serde(flatten)]
    pub route: RouteResp,
}
