//! How fast the cluster reacts to a fault: leader changes of the affected channels, polled on
//! `/cluster/channels/{id}/{type}/config` of the nodes the fault did not hit, every 20 ms, in a
//! task that does HTTP only. A measurement, not a wait: it records when each channel lost its
//! old leader and when it had a new one.

use std::time::{Duration, Instant};

use wk_api::{CHANNEL_TYPE_GROUP, Client};

use super::check::pct;
use super::report::FaultReport;

/// How long a leader watch runs after its fault was injected.
pub(super) const WATCH_FOR: Duration = Duration::from_secs(10);
/// Per-request timeout of the leader watch: `/config` probes every replica, and a paused
/// replica answers nothing, so the node needs its own probe timeout to pass.
pub(super) const WATCH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Leader changes of the affected channels after a fault, polled on `survivors`.
pub(super) struct Watch {
    /// (channel, leader before, term before)
    affected: Vec<(String, Option<u64>, u64)>,
    task: tokio::task::JoinHandle<Vec<(Option<f64>, Option<f64>)>>,
}

pub(super) fn start_watch(
    survivors: Client,
    affected: Vec<(String, Option<u64>, u64)>,
    since: Instant,
) -> Watch {
    let list = affected.clone();
    let task = tokio::spawn(async move {
        let mut out: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); list.len()];
        let deadline = since + WATCH_FOR;
        while Instant::now() < deadline && out.iter().any(|o| o.1.is_none()) {
            // One request per channel still waiting, concurrently.
            let mut set = tokio::task::JoinSet::new();
            for (i, (ch, _, _)) in list.iter().enumerate() {
                if out[i].1.is_none() {
                    let (c, ch) = (survivors.clone(), ch.clone());
                    set.spawn(async move {
                        let r = c.channel_config(&ch, CHANNEL_TYPE_GROUP).await;
                        (i, r, since.elapsed().as_secs_f64() * 1000.0)
                    });
                }
            }
            while let Some(Ok((i, r, t))) = set.join_next().await {
                let (_, old_leader, old_term) = &list[i];
                let Ok(c) = r else { continue };
                if out[i].0.is_none() && (c.term > *old_term || c.leader.is_none() || c.leader != *old_leader)
                {
                    out[i].0 = Some(t);
                }
                if c.term > *old_term && c.leader.is_some() {
                    out[i].0.get_or_insert(t);
                    out[i].1 = Some(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out
    });
    Watch { affected, task }
}

pub(super) async fn finish_watch(w: Watch, f: &mut FaultReport) {
    let res = match w.task.await {
        Ok(r) => r,
        Err(_) => return,
    };
    f.affected_channels = w.affected.iter().map(|a| a.0.clone()).collect();
    let detect: Vec<f64> = res.iter().filter_map(|r| r.0).collect();
    let leader: Vec<f64> = res.iter().filter_map(|r| r.1).collect();
    f.detect_ms = pct(&detect);
    f.new_leader_ms = pct(&leader);
    f.leaderless = w
        .affected
        .iter()
        .zip(&res)
        .filter(|(_, r)| r.1.is_none())
        .map(|(a, _)| a.0.clone())
        .collect();
}
