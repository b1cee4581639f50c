//! `wkctl bench failover --active N`: with N channels awake, kill the node that leads the
//! most of them (SIGKILL) and time until every channel it led has a new leader (the target:
//! "with 1,000 active channels on the killed node, every one of them has a new leader within
//! 1 s").
//!
//! After the kill, two measurements, one after the other:
//! 1. **all led again**: every [`LED_POLL`] one survivor is asked for `/cluster/nodes` (each
//!    node's `channels_led`: the groups it leads, from its own Raft state), until the
//!    survivors lead as many channels as the whole cluster did before the kill. Two cheap
//!    requests per poll, so the figure is close to the last election (a survivor deposed by
//!    a newer term but not told yet would count twice; the check below catches a channel
//!    left without a leader).
//! 2. **per channel**: the survivors are asked for each orphaned channel's config
//!    (`/cluster/channels/{id}/{type}/config`), 32 requests at a time, pass after pass,
//!    until each reports a leader other than the killed node; a channel's time is kill to the
//!    end of the request that first showed its new leader. One pass over many channels takes
//!    a while on a loaded machine, so the report carries the longest pass: the resolution.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wk_api::{CHANNEL_TYPE_GROUP, Client};

use super::{fill, round_us};
use crate::Outcome;
use crate::cli::{BenchFailoverArgs, GlobalArgs};
use crate::output::{self, Align, Table};
use crate::probe::{interrupted, per_endpoint};
use crate::wait::{Poll, retry, wait_for};

const PREFIX: &str = "fo-";
/// Config requests in flight while polling.
const POLL_INFLIGHT: usize = 32;
/// How often the survivors' leader counts are read.
const LED_POLL: Duration = Duration::from_millis(10);
/// Give up on a channel after this long.
const NEW_LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// One kill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveRound {
    pub round: u32,
    pub killed: u64,
    /// Channels the killed node led.
    pub led: u64,
    /// Channels that got a new leader within the timeout.
    pub resolved: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The longest polling pass: no per-channel figure is finer than this.
    pub poll_pass_ms: f64,
    /// Kill until the survivors lead as many channels as the cluster did before (module doc);
    /// None if that did not happen within the timeout.
    #[serde(default)]
    pub all_led_ms: Option<f64>,
}

/// What `bench failover --active N --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveReport {
    pub nodes: u64,
    pub active: u64,
    pub rounds: Vec<ActiveRound>,
    pub ok: bool,
}

pub fn active_text(r: &ActiveReport) -> String {
    let mut s = format!(
        "bench failover --active {}: {} nodes, {} round(s); kill to new leader per orphaned channel\n\n",
        r.active,
        r.nodes,
        r.rounds.len()
    );
    let mut t = Table::new(&[
        ("round", Align::Right),
        ("killed", Align::Right),
        ("led", Align::Right),
        ("all led again ms", Align::Right),
        ("new leader", Align::Right),
        ("p50 ms", Align::Right),
        ("p99 ms", Align::Right),
        ("max ms", Align::Right),
        ("poll pass ms", Align::Right),
    ]);
    for k in &r.rounds {
        t.row(vec![
            k.round.to_string(),
            k.killed.to_string(),
            k.led.to_string(),
            k.all_led_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
            k.resolved.to_string(),
            format!("{:.1}", k.p50_ms),
            format!("{:.1}", k.p99_ms),
            format!("{:.1}", k.max_ms),
            format!("{:.1}", k.poll_pass_ms),
        ]);
    }
    s.push_str(&t.render());
    s
}

/// The value at quantile `q` of sorted `v` (nearest rank); 0 for none.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The leader of each channel, asked `POLL_INFLIGHT` at a time.
async fn leaders(client: &Client, ids: &[String]) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(POLL_INFLIGHT) {
        let mut set = tokio::task::JoinSet::new();
        for (i, id) in chunk.iter().enumerate() {
            let (client, id) = (client.clone(), id.clone());
            set.spawn(async move {
                let l = client
                    .channel_config(&id, CHANNEL_TYPE_GROUP)
                    .await
                    .ok()
                    .and_then(|c| c.leader);
                (i, l)
            });
        }
        let mut part = vec![None; chunk.len()];
        while let Some(Ok((i, l))) = set.join_next().await {
            part[i] = l;
        }
        out.extend(part);
    }
    out
}

