//! `GET /metrics`: the node in the Prometheus text exposition format (version 0.0.4).
//!
//! Everything is read at scrape time from what the runtime already exposes: the metadata
//! group's Raft metrics, the running channel groups' Raft metrics, the local metadata copy, the
//! cluster-wide backlog view, `/proc/self`, and the counters and histograms the request and
//! storage paths record into (`crate::stats`; `time_requests` here times the send and sync
//! requests). Nothing here starts, wakes or writes anything.
//! Two parts cost more than a glance and are cached per node (in the metadata Raft's
//! extensions, so the cache lives and dies with the node):
//! - the scan of the channel table (channels replicated here, hence hibernated ones), at most
//!   once per `SCAN_TTL`;
//! - the backlog view, which probes every node: refreshed by a background task at most once per
//!   `BACKLOG_TTL`; a scrape waits for a refresh at most `BACKLOG_WAIT` and otherwise serves the
//!   previous view, whose age is exported as `wukong_backlog_age_seconds`.
//!
//! The metadata group's election and leader-change counters come from a task that watches its
//! Raft metrics, started by the first scrape: they count from then on (Prometheus scrapes a
//! node within one interval of its start).
//!
//! Invariant: every family is written once, `# HELP` and `# TYPE` first and its samples
//! contiguous, so the output parses with any Prometheus text parser. Names and meanings are
//! documented in `docs/METRICS.md`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, FutureExt, Shared};
use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver;
use wk_api::Backlog;

use crate::cluster::Node;
use crate::meta;
use crate::raft::{GroupId, NodeId};
use crate::stats::{self, HistogramView, Outcome};

