//! `wkctl bench failover`: SIGKILL the leader of one channel under a single writer, restart it,
//! and measure the window without acknowledgements; with `--active N`, `failover_active`
//! measures many awake channels instead. See the `bench` module doc for the definitions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wk_api::{CHANNEL_TYPE_GROUP, Client};

use super::{Spread, failover_active, local_cluster, opt_ms, round_us, spread};
use crate::Outcome;
use crate::cli::{BenchFailoverArgs, GlobalArgs};
use crate::output::{self, Align, Table};
use crate::probe::{
    WriterSpec, Writers, create_channels, interrupted, per_endpoint, read_channel, run_tag, verify,
};
use crate::wait::{self, Poll, wait_for};

/// The channel the failover writer uses.
const FAILOVER_CHANNEL: &str = "bench-failover";

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
    let mut cluster = local_cluster(args.wknode.as_deref(), args.nodes, &[]).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(2))?;
    let uid = "bench".to_string();
    create_channels(&admin, &[FAILOVER_CHANNEL.to_string()], &uid).await?;

    let writer_clients = per_endpoint(&super::cluster_client(&cluster, global, args.attempt_timeout)?)?;
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
        Poll::new(Duration::from_secs(30), Duration::from_millis(20)),
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
        let killed = wait::leader(
            &admin,
            FAILOVER_CHANNEL,
            CHANNEL_TYPE_GROUP,
            Poll::new(Duration::from_secs(30), Duration::from_millis(20)),
        )
        .await?
        .leader
        .expect("wait::leader answers a config with a leader");
        let t_kill = Instant::now();
        cluster.kill(killed)?;
        eprintln!("wkctl: round {round}: killed the leader, node {killed}");

        let survivors: Vec<String> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != killed)
            .filter_map(|id| cluster.endpoint(id))
            .collect();
        let probe = Client::new(&survivors, Duration::from_millis(500)).context("survivor endpoints")?;
        let new_leader = wait::leader_changed(
            &probe,
            FAILOVER_CHANNEL,
            CHANNEL_TYPE_GROUP,
            killed,
            Poll::new(Duration::from_secs(30), Duration::from_millis(10)),
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
        wait::replicas_agree(
            &admin,
            FAILOVER_CHANNEL,
            CHANNEL_TYPE_GROUP,
            Some(args.nodes.min(3) as usize),
            Poll::new(args.converge_timeout, Duration::from_millis(50)),
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
    output::print(global.output, &report, || failover_text(&report))?;
    drop(cluster);
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
