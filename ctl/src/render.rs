//! Text rendering of the operator commands (`cluster health`, `node ...`, `channel ...`) and the
//! small report types that have no wire type of their own. Pure functions: no I/O, so every
//! layout is unit-tested below.
//!
//! Colour is never the only signal: checks carry `✓ ok` / `✗ FAIL`, the leader carries `*`,
//! an offline replica `(down)`.

use serde::{Deserialize, Serialize};
use wk_api::{
    Agreement, ChannelConfig, ChannelReplicas, ChannelVerify, EvacuateResp, NodeStatus, NodesResp,
    RemoveNodeResp,
};

use crate::output::{Align, Table};

/// `1,2,3`
pub fn ids(v: &[u64]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}

/// One check of `cluster health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name scripts can match on: `nodes`, `meta_leader`, `quorum`, `lag`.
    pub name: String,
    pub ok: bool,
    /// One line for people.
    pub detail: String,
    /// What failed, one entry per node or channel (e.g. `node 3 offline`, `g1/2: 1/3 online`).
    pub problems: Vec<String>,
}

/// `cluster health --output json`: every check and the overall verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Every check passed (the exit code is 0 exactly when this is true).
    pub healthy: bool,
    pub checks: Vec<Check>,
}

/// At most this many problems are listed under a failed check in text (JSON has them all).
const MAX_PROBLEMS_SHOWN: usize = 10;

pub fn health_text(r: &HealthReport) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let (sym, word) = if c.ok { ("✓", "ok") } else { ("✗", "FAIL") };
        out.push_str(&format!("{sym} {word:<4}  {:<11}  {}\n", c.name, c.detail));
        if !c.ok {
            for p in c.problems.iter().take(MAX_PROBLEMS_SHOWN) {
                out.push_str(&format!("                     - {p}\n"));
            }
            if c.problems.len() > MAX_PROBLEMS_SHOWN {
                out.push_str(&format!(
                    "                     ... and {} more (--output json lists all)\n",
                    c.problems.len() - MAX_PROBLEMS_SHOWN
                ));
            }
        }
    }
    let failed = r.checks.iter().filter(|c| !c.ok).count();
    if r.healthy {
        out.push_str("cluster healthy\n");
    } else {
        out.push_str(&format!(
            "cluster UNHEALTHY: {failed} of {} checks failed\n",
            r.checks.len()
        ));
    }
    out
}

/// The metadata role cell: `*` marks the metadata leader.
fn meta_role(n: &NodeStatus, leader: Option<u64>) -> String {
    if leader == Some(n.id) {
        format!("{}*", n.role.as_str())
    } else {
        n.role.as_str().to_string()
    }
}

/// `node list`: one row per node, by id.
pub fn node_list_text(resp: &NodesResp) -> String {
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("HTTP", Align::Left),
        ("CLUSTER", Align::Left),
        ("ONLINE", Align::Left),
        ("META_ROLE", Align::Left),
        ("LED", Align::Right),
        ("REPLICATED", Align::Right),
        ("CONNS", Align::Right),
    ]);
    let mut nodes = resp.nodes.clone();
    nodes.sort_by_key(|n| n.id);
    for n in &nodes {
        t.row(vec![
            n.id.to_string(),
            n.http_addr.clone(),
            n.cluster_addr.clone(),
            if n.online { "yes".into() } else { "NO".into() },
            meta_role(n, resp.meta_leader),
            n.channels_led.to_string(),
            n.channels_replicated.to_string(),
            n.connections.to_string(),
        ]);
    }
    t.render()
}

/// `node show --output json`: the node's row and every channel it replicates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDetail {
    pub node: NodeStatus,
    /// Whether the node leads the metadata group.
    pub meta_leader: bool,
    /// The channels whose replica set includes the node, with their live replica status.
    pub channels: Vec<ChannelReplicas>,
}

