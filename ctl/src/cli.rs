//! Command-line grammar (clap derive): global connection options, then noun-then-verb
//! subcommands. Each subcommand's doc comment is its `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a WuKong HA cluster: run a local demo, check its health, send and read messages.
#[derive(Debug, Parser)]
#[command(name = "wkctl", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// HTTP address of any node (`https://...` for nodes with TLS); several may be given
    /// comma-separated, they are tried in order.
    #[arg(
        long,
        global = true,
        env = "WK_ENDPOINT",
        default_value = "http://127.0.0.1:5001"
    )]
    pub endpoint: String,
    /// Output format: aligned text for people, JSON (the wk-api wire types) for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Per-request timeout, e.g. `5s`, `500ms`, `1m`.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Admin token, sent to the node as the `token` header.
    #[arg(long, global = true, env = "WK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM certificate of the CA that signs the nodes' certificates (the nodes' `--tls-ca`):
    /// `https://` endpoints are verified against it only. Without it, against the system's roots.
    #[arg(long, global = true, env = "WK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a real local cluster of `wknode` processes and show its live status until Ctrl-C.
    ///
    /// Each node gets its own data directory `<data-dir>/<id>` and log file
    /// `<data-dir>/<id>/wknode.log`. An existing data directory is reused (the cluster restarts
    /// with its data); `--fresh` wipes the node directories first. Every node is stopped on exit.
    Demo(DemoArgs),
    /// Live dashboard: nodes, channels (busiest first, replica lag), sync backlog, throughput
    /// and events, refreshed every `--refresh`.
    ///
    /// Keys: `?` help, `q`/Esc quit, Tab next pane, arrows/`j`/`k` move, `/` filter, `1`-`5`
    /// sort, Enter replica details, `f` freeze, `r` refresh now, `d` failover drills (kill the
    /// selected channel's leader, kill or isolate a node; nodes need `--allow-drills`), `s`
    /// admit a node (`ID@ADDR`). `--once` prints one frame as plain text and exits (1 when
    /// the cluster cannot be reached).
    Top(TopArgs),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Inspect one node, move its leaderships away, decommission it.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Inspect channel groups: replicas, leaders, lag, checksums; move a leader.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Send and read messages.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Read users' conversation lists (WuKongIM's `/conversation/sync`).
    #[command(subcommand)]
    Conversation(ConversationCommand),
    /// The sync backlog left by scale-out: show it, drain it.
    #[command(subcommand)]
    Backlog(BacklogCommand),
    /// Load generators and drills that measure throughput, latency and failover.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Failure drills under a probe workload, with a safety verdict; see `drill --help`.
    #[command(subcommand)]
    Drill(crate::cmd::drill::DrillCommand),
    /// Back up one node's data to a file, inspect a file, restore a file into a new data dir.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print a shell completion script, e.g. `wkctl completions bash > /etc/bash_completion.d/wkctl`.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between refreshes, e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Render one frame as plain text to stdout and exit.
    #[arg(long)]
    pub once: bool,
    /// With `--once`: the frame size, e.g. `120x40` (default: the terminal's, else 120x40).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u16, u16)>,
    /// List at most this many channels.
    #[arg(long, default_value_t = 200)]
    pub channels: u64,
}

/// Parses `COLSxROWS`, e.g. `120x40` (at least 20x10).
pub fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not COLSxROWS, e.g. 120x40 (at least 20x10)");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u16, u16) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if w < 20 || h < 10 {
        return Err(bad());
    }
    Ok((w, h))
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Parent of the per-node data directories.
    #[arg(long, default_value = "./wukong-data/demo")]
    pub data_dir: PathBuf,
    /// HTTP port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 5001)]
    pub base_http_port: u16,
    /// Cluster (Raft) port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 11110)]
    pub base_cluster_port: u16,
    /// Delete the node data directories before starting (a new, empty cluster).
    #[arg(long)]
    pub fresh: bool,
    /// The `wknode` binary; by default the one next to `wkctl`, else the first on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
    /// How long to wait for each node's ready line.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show every node's role, term and progress, the metadata leader and a health verdict.
    ///
    /// Exits 1 when a node is offline or the metadata group has no leader. With `--watch` it
    /// refreshes until Ctrl-C (JSON Lines with `--output json`) and exits 0.
    Status(StatusArgs),
    /// A scriptable health check: exit 0 healthy, 1 unhealthy.
    ///
    /// Checks that every node is online (and that there are `--expect-nodes`), that exactly one
    /// node leads the metadata group, that every channel has a quorum of online replicas and that
    /// no replica is more than `--max-lag` entries behind its leader (channels without a leader,
    /// e.g. hibernated ones, are not judged on lag).
    Health(HealthArgs),
    /// Verify every channel like `channel verify` (up to `--limit`), a few at a time.
    ///
    /// Exits 1 when any channel has a corrupt replica, a checksum mismatch, or a replica that
    /// could not be verified.
    Verify(ClusterVerifyArgs),
    /// Admit a node started with `wknode --seed ...`: it catches up on the metadata, the active
    /// channels whose placement includes it move at once, inactive ones go to the sync backlog.
    Join(JoinArgs),
}

