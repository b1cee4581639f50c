//! `wkctl bench send|failover`: the project's own load generator.
//!
//! - `send` measures durable-write throughput and latency: every acknowledgement it counts
//!   came after the node's quorum fsync. By default (`--route leader`) each channel's requests
//!   go to that channel's leader, as the peer harness's clients do for etcd and NATS: the
//!   leaders are learned from `/cluster/channels/{id}/{type}/config` before the run and
//!   relearned for a channel after a failed request. `--route spread` sends round-robin over
//!   the endpoints instead (the receiving node forwards to the leader). Requests share
//!   reqwest's keep-alive pool, each with a unique client_msg_no. Latencies go into an HDR histogram in microseconds; only requests *started*
//!   after the warm-up count, and ops/s divides by the time from the end of the warm-up to the
//!   last counted completion.
//! - `failover` owns a throwaway local cluster (`cmd::local::TempCluster`). A single writer
//!   sends one message at a time; on any error it retries the *same* client_msg_no on the next
//!   node (the node dedups on it). The window of a round is the largest gap between two
//!   consecutive acknowledgements from 1 s before the kill until the writer is paused for the
//!   convergence check, the peer harness's definition (`shared/peers/summarize.py`).
//!
//! - `catchup`, `idle`, `drain` and `failover --active` (submodules) measure scale-out and
//!   many-channel costs; `report` puts our JSON next to the peers' (`report`).
//!
//! Children are spawned and restarted only from the future `main` blocks on (the main thread),
//! as `cmd::local` requires; the writer and the load workers are tokio tasks that do HTTP only.

pub mod catchup;
pub mod deliver;
pub mod drain;
mod failover_active;
mod fill;
pub mod idle;
pub mod report;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wk_api::{
    Agreement, CHANNEL_TYPE_GROUP, ChannelReq, Client, ClientError, MessageHeader, SendBatchReq, SendReq,
};

use super::local::TempCluster;
use super::probe::{
    WriterSpec, Writers, create_channels, interrupted, node_urls, payload_pool, per_endpoint, read_channel,
    retry, run_tag, verify, wait_for,
};
use crate::Outcome;
use crate::cli::{BenchFailoverArgs, BenchMode, BenchRoute, BenchSendArgs, GlobalArgs, OutputFormat};
use crate::output::{self, Align, Table};

/// How long a local cluster may take to print its ready lines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Histogram range in microseconds: 1 µs .. 10 min, 3 significant digits.
const HIST_MAX_US: u64 = 600_000_000;
/// The channel the failover writer uses.
const FAILOVER_CHANNEL: &str = "bench-failover";

// ---------------------------------------------------------------------------------------------
// Reports (pure)

/// Latency percentiles in milliseconds (the peer harness's field names).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What `bench send --output json` prints: exactly these fields, the peer harness's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    /// Messages acknowledged in the measured window.
    pub ops: u64,
    pub ops_per_s: f64,
    /// Failed requests (with `--batch`: failed messages) in the measured window.
    pub errors: u64,
    pub lat: LatencySummary,
    /// With `--local`: how much the nodes' data dirs grew per acknowledged message (warm-up
    /// included) and per replica, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes_per_msg: Option<f64>,
    /// With `--local`: the nodes' CPU time (user + system, all nodes summed) per acknowledged
    /// message, warm-up included, in ms: the peer harness's "server CPU per write".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_ms_per_msg: Option<f64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

/// Percentiles of a histogram of microseconds, in ms rounded to the microsecond; all zero for
/// an empty histogram.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary {
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
        };
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// The one-line JSON of `bench send`.
pub fn send_json(r: &SendReport) -> String {
    serde_json::to_string(r).expect("plain numbers always encode")
}

/// What the run was, for the text header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendParams {
    pub endpoints: usize,
    pub route: BenchRoute,
    pub inflight: u32,
    pub channels: u32,
    pub size: u32,
    pub batch: Option<u32>,
    pub duration: Duration,
}