/// `1*,2,3(down)`: the leader starred, offline replicas marked.
pub fn replicas_cell(c: &ChannelReplicas) -> String {
    c.replicas
        .iter()
        .map(|r| {
            let mut s = r.node_id.to_string();
            if c.leader == Some(r.node_id) {
                s.push('*');
            }
            if !r.online {
                s.push_str("(down)");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn leader_term(c: &ChannelReplicas) -> Option<u64> {
    let leader = c.leader?;
    c.replicas.iter().find(|r| r.node_id == leader).map(|r| r.term)
}

pub fn node_show_text(d: &NodeDetail) -> String {
    let n = &d.node;
    let mut out = format!(
        "node {}\n  http      {}\n  cluster   {}\n  online    {}\n  metadata  {}{} (term {}, last index {}, applied {})\n  channels  leads {}, replicates {}\n  clients   {} connected\n",
        n.id,
        n.http_addr,
        n.cluster_addr,
        if n.online { "yes" } else { "NO" },
        n.role.as_str(),
        if d.meta_leader { "*" } else { "" },
        n.term,
        n.last_log_index,
        n.applied_index,
        n.channels_led,
        n.channels_replicated,
        n.connections,
    );
    if d.channels.is_empty() {
        out.push_str("\n(the node replicates no channel)\n");
        return out;
    }
    let mut t = Table::new(&[
        ("CHANNEL", Align::Left),
        ("TYPE", Align::Right),
        ("GROUP", Align::Right),
        ("REPLICAS", Align::Left),
        ("ROLE", Align::Left),
        ("APPLIED", Align::Right),
        ("LAG", Align::Right),
    ]);
    for c in &d.channels {
        let me = c.replicas.iter().find(|r| r.node_id == n.id);
        t.row(vec![
            c.channel_id.clone(),
            c.channel_type.to_string(),
            c.group_id.to_string(),
            replicas_cell(c),
            me.map_or("unknown", |r| r.role.as_str()).to_string(),
            me.map_or_else(|| "-".to_string(), |r| r.applied_index.to_string()),
            opt(me.and_then(|r| r.lag)),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}

/// `channel list --output json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelListing {
    /// Channels in the cluster (the listing may show fewer: `--limit`, filters).
    pub total: u64,
    pub channels: Vec<ChannelReplicas>,
}

pub fn channel_list_text(l: &ChannelListing, listed: usize) -> String {
    let mut t = Table::new(&[
        ("CHANNEL", Align::Left),
        ("TYPE", Align::Right),
        ("GROUP", Align::Right),
        ("LEADER", Align::Right),
        ("REPLICAS", Align::Left),
        ("APPLIED", Align::Right),
        ("MAX_LAG", Align::Right),
    ]);
    for c in &l.channels {
        let applied = c
            .leader
            .and_then(|id| c.replicas.iter().find(|r| r.node_id == id))
            .map(|r| r.applied_index);
        t.row(vec![
            c.channel_id.clone(),
            c.channel_type.to_string(),
            c.group_id.to_string(),
            opt(c.leader),
            replicas_cell(c),
            opt(applied),
            opt(c.max_lag()),
        ]);
    }
    let mut out = t.render();
    if (listed as u64) < l.total {
        out.push_str(&format!(
            "({} of {} channels examined; raise --limit to see more)\n",
            listed, l.total
        ));
    }
    out
}

/// One line per message seq at which online replicas report different checksums
/// ([`ChannelReplicas::agreement`]).
pub fn checksum_mismatches(c: &ChannelReplicas) -> Vec<String> {
    let Agreement::Diverged(diverged) = c.agreement() else {
        return Vec::new();
    };
    diverged
        .iter()
        .map(|d| {
            let who = d
                .replicas
                .iter()
                .map(|(node, sum)| format!("node {node} {sum}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("seq {}: {who}", d.seq)
        })
        .collect()
}

pub fn channel_show_text(c: &ChannelReplicas) -> String {
    let mut out = format!(
        "channel {} (type {})  group {}  leader {}  term {}\n",
        c.channel_id,
        c.channel_type,
        c.group_id,
        opt(c.leader),
        opt(leader_term(c))
    );
    let mut t = Table::new(&[
        ("NODE", Align::Right),
        ("ROLE", Align::Left),
        ("ONLINE", Align::Left),
        ("TERM", Align::Right),
        ("LAST", Align::Right),
        ("APPLIED", Align::Right),
        ("LAG", Align::Right),
        ("ACK_MS", Align::Right),
        ("SEQ", Align::Right),
        ("CHECKSUM", Align::Left),
    ]);
    for r in &c.replicas {
        let role = if c.leader == Some(r.node_id) {
            format!("{}*", r.role.as_str())
        } else {
            r.role.as_str().to_string()
        };
        t.row(vec![
            r.node_id.to_string(),
            role,
            if r.online { "yes".into() } else { "NO".into() },
            r.term.to_string(),
            r.last_log_index.to_string(),
            r.applied_index.to_string(),
            opt(r.lag),
            opt(r.last_ack_ms),
            r.message_seq.to_string(),
            if r.checksum.is_empty() {
                "-".into()
            } else {
                r.checksum.clone()
            },
        ]);
    }
    out.push_str(&t.render());
    let mismatches = checksum_mismatches(c);
    if mismatches.is_empty() {
        let top = c.top_seq();
        let online = c.replicas.iter().filter(|r| r.online).count();
        let caught_up = c
            .replicas
            .iter()
            .filter(|r| r.online && r.message_seq == top)
            .count();
        let behind = online - caught_up;
        out.push_str(&format!(
            "checksums agree: {caught_up} of {} replicas at seq {top}{}\n",
            c.replicas.len(),
            if behind > 0 {
                format!(" ({behind} behind, not compared)")
            } else {
                String::new()
            }
        ));
    } else {
        for m in mismatches {
            out.push_str(&format!("!! CHECKSUM MISMATCH among caught-up replicas, {m}\n"));
        }
    }
    for r in &c.replicas {
        if let Some(why) = &r.corrupt {
            out.push_str(&format!(
                "!! CORRUPT replica on node {}: {why} (serves nothing; the leader replaces it)\n",
                r.node_id
            ));
        }
    }
    out
}

/// `channel verify` / `cluster verify`: one row per replica of each channel, then a verdict
/// per failed channel and a summary line.
pub fn verify_text(channels: &[ChannelVerify], total: u64) -> String {
    let mut t = Table::new(&[
        ("CHANNEL", Align::Left),
        ("NODE", Align::Right),
        ("SEQ", Align::Right),
        ("VERIFIED", Align::Right),
        ("LOG", Align::Right),
        ("CHECKSUM", Align::Left),
        ("STATE", Align::Left),
    ]);
    let mut out = String::new();
    for c in channels {
        for r in &c.replicas {
            let state = match (&r.corrupt, &r.error) {
                (Some(_), _) => "CORRUPT",
                (None, Some(_)) => "UNVERIFIED",
                (None, None) => "ok",
            };
            t.row(vec![
                format!("{}/{}", c.channel_id, c.channel_type),
                r.node_id.to_string(),
                r.message_seq.to_string(),
                r.verified_seq.to_string(),
                r.log_entries.to_string(),
                if r.checksum.is_empty() {
                    "-".into()
                } else {
                    r.checksum.clone()
                },
                state.into(),
            ]);
        }
    }
    out.push_str(&t.render());
    for c in channels.iter().filter(|c| !c.ok) {
        let name = format!("{}/{}", c.channel_id, c.channel_type);
        for r in &c.replicas {
            if let Some(why) = &r.corrupt {
                out.push_str(&format!("!! CORRUPT {name} on node {}: {why}\n", r.node_id));
            } else if let Some(why) = &r.error {
                out.push_str(&format!("!! UNVERIFIED {name} on node {}: {why}\n", r.node_id));
            }
        }
        let sums: std::collections::BTreeSet<&str> = c
            .replicas
            .iter()
            .filter(|r| r.corrupt.is_none() && r.error.is_none())
            .map(|r| r.checksum.as_str())
            .collect();
        if sums.len() > 1 {
            out.push_str(&format!(
                "!! CHECKSUM MISMATCH {name} at seq {}: {}\n",
                c.common_seq,
                sums.into_iter().collect::<Vec<_>>().join(" vs ")
            ));
        }
    }
    let failed = channels.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        out.push_str(&format!(
            "✓ ok    {} of {total} channels verified: every replica intact, checksums agree\n",
            channels.len()
        ));
    } else {
        out.push_str(&format!(
            "✗ FAIL  {failed} of {} channels verified failed (of {total})\n",
            channels.len()
        ));
    }
    out
}

/// One row: a channel's configuration (after a leader transfer).
pub fn config_text(c: &ChannelConfig) -> String {
    let mut t = Table::new(&[
        ("CHANNEL", Align::Left),
        ("TYPE", Align::Right),
        ("GROUP", Align::Right),
        ("REPLICAS", Align::Left),
        ("LEADER", Align::Right),
        ("TERM", Align::Right),
    ]);
    t.row(vec![
        c.channel_id.clone(),
        c.channel_type.to_string(),
        c.group_id.to_string(),
        ids(&c.replicas),
        opt(c.leader),
        c.term.to_string(),
    ]);
    t.render()
}

pub fn evacuate_text(r: &EvacuateResp) -> String {
    let mut out = format!(
        "node {}: led {} channels, moved {}, stuck {}\n",
        r.node_id,
        r.led,
        r.moved,
        r.stuck.len()
    );
    if r.stuck.is_empty() {
        out.push_str(&format!("✓ ok    node {} leads no channel\n", r.node_id));
    } else {
        out.push_str(&format!(
            "✗ FAIL  node {} still leads {} channels:\n",
            r.node_id,
            r.stuck.len()
        ));
        for s in &r.stuck {
            out.push_str(&format!("  {s}\n"));
        }
    }
    out
}

/// `node remove --dry-run`: the planned replica moves, in the spirit of
/// `cockroach node decommission --dry-run`.
pub fn remove_plan_text(r: &RemoveNodeResp) -> String {
    let mut out = format!(
        "decommission plan for node {} (dry run, nothing changed): {} channel replicas to move\n",
        r.node_id,
        r.plan.len()
    );
    if r.plan.is_empty() {
        out.push_str("(the node holds no channel replica; removal only leaves the metadata group)\n");
        return out;
    }
    let mut t = Table::new(&[
        ("CHANNEL", Align::Left),
        ("TYPE", Align::Right),
        ("REPLICAS", Align::Left),
        ("NEW_REPLICAS", Align::Left),
        ("ADD", Align::Left),
        ("DROP", Align::Left),
        ("READINESS", Align::Left),
    ]);
    let mut short = 0;
    for m in &r.plan {
        let add: Vec<u64> = m.to.iter().copied().filter(|n| !m.from.contains(n)).collect();
        let drop: Vec<u64> = m.from.iter().copied().filter(|n| !m.to.contains(n)).collect();
        let ready = if m.to.contains(&r.node_id) {
            "BLOCKED: node stays in the placement".to_string()
        } else if m.to.len() < m.from.len() {
            short += 1;
            format!("fewer-replicas({}->{})", m.from.len(), m.to.len())
        } else {
            "ready".to_string()
        };
        t.row(vec![
            m.channel_id.clone(),
            m.channel_type.to_string(),
            ids(&m.from),
            ids(&m.to),
            if add.is_empty() { "-".into() } else { ids(&add) },
            ids(&drop),
            ready,
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    if short > 0 {
        out.push_str(&format!(
            "\n{short} channels will have fewer replicas: not enough other nodes for the replication factor\n"
        ));
    }
    out
}

pub fn remove_text(r: &RemoveNodeResp) -> String {
    if r.removed && r.stuck.is_empty() {
        return format!(
            "✓ ok    node {} removed: {} channels moved off it, 0 stuck; it left the metadata group\n",
            r.node_id, r.moved
        );
    }
    let mut out = format!(
        "✗ FAIL  node {} NOT removed: {} channels moved, {} stuck (the node stays a member until they move)\n",
        r.node_id,
        r.moved,
        r.stuck.len()
    );
    for s in &r.stuck {
        out.push_str(&format!("  {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wk_api::{ReplicaMove, ReplicaStatus, ReplicaVerify, Role};

    fn verified(node_id: u64, checksum: &str, corrupt: Option<&str>) -> ReplicaVerify {
        ReplicaVerify {
            node_id,
            online: true,
            message_seq: 5,
            verified_seq: 5,
            checksum: checksum.into(),
            log_entries: 7,
            corrupt: corrupt.map(String::from),
            error: None,
        }
    }

    #[test]
    fn verify_text_flags_corruption_and_mismatch() {
        let good = ChannelVerify {
            channel_id: "g1".into(),
            channel_type: 2,
            group_id: 3,
            common_seq: 5,
            ok: true,
            replicas: vec![verified(1, "aa", None), verified(2, "aa", None)],
        };
        let text = verify_text(std::slice::from_ref(&good), 1);
        assert!(text.contains("✓ ok    1 of 1 channels verified"), "{text}");
        let bad = ChannelVerify {
            ok: false,
            replicas: vec![
                verified(1, "aa", None),
                verified(2, "bb", None),
                verified(3, "", Some("row fails its checksum")),
            ],
            ..good.clone()
        };
        let text = verify_text(&[good, bad], 2);
        assert!(
            text.contains("!! CORRUPT g1/2 on node 3: row fails its checksum"),
            "{text}"
        );
        assert!(
            text.contains("!! CHECKSUM MISMATCH g1/2 at seq 5: aa vs bb"),
            "{text}"
        );
        assert!(text.contains("✗ FAIL  1 of 2 channels verified failed"), "{text}");
    }

    fn replica(id: u64, role: Role, applied: u64, checksum: &str) -> ReplicaStatus {
        ReplicaStatus {
            node_id: id,
            online: role != Role::Unknown,
            role,
            term: 4,
            last_log_index: applied,
            applied_index: applied,
            lag: if role == Role::Unknown { None } else { Some(0) },
            last_ack_ms: match role {
                Role::Leader => Some(0),
                Role::Unknown => None,
                _ => Some(40),
            },
            message_seq: applied.saturating_sub(2),
            checksum: checksum.into(),
            corrupt: None,
        }
    }

    fn channel(replicas: Vec<ReplicaStatus>) -> ChannelReplicas {
        ChannelReplicas {
            channel_id: "g1".into(),
            channel_type: 2,
            group_id: 7,
            leader: replicas
                .iter()
                .find(|r| r.role == Role::Leader)
                .map(|r| r.node_id),
            replicas,
        }
    }

    #[test]
    fn channel_show_agreeing_replicas() {
        let c = channel(vec![
            replica(1, Role::Leader, 12, "00000000000000aa"),
            replica(2, Role::Follower, 12, "00000000000000aa"),
            replica(3, Role::Unknown, 0, ""),
        ]);
        assert_eq!(
            channel_show_text(&c),
            "channel g1 (type 2)  group 7  leader 1  term 4\n\
             NODE  ROLE      ONLINE  TERM  LAST  APPLIED  LAG  ACK_MS  SEQ  CHECKSUM\n   \
                1  leader*   yes        4    12       12    0       0   10  00000000000000aa\n   \
                2  follower  yes        4    12       12    0      40   10  00000000000000aa\n   \
                3  unknown   NO         4     0        0    -       -    0  -\n\
             checksums agree: 2 of 3 replicas at seq 10\n"
        );
        assert_eq!(replicas_cell(&c), "1*,2,3(down)");
    }

    #[test]
    fn checksum_mismatch_is_loud() {
        let c = channel(vec![
            replica(1, Role::Leader, 12, "aa"),
            replica(2, Role::Follower, 12, "bb"),
            replica(3, Role::Follower, 11, "cc"),
        ]);
        assert_eq!(
            checksum_mismatches(&c),
            vec!["seq 10: node 1 aa, node 2 bb".to_string()]
        );
        assert!(
            channel_show_text(&c)
                .ends_with("!! CHECKSUM MISMATCH among caught-up replicas, seq 10: node 1 aa, node 2 bb\n")
        );
        // Replicas at different seqs are not compared.
        let c = channel(vec![
            replica(1, Role::Leader, 12, "aa"),
            replica(2, Role::Follower, 11, "bb"),
        ]);
        assert!(checksum_mismatches(&c).is_empty());
        assert!(channel_show_text(&c).ends_with("at seq 10 (1 behind, not compared)\n"));
        // The same messages agree whatever the log indexes (a blank or membership entry).
        let c = channel(vec![
            replica(1, Role::Leader, 13, "aa"),
            ReplicaStatus {
                message_seq: 11,
                ..replica(2, Role::Follower, 12, "aa")
            },
        ]);
        assert!(checksum_mismatches(&c).is_empty());
        assert!(channel_show_text(&c).ends_with("checksums agree: 2 of 2 replicas at seq 11\n"));
    }

    #[test]
    fn health_lines() {
        let r = HealthReport {
            healthy: false,
            checks: vec![
                Check {
                    name: "nodes".into(),
                    ok: false,
                    detail: "2/3 nodes online".into(),
                    problems: vec!["node 3 offline".into()],
                },
                Check {
                    name: "meta_leader".into(),
                    ok: true,
                    detail: "node 1 leads the metadata group".into(),
                    problems: vec![],
                },
            ],
        };
        assert_eq!(
            health_text(&r),
            "✗ FAIL  nodes        2/3 nodes online\n\
             \x20                    - node 3 offline\n\
             ✓ ok    meta_leader  node 1 leads the metadata group\n\
             cluster UNHEALTHY: 1 of 2 checks failed\n"
        );
    }

    #[test]
    fn remove_plan() {
        let r = RemoveNodeResp {
            node_id: 4,
            dry_run: true,
            plan: vec![
                ReplicaMove {
                    channel_id: "a".into(),
                    channel_type: 2,
                    from: vec![4, 1, 2],
                    to: vec![3, 1, 2],
                },
                ReplicaMove {
                    channel_id: "b".into(),
                    channel_type: 2,
                    from: vec![1, 4],
                    to: vec![1],
                },
            ],
            moved: 0,
            stuck: vec![],
            removed: false,
        };
        assert_eq!(
            remove_plan_text(&r),
            "decommission plan for node 4 (dry run, nothing changed): 2 channel replicas to move\n\
             \n\
             CHANNEL  TYPE  REPLICAS  NEW_REPLICAS  ADD  DROP  READINESS\n\
             a           2  4,1,2     3,1,2         3    4     ready\n\
             b           2  1,4       1             -    4     fewer-replicas(2->1)\n\
             \n\
             1 channels will have fewer replicas: not enough other nodes for the replication factor\n"
        );
    }
}
