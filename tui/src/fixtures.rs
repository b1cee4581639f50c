//! Test data shared by the `update` tests and the screen snapshot tests: a small cluster
//! whose every value, including times, is fixed, so rendered screens are reproducible.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wk_api::{ChannelInfo, ChannelList, ChannelReplicas, NodeStatus, NodesResp, ReplicaStatus, Role};

use crate::app::{Action, App, Config};
use crate::snapshot::{Backlog, ChannelKey, Snapshot};

/// 2023-11-14T22:13:20Z: event timestamps in the snapshots read 22:13:20 plus offsets.
pub fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A clock: `T::at(ms)` is a fixed offset from one base instant, so only differences matter.
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { base: Instant::now() }
    }

    pub fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }
}

pub fn config() -> Config {
    Config {
        refresh: Duration::from_secs(1),
        title: "test cluster".into(),
        endpoint: "http://127.0.0.1:5001".into(),
        local_scale: false,
    }
}

pub fn app(clock: &Clock) -> App {
    App::new(config(), clock.at(0))
}

pub fn node(id: u64, role: Role, online: bool, term: u64, led: u64, replicated: u64) -> NodeStatus {
    NodeStatus {
        id,
        http_addr: format!("127.0.0.1:500{id}"),
        tcp_addr: String::new(),
        ws_addr: String::new(),
        cluster_addr: format!("127.0.0.1:1111{}", id - 1),
        online,
        role,
        term,
        last_log_index: 100 + id,
        applied_index: 100 + id,
        channels_led: led,
        channels_replicated: replicated,
        connections: 10 * id,
    }
}

/// Three nodes, node `leader` leads the metadata group at `term`; `down` are offline.
pub fn nodes(leader: Option<u64>, term: u64, down: &[u64]) -> NodesResp {
    let nodes = (1..=3)
        .map(|id| {
            let online = !down.contains(&id);
            let role = match (online, leader == Some(id)) {
                (false, _) => Role::Unknown,
                (true, true) => Role::Leader,
                (true, false) => Role::Follower,
            };
            node(id, role, online, term, [0, 4, 1, 1][id as usize], 6)
        })
        .collect();
    NodesResp {
        meta_leader: leader,
        nodes,
        security: None,
    }
}

pub fn info(id: &str, replicas: &[u64]) -> ChannelInfo {
    ChannelInfo {
        channel_id: id.into(),
        channel_type: 2,
        subscribers: vec![],
        group_id: id.bytes().map(u64::from).sum(),
        replicas: replicas.to_vec(),
    }
}

/// One replica: (node, online, lag, ack ms, message seq).
pub type Rep = (u64, bool, Option<u64>, Option<u64>, u64);

pub fn replicas(id: &str, leader: Option<u64>, reps: &[Rep]) -> ChannelReplicas {
    ChannelReplicas {
        channel_id: id.into(),
        channel_type: 2,
        group_id: id.bytes().map(u64::from).sum(),
        leader,
        replicas: reps
            .iter()
            .map(
                |&(node_id, online, lag, last_ack_ms, message_seq)| ReplicaStatus {
                    node_id,
                    online,
                    role: match (online, leader == Some(node_id)) {
                        (false, _) => Role::Unknown,
                        (true, true) => Role::Leader,
                        (true, false) => Role::Follower,
                    },
                    term: 2,
                    last_log_index: message_seq + 1,
                    applied_index: message_seq + 1,
                    lag,
                    last_ack_ms,
                    message_seq,
                    checksum: format!("{:016x}", message_seq * 0x9e37_79b9),
                    corrupt: None,
                },
            )
            .collect(),
    }
}

/// A healthy replica set led by `leader` at `seq`, followers caught up.
pub fn healthy(id: &str, leader: u64, seq: u64) -> ChannelReplicas {
    let reps: Vec<Rep> = [1, 2, 3]
        .iter()
        .map(|&n| {
            if n == leader {
                (n, true, None, None, seq)
            } else {
                (n, true, Some(0), Some(10 + n * 7), seq)
            }
        })
        .collect();
    replicas(id, Some(leader), &reps)
}

pub fn snapshot(
    clock: &Clock,
    ms: u64,
    nodes: NodesResp,
    channels: Vec<ChannelInfo>,
    replicas: Vec<ChannelReplicas>,
) -> Action {
    Action::Snapshot(Box::new(Snapshot {
        at: clock.at(ms),
        wall: wall0() + Duration::from_millis(ms),
        nodes,
        channels: Ok(ChannelList {
            next: None,
            total: channels.len() as u64,
            channels,
        }),
        replicas,
        replica_errors: Vec::<(ChannelKey, String)>::new(),
        backlog: Backlog::NotReported,
    }))
}

pub fn failed(clock: &Clock, ms: u64, error: &str) -> Action {
    Action::PollFailed {
        at: clock.at(ms),
        wall: wall0() + Duration::from_millis(ms),
        error: error.into(),
    }
}

/// A backlog of `total` channels for node 4 (none at risk when empty), with a drain at
/// `drain` channels/s that moved `migrated` so far.
pub fn backlog(total: u64, drain: Option<f64>, migrated: u64) -> wk_api::Backlog {
    wk_api::Backlog {
        total,
        at_risk: u64::from(total > 0),
        targets: if total > 0 {
            vec![wk_api::BacklogTarget {
                node_id: 4,
                channels: total,
                entries: total * 1_200,
                bytes: total * 150_000,
            }]
        } else {
            vec![]
        },
        entries: vec![],
        drain: drain.map(|rate| wk_api::DrainStatus {
            rate,
            migrated,
            errors: 0,
        }),
    }
}

/// The same snapshot with another backlog answer.
pub fn with_backlog(mut a: Action, b: Backlog) -> Action {
    if let Action::Snapshot(s) = &mut a {
        s.backlog = b;
    }
    a
}

/// The channels of the standard scene.
pub const CHANNELS: &[&str] = &["g1", "g2", "orders", "p2p@alice@bob", "quiet", "room-42"];

/// Messages per second of each channel in the standard scene (`quiet` sends nothing).
pub const RATES: &[u64] = &[25, 3, 120, 1, 0, 40];

/// The standard scene at step `k` (one second apart): three nodes up, node 1 leads the
/// metadata group, six channels whose seqs grow by [`RATES`] per step, an empty backlog.
pub fn scene(clock: &Clock, k: u64) -> Action {
    let leaders = [1, 1, 2, 3, 1, 2];
    let channels = CHANNELS.iter().map(|c| info(c, &[1, 2, 3])).collect();
    let reps = CHANNELS
        .iter()
        .zip(RATES)
        .zip(leaders)
        .map(|((c, r), l)| healthy(c, l, 1000 + r * k))
        .collect();
    let s = snapshot(clock, k * 1000, nodes(Some(1), 2, &[]), channels, reps);
    with_backlog(s, Backlog::Report(backlog(0, None, 0)))
}