/// The text report: one header line and a short table.
pub fn send_text(p: &SendParams, r: &SendReport) -> String {
    let batch = p.batch.map(|n| format!(", sendbatch x{n}")).unwrap_or_default();
    let route = match p.route {
        BenchRoute::Leader => "to each channel's leader",
        BenchRoute::Spread => "spread round-robin",
    };
    let mut s = format!(
        "bench send: {} in flight, {} channel(s), {} B payloads{batch}, {} endpoint(s) {route}, {}\n\n",
        p.inflight,
        p.channels,
        p.size,
        p.endpoints,
        humantime::format_duration(p.duration)
    );
    let mut t = Table::new(&[
        ("ops", Align::Right),
        ("ops/s", Align::Right),
        ("errors", Align::Right),
        ("p50 ms", Align::Right),
        ("p90 ms", Align::Right),
        ("p99 ms", Align::Right),
        ("p99.9 ms", Align::Right),
        ("max ms", Align::Right),
    ]);
    t.row(vec![
        r.ops.to_string(),
        format!("{:.0}", r.ops_per_s),
        r.errors.to_string(),
        format!("{:.3}", r.lat.p50_ms),
        format!("{:.3}", r.lat.p90_ms),
        format!("{:.3}", r.lat.p99_ms),
        format!("{:.3}", r.lat.p999_ms),
        format!("{:.3}", r.lat.max_ms),
    ]);
    s.push_str(&t.render());
    if let Some(c) = r.server_cpu_ms_per_msg {
        s.push_str(&format!("\nserver CPU: {c:.3} ms per message (all nodes)\n"));
    }
    if let Some(d) = r.disk_bytes_per_msg {
        s.push_str(&format!("disk: {d:.0} bytes per message per replica\n"));
    }
    s
}

/// Min, median and max of a set of values (median of an even count: mean of the middle two).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// The largest gap between consecutive acknowledgement times (ms since the writer started)
/// among those in `[lo, hi)`: `(gap, start, end)`. None with fewer than two.
pub fn largest_gap(acks_ms: &[f64], lo: f64, hi: f64) -> Option<(f64, f64, f64)> {
    let inside: Vec<f64> = acks_ms.iter().copied().filter(|t| *t >= lo && *t < hi).collect();
    inside
        .windows(2)
        .map(|w| (w[1] - w[0], w[0], w[1]))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// One kill in `bench failover`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    /// The leader that was SIGKILLed.
    pub killed: u64,
    /// The leader the survivors elected.
    pub new_leader: Option<u64>,
    /// Kill to a survivor reporting a new leader.
    pub new_leader_ms: Option<f64>,
    /// Largest gap between two acknowledged writes around the kill.
    pub window_ms: Option<f64>,
    /// When that gap started, relative to the kill (negative: before it).
    pub gap_start_rel_kill_ms: Option<f64>,
    /// True when the gap ended only after the killed node was back (the restart helped).
    pub ended_after_restart: bool,
    /// Writer paused (`--settle` after the restart) to every replica reporting the same
    /// checksum and seq.
    pub converge_ms: f64,
    /// Writer attempts that failed during the round (each was retried).
    pub failed_attempts: u64,
}

/// What `bench failover --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    pub nodes: u64,
    pub rounds: Vec<RoundReport>,
    pub window_ms: Option<Spread>,
    pub new_leader_ms: Option<Spread>,
    pub acked: u64,
    pub stored: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub misplaced: u64,
    pub ok: bool,
}

/// Milliseconds rounded to the microsecond, for readable JSON.
fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

