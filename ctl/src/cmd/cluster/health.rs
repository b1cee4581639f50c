//! `wkctl cluster health` (a scriptable check, exit 0 healthy / 1 unhealthy, in the spirit of
//! `rpk cluster health` and `nats server check`) and `wkctl cluster status --watch`.
//!
//! The verdict is computed by `evaluate`, a pure function of the answers of
//! `GET /cluster/nodes` and each channel's `GET .../replicas`, so its rules are unit-tested:
//! - every node online (and exactly `--expect-nodes` of them when given);
//! - exactly one online node is the metadata leader;
//! - every channel has a quorum of online replicas (a channel whose status cannot be read fails);
//! - no replica is more than `--max-lag` entries behind its leader. A channel without a leader
//!   (hibernated, or electing) reports no lag and is not judged on it; an unknown lag (`None`)
//!   is unknown, not a failure.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use wk_api::{ChannelReplicas, NodesResp, Role};

use crate::Outcome;
use crate::cli::{GlobalArgs, HealthArgs, OutputFormat};
use crate::cmd::channel::{self, MAX_LIST};
use crate::output;
use crate::render::{self, Check, HealthReport};

/// What `evaluate` needs to know about the channels.
pub struct ChannelFacts<'a> {
    /// Channels in the cluster.
    pub total: u64,
    /// The channels examined, with their status or why it could not be read.
    pub status: &'a [(String, Result<ChannelReplicas, String>)],
}

