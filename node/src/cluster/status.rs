//! What a node reports about itself and its groups, and the cluster-wide views built by
//! asking every node (`/cluster/nodes`) or every replica (`/cluster/channels/.../replicas`).

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use serde::{Deserialize, Serialize};
use wk_api::{ChannelConfig, ChannelReplicas, NodeStatus, NodesResp, ReplicaStatus, Role};

use super::Node;
use super::rpc::{AppReply, AppRpc};
use crate::error::Result;
use crate::meta::{self, ChannelRecord};
use crate::raft::{GroupId, NodeId, Raft};

/// What one read of the channel table tells (`Node::channel_scan`).
#[derive(Debug, Default)]
pub struct ChannelScan {
    /// Channels in the metadata.
    pub total: u64,
    /// Groups whose replica set includes this node.
    pub replicated: HashSet<GroupId>,
}

/// How long a status probe waits for a peer before reporting it offline.
const PROBE_TTL: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftView {
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Leader only: each replica's matched log index and ms since its last ack.
    pub matched: BTreeMap<NodeId, (u64, Option<u64>)>,
}

fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Unknown,
    }
}

pub fn raft_view(raft: &Raft) -> RaftView {
    let m = raft.metrics().borrow_watched().clone();
    let mut matched = BTreeMap::new();
    if let Some(repl) = &m.replication {
        for (id, log) in repl {
            let ack = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .map(|i| i.into_inner().elapsed().as_millis() as u64);
            matched.insert(*id, (log.as_ref().map(|l| l.index).unwrap_or(0), ack));
        }
    }
    RaftView {
        role: role_of(m.state),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
        matched,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalNodeStatus {
    pub meta: RaftView,
    pub channels_led: u64,
    pub channels_replicated: u64,
    /// Authenticated client connections on this node's gateway.
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub raft: RaftView,
    pub message_seq: u64,
    pub checksum: u64,
    /// Why this replica's copy is corrupt (`integrity`), if it is.
    pub corrupt: Option<String>,
}

impl Node {
    pub async fn local_status(&self) -> Result<LocalNodeStatus> {
        let channels_led = self
            .live_groups()
            .iter()
            .filter(|(_, r)| r.metrics().borrow_watched().state == ServerState::Leader)
            .count() as u64;
        let channels_replicated = self.channels_replicated().await?;
        Ok(LocalNodeStatus {
            meta: raft_view(&self.meta),
            channels_led,
            connections: self.registry.len() as u64,
            channels_replicated,
        })
    }

    /// How many channels list this node as a replica.
    async fn channels_replicated(&self) -> Result<u64> {
        Ok(self.channel_scan().await?.replicated.len() as u64)
    }

    /// What one read of the whole channel table tells this node. It is a scan of every channel
    /// record, so the result is cached until the metadata changes (dashboards and scrapers
    /// poll it every second); the status and the metrics share it.
    pub async fn channel_scan(&self) -> Result<Arc<ChannelScan>> {
        let id = self.id;
        let read = self.store.read(move |r| {
            let all = meta::channels(r, None, usize::MAX)?;
            Ok(ChannelScan {
                total: all.len() as u64,
                replicated: all
                    .iter()
                    .filter(|c| c.replicas.contains(&id))
                    .map(|c| c.group_id)
                    .collect(),
            })
        });
        self.scan_memo
            .get_or_read(self.meta_applied(), async { Ok(read.await?) })
            .await
    }

    /// A replica's view of its group. A hibernating group is read from disk, not woken:
    /// looking must not change what is looked at.
    pub async fn group_status(&self, rec: &ChannelRecord) -> Result<GroupStatus> {
        let g = rec.group_id;
        let (state, (last, _)) = self
            .store
            .read(move |r| {
                Ok((
                    crate::raft::state_machine::load_state(r, g)?,
                    crate::raft::log_store::stored_log_state(r, g)?,
                ))
            })
            .await?;
        let raft = match self.live_group(g) {
            Some(raft) => {
                let mut view = raft_view(&raft);
                // A quiet leader sends no heartbeats, so the time since the last ack says nothing.
                if self.is_quiet(g) {
                    view.matched.values_mut().for_each(|(_, ack)| *ack = None);
                }
                view
            }
            None => RaftView {
                role: Role::Hibernated,
                term: 0,
                leader: None,
                last_log_index: last.map(|l| l.index).unwrap_or(0),
                applied_index: state.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
                matched: Default::default(),
            },
        };
        Ok(GroupStatus {
            raft,
            message_seq: state.channel.last_seq,
            checksum: state.channel.checksum,
            corrupt: crate::integrity::corrupt(g).map(|c| c.reason),
        })
    }

    /// Every node of the metadata membership (and every registered node), probed now.
    pub async fn cluster_nodes(&self) -> Result<NodesResp> {
        let (registered, gateways) = self
            .store
            .read(|r| Ok((meta::nodes(r)?, meta::gateways(r)?)))
            .await?;
        let membership = self.meta.metrics().borrow_watched().membership_config.clone();
        let mut ids: Vec<NodeId> = membership.membership().nodes().map(|(id, _)| *id).collect();
        ids.extend(registered.iter().map(|n| n.id));
        ids.sort_unstable();
        ids.dedup();
        let probes = ids.iter().map(|id| self.ask(*id, AppRpc::NodeStatus, PROBE_TTL));
        let answers = futures::future::join_all(probes).await;
        let mut nodes = Vec::new();
        for (id, answer) in ids.iter().zip(answers) {
            let rec = registered.iter().find(|n| n.id == *id);
            let status = match answer {
                Ok(AppReply::NodeStatus(s)) => Some(s),
                _ => None,
            };
            let gateway = gateways.get(id).cloned().unwrap_or_default();
            nodes.push(NodeStatus {
                id: *id,
                http_addr: rec.map(|r| r.http_addr.clone()).unwrap_or_default(),
                tcp_addr: gateway.tcp_addr,
                ws_addr: gateway.ws_addr,
                cluster_addr: rec
                    .map(|r| r.cluster_addr.clone())
                    .or_else(|| self.transport.addr_of(*id))
                    .unwrap_or_default(),
                online: status.is_some(),
                role: status.as_ref().map(|s| s.meta.role).unwrap_or(Role::Unknown),
                term: status.as_ref().map(|s| s.meta.term).unwrap_or(0),
                last_log_index: status.as_ref().map(|s| s.meta.last_log_index).unwrap_or(0),
                applied_index: status.as_ref().map(|s| s.meta.applied_index).unwrap_or(0),
                channels_led: status.as_ref().map(|s| s.channels_led).unwrap_or(0),
                channels_replicated: status.as_ref().map(|s| s.channels_replicated).unwrap_or(0),
                connections: status.as_ref().map(|s| s.connections).unwrap_or(0),
            });
        }
        let meta_leader = nodes
            .iter()
            .filter(|n| n.role == Role::Leader)
            .max_by_key(|n| n.term)
            .map(|n| n.id)
            .or(self.meta.metrics().borrow_watched().current_leader);
        Ok(NodesResp {
            meta_leader,
            nodes,
            ..Default::default()
        })
    }

    pub(super) async fn probe_replicas(&self, rec: &ChannelRecord) -> Vec<(NodeId, Option<GroupStatus>)> {
        let probes = rec
            .replicas
            .iter()
            .map(|id| self.ask(*id, AppRpc::GroupStatus(rec.clone()), PROBE_TTL));
        let answers = futures::future::join_all(probes).await;
        rec.replicas
            .iter()
            .zip(answers)
            .map(|(id, a)| match a {
                Ok(AppReply::GroupStatus(s)) => (*id, Some(s)),
                _ => (*id, None),
            })
            .collect()
    }

    pub async fn channel_config(&self, rec: &ChannelRecord) -> ChannelConfig {
        let probes = self.probe_replicas(rec).await;
        let leader = probes
            .iter()
            .filter_map(|(id, s)| {
                s.as_ref()
                    .filter(|s| s.raft.role == Role::Leader)
                    .map(|s| (s.raft.term, *id))
            })
            .max();
        ChannelConfig {
            channel_id: rec.key.channel_id.clone(),
            channel_type: rec.key.channel_type,
            group_id: rec.group_id,
            replicas: rec.replicas.clone(),
            leader: leader.map(|(_, id)| id),
            term: leader.map(|(t, _)| t).unwrap_or_else(|| {
                probes
                    .iter()
                    .filter_map(|(_, s)| s.as_ref().map(|s| s.raft.term))
                    .max()
                    .unwrap_or(0)
            }),
        }
    }

    pub async fn channel_replicas(&self, rec: &ChannelRecord) -> ChannelReplicas {
        let probes = self.probe_replicas(rec).await;
        let leader = probes
            .iter()
            .filter_map(|(id, s)| {
                s.as_ref()
                    .filter(|s| s.raft.role == Role::Leader)
                    .map(|s| (s.raft.term, *id, s.clone()))
            })
            .max_by_key(|(t, id, _)| (*t, *id));
        let replicas = probes
            .iter()
            .map(|(id, s)| {
                let (lag, last_ack_ms) = match &leader {
                    Some((_, lid, _)) if lid == id => (Some(0), Some(0)),
                    Some((_, _, ls)) => match ls.raft.matched.get(id) {
                        Some((matched, ack)) => (Some(ls.raft.last_log_index.saturating_sub(*matched)), *ack),
                        None => (None, None),
                    },
                    None => (None, None),
                };
                ReplicaStatus {
                    node_id: *id,
                    online: s.is_some(),
                    role: s.as_ref().map(|s| s.raft.role).unwrap_or(Role::Unknown),
                    term: s.as_ref().map(|s| s.raft.term).unwrap_or(0),
                    last_log_index: s.as_ref().map(|s| s.raft.last_log_index).unwrap_or(0),
                    applied_index: s.as_ref().map(|s| s.raft.applied_index).unwrap_or(0),
                    lag,
                    last_ack_ms,
                    message_seq: s.as_ref().map(|s| s.message_seq).unwrap_or(0),
                    checksum: s
                        .as_ref()
                        .map(|s| format!("{:016x}", s.checksum))
                        .unwrap_or_default(),
                    corrupt: s.as_ref().and_then(|s| s.corrupt.clone()),
                }
            })
            .collect();
        ChannelReplicas {
            channel_id: rec.key.channel_id.clone(),
            channel_type: rec.key.channel_type,
            group_id: rec.group_id,
            leader: leader.map(|(_, id, _)| id),
            replicas,
        }
    }
}
