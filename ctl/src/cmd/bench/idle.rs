//! `wkctl bench idle`: what many channels cost at rest (the target: 100,000 channels, 1,000
//! active: CPU% and RSS per node, first send to a hibernated channel).
//!
//! Phases on a local cluster whose nodes run with `--channel-idle-timeout <--idle-timeout>`:
//! 1. create `--channels` group channels (metadata only: no group starts);
//! 2. wake the `--samples` channels after the active ones (one message each), then wake the
//!    `--active` channels `0..active` (one message each);
//! 3. wait until every replica of every sample reports `hibernated` (the samples were woken
//!    first, so they fall idle first), then touch the active channels again so that all of
//!    them are awake for the whole window;
//! 4. **at rest**: no client request for `--window`; CPU% of each node is the change of
//!    utime + stime in `/proc/<pid>/stat` over the window, RSS is `VmRSS` of
//!    `/proc/<pid>/status` at its end; the groups awake (sum of `channels_led`) are read at
//!    both ends, so a window in which active channels fell asleep shows;
//! 5. **settled**: a second window of the same length right after the first. The first starts
//!    with the touch, so it includes the half second before the awake groups go quiet (their
//!    Raft ticks stop, `cluster::quiet`); the second is the steady cost of holding them awake;
//! 6. one message to each sample, one at a time: the first-send latency to a hibernated
//!    channel (wake, election, quorum write).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use wk_api::CHANNEL_TYPE_GROUP;

use super::{LatencySummary, fill, new_histogram, summarize};
use crate::Outcome;
use crate::cli::{BenchIdleArgs, GlobalArgs};
use crate::output::{self, Align, Table};
use crate::probe::{interrupted, payload_pool, per_endpoint, run_tag};
use crate::wait::{Poll, wait_for};

const PREFIX: &str = "idle-";

/// One node at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRest {
    pub node_id: u64,
    /// CPU time over the window as a percentage of one core.
    pub cpu_pct: f64,
    /// Resident set size at the end of the window, MiB.
    pub rss_mb: f64,
}

/// What `bench idle --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleReport {
    pub channels: u64,
    pub active: u64,
    pub create_s: f64,
    pub activate_s: f64,
    pub window_s: f64,
    /// Channel groups awake (sum of leaders) at the start of the first window and the end of
    /// the settled one.
    pub awake_start: u64,
    pub awake_end: u64,
    /// The window right after the active channels were touched.
    pub nodes: Vec<NodeRest>,
    /// The window after it: every awake group has gone quiet.
    #[serde(default)]
    pub nodes_settled: Vec<NodeRest>,
    /// First send to a hibernated channel, one at a time.
    pub first_send: LatencySummary,
    pub samples: u64,
}

pub fn idle_text(r: &IdleReport) -> String {
    let mut s = format!(
        "bench idle: {} channels ({} created in {:.1} s, {:.0}/s), {} active (woken in {:.1} s)\n\
         at rest for {:.1} s (twice) with {} -> {} channel groups awake\n\n",
        r.channels,
        r.channels,
        r.create_s,
        r.channels as f64 / r.create_s.max(1e-9),
        r.active,
        r.activate_s,
        r.window_s,
        r.awake_start,
        r.awake_end
    );
    let mut t = Table::new(&[
        ("node", Align::Right),
        ("CPU % (after touch)", Align::Right),
        ("CPU % (settled)", Align::Right),
        ("RSS MB", Align::Right),
    ]);
    for n in &r.nodes {
        let settled = r.nodes_settled.iter().find(|x| x.node_id == n.node_id);
        t.row(vec![
            n.node_id.to_string(),
            format!("{:.2}", n.cpu_pct),
            settled.map_or("-".into(), |x| format!("{:.2}", x.cpu_pct)),
            format!("{:.1}", n.rss_mb),
        ]);
    }
    s.push_str(&t.render());
    s.push_str(&format!(
        "\nfirst send to a hibernated channel ({} samples): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
        r.samples, r.first_send.p50_ms, r.first_send.p99_ms, r.first_send.max_ms
    ));
    s
}

/// CPU ticks (utime + stime) and RSS in KiB of a process, from `/proc`.
pub(super) fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file are utime and stime: indexes 11 and 12 after field 2.
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("unexpected /proc/<pid>/stat")
    };
    let ticks = tick(11)? + tick(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok((ticks, rss_kb))
}