pub fn evaluate(
    nodes: &NodesResp,
    channels: &ChannelFacts<'_>,
    expect_nodes: Option<usize>,
    max_lag: u64,
) -> HealthReport {
    let mut checks = Vec::new();

    // Nodes.
    let online = nodes.nodes.iter().filter(|n| n.online).count();
    let mut problems: Vec<String> = nodes
        .nodes
        .iter()
        .filter(|n| !n.online)
        .map(|n| format!("node {} offline", n.id))
        .collect();
    if let Some(want) = expect_nodes
        && want != nodes.nodes.len()
    {
        problems.push(format!(
            "expected {want} nodes, the cluster has {}",
            nodes.nodes.len()
        ));
    }
    if nodes.nodes.is_empty() {
        problems.push("no nodes".into());
    }
    checks.push(Check {
        name: "nodes".into(),
        ok: problems.is_empty(),
        detail: format!("{online}/{} nodes online", nodes.nodes.len()),
        problems,
    });

    // Metadata leader.
    let leaders: Vec<u64> = nodes
        .nodes
        .iter()
        .filter(|n| n.online && n.role == Role::Leader)
        .map(|n| n.id)
        .collect();
    let (ok, detail) = match leaders.as_slice() {
        [one] => (true, format!("node {one} leads the metadata group")),
        [] => (false, "no node leads the metadata group".to_string()),
        many => (
            false,
            format!(
                "{} nodes claim to lead the metadata group: {}",
                many.len(),
                render::ids(many)
            ),
        ),
    };
    checks.push(Check {
        name: "meta_leader".into(),
        ok,
        detail,
        problems: Vec::new(),
    });

    // Quorum of each channel.
    let examined = channels.status.len();
    let mut no_quorum = Vec::new();
    let mut leaderless = 0;
    for (key, status) in channels.status {
        match status {
            Ok(c) => {
                let up = c.replicas.iter().filter(|r| r.online).count();
                if up <= c.replicas.len() / 2 {
                    no_quorum.push(format!("{key}: {up}/{} replicas online", c.replicas.len()));
                }
                if c.leader.is_none() {
                    leaderless += 1;
                }
            }
            Err(e) => no_quorum.push(format!("{key}: status unavailable: {e}")),
        }
    }
    let scope = if (examined as u64) < channels.total {
        format!(" (first {examined} of {} examined)", channels.total)
    } else {
        String::new()
    };
    checks.push(Check {
        name: "quorum".into(),
        ok: no_quorum.is_empty(),
        detail: if no_quorum.is_empty() {
            format!("{examined} channels, each with a quorum of online replicas{scope}")
        } else {
            format!(
                "{} of {examined} channels without a quorum of online replicas{scope}",
                no_quorum.len()
            )
        },
        problems: no_quorum,
    });

    // Lag.
    let mut lagging = Vec::new();
    let mut worst = 0;
    for (key, status) in channels.status {
        let Ok(c) = status else { continue };
        if c.leader.is_none() {
            continue;
        }
        worst = worst.max(c.max_lag().unwrap_or(0));
        for r in &c.replicas {
            if let Some(l) = r.lag
                && l > max_lag
            {
                lagging.push(format!("{key}: node {} is {l} entries behind", r.node_id));
            }
        }
    }
    let idle = if leaderless > 0 {
        format!("; {leaderless} channels without a leader (idle or electing) not judged")
    } else {
        String::new()
    };
    checks.push(Check {
        name: "lag".into(),
        ok: lagging.is_empty(),
        detail: if lagging.is_empty() {
            format!("no replica more than {max_lag} entries behind (worst {worst}){idle}")
        } else {
            format!(
                "{} replicas more than {max_lag} entries behind{idle}",
                lagging.len()
            )
        },
        problems: lagging,
    });

    HealthReport {
        healthy: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// `wkctl cluster health`.
pub async fn health(global: &GlobalArgs, args: HealthArgs) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client(global)?;
    let nodes = client.nodes().await.context("GET /cluster/nodes")?;
    let list = client.channels(MAX_LIST).await.context("GET /cluster/channels")?;
    let status: Vec<(String, Result<ChannelReplicas, String>)> = channel::replicas_of(&client, list.channels)
        .await
        .into_iter()
        .map(|(info, r)| {
            (
                channel::key(&info.channel_id, info.channel_type),
                r.map_err(|e| e.to_string()),
            )
        })
        .collect();
    let report = evaluate(
        &nodes,
        &ChannelFacts {
            total: list.total,
            status: &status,
        },
        args.expect_nodes,
        args.max_lag,
    );
    output::print(global.output, &report, || render::health_text(&report))?;
    Ok(if report.healthy {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// `wkctl cluster status --watch`: redraws every `interval` until Ctrl-C (exit 0). Text on a
/// terminal redraws in place; otherwise each refresh is appended. JSON is one `NodesResp` per
/// line (JSON Lines). A failed refresh is reported on stderr and the watch goes on.
pub async fn watch(global: &GlobalArgs, interval: Duration) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client(global)?;
    let redraw = global.output == OutputFormat::Text && std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(Outcome::Ok),
            _ = ticker.tick() => {}
        }
        let resp = match client.nodes().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("wkctl: GET /cluster/nodes: {e}");
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        match global.output {
            OutputFormat::Json => {
                let mut line = serde_json::to_string(&resp).context("encoding JSON")?;
                line.push('\n');
                output::write_text(&mut out, &line)?;
            }
            OutputFormat::Text => {
                let now = humantime::format_rfc3339_seconds(SystemTime::now());
                let mut text = if redraw {
                    "\x1b[2J\x1b[H".to_string()
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "{now}  every {}  (Ctrl-C stops)\n{}",
                    humantime::format_duration(interval),
                    output::nodes_text(&resp)
                ));
                if !redraw {
                    text.push('\n');
                }
                output::write_text(&mut out, &text)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wk_api::{NodeStatus, ReplicaStatus};

    fn node(id: u64, role: Role, online: bool) -> NodeStatus {
        NodeStatus {
            id,
            http_addr: String::new(),
            tcp_addr: String::new(),
            ws_addr: String::new(),
            cluster_addr: String::new(),
            online,
            role,
            term: 2,
            last_log_index: 9,
            applied_index: 9,
            channels_led: 0,
            channels_replicated: 0,
            connections: 0,
        }
    }

    fn nodes(spec: &[(Role, bool)]) -> NodesResp {
        let nodes: Vec<NodeStatus> = spec
            .iter()
            .enumerate()
            .map(|(i, (role, on))| node(i as u64 + 1, *role, *on))
            .collect();
        let meta_leader = nodes.iter().find(|n| n.role == Role::Leader).map(|n| n.id);
        NodesResp {
            meta_leader,
            nodes,
            security: None,
        }
    }

    /// A channel on replicas 1..=n; `spec` per replica: (online, lag as the leader sees it).
    fn chan(leader: Option<u64>, spec: &[(bool, Option<u64>)]) -> ChannelReplicas {
        ChannelReplicas {
            channel_id: "c".into(),
            channel_type: 2,
            group_id: 1,
            leader,
            replicas: spec
                .iter()
                .enumerate()
                .map(|(i, (online, lag))| ReplicaStatus {
                    node_id: i as u64 + 1,
                    online: *online,
                    role: if leader == Some(i as u64 + 1) {
                        Role::Leader
                    } else {
                        Role::Follower
                    },
                    term: 1,
                    last_log_index: 5,
                    applied_index: 5,
                    lag: *lag,
                    last_ack_ms: None,
                    message_seq: 3,
                    checksum: String::new(),
                    corrupt: None,
                })
                .collect(),
        }
    }

    const UP: (Role, bool) = (Role::Follower, true);
    const LEAD: (Role, bool) = (Role::Leader, true);
    const DOWN: (Role, bool) = (Role::Unknown, false);

    /// (case, nodes, expect_nodes, channels, max_lag) -> the names of the failed checks.
    #[test]
    fn verdicts() {
        type Case = (
            &'static str,
            Vec<(Role, bool)>,
            Option<usize>,
            Vec<Result<ChannelReplicas, String>>,
            u64,
            Vec<&'static str>,
        );
        let ok3 = chan(Some(1), &[(true, Some(0)), (true, Some(0)), (true, Some(0))]);
        let cases: Vec<Case> = vec![
            (
                "healthy",
                vec![LEAD, UP, UP],
                Some(3),
                vec![Ok(ok3.clone())],
                10,
                vec![],
            ),
            ("no channels", vec![LEAD, UP, UP], None, vec![], 10, vec![]),
            (
                "node down",
                vec![LEAD, UP, DOWN],
                None,
                vec![Ok(ok3.clone())],
                10,
                vec!["nodes"],
            ),
            (
                "wrong count",
                vec![LEAD, UP, UP],
                Some(4),
                vec![],
                10,
                vec!["nodes"],
            ),
            (
                "no leader",
                vec![UP, UP, UP],
                None,
                vec![],
                10,
                vec!["meta_leader"],
            ),
            (
                "two leaders",
                vec![LEAD, LEAD, UP],
                None,
                vec![],
                10,
                vec!["meta_leader"],
            ),
            (
                "an offline leader does not count",
                vec![(Role::Leader, false), UP],
                None,
                vec![],
                10,
                vec!["nodes", "meta_leader"],
            ),
            (
                "one replica down keeps a quorum",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(
                    Some(1),
                    &[(true, Some(0)), (true, Some(0)), (false, Some(3))],
                ))],
                10,
                vec![],
            ),
            (
                "two replicas down lose it",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(None, &[(true, None), (false, None), (false, None)]))],
                10,
                vec!["quorum"],
            ),
            (
                "status unreadable",
                vec![LEAD, UP, UP],
                None,
                vec![Err("503".into())],
                10,
                vec!["quorum"],
            ),
            (
                "lag over the limit",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(
                    Some(1),
                    &[(true, Some(0)), (true, Some(11)), (true, Some(0))],
                ))],
                10,
                vec!["lag"],
            ),
            (
                "lag at the limit",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(
                    Some(1),
                    &[(true, Some(0)), (true, Some(10)), (true, Some(0))],
                ))],
                10,
                vec![],
            ),
            (
                "unknown lag is not a failure",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(Some(1), &[(true, Some(0)), (true, None), (true, None)]))],
                0,
                vec![],
            ),
            (
                "hibernated channel (no leader) is not judged on lag",
                vec![LEAD, UP, UP],
                None,
                vec![Ok(chan(None, &[(true, Some(99)), (true, None), (true, None)]))],
                0,
                vec![],
            ),
        ];
        for (name, spec, expect, chans, max_lag, want) in cases {
            let status: Vec<(String, Result<ChannelReplicas, String>)> =
                chans.into_iter().map(|c| ("c/2".to_string(), c)).collect();
            let facts = ChannelFacts {
                total: status.len() as u64,
                status: &status,
            };
            let report = evaluate(&nodes(&spec), &facts, expect, max_lag);
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(failed, want, "case {name:?}: {report:#?}");
            assert_eq!(report.healthy, want.is_empty(), "case {name:?}");
        }
    }

    #[test]
    fn details() {
        let status = vec![
            (
                "a/2".to_string(),
                Ok(chan(
                    Some(1),
                    &[(true, Some(0)), (true, Some(2)), (false, Some(7))],
                )),
            ),
            (
                "b/2".to_string(),
                Ok(chan(None, &[(true, None), (true, None), (true, None)])),
            ),
        ];
        let facts = ChannelFacts {
            total: 5,
            status: &status,
        };
        let r = evaluate(&nodes(&[LEAD, UP, DOWN]), &facts, None, 5);
        assert_eq!(
            render::health_text(&r),
            "✗ FAIL  nodes        2/3 nodes online\n\
             \x20                    - node 3 offline\n\
             ✓ ok    meta_leader  node 1 leads the metadata group\n\
             ✓ ok    quorum       2 channels, each with a quorum of online replicas (first 2 of 5 examined)\n\
             ✗ FAIL  lag          1 replicas more than 5 entries behind; 1 channels without a leader \
             (idle or electing) not judged\n\
             \x20                    - a/2: node 3 is 7 entries behind\n\
             cluster UNHEALTHY: 2 of 4 checks failed\n"
        );
    }
}