#[derive(Debug, Args)]
pub struct ClusterVerifyArgs {
    /// Verify at most this many channels (in the node's order, page after page).
    #[arg(long, default_value_t = 10_000)]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The new node as NODE_ID@CLUSTER_ADDR, e.g. `4@127.0.0.1:11113`.
    pub node: String,
    /// The new node's HTTP address (it also registers it itself once admitted).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Block until the node caught up on the metadata and the active channels moved, with
    /// progress (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Return once the cluster took the join on; it runs on there (`wkctl cluster status`
    /// lists the node once it is admitted).
    #[arg(long, overrides_with = "wait")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum BacklogCommand {
    /// List the sync backlog: channels whose replicas differ from their placement, per target
    /// node, at-risk channels (fewer than a quorum of replicas answer) first. Exits 1 if any is at risk.
    Show {
        /// How many channels to list.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Migrate the backlog proactively at a limited rate (the drain survives restarts).
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Channels per second; 0 stops a running drain.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Follow the drain until the backlog is empty (default on a terminal).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub wait: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Send a text message (sent base64-encoded as the payload).
    Send(SendArgs),
    /// Read a channel's messages (payloads shown as UTF-8 text).
    Sync(SyncArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConversationCommand {
    /// A user's conversations, newest change first: channel, unread count, last message
    /// seq, read position, version and the last message's text. Person channels show the
    /// other user. Served by any node, which asks every replica of the user's channels.
    List(ConversationListArgs),
}

#[derive(Debug, Args)]
pub struct ConversationListArgs {
    /// The user whose conversations to list.
    pub uid: String,
    /// Only conversations changed after this version (0: all).
    #[arg(long, default_value_t = 0)]
    pub since: u64,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Sender uid: it must subscribe to the group (person channels: not be on the receiver's
    /// blacklist). Empty (`--from ''`) sends a system message, which passes every check and
    /// creates a group not created yet.
    #[arg(long = "from")]
    pub from_uid: String,
    /// Channel id (for person channels: the receiver's uid).
    #[arg(long = "channel")]
    pub channel_id: String,
    /// Channel type: 1 person, 2 group, ... (WuKongIM's numbering).
    #[arg(long = "type")]
    pub channel_type: u8,
    /// Idempotency key: a retry with the same key returns the original message.
    #[arg(long)]
    pub client_msg_no: Option<String>,
    /// The message text.
    pub text: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Channel id (for person channels: the other party's uid).
    #[arg(long = "channel")]
    pub channel_id: String,
    /// Channel type: 1 person, 2 group, ...
    #[arg(long = "type")]
    pub channel_type: u8,
    /// The reading uid; required for person channels.
    #[arg(long, default_value = "")]
    pub login_uid: String,
    /// First message seq; 0 means the newest (pull mode 0) or the oldest (pull mode 1).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Last message seq; 0 means unbounded.
    #[arg(long, default_value_t = 0)]
    pub end: u64,
    /// At most this many messages; 0 means the node's default (100).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// 0: from `--start` towards older messages; 1: towards newer ones.
    #[arg(long, default_value_t = 0)]
    pub pull_mode: u8,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable-write throughput and latency: `/message/send` (or `/message/sendbatch` with
    /// `--batch`) over keep-alive connections, spread round-robin over every `--endpoint`.
    ///
    /// Creates the group channels `<prefix><i>` first; each request has a unique
    /// client_msg_no and a random payload. `--output json` prints one line
    /// `{"ops":..,"ops_per_s":..,"errors":..,"lat":{"p50_ms":..,..}}`.
    Send(BenchSendArgs),
    /// Kills a channel leader with SIGKILL, round after round, under a one-at-a-time writer,
    /// and checks that every acknowledged message survives exactly once.
    ///
    /// Always runs its own local cluster (temporary directory, free ports). Exits 1 when an
    /// acknowledged message is lost, duplicated or moved, or the replicas do not converge.
    Failover(BenchFailoverArgs),
    /// How long a fresh node needs to hold the metadata and a filled channel.
    ///
    /// Runs its own local cluster: registers `--users` users, sends `--messages` messages to
    /// one channel, starts an empty node with `--seed`, admits it with `POST /cluster/join`,
    /// and times (from that request) until the new node has applied the whole metadata log
    /// and until its replica of the channel holds the last message.
    Catchup(BenchCatchupArgs),
    /// How long `/conversation/sync` takes for a user in many conversations.
    ///
    /// Runs its own local cluster: `--conversations` group channels with one message each,
    /// then `--requests` syncs of their reader, one at a time, round-robin over the nodes;
    /// every answer must hold every conversation with unread 1.
    Conversations(BenchConversationsArgs),
    /// The cost of many channels at rest: CPU% and RSS per node with `--active` channel
    /// groups awake and the rest hibernated, and the latency of the first send to a
    /// hibernated channel.
    ///
    /// Runs its own local cluster with a short `--channel-idle-timeout`. Creating 100,000
    /// channels takes minutes on a 2-core machine (metadata writes); use a smaller
    /// `--channels` for a quick look.
    Idle(BenchIdleArgs),
    /// Backlog drain after a scale-out: channels/s moved to the new node, and the p99 of a
    /// foreground one-at-a-time sender before and during the drain.
    ///
    /// Runs its own local cluster: creates `--channels` channels with `--messages` each, lets
    /// them hibernate, joins a 4th node (the hibernated channels whose placement now includes
    /// it form the sync backlog), then drains the backlog at full speed.
    Drain(BenchDrainArgs),
    /// Live delivery through the client gateway: IM clients of WuKongIM's binary protocol
    /// connected over every node, one sender per group, every member receiving.
    ///
    /// Runs its own local cluster: registers `--clients` users, creates `--groups` groups of
    /// `--members` users, connects every user over TCP (spread round-robin over the nodes),
    /// then each group's first member sends as fast as it goes (`--inflight` SENDs waiting for
    /// their SENDACK) or at `--rate` messages/s in all. Reports deliveries/s (RECVs received)
    /// and send-to-receive latency for receivers on the channel leader's node and on others.
    Deliver(BenchDeliverArgs),
    /// Compares our bench JSON with the peer harness's run (etcd, NATS) in one markdown table.
    ///
    /// Reads `<ours>/{send-conc,send-seq,failover,catchup}.json` (what `just bench-peers`
    /// writes) and the peers' `results.jsonl` and `failover.json`.
    Report(BenchReportArgs),
}

/// How `wkctl bench send` picks the node for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchRoute {
    /// To the channel's leader (learned from `/cluster/channels/{id}/{type}/config`,
    /// refreshed after a failed request), as the peer harness does for etcd and NATS.
    Leader,
    /// Round-robin over the endpoints; every node forwards to the channel leader.
    Spread,
}

#[derive(Debug, Args)]
pub struct BenchCatchupArgs {
    /// Messages in the one filled channel.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub messages: u64,
    /// Users registered in the metadata (`/user/token`).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub users: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub size: u32,
    /// Requests in flight while loading users.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub inflight: u64,
    /// Nodes before the fresh one joins.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub nodes: u64,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchConversationsArgs {
    /// Conversations of the user whose list is synced.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub conversations: u64,
    /// Syncs timed, one at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub requests: u64,
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchIdleArgs {
    /// Group channels to create.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub channels: u64,
    /// Channels kept awake (one message each, touched again before the window).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub active: u64,
    /// Hibernated channels that get a timed first send after the window (1,000: the p99 is
    /// the 10th-worst send, not the 2nd-worst of 100).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub samples: u64,
    /// The nodes' `--channel-idle-timeout`: must exceed twice `--window` (the window after the
    /// touch and the settled one) plus the activation time.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How long CPU and RSS are sampled at rest.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// Requests in flight while creating channels.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub inflight: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchDrainArgs {
    /// Channels created before the scale-out (about 3/4 of them end up in the backlog).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub channels: u64,
    /// Messages per channel.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub messages: u64,
    /// The nodes' `--channel-idle-timeout` (the channels must hibernate before the join).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Foreground measurement before the drain starts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub before: Duration,
    /// Drain rate asked for, channels/s (the node's own limit applies too).
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Requests in flight while creating and filling channels.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub inflight: u64,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchDeliverArgs {
    /// Connected clients (one user each).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub clients: u64,
    /// Groups; group k holds users k x members .. (k + 1) x members - 1 (mod clients).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub groups: u64,
    /// Members per group.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub members: u64,
    /// Messages per second over all groups; 0: as fast as it goes.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// SENDs each sender keeps waiting for their SENDACK.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub inflight: u64,
    /// Payload bytes per message (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    pub size: u32,
    /// Measured time, after a 1 s warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchReportArgs {
    /// Directory with our bench JSON files.
    pub ours: PathBuf,
    /// A `run-all.sh` output directory (with `results.jsonl`, `failover.json`).
    #[arg(long)]
    pub peers: Option<PathBuf>,
}

/// How many requests `wkctl bench send` keeps in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// `--inflight` requests at a time.
    Concurrent,
    /// Exactly one request at a time (latency without queueing).
    Seq,
}

#[derive(Debug, Args)]
pub struct BenchSendArgs {
    /// Requests in flight (ignored with `--mode seq`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub inflight: u32,
    /// Group channels to spread the messages over.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub channels: u32,
    /// Payload bytes per message (random, sent base64-encoded).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub size: u32,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after sending this many messages (warm-up included), even before `--duration` ends.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Load before measuring (connections, channel groups, caches); `0s` for none.
    #[arg(long, default_value = "1s", value_parser = parse_duration_or_zero)]
    pub warmup: Duration,
    /// `seq`: one request at a time.
    #[arg(long, value_enum, default_value_t = BenchMode::Concurrent)]
    pub mode: BenchMode,
    /// Send N messages per request with `/message/sendbatch` (ops count messages).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: Option<u32>,
    /// Channel ids are this prefix plus 0, 1, ...
    #[arg(long, default_value = "bench-")]
    pub prefix: String,
    /// Subscribers of each channel, the sender included (the others are `<prefix>m<j>`): a
    /// stored message updates the conversation of every subscriber.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub subscribers: u32,
    /// Sender uid (also the channels' subscriber).
    #[arg(long = "from", default_value = "bench")]
    pub from_uid: String,
    /// Which node each request goes to.
    #[arg(long, value_enum, default_value_t = BenchRoute::Leader)]
    pub route: BenchRoute,
    /// Start a fresh local cluster (temporary directory, free ports) instead of `--endpoint`.
    #[arg(long)]
    pub local: bool,
    /// With `--local`: how many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// With `--local`: the `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchFailoverArgs {
    /// How many times to kill the channel leader.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Cluster size (a kill must leave a quorum).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
    pub nodes: u64,
    /// How long the killed node stays down before it is restarted on its data dir.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub down: Duration,
    /// Steady writing before each kill and after each restart.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// The writer's per-attempt timeout before it retries on the next node.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,
    /// How long the replicas may take to agree (same checksum) after a restart.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub converge_timeout: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub size: u32,
    /// Instead of the writer: wake this many channels, kill the node leading the most of them
    /// each round, and time until every one it led has a new leader (max and p99).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub active: Option<u64>,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With `--watch`: time between refreshes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Fail unless the cluster has exactly this many nodes.
    #[arg(long)]
    pub expect_nodes: Option<usize>,
    /// Fail when a replica is more than this many log entries behind its leader.
    #[arg(long, default_value_t = 1000)]
    pub max_lag: u64,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes: addresses, online, role in the metadata group, channels led/replicated.
    List,
    /// One node's status and every channel it replicates, with its role in each.
    Show {
        /// The node id.
        id: u64,
    },
    /// Move every channel leadership off a node (e.g. before maintenance), with progress.
    ///
    /// Exits 1 when the node still leads some channel at the end (they are listed).
    EvacuateLeaders {
        /// The node id.
        id: u64,
    },
    /// Decommission a node: move every replica it holds to other nodes (never below a quorum),
    /// then take it out of the metadata group.
    ///
    /// `--dry-run` prints the plan and changes nothing. Otherwise the command blocks until the
    /// node is removed; exits 1 when some channel could not be moved (they are listed; the node
    /// stays a member) or the node did not leave the metadata group.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The node id.
    pub node_id: u64,
    /// Print the planned replica moves only.
    #[arg(long)]
    pub dry_run: bool,
    /// Show progress while it runs: a progress bar with ETA on a terminal, lines otherwise, and
    /// the channels still on the node if progress stalls.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List channels with their leader, replicas (`*` leader, `(down)` offline) and worst lag.
    ///
    /// Exits 1 when some channel's status could not be read.
    List(ChannelListArgs),
    /// One channel's replicas: role (`*` leader), last and applied index, lag in entries and
    /// ms since the last ack, message seq and checksum.
    ///
    /// Replicas at the same message seq hold the same messages and must have the same checksum;
    /// a mismatch is flagged `!! CHECKSUM MISMATCH` and exits 1.
    Show {
        /// Channel id (person channels: the fake id `a@b`, as `channel list` shows it).
        channel_id: String,
        /// Channel type: 1 person, 2 group, ...
        channel_type: u8,
    },
    /// Every replica re-reads its copy of the channel: each stored message and log entry
    /// against its checksum, and the running checksum recomputed up to the seq all replicas
    /// have (like `etcdctl endpoint hashkv`).
    ///
    /// A replica that finds a bad record stops serving the channel and is replaced by a fresh
    /// copy from the leader. Exits 1 on a corrupt replica, a checksum mismatch or a replica
    /// that could not be verified.
    Verify {
        /// Channel id (person channels: the fake id `a@b`).
        channel_id: String,
        /// Channel type: 1 person, 2 group, ...
        channel_type: u8,
    },
    /// Make another replica the channel's leader; prints the resulting configuration.
    ///
    /// Exits 1 when the leader did not move to `--to`.
    TransferLeader(TransferArgs),
}

#[derive(Debug, Args)]
pub struct ChannelListArgs {
    /// Only channels led by this node.
    #[arg(long)]
    pub leader_on: Option<u64>,
    /// Only channels with a replica offline or behind its leader.
    #[arg(long)]
    pub lagging: bool,
    /// Examine at most this many channels (in the node's order, page after page).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Channel id.
    pub channel_id: String,
    /// Channel type: 1 person, 2 group, ...
    pub channel_type: u8,
    /// The replica that should lead.
    #[arg(long)]
    pub to: u64,
}

/// Like `parse_duration`, but `0s` is allowed.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (try e.g. 1s or 0s)"))
}

/// Parses `5s`, `500ms`, `1m30s`, ... (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (try e.g. 5s or 500ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5s", Some(Duration::from_secs(5))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m30s", Some(Duration::from_secs(90))),
            (" 2s ", Some(Duration::from_secs(2))),
            ("0s", None),
            ("5", None),
            ("fast", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("120x40"), Ok((120, 40)));
        assert_eq!(parse_size(" 80X24 "), Ok((80, 24)));
        for bad in ["", "120", "x40", "10x5", "axb", "120x40x2"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = Cli::try_parse_from([
            "wkctl",
            "cluster",
            "status",
            "--output",
            "json",
            "--timeout",
            "250ms",
            "--endpoint",
            "a:1,b:2",
        ])
        .expect("valid command line");
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.timeout, Duration::from_millis(250));
        assert_eq!(cli.global.endpoint, "a:1,b:2");
    }
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent snapshot of the `--endpoint` node (its metadata and every channel it
    /// replicates, as of one read transaction) into FILE, then check it. Needs the admin token.
    ///
    /// The file is written to FILE.part and renamed once its checksum verified; a failed or
    /// interrupted save leaves no FILE behind.
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
    },
    /// Check a snapshot file (framing, counts, whole-file checksum) and print its header and
    /// what it holds. Exit 2 if it is truncated or corrupt.
    Status { file: PathBuf },
    /// Build a new data dir from a snapshot file (offline; runs `wknode --restore`). Start
    /// `wknode --node-id N --data-dir DIR` on it afterwards, without --init-nodes or --seed: it
    /// bootstraps a new one-node cluster (new cluster id, membership of itself) serving all the
    /// data. Exit 2 if the file is truncated or corrupt or DIR already holds data.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file (`wkctl snapshot save`).
    pub file: PathBuf,
    /// The new node's data dir; must not hold a node's data yet.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new node's id [default: the id of the node the snapshot was taken on].
    #[arg(long)]
    pub node_id: Option<u64>,
    /// The wknode binary [default: next to wkctl, else on PATH].
    #[arg(long)]
    pub wknode: Option<PathBuf>,
}