pub fn failover_text(r: &FailoverReport) -> String {
    let mut t = Table::new(&[
        ("round", Align::Right),
        ("killed", Align::Right),
        ("new leader", Align::Right),
        ("new leader ms", Align::Right),
        ("window ms", Align::Right),
        ("gap start vs kill ms", Align::Right),
        ("converged ms", Align::Right),
        ("retries", Align::Right),
    ]);
    for k in &r.rounds {
        t.row(vec![
            k.round.to_string(),
            k.killed.to_string(),
            k.new_leader.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            opt_ms(k.new_leader_ms),
            format!(
                "{}{}",
                opt_ms(k.window_ms),
                if k.ended_after_restart {
                    " (after restart)"
                } else {
                    ""
                }
            ),
            opt_ms(k.gap_start_rel_kill_ms),
            format!("{:.1}", k.converge_ms),
            k.failed_attempts.to_string(),
        ]);
    }
    let mut s = format!(
        "bench failover: {} nodes, {} round(s)\n\n",
        r.nodes,
        r.rounds.len()
    );
    s.push_str(&t.render());
    if let Some(w) = r.window_ms {
        s.push_str(&format!(
            "\nwindow ms: min {:.1}  median {:.1}  max {:.1}\n",
            w.min, w.median, w.max
        ));
    }
    if let Some(w) = r.new_leader_ms {
        s.push_str(&format!(
            "new leader ms: min {:.1}  median {:.1}  max {:.1}\n",
            w.min, w.median, w.max
        ));
    }
    s.push_str(&format!(
        "read back {} of {} acknowledged: lost {}, duplicated {}, misplaced {}: {}\n",
        r.stored,
        r.acked,
        r.lost,
        r.duplicated,
        r.misplaced,
        if r.ok { "OK" } else { "FAILED" }
    ));
    s
}

// ---------------------------------------------------------------------------------------------
// bench send

/// Fixed inputs of one `send` run, shared by the workers.
struct Load {
    clients: Vec<Client>,
    /// With `--route leader`: per channel, the index in `clients` of its leader as last
    /// learned (`usize::MAX`: unknown, fall back to round-robin).
    leaders: Option<Vec<AtomicUsize>>,
    /// The node id behind each of `clients`, to map a learned leader to a client.
    client_ids: Vec<u64>,
    /// Any-node client for relearning leaders.
    admin: Client,
    channels: Vec<String>,
    payloads: Vec<String>,
    uid: String,
    tag: String,
    batch: Option<u32>,
    /// Requests started from here on are measured.
    measure_from: Instant,
    /// No request starts after this.
    end: Instant,
    /// Request counter: picks the endpoint, the channel and the client_msg_no.
    next: AtomicU64,
    /// Measured acknowledged messages so far (for the progress bar).
    acked: AtomicU64,
    /// Every acknowledged message, warm-up included (for the disk figure).
    acked_all: AtomicU64,
    /// No request starts once `next` reaches this (`--messages` over the batch size).
    requests: u64,
}

/// What one worker measured.
struct WorkerStats {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    /// Completion time of the last measured request.
    last_done: Option<Instant>,
    first_error: Option<String>,
}

impl Load {
    fn message(&self, n: u64, k: u32) -> SendReq {
        let channel = &self.channels[(n % self.channels.len() as u64) as usize];
        let payload = &self.payloads[((n + u64::from(k)) % self.payloads.len() as u64) as usize];
        SendReq {
            header: MessageHeader::default(),
            client_msg_no: format!("{}-{n}-{k}", self.tag),
            from_uid: self.uid.clone(),
            channel_id: channel.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
            payload: payload.clone(),
        }
    }
}

