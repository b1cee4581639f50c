//! The registry: every family the node exports, with its type, help text and value (names and
//! meanings are documented in `docs/METRICS.md`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver;
use wk_api::Backlog;

use super::exposition::{Exposition, Kind};
use super::scans::MetricsState;
use crate::cluster::Node;
use crate::cluster::status::ChannelScan;
use crate::raft::{GroupId, NodeId};
use crate::stats::{self, Outcome};

/// Record checksums (`crate::integrity`): what is corrupt here now, what was found and fixed.
pub(super) fn integrity_families(out: &mut Exposition) {
    let (detected, repaired) = crate::integrity::counters();
    out.family(
        "wukong_integrity_corrupt_groups",
        Kind::Gauge,
        "Groups whose copy here failed its checksums and awaits repair (serves nothing).",
    );
    out.sample(
        "wukong_integrity_corrupt_groups",
        &[],
        crate::integrity::corrupt_groups().len() as f64,
    );
    out.family(
        "wukong_integrity_corruptions_detected_total",
        Kind::Counter,
        "Groups found corrupt here since the node started.",
    );
    out.sample(
        "wukong_integrity_corruptions_detected_total",
        &[],
        detected as f64,
    );
    out.family(
        "wukong_integrity_repairs_total",
        Kind::Counter,
        "Corrupt copies here deleted for a fresh one from the leader since the node started.",
    );
    out.sample("wukong_integrity_repairs_total", &[], repaired as f64);
}

