//! `wkctl bench send`: durable-write throughput and latency against `--endpoint` or a local
//! cluster (`--local`); see the `bench` module doc for what is measured.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wk_api::{CHANNEL_TYPE_GROUP, Client, ClientError, MessageHeader, SendBatchReq, SendReq};

use super::{LatencySummary, fill, idle, local_cluster, new_histogram, report_exits, summarize};
use crate::Outcome;
use crate::cli::{BenchMode, BenchRoute, BenchSendArgs, GlobalArgs, OutputFormat};
use crate::local::LocalCluster;
use crate::output::{self, Align, Table};
use crate::probe::{create_channels_with, interrupted, node_urls, payload_pool, per_endpoint, run_tag};
use crate::wait::retry;

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
        let c = local_cluster(args.wknode.as_deref(), args.nodes, &[]).await?;
        let client = Client::new(&c.endpoints(), global.timeout).context("local endpoints")?;
        cluster = Some(c);
        client
    } else {
        crate::cmd::client(global)?
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
    let subscribers: Vec<String> = std::iter::once(args.from_uid.clone())
        .chain((1..args.subscribers).map(|j| format!("{}m{j}", args.prefix)))
        .collect();
    create_channels_with(&client, &ids, &subscribers).await?;

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

    let disk_before = cluster.as_ref().map(data_bytes);
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
            let grown = settled_data_bytes(c).await.saturating_sub(before);
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
        report_exits(c);
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
fn cpu_ticks(c: &LocalCluster) -> u64 {
    c.ids()
        .into_iter()
        .filter_map(|id| c.pid(id))
        .filter_map(|pid| idle::proc_usage(pid).ok())
        .map(|(ticks, _)| ticks)
        .sum()
}

/// Bytes the nodes' LMDB files take on disk (allocated blocks, so a sparse file counts only
/// what it holds).
fn data_bytes(c: &LocalCluster) -> u64 {
    use std::os::unix::fs::MetadataExt;
    c.plans()
        .filter_map(|p| std::fs::read_dir(p.dir.join("lmdb")).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// [`data_bytes`] once the last replicas have written what they were sent: two readings
/// 200 ms apart agree (at most 5 s).
async fn settled_data_bytes(c: &LocalCluster) -> u64 {
    let mut last = data_bytes(c);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = data_bytes(c);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
