//! `wkctl bench drain`: how fast the sync backlog drains after a scale-out, and what that does
//! to foreground writes (the target: ">= 1,000 channels/s (20 messages each) while foreground
//! sends keep their p99").
//!
//! Phases on a local 3-node cluster with a short `--channel-idle-timeout`:
//! 1. create `--channels` channels and send `--messages` to each (one sendbatch per channel);
//! 2. wait until no channel group is awake (sum of `channels_led` is 0);
//! 3. start the foreground sender: one message at a time to its own channel, all along;
//! 4. start a 4th node with `--seed` and admit it (`POST /cluster/join`): the hibernated
//!    channels whose placement now includes it form the backlog;
//! 5. foreground only for `--before`, then `POST /cluster/backlog/drain` and poll
//!    `GET /cluster/backlog` every [`POLL`] until it is empty.
//!
//! Drain rate = backlog size / (drain request to empty backlog). The foreground latencies are
//! split by when each request started: before the drain request, or during the drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use wk_api::{Client, DrainReq};

use super::{LatencySummary, fill, new_histogram, summarize};
use crate::Outcome;
use crate::cli::{BenchDrainArgs, GlobalArgs};
use crate::output;
use crate::probe::{create_channels, interrupted, payload_pool, per_endpoint, run_tag};
use crate::wait::{Poll, wait_for};

const PREFIX: &str = "dr-";
const FOREGROUND: &str = "dr-foreground";
/// Longest wait for the backlog to empty.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
/// Between two reads of the backlog during the drain: the resolution of the drain's time
/// (a 1,000-channel drain takes about half a second).
const POLL: Duration = Duration::from_millis(50);

/// Foreground latencies of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Foreground {
    pub ops: u64,
    pub errors: u64,
    pub lat: LatencySummary,
}

/// What `bench drain --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    pub channels: u64,
    pub messages: u64,
    /// Channels in the backlog when the drain started.
    pub backlog: u64,
    pub drain_s: f64,
    pub channels_per_s: f64,
    /// Failed migrations the node counted (retried by the node).
    pub drain_errors: u64,
    pub foreground_before: Foreground,
    pub foreground_during: Foreground,
}

pub fn drain_text(r: &DrainReport) -> String {
    let fg = |f: &Foreground| {
        format!(
            "{} ops, {} errors, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            f.ops, f.errors, f.lat.p50_ms, f.lat.p99_ms, f.lat.max_ms
        )
    };
    format!(
        "bench drain: {} channels x {} messages; a 4th node joined, {} channels in the backlog\n\n\
         drained {} channels in {:.2} s: {:.0} channels/s ({} failed migrations retried)\n\
         foreground before the drain: {}\n\
         foreground during the drain: {}\n",
        r.channels,
        r.messages,
        r.backlog,
        r.backlog,
        r.drain_s,
        r.channels_per_s,
        r.drain_errors,
        fg(&r.foreground_before),
        fg(&r.foreground_during),
    )
}

