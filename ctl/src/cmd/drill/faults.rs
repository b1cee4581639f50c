//! One step of a scenario: resolve its node (by id or role), inject its fault, heal it, and
//! measure the reaction (`watch`) and how long the hit nodes take to catch up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use wk_api::{CHANNEL_TYPE_GROUP, Client, DrillReq};

use super::report::FaultReport;
use super::runner::{Run, ms_since};
use super::scenario::{Fault, NodeSel, Step};
use super::target::Target;
use super::watch::{WATCH_TIMEOUT, finish_watch, start_watch};
use crate::wait::{self, Poll};

/// The pre-fault view: each probe channel's leader and term, as `via` sees it.
async fn affected_by(run: &Run, hit: &BTreeSet<u64>) -> Vec<(String, Option<u64>, u64)> {
    let mut out = Vec::new();
    for (ch, c) in run.channels.iter().zip(run.configs(&run.admin).await) {
        if let Some(c) = c
            && (hit.is_empty() || c.leader.is_some_and(|l| hit.contains(&l)))
        {
            out.push((ch.clone(), c.leader, c.term));
        }
    }
    out
}

fn survivors(run: &Run, hit: &BTreeSet<u64>) -> anyhow::Result<Client> {
    let ids: Vec<u64> = run
        .member_ids()
        .into_iter()
        .filter(|id| !hit.contains(id))
        .collect();
    run.client_for(&ids, WATCH_TIMEOUT)
}

fn new_fault(step: usize, kind: &str, nodes: Vec<u64>, t_ms: f64) -> FaultReport {
    FaultReport {
        step,
        kind: kind.into(),
        nodes,
        t_ms,
        affected_channels: Vec::new(),
        detect_ms: None,
        new_leader_ms: None,
        leaderless: Vec::new(),
        unavailability_ms: None,
        catch_up_ms: None,
        notes: Vec::new(),
    }
}

/// Waits until node `id` holds, on every probe channel it replicates, at least the messages
/// the most advanced replica had when this was called. Answers the time it took.
async fn catch_up(run: &Run, id: u64) -> Option<f64> {
    let started = Instant::now();
    let via = survivors(run, &BTreeSet::from([id])).ok()?;
    let mut targets = Vec::new();
    for ch in &run.channels {
        let Ok(r) = via.channel_replicas(ch, CHANNEL_TYPE_GROUP).await else {
            continue;
        };
        if r.replicas.iter().any(|x| x.node_id == id) {
            targets.push((ch.clone(), r.top_seq()));
        }
    }
    let deadline = started + Duration::from_secs(30);
    for (ch, top) in &targets {
        let poll = Poll::new(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(20),
        );
        wait::caught_up(&via, ch, CHANNEL_TYPE_GROUP, id, *top, poll)
            .await
            .ok()?;
    }
    Some(ms_since(started))
}