pub(super) fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn state_label(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

const STATES: [ServerState; 5] = [
    ServerState::Leader,
    ServerState::Follower,
    ServerState::Candidate,
    ServerState::Learner,
    ServerState::Shutdown,
];

/// The metadata group (group 0), as this node sees it.
pub(super) fn meta_families(node: &Node, state: &MetricsState, out: &mut Exposition) {
    struct MetaView {
        state: ServerState,
        term: u64,
        leader: Option<NodeId>,
        last_log: u64,
        committed: u64,
        applied: u64,
        /// The last entry in this node's latest snapshot, and the last one purged from its log.
        snapshot: u64,
        purged: u64,
        voters: usize,
        learners: usize,
        /// Leader only: (peer, lag in entries).
        lag: Vec<(NodeId, u64)>,
        /// Leader only: seconds since a quorum last acknowledged it.
        quorum_ack_age: Option<f64>,
    }
    let v = {
        let m = node.meta.metrics();
        let m = m.borrow_watched();
        let last_log = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != node.id)
                    .map(|(id, l)| {
                        (
                            *id,
                            last_log.saturating_sub(l.as_ref().map(|l| l.index).unwrap_or(0)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let membership = m.membership_config.membership();
        MetaView {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_log,
            committed: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            snapshot: m.snapshot.as_ref().map(|l| l.index).unwrap_or(0),
            purged: m.purged.as_ref().map(|l| l.index).unwrap_or(0),
            voters: membership.voter_ids().count(),
            learners: membership.learner_ids().count(),
            lag,
            // A lone voter is its own quorum: nothing acknowledges it, and nothing needs to.
            quorum_ack_age: if membership.voter_ids().count() <= 1 && m.state == ServerState::Leader {
                Some(0.0)
            } else {
                m.last_quorum_acked
                    .as_ref()
                    .map(|t| t.into_inner().elapsed().as_secs_f64())
            },
        }
    };
    out.family(
        "wukong_meta_role",
        Kind::Gauge,
        "Role of this node in the metadata group: 1 for the current role, 0 for the others.",
    );
    for s in STATES {
        out.sample(
            "wukong_meta_role",
            &[("role", state_label(s))],
            bool_value(s == v.state),
        );
    }
    out.family(
        "wukong_meta_term",
        Kind::Gauge,
        "Current Raft term of the metadata group on this node.",
    );
    out.sample("wukong_meta_term", &[], v.term as f64);
    out.family(
        "wukong_meta_leader_id",
        Kind::Gauge,
        "Node id of the metadata leader this node knows of (absent when none).",
    );
    if let Some(l) = v.leader {
        out.sample("wukong_meta_leader_id", &[], l as f64);
    }
    out.family(
        "wukong_meta_last_log_index",
        Kind::Gauge,
        "Index of the last entry in this node's metadata log.",
    );
    out.sample("wukong_meta_last_log_index", &[], v.last_log as f64);
    out.family(
        "wukong_meta_committed_index",
        Kind::Gauge,
        "Index of the last metadata entry this node knows to be committed.",
    );
    out.sample("wukong_meta_committed_index", &[], v.committed as f64);
    out.family(
        "wukong_meta_applied_index",
        Kind::Gauge,
        "Index of the last metadata entry applied on this node.",
    );
    out.sample("wukong_meta_applied_index", &[], v.applied as f64);
    out.family(
        "wukong_meta_snapshot_index",
        Kind::Gauge,
        "Last metadata entry in this node's latest snapshot (0: none yet).",
    );
    out.sample("wukong_meta_snapshot_index", &[], v.snapshot as f64);
    out.family(
        "wukong_meta_purged_index",
        Kind::Gauge,
        "Last metadata entry purged from this node's log (the log holds the entries after it).",
    );
    out.sample("wukong_meta_purged_index", &[], v.purged as f64);
    out.family(
        "wukong_meta_voters",
        Kind::Gauge,
        "Voters in the metadata group's membership.",
    );
    out.sample("wukong_meta_voters", &[], v.voters as f64);
    out.family(
        "wukong_meta_learners",
        Kind::Gauge,
        "Learners (joining nodes catching up) in the metadata group's membership.",
    );
    out.sample("wukong_meta_learners", &[], v.learners as f64);
    out.family(
        "wukong_meta_replication_lag_entries",
        Kind::Gauge,
        "Leader only: metadata log entries each peer is behind this node.",
    );
    for (peer, lag) in &v.lag {
        out.sample(
            "wukong_meta_replication_lag_entries",
            &[("peer", &peer.to_string())],
            *lag as f64,
        );
    }
    out.family(
        "wukong_meta_quorum_ack_age_seconds",
        Kind::Gauge,
        "Leader only: time since a quorum last acknowledged this leader (grows when it is cut off).",
    );
    if let Some(age) = v.quorum_ack_age {
        out.sample("wukong_meta_quorum_ack_age_seconds", &[], age);
    }
    out.family(
        "wukong_meta_elections_total",
        Kind::Counter,
        "Metadata-group terms this node moved through since the exporter started (each term is one election).",
    );
    out.sample(
        "wukong_meta_elections_total",
        &[],
        state.0.elections.load(Ordering::Relaxed) as f64,
    );
    out.family(
        "wukong_meta_leader_changes_total",
        Kind::Counter,
        "New metadata leaderships (term, leader) this node saw since the exporter started.",
    );
    out.sample(
        "wukong_meta_leader_changes_total",
        &[],
        state.0.leader_changes.load(Ordering::Relaxed) as f64,
    );
}

/// Channel groups on this node and the replication of those it leads.
pub(super) fn channel_families(node: &Node, scan: Option<&ChannelScan>, out: &mut Exposition) {
    let live = node.live_groups();
    let (mut led, mut followers, mut behind, mut lag_sum, mut lag_max, mut ack_max) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0f64);
    for (_, raft) in &live {
        let m = raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            continue;
        }
        led += 1;
        let last = m.last_log_index.unwrap_or(0);
        let Some(repl) = &m.replication else { continue };
        for (id, log) in repl.iter().filter(|(id, _)| **id != node.id) {
            let lag = last.saturating_sub(log.as_ref().map(|l| l.index).unwrap_or(0));
            followers += 1;
            behind += u64::from(lag > 0);
            lag_sum += lag;
            lag_max = lag_max.max(lag);
            let ack = m.heartbeat.as_ref().and_then(|h| h.get(id).cloned().flatten());
            if let Some(t) = ack {
                ack_max = ack_max.max(t.into_inner().elapsed().as_secs_f64());
            }
        }
    }
    out.family(
        "wukong_channels_led",
        Kind::Gauge,
        "Channel groups this node leads.",
    );
    out.sample("wukong_channels_led", &[], led as f64);
    out.family(
        "wukong_channels_active",
        Kind::Gauge,
        "Channel groups running on this node (not hibernated).",
    );
    out.sample("wukong_channels_active", &[], live.len() as f64);
    out.family(
        "wukong_channels_max_active",
        Kind::Gauge,
        "Most channel groups this node keeps running (--max-active-channels).",
    );
    out.sample("wukong_channels_max_active", &[], node.max_active as f64);
    let running: HashSet<GroupId> = live.iter().map(|(g, _)| *g).collect();
    let hibernated = scan.map(|s| s.replicated.iter().filter(|g| !running.contains(g)).count());
    out.family(
        "wukong_channels_replicated",
        Kind::Gauge,
        "Channels whose replica set includes this node.",
    );
    if let Some(scan) = scan {
        out.sample("wukong_channels_replicated", &[], scan.replicated.len() as f64);
    }
    out.family(
        "wukong_channels_hibernated",
        Kind::Gauge,
        "Channels replicated on this node whose group is not running here.",
    );
    if let Some(n) = hibernated {
        out.sample("wukong_channels_hibernated", &[], n as f64);
    }
    out.family(
        "wukong_channels_sealed",
        Kind::Gauge,
        "Channel groups a cold migration holds on this node (they do not start here until it releases them).",
    );
    out.sample("wukong_channels_sealed", &[], node.sealed_groups() as f64);
    out.family(
        "wukong_channels",
        Kind::Gauge,
        "Channels in the metadata (cluster-wide; the same on every node).",
    );
    if let Some(scan) = scan {
        out.sample("wukong_channels", &[], scan.total as f64);
    }
    out.family(
        "wukong_replication_followers",
        Kind::Gauge,
        "Follower replicas of the channel groups this node leads (one per group and follower).",
    );
    out.sample("wukong_replication_followers", &[], followers as f64);
    out.family(
        "wukong_replication_followers_behind",
        Kind::Gauge,
        "Of those, how many have not matched the leader's last log entry.",
    );
    out.sample("wukong_replication_followers_behind", &[], behind as f64);
    out.family(
        "wukong_replication_lag_entries_max",
        Kind::Gauge,
        "Largest lag, in log entries, of a follower of a channel this node leads.",
    );
    out.sample("wukong_replication_lag_entries_max", &[], lag_max as f64);
    out.family(
        "wukong_replication_lag_entries_sum",
        Kind::Gauge,
        "Sum of the lags, in log entries, of the followers of the channels this node leads.",
    );
    out.sample("wukong_replication_lag_entries_sum", &[], lag_sum as f64);
    out.family(
        "wukong_replication_ack_age_seconds_max",
        Kind::Gauge,
        "Longest time since a follower of a channel this node leads acknowledged it.",
    );
    out.sample("wukong_replication_ack_age_seconds_max", &[], ack_max);
}

pub(super) fn backlog_families(backlog: Option<(Duration, Arc<Backlog>)>, out: &mut Exposition) {
    let b = backlog.as_ref().map(|(_, b)| b.as_ref());
    let targets = b.map(|b| b.targets.as_slice()).unwrap_or_default();
    out.family(
        "wukong_backlog_channels",
        Kind::Gauge,
        "Channels whose replica set differs from what placement wants (cluster-wide).",
    );
    if let Some(b) = b {
        out.sample("wukong_backlog_channels", &[], b.total as f64);
    }
    out.family(
        "wukong_backlog_at_risk_channels",
        Kind::Gauge,
        "Backlogged channels with fewer than a quorum of their replicas on nodes that answer.",
    );
    if let Some(b) = b {
        out.sample("wukong_backlog_at_risk_channels", &[], b.at_risk as f64);
    }
    out.family(
        "wukong_backlog_target_channels",
        Kind::Gauge,
        "Backlogged channels that placement wants on the target node.",
    );
    for t in targets {
        out.sample(
            "wukong_backlog_target_channels",
            &[("target", &t.node_id.to_string())],
            t.channels as f64,
        );
    }
    out.family(
        "wukong_backlog_target_entries",
        Kind::Gauge,
        "Log entries the target node must copy to clear its backlog.",
    );
    for t in targets {
        out.sample(
            "wukong_backlog_target_entries",
            &[("target", &t.node_id.to_string())],
            t.entries as f64,
        );
    }
    out.family(
        "wukong_backlog_target_bytes",
        Kind::Gauge,
        "Payload bytes the target node must copy to clear its backlog.",
    );
    for t in targets {
        out.sample(
            "wukong_backlog_target_bytes",
            &[("target", &t.node_id.to_string())],
            t.bytes as f64,
        );
    }
    out.family(
        "wukong_backlog_age_seconds",
        Kind::Gauge,
        "Age of the backlog view the series above come from.",
    );
    if let Some((age, _)) = backlog {
        out.sample("wukong_backlog_age_seconds", &[], age.as_secs_f64());
    }
}

/// What the request paths counted (`stats`): latencies by outcome, errors by code.
pub(super) fn request_families(out: &mut Exposition) {
    for (name, help, h) in [
        (
            "wukong_send_duration_seconds",
            "Time to answer POST /message/send on the node that took it, by outcome.",
            &stats::SEND,
        ),
        (
            "wukong_sync_duration_seconds",
            "Time to answer POST /channel/messagesync on the node that took it, by outcome.",
            &stats::SYNC,
        ),
        (
            "wukong_conversation_sync_duration_seconds",
            "Time to answer POST /conversation/sync on the node that took it, by outcome.",
            &stats::CONVERSATION_SYNC,
        ),
    ] {
        out.family(name, Kind::Histogram, help);
        for o in Outcome::ALL {
            out.histogram(name, &[("outcome", o.label())], &h.get(o).view());
        }
    }
    out.family(
        "wukong_conversations_returned_total",
        Kind::Counter,
        "Conversations answered by POST /conversation/sync on this node.",
    );
    out.sample(
        "wukong_conversations_returned_total",
        &[],
        stats::CONVERSATIONS_RETURNED.load(Ordering::Relaxed) as f64,
    );
    out.family(
        "wukong_http_errors_total",
        Kind::Counter,
        "HTTP error answers by stable error code (the `code` of the JSON body).",
    );
    for (code, n) in stats::http_errors() {
        out.sample("wukong_http_errors_total", &[("code", code.as_str())], n as f64);
    }
}

/// What the client gateway counted (`stats::GATEWAY`).
pub(super) fn gateway_families(out: &mut Exposition) {
    let g = &stats::GATEWAY;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
    out.family(
        "wukong_gateway_connections",
        Kind::Gauge,
        "Client connections (TCP and WebSocket) open on this node's gateway.",
    );
    out.sample("wukong_gateway_connections", &[], load(&g.connections));
    for (name, help, n) in [
        (
            "wukong_gateway_packets_in_total",
            "Packets decoded from client connections.",
            &g.packets_in,
        ),
        (
            "wukong_gateway_packets_out_total",
            "Packets written to client connections.",
            &g.packets_out,
        ),
        (
            "wukong_gateway_refused_total",
            "Client connections closed at accept by --max-client-connections.",
            &g.refused,
        ),
        (
            "wukong_gateway_recvs_total",
            "RECVs (message pushes) queued to client connections of this node.",
            &g.recvs,
        ),
        (
            "wukong_gateway_recv_retries_total",
            "RECVs pushed again because no RECVACK came within the retry interval.",
            &g.retries,
        ),
        (
            "wukong_gateway_recv_retries_dropped_total",
            "Retry entries dropped because the connection had too many un-acked RECVs.",
            &g.retries_dropped,
        ),
    ] {
        out.family(name, Kind::Counter, help);
        out.sample(name, &[], load(n));
    }
    out.family(
        "wukong_push_duration_seconds",
        Kind::Histogram,
        "On a channel leader: from a message's commit to its RECVs being queued here or accepted for pushing by another node with recipients.",
    );
    out.histogram("wukong_push_duration_seconds", &[], &g.push_seconds.view());
}

/// What the LMDB writer thread counted (`stats::STORE`).
pub(super) fn store_families(out: &mut Exposition) {
    let s = &stats::STORE;
    out.family(
        "wukong_fsync_duration_seconds",
        Kind::Histogram,
        "Time of each LMDB write-transaction commit (the fsync) on the writer thread.",
    );
    out.histogram("wukong_fsync_duration_seconds", &[], &s.commit_seconds.view());
    out.family(
        "wukong_store_batch_ops",
        Kind::Histogram,
        "Write operations (log appends, applies, votes) grouped into each committed transaction.",
    );
    out.histogram("wukong_store_batch_ops", &[], &s.batch_ops.view());
    out.family(
        "wukong_store_commits_total",
        Kind::Counter,
        "LMDB write transactions committed.",
    );
    out.sample(
        "wukong_store_commits_total",
        &[],
        s.commits.load(Ordering::Relaxed) as f64,
    );
    out.family(
        "wukong_store_bytes_written_total",
        Kind::Counter,
        "Bytes of values put into LMDB (keys and page overhead not counted).",
    );
    out.sample(
        "wukong_store_bytes_written_total",
        &[],
        s.bytes_written.load(Ordering::Relaxed) as f64,
    );
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The error counter of `code` in the rendered request families.
    fn errors_counted(code: &str) -> Option<u64> {
        let mut e = Exposition::default();
        request_families(&mut e);
        let prefix = format!("wukong_http_errors_total{{code=\"{code}\"}} ");
        let text = e.finish();
        let line = text.lines().find(|l| l.starts_with(&prefix))?;
        Some(line[prefix.len()..].parse().expect("a count"))
    }

    #[test]
    fn every_error_code_has_its_own_counter() {
        for &code in wk_api::ErrorCode::ALL {
            assert!(errors_counted(code.as_str()).is_some(), "no counter for {code}");
        }
        // Other tests in this process may count errors too: compare before and after.
        let before = errors_counted("overloaded").expect("an overloaded counter");
        let answer = crate::api::ApiErr(crate::error::NodeError::Overloaded {
            what: "requests".into(),
            retry_after: 1,
        });
        let _ = axum::response::IntoResponse::into_response(answer);
        let after = errors_counted("overloaded").expect("an overloaded counter");
        assert!(
            after > before,
            "an overloaded answer counted as overloaded: {before} -> {after}"
        );
    }
}