async fn worker(load: Arc<Load>) -> WorkerStats {
    let mut st = WorkerStats {
        hist: new_histogram(),
        ops: 0,
        errors: 0,
        last_done: None,
        first_error: None,
    };
    loop {
        let started = Instant::now();
        if started >= load.end {
            break;
        }
        let n = load.next.fetch_add(1, Ordering::Relaxed);
        if n >= load.requests {
            break;
        }
        let channel = (n % load.channels.len() as u64) as usize;
        let spread = (n % load.clients.len() as u64) as usize;
        let pick = match &load.leaders {
            Some(l) => match l[channel].load(Ordering::Relaxed) {
                usize::MAX => spread,
                i => i,
            },
            None => spread,
        };
        let client = &load.clients[pick];
        let (ok, failed, err) = match load.batch {
            None => match client.send(&load.message(n, 0)).await {
                Ok(_) => (1, 0, None),
                Err(e) => (0, 1, Some(e)),
            },
            Some(b) => {
                let req = SendBatchReq {
                    messages: (0..b).map(|k| load.message(n, k)).collect(),
                };
                match client.send_batch(&req).await {
                    Ok(resp) => {
                        let ok = resp.results.iter().filter(|r| r.ok.is_some()).count() as u64;
                        (ok, u64::from(b) - ok, None)
                    }
                    Err(e) => (0, u64::from(b), Some(e)),
                }
            }
        };
        let done = Instant::now();
        load.acked_all.fetch_add(ok, Ordering::Relaxed);
        if started >= load.measure_from {
            st.ops += ok;
            st.errors += failed;
            if ok > 0 {
                let us = u64::try_from((done - started).as_micros()).unwrap_or(u64::MAX);
                st.hist.saturating_record(us.max(1));
            }
            st.last_done = Some(done);
            load.acked.fetch_add(ok, Ordering::Relaxed);
        }
        if let Some(e) = err {
            if let Some(l) = &load.leaders {
                // The leader may have moved: relearn this channel's.
                l[channel].store(
                    learn_leader(&load.admin, &load.channels[channel], &load.client_ids).await,
                    Ordering::Relaxed,
                );
            }
            if st.first_error.is_none() {
                st.first_error = Some(e.to_string());
            }
            if matches!(e, ClientError::Unreachable(_)) {
                // Nothing answered: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

/// The index in `client_ids` of `channel`'s current leader, `usize::MAX` when unknown.
async fn learn_leader(admin: &Client, channel: &str, client_ids: &[u64]) -> usize {
    admin
        .channel_config(channel, CHANNEL_TYPE_GROUP)
        .await
        .ok()
        .and_then(|c| c.leader)
        .and_then(|id| client_ids.iter().position(|c| *c == id))
        .unwrap_or(usize::MAX)
}

/// One client per node (from `/cluster/nodes`, so each is known by its node id), for
/// `--route leader`.
async fn node_clients(admin: &Client) -> anyhow::Result<(Vec<Client>, Vec<u64>)> {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for (id, url) in node_urls(admin).await? {
        clients.push(
            admin
                .only(&url)
                .with_context(|| format!("node {id} http address {url:?}"))?,
        );
        ids.push(id);
    }
    Ok((clients, ids))
}

pub async fn send(global: &GlobalArgs, args: BenchSendArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = send_inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

async fn send_inner(global: &GlobalArgs, args: BenchSendArgs) -> anyhow::Result<Outcome> {
    // Declared first so that it is dropped last: the nodes outlive every client.
    let mut cluster = None;
    let client = if args.local {
        eprintln!("wkctl: starting a local {}-node cluster", args.nodes);
        let c = TempCluster::start(args.wknode.as_deref(), args.nodes, READY_TIMEOUT).await?;
        let client = Client::new(&c.endpoints, global.timeout).context("local endpoints")?;
        cluster = Some(c);
        client
    } else {
        super::client(global)?
    }
    .with_token(global.admin_token.clone());
    let inflight = match args.mode {
        BenchMode::Seq => 1,
        BenchMode::Concurrent => args.inflight,
    };

    eprintln!("wkctl: creating {} channel(s) {}0..", args.channels, args.prefix);
    let ids: Vec<String> = (0..args.channels)
        .map(|i| format!("{}{i}", args.prefix))
        .collect();
    create_channels(&client, &ids, &args.from_uid).await?;

    let (clients, client_ids, leaders) = match args.route {
        BenchRoute::Spread => (per_endpoint(&client)?, Vec::new(), None),
        BenchRoute::Leader => {
            let (clients, client_ids) = node_clients(&client).await?;
            // One warm-up message per channel starts its group and elects its leader, so
            // the leaders can be learned before the run.
            let payload = payload_pool(args.size).swap_remove(0);
            let tag = run_tag();
            let mut leaders = Vec::new();
            for id in &ids {
                let msg = fill::message(&args.from_uid, id, format!("{tag}-warm-{id}"), &payload);
                retry("warm-up send", Duration::from_secs(30), || client.send(&msg)).await?;
                leaders.push(AtomicUsize::new(learn_leader(&client, id, &client_ids).await));
            }
            let known = leaders
                .iter()
                .filter(|l| l.load(Ordering::Relaxed) != usize::MAX)
                .count();
            eprintln!(
                "wkctl: route: to each channel's leader ({known} of {} leaders known)",
                ids.len()
            );
            (clients, client_ids, Some(leaders))
        }
    };
    if args.route == BenchRoute::Spread {
        eprintln!(
            "wkctl: route: spread round-robin over {} endpoint(s)",
            clients.len()
        );
    }

    let disk_before = cluster.as_ref().map(|c| data_bytes(&c.plan));
    let cpu_before = cluster.as_ref().map(cpu_ticks);
    let start = Instant::now();
    let load = Arc::new(Load {
        clients,
        leaders,
        client_ids,
        admin: client.clone(),
        channels: (0..args.channels)
            .map(|i| format!("{}{i}", args.prefix))
            .collect(),
        payloads: payload_pool(args.size),
        uid: args.from_uid.clone(),
        tag: run_tag(),
        batch: args.batch,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        next: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        acked_all: AtomicU64::new(0),
        requests: args
            .messages
            .map_or(u64::MAX, |m| m.div_ceil(u64::from(args.batch.unwrap_or(1)))),
    });
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..inflight {
        set.spawn(worker(load.clone()));
    }

    let progress = std::io::stderr().is_terminal().then(|| {
        let total = (args.warmup + args.duration).as_millis() as u64;
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {elapsed}/{duration} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut stats = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(r) => stats.push(r.context("load worker")?),
                None => break,
            },
            _ = tick.tick() => if let Some(bar) = &progress {
                let now = Instant::now();
                bar.set_position((now - start).as_millis() as u64);
                let acked = load.acked.load(Ordering::Relaxed);
                let secs = now.saturating_duration_since(load.measure_from).as_secs_f64();
                let phase = if now < load.measure_from { "warm-up" } else { "measuring" };
                let rate = if secs > 0.0 { acked as f64 / secs } else { 0.0 };
                bar.set_message(format!("{phase}: {acked} ops, {rate:.0}/s"));
            },
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let mut hist = new_histogram();
    let (mut ops, mut errors) = (0, 0);
    let mut last = None::<Instant>;
    let mut first_error = None;
    for s in stats {
        hist.add(&s.hist).context("merging latency histograms")?;
        ops += s.ops;
        errors += s.errors;
        last = last.max(s.last_done);
        first_error = first_error.or(s.first_error);
    }
    let secs = last
        .map(|l| l.saturating_duration_since(load.measure_from).as_secs_f64())
        .unwrap_or(0.0);
    let disk_bytes_per_msg = match (&cluster, disk_before) {
        (Some(c), Some(before)) => {
            let grown = settled_data_bytes(&c.plan).await.saturating_sub(before);
            let replicas = args.nodes.min(3) as f64;
            let acked = load.acked_all.load(Ordering::Relaxed).max(1) as f64;
            Some((grown as f64 / replicas / acked).round())
        }
        _ => None,
    };
    let server_cpu_ms_per_msg = match (&cluster, cpu_before) {
        (Some(c), Some(before)) => {
            let ticks = cpu_ticks(c).saturating_sub(before) as f64;
            let acked = load.acked_all.load(Ordering::Relaxed).max(1) as f64;
            Some(ticks / idle::clock_ticks_per_s() * 1000.0 / acked)
        }
        _ => None,
    };
    let report = SendReport {
        ops,
        ops_per_s: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        errors,
        lat: summarize(&hist),
        disk_bytes_per_msg,
        server_cpu_ms_per_msg,
    };
    if let Some(e) = first_error {
        eprintln!("wkctl: {errors} error(s); the first: {e}");
    }
    if let Some(c) = cluster.as_mut() {
        for notice in c.exits() {
            eprintln!("wkctl: {notice}");
        }
    }
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_text(&mut out, &format!("{}\n", send_json(&report)))?,
        OutputFormat::Text => {
            let params = SendParams {
                endpoints: load.clients.len(),
                route: args.route,
                inflight,
                channels: args.channels,
                size: args.size,
                batch: args.batch,
                duration: args.duration,
            };
            output::write_text(&mut out, &send_text(&params, &report))?
        }
    }
    Ok(if ops == 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// CPU ticks (user + system) of every node of `c` so far.
fn cpu_ticks(c: &super::local::TempCluster) -> u64 {
    c.plan
        .iter()
        .filter_map(|p| c.pid(p.id))
        .filter_map(|pid| idle::proc_usage(pid).ok())
        .map(|(ticks, _)| ticks)
        .sum()
}

/// Bytes the nodes' LMDB files take on disk (allocated blocks, so a sparse file counts only
/// what it holds).
fn data_bytes(plan: &[super::local::NodePlan]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    plan.iter()
        .filter_map(|p| std::fs::read_dir(p.dir.join("lmdb")).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// [`data_bytes`] once the last replicas have written what they were sent: two readings
/// 200 ms apart agree (at most 5 s).
async fn settled_data_bytes(plan: &[super::local::NodePlan]) -> u64 {
    let mut last = data_bytes(plan);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = data_bytes(plan);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

// ---------------------------------------------------------------------------------------------
// bench failover

pub async fn failover(global: &GlobalArgs, args: BenchFailoverArgs) -> anyhow::Result<Outcome> {
    if let Some(active) = args.active {
        return failover_active::run(global, args, active).await;
    }
    tokio::select! {
        r = failover_inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

async fn failover_inner(global: &GlobalArgs, args: BenchFailoverArgs) -> anyhow::Result<Outcome> {
    eprintln!("wkctl: starting a local {}-node cluster", args.nodes);
    let mut cluster = TempCluster::start(args.wknode.as_deref(), args.nodes, READY_TIMEOUT).await?;
    let admin = Client::new(&cluster.endpoints, Duration::from_secs(2))
        .context("local endpoints")?
        .with_token(global.admin_token.clone());
    let uid = "bench".to_string();
    let channel = ChannelReq {
        channel_id: FAILOVER_CHANNEL.into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec![uid.clone()],
        reset: 0,
    };
    retry("POST /channel", Duration::from_secs(30), || {
        admin.channel_create(&channel)
    })
    .await?;

    let writer_clients = per_endpoint(
        &Client::new(&cluster.endpoints, args.attempt_timeout)
            .context("local endpoints")?
            .with_token(global.admin_token.clone()),
    )?;
    let t0 = Instant::now();
    let mut writers = Writers::start(vec![WriterSpec {
        id: 0,
        clients: writer_clients,
        uid: uid.clone(),
        channel: FAILOVER_CHANNEL.to_string(),
        tag: run_tag(),
        payload_size: args.size,
        interval: None,
        // Retry until acknowledged: the convergence check below needs the writer idle.
        op_timeout: Duration::from_secs(60),
        t0,
    }]);
    let log = writers.history.clone();
    wait_for(
        "the first acknowledged write",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let n = log.acked();
            async move { (n > 0).then_some(()) }
        },
    )
    .await?;
    eprintln!("wkctl: writer running");

    let ms = |t: Instant| round_us(t.saturating_duration_since(t0).as_secs_f64() * 1000.0);
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        tokio::time::sleep(args.settle).await;
        let failed_before = log.failed_attempts.load(Ordering::Relaxed);
        let killed = wait_for(
            "a channel leader",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async {
                admin
                    .channel_config(FAILOVER_CHANNEL, CHANNEL_TYPE_GROUP)
                    .await
                    .ok()
                    .and_then(|c| c.leader)
            },
        )
        .await?;
        let t_kill = Instant::now();
        cluster.kill(killed)?;
        eprintln!("wkctl: round {round}: killed the leader, node {killed}");

        let survivors: Vec<String> = cluster
            .plan
            .iter()
            .filter(|p| p.id != killed)
            .filter_map(|p| cluster.endpoint(p.id).map(String::from))
            .collect();
        let probe = Client::new(&survivors, Duration::from_millis(500)).context("survivor endpoints")?;
        let new_leader = wait_for(
            "a new leader",
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async {
                match probe.channel_config(FAILOVER_CHANNEL, CHANNEL_TYPE_GROUP).await {
                    Ok(c) => c.leader.filter(|l| *l != killed),
                    Err(_) => None,
                }
            },
        )
        .await
        .ok();
        let new_leader_ms = new_leader.map(|_| round_us(t_kill.elapsed().as_secs_f64() * 1000.0));

        tokio::time::sleep((t_kill + args.down).saturating_duration_since(Instant::now())).await;
        let t_restart = Instant::now();
        cluster.restart(killed).await?;
        eprintln!("wkctl: round {round}: restarted node {killed}");
        tokio::time::sleep(args.settle).await;

        writers.pause(Duration::from_secs(90)).await?;
        let t_pause = Instant::now();
        wait_for(
            "the replicas to agree",
            args.converge_timeout,
            Duration::from_millis(50),
            || async {
                let r = admin
                    .channel_replicas(FAILOVER_CHANNEL, CHANNEL_TYPE_GROUP)
                    .await
                    .ok()?;
                let agree = r.replicas.len() as u64 == args.nodes.min(3)
                    && matches!(r.agreement(), Agreement::Agree { .. });
                agree.then_some(())
            },
        )
        .await?;
        let converge_ms = round_us(t_pause.elapsed().as_secs_f64() * 1000.0);

        let acks_ms: Vec<f64> = log.ack_times().into_iter().map(round_us).collect();
        let gap = largest_gap(&acks_ms, ms(t_kill) - 1000.0, ms(t_pause) + 1.0);
        rounds.push(RoundReport {
            round,
            killed,
            new_leader,
            new_leader_ms,
            window_ms: gap.map(|g| round_us(g.0)),
            gap_start_rel_kill_ms: gap.map(|g| round_us(g.1 - ms(t_kill))),
            ended_after_restart: gap.is_some_and(|g| g.2 > ms(t_restart)),
            converge_ms,
            failed_attempts: log.failed_attempts.load(Ordering::Relaxed) - failed_before,
        });
        eprintln!(
            "wkctl: round {round}: window {} ms, new leader after {} ms",
            opt_ms(gap.map(|g| g.0)),
            opt_ms(new_leader_ms)
        );
        writers.resume();
    }

    let log = writers.stop(Duration::from_secs(90)).await?;
    let acked: Vec<(String, u64)> = log
        .snapshot()
        .into_iter()
        .filter_map(|o| o.seq.map(|s| (o.client_msg_no, s)))
        .collect();
    let stored: Vec<(String, u64)> = read_channel(&admin, &uid, FAILOVER_CHANNEL)
        .await?
        .into_iter()
        .map(|m| (m.client_msg_no, m.seq))
        .collect();
    let v = verify(&acked, &stored);

    let windows: Vec<f64> = rounds.iter().filter_map(|r| r.window_ms).collect();
    let leaders: Vec<f64> = rounds.iter().filter_map(|r| r.new_leader_ms).collect();
    let report = FailoverReport {
        nodes: args.nodes,
        window_ms: spread(&windows),
        new_leader_ms: spread(&leaders),
        acked: v.acked,
        stored: v.stored,
        lost: v.lost,
        duplicated: v.duplicated,
        misplaced: v.misplaced,
        ok: v.ok() && windows.len() == rounds.len(),
        rounds,
    };
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(&mut out, &report)?,
        OutputFormat::Text => output::write_text(&mut out, &failover_text(&report))?,
    }
    drop(cluster);
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// Channel groups led in the cluster (each node's `channels_led`), summed over the nodes that
/// answer; 0 if the request fails.
async fn channels_led(client: &Client) -> u64 {
    client
        .nodes()
        .await
        .map(|n| n.nodes.iter().filter(|s| s.online).map(|s| s.channels_led).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).expect("in range");
        }
        let s = summarize(&h);
        // 3 significant digits: within 0.1 %.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(close(s.p50_ms, 5.0), "{s:?}");
        assert!(close(s.p90_ms, 9.0), "{s:?}");
        assert!(close(s.p99_ms, 9.9), "{s:?}");
        assert!(close(s.p999_ms, 9.99), "{s:?}");
        assert!(close(s.max_ms, 10.0), "{s:?}");
        assert_eq!(summarize(&new_histogram()).max_ms, 0.0);
    }

    #[test]
    fn send_json_has_the_exact_shape() {
        let r = SendReport {
            ops: 12,
            ops_per_s: 1.5,
            errors: 0,
            lat: LatencySummary {
                p50_ms: 0.25,
                p90_ms: 0.5,
                p99_ms: 1.0,
                p999_ms: 2.0,
                max_ms: 3.0,
            },
            disk_bytes_per_msg: None,
            server_cpu_ms_per_msg: None,
        };
        let text = send_json(&r);
        assert_eq!(
            text,
            r#"{"ops":12,"ops_per_s":1.5,"errors":0,"lat":{"p50_ms":0.25,"p90_ms":0.5,"p99_ms":1.0,"p999_ms":2.0,"max_ms":3.0}}"#
        );
        // What the peer harness reads: the field names, as plain JSON.
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["errors", "lat", "ops", "ops_per_s"]);
        let mut lat: Vec<&str> = v["lat"]
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        lat.sort_unstable();
        assert_eq!(lat, ["max_ms", "p50_ms", "p90_ms", "p999_ms", "p99_ms"]);
        assert_eq!(serde_json::from_str::<SendReport>(&text).expect("round trip"), r);
    }

    #[test]
    fn send_text_table() {
        let p = SendParams {
            endpoints: 3,
            route: BenchRoute::Spread,
            inflight: 64,
            channels: 64,
            size: 100,
            batch: None,
            duration: Duration::from_secs(10),
        };
        let r = SendReport {
            ops: 123456,
            ops_per_s: 12345.6,
            errors: 2,
            lat: LatencySummary {
                p50_ms: 4.5,
                p90_ms: 6.0,
                p99_ms: 9.25,
                p999_ms: 15.0,
                max_ms: 20.125,
            },
            disk_bytes_per_msg: None,
            server_cpu_ms_per_msg: None,
        };
        assert_eq!(
            send_text(&p, &r),
            "bench send: 64 in flight, 64 channel(s), 100 B payloads, 3 endpoint(s) spread round-robin, 10s\n\n\
             \x20  ops  ops/s  errors  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms\n\
             123456  12346       2   4.500   6.000   9.250    15.000  20.125\n"
        );
    }

    #[test]
    fn spreads() {
        assert_eq!(spread(&[]), None);
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Some(Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            spread(&[4.0, 1.0, 2.0, 3.0]),
            Some(Spread {
                min: 1.0,
                median: 2.5,
                max: 4.0
            })
        );
    }

    #[test]
    fn gaps() {
        let acks = [0.0, 1.0, 2.0, 10.0, 11.0, 30.0];
        assert_eq!(largest_gap(&acks, 0.0, 12.0), Some((8.0, 2.0, 10.0)));
        assert_eq!(largest_gap(&acks, 0.0, 100.0), Some((19.0, 11.0, 30.0)));
        assert_eq!(largest_gap(&acks, 10.5, 20.0), None);
    }

    #[test]
    fn failover_json_field_names() {
        let r = FailoverReport {
            nodes: 3,
            rounds: vec![RoundReport {
                round: 1,
                killed: 2,
                new_leader: Some(1),
                new_leader_ms: Some(600.0),
                window_ms: Some(700.0),
                gap_start_rel_kill_ms: Some(-0.5),
                ended_after_restart: false,
                converge_ms: 2500.0,
                failed_attempts: 3,
            }],
            window_ms: spread(&[700.0]),
            new_leader_ms: spread(&[600.0]),
            acked: 10,
            stored: 10,
            lost: 0,
            duplicated: 0,
            misplaced: 0,
            ok: true,
        };
        let v = serde_json::to_value(&r).expect("encodes");
        for k in ["rounds", "window_ms", "lost", "duplicated", "acked", "ok"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["window_ms"]["median"], 700.0);
        assert_eq!(v["rounds"][0]["window_ms"], 700.0);
        let text = failover_text(&r);
        assert!(
            text.contains("window ms: min 700.0  median 700.0  max 700.0"),
            "{text}"
        );
        assert!(
            text.ends_with("lost 0, duplicated 0, misplaced 0: OK\n"),
            "{text}"
        );
    }
}