pub(super) async fn inject(run: &mut Run, step_no: usize, step: &Step) -> anyhow::Result<FaultReport> {
    match &step.fault {
        Fault::Kill { node, down } => {
            let (id, affected, surv) = hit_one(run, node, step).await?;
            run.target.local("kill")?.kill(id)?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "kill", vec![id], run.ms());
            run.event(format!("SIGKILL node {id}"));
            let watch = start_watch(surv, affected, t);
            tokio::time::sleep(down.0).await;
            run.target.local("kill")?.restart(id).await?;
            run.event(format!("node {id} restarted on its data dir"));
            f.catch_up_ms = catch_up(run, id).await;
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::Pause { node, hold } => {
            let (id, affected, surv) = hit_one(run, node, step).await?;
            run.target.local("pause")?.pause(id)?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "pause", vec![id], run.ms());
            run.event(format!(
                "SIGSTOP node {id} for {}",
                humantime::format_duration(hold.0)
            ));
            let watch = start_watch(surv, affected, t);
            tokio::time::sleep(hold.0).await;
            run.target.local("pause")?.resume(id)?;
            run.event(format!("SIGCONT node {id}"));
            f.catch_up_ms = catch_up(run, id).await;
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::Isolate { node, peers, hold } => {
            let id = run.resolve(node, step).await?;
            isolate(run, step_no, "isolate", &[(id, peers.clone())], hold.0).await
        }
        Fault::Partition { minority, hold } => {
            let mut ids = BTreeSet::new();
            for sel in minority {
                ids.insert(run.resolve(sel, step).await?);
            }
            let majority: Vec<u64> = run
                .member_ids()
                .into_iter()
                .filter(|id| !ids.contains(id))
                .collect();
            let plan: Vec<(u64, Vec<u64>)> = ids.iter().map(|id| (*id, majority.clone())).collect();
            isolate(run, step_no, "partition", &plan, hold.0).await
        }
        Fault::SlowDisk { node, delay, hold } => {
            let id = run.resolve(node, step).await?;
            let req = DrillReq::SlowDisk {
                delay_ms: delay.0.as_millis() as u64,
                duration_ms: hold.0.as_millis() as u64,
            };
            run.target.drill(&run.admin, id, &req).await?;
            let f = new_fault(step_no, "slow-disk", vec![id], run.ms());
            run.event(format!(
                "slow disk on node {id}: +{} per commit for {}",
                humantime::format_duration(delay.0),
                humantime::format_duration(hold.0)
            ));
            tokio::time::sleep(hold.0).await;
            run.target.drill(&run.admin, id, &DrillReq::Heal).await?;
            run.event(format!("node {id} healed"));
            Ok(f)
        }
        Fault::DiskLoss { node } => {
            let (id, affected, surv) = hit_one(run, node, step).await?;
            let other = another_member(run, id)?;
            {
                let c = run.target.local("disk-loss")?;
                c.kill(id)?;
                c.wipe(id)?;
            }
            let t = Instant::now();
            let mut f = new_fault(step_no, "disk-loss", vec![id], run.ms());
            run.event(format!("SIGKILL node {id} and wiped its data dir"));
            let watch = start_watch(surv.clone(), affected, t);
            // The empty node must not come back as the member it was (its votes and log are
            // gone): take it out first, then admit it as a new member with the same id.
            let long = run.access.client(
                &[run.target.endpoint(other).context("endpoint")?],
                Duration::from_secs(180),
            )?;
            let rm = long
                .remove_node(id, false)
                .await
                .with_context(|| format!("removing node {id}"))?;
            run.event(format!(
                "node {id} removed: {} channel(s) moved, {} stuck, left metadata: {}",
                rm.moved,
                rm.stuck.len(),
                rm.removed
            ));
            f.notes.push(format!(
                "removal moved {} channel(s), stuck {:?}",
                rm.moved, rm.stuck
            ));
            let c = run.target.local("disk-loss")?;
            c.boot_with_seed(id, other)?;
            c.restart(id).await?;
            run.event(format!("node {id} started empty with --seed {other}"));
            admit(run, &mut f, id, other, true).await?;
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::ScaleOut => {
            let seed_node = run.member_ids().first().copied().context("no node")?;
            let id = run
                .target
                .local("scale-out")?
                .add_seeded(seed_node)
                .await?
                .node_id;
            let mut f = new_fault(step_no, "scale-out", vec![id], run.ms());
            run.event(format!("node {id} started with --seed {seed_node}"));
            admit(run, &mut f, id, seed_node, false).await?;
            Ok(f)
        }
        Fault::Remove { node } => {
            let (id, affected, surv) = hit_one(run, node, step).await?;
            let other = another_member(run, id)?;
            let long = run.access.client(
                &[run.target.endpoint(other).context("endpoint")?],
                Duration::from_secs(180),
            )?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "remove", vec![id], run.ms());
            run.event(format!("decommissioning node {id}"));
            let watch = start_watch(surv, affected, t);
            let rm = long
                .remove_node(id, false)
                .await
                .with_context(|| format!("removing node {id}"))?;
            run.event(format!(
                "node {id} removed in {:.0} ms: {} channel(s) moved, stuck {:?}, left metadata: {}",
                ms_since(t),
                rm.moved,
                rm.stuck,
                rm.removed
            ));
            if !rm.removed {
                run.problems
                    .push(format!("node {id} was not removed: stuck {:?}", rm.stuck));
            }
            f.notes
                .push(format!("removal took {:.0} ms, moved {}", ms_since(t), rm.moved));
            run.gone.insert(id);
            if let Target::Local(c) = &mut run.target {
                c.terminate(id, Duration::from_secs(5))?;
                run.event(format!("node {id} stopped"));
            } else {
                f.notes.push(format!("node {id} still runs: stop it yourself"));
            }
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::RestartAll { crash, down } => {
            let ids = run.member_ids();
            let affected = affected_by(run, &BTreeSet::new()).await;
            {
                let c = run.target.local("restart-all")?;
                for id in &ids {
                    if *crash {
                        c.kill(*id)?;
                    } else {
                        c.terminate(*id, Duration::from_secs(10))?;
                    }
                }
            }
            let mut f = new_fault(step_no, "restart-all", ids.clone(), run.ms());
            run.event(format!(
                "{} every node ({:?})",
                if *crash { "SIGKILL" } else { "SIGTERM" },
                ids
            ));
            tokio::time::sleep(down.0).await;
            let t = Instant::now();
            {
                let c = run.target.local("restart-all")?;
                for id in &ids {
                    c.restart(*id).await?;
                }
            }
            run.event("every node restarted".into());
            let all = run.client_for(&ids, WATCH_TIMEOUT)?;
            let watch = start_watch(all, affected, t);
            finish_watch(watch, &mut f).await;
            f.notes.push("leader times count from the restart".into());
            Ok(f)
        }
    }
}

/// The node a one-node fault hits (`sel`), the probe channels it leads before the fault, and
/// a client for the nodes it does not hit (they watch the reaction).
async fn hit_one(
    run: &mut Run,
    sel: &NodeSel,
    step: &Step,
) -> anyhow::Result<(u64, Vec<(String, Option<u64>, u64)>, Client)> {
    let id = run.resolve(sel, step).await?;
    let hit = BTreeSet::from([id]);
    let affected = affected_by(run, &hit).await;
    Ok((id, affected, survivors(run, &hit)?))
}

/// A member other than `id`, to ask while `id` is down or leaving.
fn another_member(run: &Run, id: u64) -> anyhow::Result<u64> {
    run.member_ids()
        .into_iter()
        .find(|n| *n != id)
        .with_context(|| format!("no node other than {id} to ask"))
}

/// Admits node `id` (started with `--seed`) through node `via`, then waits for it to catch up;
/// the join and the catch-up (counted from the join) go into `f`. `again`: it was a member
/// before (a lost disk).
async fn admit(run: &mut Run, f: &mut FaultReport, id: u64, via: u64, again: bool) -> anyhow::Result<()> {
    let req = run
        .target
        .local("admitting a node")?
        .join_req(id)
        .context("addresses")?;
    let long = run.access.client(
        &[run.target.endpoint(via).context("endpoint")?],
        Duration::from_secs(180),
    )?;
    let again = if again { " again" } else { "" };
    let t_join = Instant::now();
    let jr = long
        .join(&req)
        .await
        .with_context(|| format!("admitting node {id}{again}"))?;
    let join_ms = ms_since(t_join);
    run.event(format!(
        "node {id} admitted{again}: voter {}, {} active channel(s) migrated, backlog {}",
        jr.voter, jr.active_migrated, jr.backlog
    ));
    f.catch_up_ms = catch_up(run, id).await.map(|c| c + join_ms);
    f.notes.push(format!(
        "join answered in {join_ms:.0} ms (metadata {} ms), {} active channel(s) migrated, backlog {}",
        jr.metadata_ms, jr.active_migrated, jr.backlog
    ));
    Ok(())
}

/// Isolates each `(node, peers)` (empty peers: all) for `hold`, then heals them.
async fn isolate(
    run: &mut Run,
    step_no: usize,
    kind: &str,
    plan: &[(u64, Vec<u64>)],
    hold: Duration,
) -> anyhow::Result<FaultReport> {
    let hit: BTreeSet<u64> = plan.iter().map(|p| p.0).collect();
    let affected = affected_by(run, &hit).await;
    let surv = survivors(run, &hit)?;
    // The node heals itself after `duration_ms` too; the explicit heal below is the normal
    // path, the timer a safety net should wkctl die.
    let safety_net = hold + Duration::from_secs(30);
    for (id, peers) in plan {
        let req = DrillReq::Isolate {
            peers: peers.clone(),
            duration_ms: safety_net.as_millis() as u64,
        };
        run.target.drill(&run.admin, *id, &req).await?;
    }
    let t = Instant::now();
    let mut f = new_fault(step_no, kind, hit.iter().copied().collect(), run.ms());
    for (id, peers) in plan {
        let with = if peers.is_empty() {
            "every peer".to_string()
        } else {
            format!("{peers:?}")
        };
        run.event(format!(
            "isolate node {id} from {with} for {}",
            humantime::format_duration(hold)
        ));
    }
    let watch = start_watch(surv, affected, t);
    tokio::time::sleep(hold).await;
    for (id, _) in plan {
        run.target.drill(&run.admin, *id, &DrillReq::Heal).await?;
    }
    run.event(format!("healed {:?}", hit));
    let mut cu: Option<f64> = Some(0.0);
    for id in &hit {
        let c = catch_up(run, *id).await;
        cu = match (cu, c) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    f.catch_up_ms = cu;
    finish_watch(watch, &mut f).await;
    Ok(f)
}