pub async fn run(global: &GlobalArgs, args: BenchFailoverArgs, active: u64) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args, active) => r,
        e = interrupted() => Err(e),
    }
}

async fn inner(global: &GlobalArgs, args: BenchFailoverArgs, active: u64) -> anyhow::Result<Outcome> {
    eprintln!("wkctl: starting a local {}-node cluster", args.nodes);
    // Long idle timeout: the channels must stay awake through activation and every round.
    let extra = vec!["--channel-idle-timeout".to_string(), "10m".to_string()];
    let mut cluster = super::local_cluster(args.wknode.as_deref(), args.nodes, &extra).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(5))?;
    let clients = per_endpoint(&admin)?;
    eprintln!("wkctl: creating and waking {active} channels");
    fill::channels(&clients, PREFIX, active, "bench", 32).await?;
    fill::messages_per_channel(&clients, PREFIX, 0, active, 1, "bench", 16, 16).await?;
    let ids: Vec<String> = (0..active).map(|i| fill::channel_id(PREFIX, i)).collect();

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let before = leaders(&admin, &ids).await;
        let killed = (1..=args.nodes)
            .max_by_key(|n| before.iter().filter(|l| **l == Some(*n)).count())
            .context("no nodes")?;
        let orphans: Vec<String> = ids
            .iter()
            .zip(&before)
            .filter(|(_, l)| **l == Some(killed))
            .map(|(id, _)| id.clone())
            .collect();
        let survivors: Vec<String> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != killed)
            .filter_map(|id| cluster.endpoint(id))
            .collect();
        let probe = Client::new(&survivors, Duration::from_millis(500))
            .context("survivor endpoints")?
            .with_token(global.admin_token.clone());

        let led_before = super::channels_led(&admin).await;
        let t_kill = Instant::now();
        cluster.kill(killed)?;
        eprintln!(
            "wkctl: round {round}: killed node {killed}, leader of {} channels",
            orphans.len()
        );
        let all_led = wait_for(
            format!("{led_before} channels led again"),
            Poll::new(NEW_LEADER_TIMEOUT.saturating_sub(t_kill.elapsed()), LED_POLL),
            || async {
                (super::channels_led(&probe).await >= led_before)
                    .then(|| round_us(t_kill.elapsed().as_secs_f64() * 1000.0))
            },
        )
        .await
        .ok();
        let mut waiting = orphans.clone();
        let mut times = Vec::new();
        let mut pass_max = Duration::ZERO;
        while !waiting.is_empty() && t_kill.elapsed() < NEW_LEADER_TIMEOUT {
            let pass = Instant::now();
            let now = leaders(&probe, &waiting).await;
            let seen = t_kill.elapsed();
            pass_max = pass_max.max(pass.elapsed());
            let mut still = Vec::new();
            for (id, l) in waiting.into_iter().zip(now) {
                match l {
                    Some(l) if l != killed => times.push(seen.as_secs_f64() * 1000.0),
                    _ => still.push(id),
                }
            }
            waiting = still;
        }
        times.sort_by(f64::total_cmp);
        rounds.push(ActiveRound {
            round,
            killed,
            led: orphans.len() as u64,
            resolved: times.len() as u64,
            p50_ms: round_us(quantile(&times, 0.50)),
            p99_ms: round_us(quantile(&times, 0.99)),
            max_ms: round_us(times.last().copied().unwrap_or(0.0)),
            poll_pass_ms: round_us(pass_max.as_secs_f64() * 1000.0),
            all_led_ms: all_led,
        });
        eprintln!(
            "wkctl: round {round}: all led again after {} ms; {} of {} confirmed per channel, max {:.0} ms",
            all_led.map_or("(timeout)".into(), |ms| format!("{ms:.0}")),
            times.len(),
            orphans.len(),
            times.last().copied().unwrap_or(0.0)
        );
        cluster.restart(killed).await?;
        // The restarted node must be back before the next kill leaves a quorum.
        let back = admin
            .only(&cluster.endpoint(killed).context("restarted node endpoint")?)
            .context("restarted node endpoint")?;
        retry("the restarted node", Duration::from_secs(30), || back.health()).await?;
    }
    let ok = rounds.iter().all(|r| r.resolved == r.led);
    let report = ActiveReport {
        nodes: args.nodes,
        active,
        rounds,
        ok,
    };
    output::print(global.output, &report, || active_text(&report))?;
    Ok(if ok { Outcome::Ok } else { Outcome::CheckFailed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