pub(super) fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU % and RSS of each node over `window` with no request: the window's length in seconds
/// and one figure per node.
async fn at_rest(pids: &[(u64, u32)], window: Duration) -> anyhow::Result<(f64, Vec<NodeRest>)> {
    let usage =
        || -> anyhow::Result<Vec<(u64, u64)>> { pids.iter().map(|(_, pid)| proc_usage(*pid)).collect() };
    let before = usage()?;
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let after = usage()?;
    let secs = t.elapsed().as_secs_f64();
    let hz = clock_ticks_per_s();
    let nodes = pids
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((id, _), (b, a))| NodeRest {
            node_id: *id,
            cpu_pct: (a.0.saturating_sub(b.0)) as f64 / hz / secs * 100.0,
            rss_mb: a.1 as f64 / 1024.0,
        })
        .collect();
    Ok((secs, nodes))
}

pub async fn run(global: &GlobalArgs, args: BenchIdleArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

async fn inner(global: &GlobalArgs, args: BenchIdleArgs) -> anyhow::Result<Outcome> {
    if args.active + args.samples > args.channels {
        bail!("--channels must be at least --active + --samples");
    }
    // In milliseconds: the node parses one number and one unit.
    let timeout = format!("{}ms", args.idle_timeout.as_millis());
    eprintln!(
        "wkctl: starting a local {}-node cluster (--channel-idle-timeout {timeout})",
        args.nodes
    );
    let extra = vec!["--channel-idle-timeout".to_string(), timeout];
    let cluster = super::local_cluster(args.wknode.as_deref(), args.nodes, &extra).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(10))?;
    let clients = per_endpoint(&admin)?;
    let uid = "bench";
    let inflight = args.inflight as usize;

    eprintln!("wkctl: creating {} channels", args.channels);
    let create = fill::channels(&clients, PREFIX, args.channels, uid, inflight).await?;
    eprintln!(
        "wkctl: waking {} sample channels, then {} active ones",
        args.samples, args.active
    );
    fill::messages_per_channel(&clients, PREFIX, args.active, args.samples, 1, uid, 16, 16).await?;
    let activate = fill::messages_per_channel(&clients, PREFIX, 0, args.active, 1, uid, 16, 16).await?;

    eprintln!("wkctl: waiting for the samples to hibernate");
    let deadline = Instant::now() + args.idle_timeout * 3 + Duration::from_secs(60);
    for next in args.active..args.active + args.samples {
        let id = fill::channel_id(PREFIX, next);
        let poll = Poll::new(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(250),
        );
        wait_for(format!("channel {id} to hibernate"), poll, || async {
            admin
                .channel_replicas(&id, CHANNEL_TYPE_GROUP)
                .await
                .is_ok_and(|r| r.is_hibernated())
                .then_some(())
        })
        .await
        .context("is --idle-timeout longer than the activation?")?;
    }
    fill::messages_per_channel(&clients, PREFIX, 0, args.active, 1, uid, 16, 16).await?;

    let pids: Vec<(u64, u32)> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id).map(|pid| (id, pid)))
        .collect();
    // Each awake group has exactly one leader.
    let awake_start = super::channels_led(&admin).await;
    eprintln!(
        "wkctl: at rest for {} ({awake_start} groups awake)",
        humantime::format_duration(args.window)
    );
    let (window, nodes) = at_rest(&pids, args.window).await?;
    let (_, nodes_settled) = at_rest(&pids, args.window).await?;
    let awake_end = super::channels_led(&admin).await;

    eprintln!("wkctl: first sends to {} hibernated channels", args.samples);
    let mut hist = new_histogram();
    let payload = payload_pool(100).swap_remove(0);
    let tag = run_tag();
    for i in args.active..args.active + args.samples {
        let ch = fill::channel_id(PREFIX, i);
        let msg = fill::message(uid, &ch, format!("{tag}-{i}"), &payload);
        let client = &clients[(i % clients.len() as u64) as usize];
        let started = Instant::now();
        client
            .send(&msg)
            .await
            .with_context(|| format!("first send to {ch}"))?;
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(us.max(1));
    }

    let report = IdleReport {
        channels: args.channels,
        active: args.active,
        create_s: create.as_secs_f64(),
        activate_s: activate.as_secs_f64(),
        window_s: window,
        awake_start,
        awake_end,
        nodes,
        nodes_settled,
        first_send: summarize(&hist),
        samples: args.samples,
    };
    output::print(global.output, &report, || idle_text(&report))?;
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let (ticks, rss) = proc_usage(std::process::id()).expect("own /proc entry");
        assert!(rss > 0);
        let _ = ticks;
    }
}