/// How long a scan of the channel table is reused.
const SCAN_TTL: Duration = Duration::from_secs(5);
/// How long a backlog view is reused before a scrape asks for a fresh one.
const BACKLOG_TTL: Duration = Duration::from_secs(10);
/// How long a scrape waits for a backlog refresh before serving the previous view.
const BACKLOG_WAIT: Duration = Duration::from_millis(1500);

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn serve(State(node): State<Node>) -> impl IntoResponse {
    let body = render(&node).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// Middleware: time `/message/send` and `/channel/messagesync` into their histograms, by
/// outcome (from the answer's status). Other paths pass straight through.
pub async fn time_requests(req: Request, next: Next) -> Response {
    let histograms = match req.uri().path() {
        "/message/send" => &stats::SEND,
        "/channel/messagesync" => &stats::SYNC,
        _ => return next.run(req).await,
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    histograms.observe(Outcome::of_status(resp.status().as_u16()), started.elapsed());
    resp
}

/// Per-node state of the exporter, kept in the metadata Raft's extensions.
#[derive(Clone, Default)]
struct MetricsState(Arc<StateInner>);

#[derive(Default)]
struct StateInner {
    /// Set once the metadata watcher runs.
    watching: AtomicBool,
    /// Terms the metadata group moved through since the watcher started (one per election).
    elections: AtomicU64,
    /// New (term, leader) pairs seen since the watcher started.
    leader_changes: AtomicU64,
    /// std mutex: held only to copy or replace the cached scan.
    scan: Mutex<Option<(Instant, Arc<ChannelScan>)>>,
    /// std mutex: held only to read or replace the cached view and its refresh handle.
    backlog: Mutex<BacklogCache>,
}

/// What one read of the channel table tells.
#[derive(Default)]
struct ChannelScan {
    /// Channels in the metadata.
    total: u64,
    /// Groups whose replica set includes this node.
    replicated: HashSet<GroupId>,
}

type Pending = Shared<BoxFuture<'static, ()>>;

#[derive(Default)]
struct BacklogCache {
    /// The last view that could be built, and when.
    view: Option<(Instant, Arc<Backlog>)>,
    /// When the last refresh started (failed ones too: a failing view is not retried per scrape).
    attempted: Option<Instant>,
    /// The refresh in flight, if any.
    pending: Option<Pending>,
}

/// The whole exposition.
pub async fn render(node: &Node) -> String {
    let started = Instant::now();
    let state = node.meta.extension::<MetricsState>();
    watch_meta(node, &state);
    let scan = channel_scan(node, &state).await;
    let backlog = cached_backlog(node, &state).await;
    let process = tokio::task::spawn_blocking(ProcessStats::read)
        .await
        .ok()
        .flatten();

    let mut out = Exposition::default();
    out.family("wukong_up", Kind::Gauge, "1 while the node serves HTTP.");
    out.sample("wukong_up", &[], 1.0);
    out.family(
        "wukong_node_info",
        Kind::Gauge,
        "Constant 1, labelled with the node id, the cluster id and the version.",
    );
    let cluster_id = node
        .transport
        .cluster_id()
        .map(|c| format!("{c:016x}"))
        .unwrap_or_default();
    out.sample(
        "wukong_node_info",
        &[
            ("node_id", &node.id.to_string()),
            ("cluster_id", &cluster_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    out.family(
        "wukong_node_joining",
        Kind::Gauge,
        "1 while the node waits to be admitted to a cluster (--seed).",
    );
    out.sample("wukong_node_joining", &[], bool_value(node.is_joining()));

    meta_families(node, &state, &mut out);
    channel_families(node, scan.as_deref(), &mut out);
    integrity_families(&mut out);
    backlog_families(backlog, &mut out);
    request_families(&mut out);
    store_families(&mut out);
    gateway_families(&mut out);
    if let Some(p) = process {
        p.write(&mut out);
    }

    out.family(
        "wukong_scrape_duration_seconds",
        Kind::Gauge,
        "Time this node took to build this exposition.",
    );
    out.sample(
        "wukong_scrape_duration_seconds",
        &[],
        started.elapsed().as_secs_f64(),
    );
    out.finish()
}

/// Record checksums (`crate::integrity`): what is corrupt here now, what was found and fixed.
fn integrity_families(out: &mut Exposition) {
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

fn bool_value(b: bool) -> f64 {
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
fn meta_families(node: &Node, state: &MetricsState, out: &mut Exposition) {
    struct MetaView {
        state: ServerState,
        term: u64,
        leader: Option<NodeId>,
        last_log: u64,
        committed: u64,
        applied: u64,
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
fn channel_families(node: &Node, scan: Option<&ChannelScan>, out: &mut Exposition) {
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

fn backlog_families(backlog: Option<(Duration, Arc<Backlog>)>, out: &mut Exposition) {
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
fn request_families(out: &mut Exposition) {
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
    ] {
        out.family(name, Kind::Histogram, help);
        for o in Outcome::ALL {
            out.histogram(name, &[("outcome", o.label())], &h.get(o).view());
        }
    }
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
fn gateway_families(out: &mut Exposition) {
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
        "On a channel leader: from a message's commit to its RECVs being queued on a node with recipients.",
    );
    out.histogram("wukong_push_duration_seconds", &[], &g.push_seconds.view());
}

/// What the LMDB writer thread counted (`stats::STORE`).
fn store_families(out: &mut Exposition) {
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

/// Start the metadata watcher once per node.
fn watch_meta(node: &Node, state: &MetricsState) {
    if state.0.watching.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut rx = node.meta.metrics();
    let state = state.clone();
    // Ends when the metadata group stops (its metrics sender is dropped).
    tokio::spawn(async move {
        let mut term = rx.borrow_and_update().current_term;
        let mut leadership: Option<(u64, NodeId)> = {
            let m = rx.borrow_watched();
            m.current_leader.map(|l| (m.current_term, l))
        };
        while rx.changed().await.is_ok() {
            let (t, leader) = {
                let m = rx.borrow_and_update();
                (m.current_term, m.current_leader)
            };
            if t > term {
                state.0.elections.fetch_add(t - term, Ordering::Relaxed);
                term = t;
            }
            if let Some(l) = leader
                && leadership != Some((t, l))
            {
                if leadership.is_some() {
                    state.0.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                leadership = Some((t, l));
            }
        }
    });
}

/// The channel table scan, reused for `SCAN_TTL`; None if the store cannot be read.
async fn channel_scan(node: &Node, state: &MetricsState) -> Option<Arc<ChannelScan>> {
    if let Some((at, scan)) = state.0.scan.lock().expect("metrics scan lock poisoned").as_ref()
        && at.elapsed() < SCAN_TTL
    {
        return Some(scan.clone());
    }
    let id = node.id;
    let scan = node
        .store
        .read(move |r| {
            let all = meta::channels(r, None, usize::MAX)?;
            let replicated = all
                .iter()
                .filter(|c| c.replicas.contains(&id))
                .map(|c| c.group_id)
                .collect();
            Ok(ChannelScan {
                total: all.len() as u64,
                replicated,
            })
        })
        .await;
    match scan {
        Ok(scan) => {
            let scan = Arc::new(scan);
            *state.0.scan.lock().expect("metrics scan lock poisoned") = Some((Instant::now(), scan.clone()));
            Some(scan)
        }
        Err(e) => {
            tracing::debug!(error = %e, "metrics: reading the channel table");
            None
        }
    }
}

/// The backlog view and its age: refreshed in the background when older than `BACKLOG_TTL`,
/// waited for at most `BACKLOG_WAIT`.
async fn cached_backlog(node: &Node, state: &MetricsState) -> Option<(Duration, Arc<Backlog>)> {
    let pending = {
        let mut c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
        // A refresh whose task died (it cannot clear `pending` itself) is forgotten.
        if c.pending.as_ref().is_some_and(|p| p.peek().is_some()) {
            c.pending = None;
        }
        let due = c.attempted.is_none_or(|at| at.elapsed() >= BACKLOG_TTL);
        if due && c.pending.is_none() {
            c.attempted = Some(Instant::now());
            let (node, state) = (node.clone(), state.clone());
            let task = tokio::spawn(async move {
                let view = node.backlog_view(0).await;
                let mut c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
                match view {
                    Ok(v) => c.view = Some((Instant::now(), Arc::new(v))),
                    Err(e) => tracing::debug!(error = %e, "metrics: building the backlog view"),
                }
                c.pending = None;
            });
            c.pending = Some(task.map(|_| ()).boxed().shared());
        }
        c.pending.clone()
    };
    if let Some(p) = pending {
        let _ = tokio::time::timeout(BACKLOG_WAIT, p).await;
    }
    let c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
    c.view.as_ref().map(|(at, v)| (at.elapsed(), v.clone()))
}

/// What `/proc/self` tells about the process (Linux only).
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: Option<f64>,
    threads: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let s = parse_stat(&stat)?;
        // SAFETY: sysconf only reads a system constant.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        });
        Some(ProcessStats {
            cpu_seconds: (s.utime + s.stime) as f64 / ticks as f64,
            resident_bytes: (s.rss_pages * page as u64) as f64,
            virtual_bytes: s.vsize as f64,
            start_time_seconds: boot.map(|b| b + s.start_ticks as f64 / ticks as f64),
            threads: s.threads as f64,
            open_fds,
            max_fds,
        })
    }

    fn write(&self, out: &mut Exposition) {
        out.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        );
        out.sample("process_cpu_seconds_total", &[], self.cpu_seconds);
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        );
        out.sample("process_resident_memory_bytes", &[], self.resident_bytes);
        out.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        );
        out.sample("process_virtual_memory_bytes", &[], self.virtual_bytes);
        out.family(
            "process_threads",
            Kind::Gauge,
            "Number of OS threads in the process.",
        );
        out.sample("process_threads", &[], self.threads);
        out.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
        );
        if let Some(t) = self.start_time_seconds {
            out.sample("process_start_time_seconds", &[], t);
        }
        out.family(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        );
        if let Some(n) = self.open_fds {
            out.sample("process_open_fds", &[], n);
        }
        out.family(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        );
        if let Some(n) = self.max_fds {
            out.sample("process_max_fds", &[], n);
        }
    }
}

/// The fields of `/proc/self/stat` the exporter uses.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A text exposition under construction.
#[derive(Default)]
struct Exposition {
    out: String,
    /// Families written so far: a name may be declared once.
    seen: HashSet<&'static str>,
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        let first = self.seen.insert(name);
        debug_assert!(first, "metric family {name} declared twice");
        debug_assert!(
            !matches!(kind, Kind::Counter) || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A histogram's series: cumulative `_bucket`s with `le`, then `+Inf`, `_sum`, `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramView) {
        let bucket = format!("{name}_bucket");
        let with_le = |le: &str, n: u64, out: &mut Self| {
            let mut l = labels.to_vec();
            l.push(("le", le));
            out.sample(&bucket, &l, n as f64);
        };
        for (bound, n) in &h.buckets {
            with_le(&format_value(*bound), *n, self);
        }
        with_le("+Inf", h.count, self);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    fn finish(self) -> String {
        self.out
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (wk (node) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 \
                    104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                start_ticks: 12345,
                vsize: 104857600,
                rss_pages: 2560
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1").is_none());
    }

    #[test]
    fn exposition_escapes_and_formats() {
        let mut e = Exposition::default();
        e.family("wukong_x_total", Kind::Counter, "a \\ b\nc");
        e.sample("wukong_x_total", &[("a", "q\"\\\n"), ("b", "2")], 3.0);
        e.family("wukong_y", Kind::Gauge, "y");
        e.sample("wukong_y", &[], 0.25);
        e.sample("wukong_y", &[], f64::INFINITY);
        e.sample("wukong_y", &[], f64::NAN);
        let text = e.finish();
        let want = "# HELP wukong_x_total a \\\\ b\\nc\n# TYPE wukong_x_total counter\n\
                    wukong_x_total{a=\"q\\\"\\\\\\n\",b=\"2\"} 3\n\
                    # HELP wukong_y y\n# TYPE wukong_y gauge\nwukong_y 0.25\nwukong_y +Inf\nwukong_y NaN\n";
        assert_eq!(text, want);
    }

    #[test]
    fn histograms_are_written_cumulatively() {
        let mut e = Exposition::default();
        e.family("wukong_h_seconds", Kind::Histogram, "h");
        let view = HistogramView {
            buckets: vec![(0.5, 1), (1.0, 3)],
            sum: 2.25,
            count: 4,
        };
        e.histogram("wukong_h_seconds", &[("outcome", "ok")], &view);
        let want = "# HELP wukong_h_seconds h\n# TYPE wukong_h_seconds histogram\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"0.5\"} 1\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"1\"} 3\n\
                    wukong_h_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 4\n\
                    wukong_h_seconds_sum{outcome=\"ok\"} 2.25\n\
                    wukong_h_seconds_count{outcome=\"ok\"} 4\n";
        assert_eq!(e.finish(), want);
    }

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

    #[test]
    fn process_stats_read_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let p = ProcessStats::read().expect("/proc/self is readable");
        assert!(p.resident_bytes > 0.0 && p.threads >= 1.0);
        assert!(p.open_fds.unwrap_or(1.0) >= 1.0);
    }
}