pub async fn run(global: &GlobalArgs, args: BenchDrainArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

/// One foreground request: when it started, its latency in µs (None: it failed).
type Sample = (Instant, Option<u64>);

fn phase(samples: &[Sample], from: Instant, to: Instant) -> Foreground {
    let mut h = new_histogram();
    let mut errors = 0;
    for (_, us) in samples.iter().filter(|(t, _)| *t >= from && *t < to) {
        match us {
            Some(us) => h.saturating_record((*us).max(1)),
            None => errors += 1,
        }
    }
    Foreground {
        ops: h.len(),
        errors,
        lat: summarize(&h),
    }
}

async fn inner(global: &GlobalArgs, args: BenchDrainArgs) -> anyhow::Result<Outcome> {
    // In milliseconds: the node parses one number and one unit.
    let timeout = format!("{}ms", args.idle_timeout.as_millis());
    eprintln!("wkctl: starting a local 3-node cluster (--channel-idle-timeout {timeout})");
    let extra = vec!["--channel-idle-timeout".to_string(), timeout];
    let mut cluster = super::local_cluster(args.wknode.as_deref(), 3, &extra).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(10))?;
    let clients = per_endpoint(&admin)?;
    let uid = "bench";
    let inflight = args.inflight as usize;
    eprintln!(
        "wkctl: creating {} channels with {} messages each",
        args.channels, args.messages
    );
    fill::channels(&clients, PREFIX, args.channels, uid, inflight).await?;
    fill::messages_per_channel(
        &clients,
        PREFIX,
        0,
        args.channels,
        args.messages,
        uid,
        100,
        inflight,
    )
    .await?;

    eprintln!("wkctl: waiting for every channel to hibernate");
    wait_for(
        "every channel to hibernate",
        Poll::new(
            args.idle_timeout * 3 + Duration::from_secs(120),
            Duration::from_millis(250),
        ),
        || async {
            let n = admin.nodes().await.map_err(|e| e.to_string())?;
            match n.nodes.iter().map(|s| s.channels_led).sum::<u64>() {
                0 => Ok(()),
                awake => Err(format!("{awake} channel groups still awake")),
            }
        },
    )
    .await?;

    create_channels(&admin, &[FOREGROUND.to_string()], uid).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let fg = {
        let (client, stop, samples) = (admin.clone(), stop.clone(), samples.clone());
        let payload = payload_pool(100).swap_remove(0);
        let tag = run_tag();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = fill::message("bench", FOREGROUND, format!("{tag}-{n}"), &payload);
                n += 1;
                let started = Instant::now();
                let ok = client.send(&msg).await.is_ok();
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                // A short critical section, no await inside.
                samples
                    .lock()
                    .expect("samples lock poisoned")
                    .push((started, ok.then_some(us)));
                if !ok {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };

    eprintln!("wkctl: starting a 4th node and admitting it");
    let new_id = cluster.add_seeded(1).await?.node_id;
    let joiner = Client::new(
        &[cluster.endpoint(1).context("node 1's endpoint")?],
        crate::cmd::cluster::join::JOIN_TIMEOUT,
    )
    .context("local endpoints")?
    .with_token(global.admin_token.clone());
    let joined = joiner
        .join(&cluster.join_req(new_id).context("the new node's addresses")?)
        .await
        .context("POST /cluster/join")?;
    let t_before = Instant::now();
    eprintln!(
        "wkctl: node {new_id} joined; {} channels in the backlog; foreground only for {}",
        joined.backlog,
        humantime::format_duration(args.before)
    );
    tokio::time::sleep(args.before).await;

    let backlog = admin.backlog(0).await.context("GET /cluster/backlog")?.total;
    let t_drain = Instant::now();
    admin
        .drain(&DrainReq { rate: args.rate })
        .await
        .context("POST /cluster/backlog/drain")?;
    let mut drain_errors = 0;
    loop {
        let b = admin.backlog(0).await.context("GET /cluster/backlog")?;
        if let Some(d) = &b.drain {
            drain_errors = d.errors;
        }
        if b.total == 0 {
            break;
        }
        if t_drain.elapsed() > DRAIN_TIMEOUT {
            bail!("{} channels still in the backlog", b.total);
        }
        tokio::time::sleep(POLL).await;
    }
    let t_done = Instant::now();
    stop.store(true, Ordering::Relaxed);
    fg.await.context("foreground sender")?;
    let samples = samples.lock().expect("samples lock poisoned").clone();
    let drain_s = (t_done - t_drain).as_secs_f64();
    let report = DrainReport {
        channels: args.channels,
        messages: args.messages,
        backlog,
        drain_s,
        channels_per_s: backlog as f64 / drain_s.max(1e-9),
        drain_errors,
        foreground_before: phase(&samples, t_before, t_drain),
        foreground_during: phase(&samples, t_drain, t_done),
    };
    super::report_exits(&mut cluster);
    output::print(global.output, &report, || drain_text(&report))?;
    Ok(Outcome::Ok)
}
