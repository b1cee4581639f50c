//! How to read a channel's replica view ([`ChannelReplicas`]): whether the replicas agree, how
//! far behind they are, whether the group is hibernated. Written once here for `wkctl`, the
//! dashboard and the tests.

use crate::types::{ChannelReplicas, Role};

/// How a channel's replicas compare ([`ChannelReplicas::agreement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    /// Every replica is online and holds the same messages: the same last message seq and the
    /// same running checksum.
    Agree { seq: u64 },
    /// Replicas at the same message seq report different checksums: their copies differ.
    /// One entry per such seq.
    Diverged(Vec<Divergence>),
    /// Nothing differs yet, but the replicas are not all there: one is offline or behind
    /// (or the view lists none).
    Converging,
}

/// Replicas that hold the same number of messages but report different checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The message seq they all report.
    pub seq: u64,
    /// (node id, checksum) of each online replica at `seq`.
    pub replicas: Vec<(u64, String)>,
}

impl ChannelReplicas {
    /// Whether the replicas hold the same messages. The checksum is a running hash over every
    /// applied message, so replicas at the same message seq must report the same checksum,
    /// and replicas agree when all are online at one seq with one checksum. Log indexes are
    /// not compared: blank and membership entries move them without adding a message, so
    /// replicas with the same messages may differ there (a group that hibernated before a
    /// follower received its last membership entry). Replicas that did not answer (offline,
    /// no checksum) are never compared.
    pub fn agreement(&self) -> Agreement {
        let mut by_seq: std::collections::BTreeMap<u64, Vec<(u64, String)>> = Default::default();
        for r in self
            .replicas
            .iter()
            .filter(|r| r.online && !r.checksum.is_empty())
        {
            by_seq
                .entry(r.message_seq)
                .or_default()
                .push((r.node_id, r.checksum.clone()));
        }
        let diverged: Vec<Divergence> = by_seq
            .iter()
            .filter(|(_, rs)| rs.iter().any(|(_, c)| *c != rs[0].1))
            .map(|(seq, rs)| Divergence {
                seq: *seq,
                replicas: rs.clone(),
            })
            .collect();
        if !diverged.is_empty() {
            return Agreement::Diverged(diverged);
        }
        let answered: usize = by_seq.values().map(Vec::len).sum();
        match by_seq.keys().next() {
            Some(&seq) if by_seq.len() == 1 && answered == self.replicas.len() => Agreement::Agree { seq },
            _ => Agreement::Converging,
        }
    }

    /// The highest message seq any online replica holds; 0 when none answered.
    pub fn top_seq(&self) -> u64 {
        self.replicas
            .iter()
            .filter(|r| r.online)
            .map(|r| r.message_seq)
            .max()
            .unwrap_or(0)
    }

    /// The largest lag of any replica: entries behind the leader's last log index, as the
    /// leader sees it. `None` when no lag is known (no leader: hibernated or electing).
    pub fn max_lag(&self) -> Option<u64> {
        self.replicas.iter().filter_map(|r| r.lag).max()
    }

    /// No leader, and no replica that answered runs the group: all report role `hibernated`
    /// (nodes since the role existed), `unknown` (older nodes), or are uninitialized learners
    /// at term 0 (never started: created, no message yet). Idle, not failing.
    pub fn is_hibernated(&self) -> bool {
        let mut online = self.replicas.iter().filter(|r| r.online).peekable();
        self.leader.is_none()
            && online.peek().is_some()
            && online.all(|r| {
                matches!(r.role, Role::Hibernated | Role::Unknown) || (r.role == Role::Learner && r.term == 0)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ReplicaStatus;

    /// A replica of node `id`; `seq` and `sum` None: offline.
    fn replica(id: u64, role: Role, seq_sum: Option<(u64, &str)>) -> ReplicaStatus {
        ReplicaStatus {
            node_id: id,
            online: seq_sum.is_some(),
            role,
            term: 3,
            last_log_index: 20 + id,
            applied_index: 20 + id,
            lag: None,
            last_ack_ms: None,
            message_seq: seq_sum.map_or(0, |s| s.0),
            checksum: seq_sum.map_or(String::new(), |s| s.1.into()),
            corrupt: None,
        }
    }

    fn channel(leader: Option<u64>, replicas: Vec<ReplicaStatus>) -> ChannelReplicas {
        ChannelReplicas {
            channel_id: "g1".into(),
            channel_type: 2,
            group_id: 7,
            leader,
            replicas,
        }
    }

    #[test]
    fn agreement_compares_messages_not_log_indexes() {
        use Role::*;
        let cases: Vec<(&str, Vec<ReplicaStatus>, Agreement)> = vec![
            (
                "same seq and checksum, different log indexes",
                vec![
                    replica(1, Leader, Some((5, "aa"))),
                    replica(2, Follower, Some((5, "aa"))),
                ],
                Agreement::Agree { seq: 5 },
            ),
            (
                "one behind",
                vec![
                    replica(1, Leader, Some((5, "aa"))),
                    replica(2, Follower, Some((4, "bb"))),
                ],
                Agreement::Converging,
            ),
            (
                "one offline",
                vec![replica(1, Leader, Some((5, "aa"))), replica(2, Unknown, None)],
                Agreement::Converging,
            ),
            ("no replicas", vec![], Agreement::Converging),
            (
                "same seq, different checksums",
                vec![
                    replica(1, Leader, Some((5, "aa"))),
                    replica(2, Follower, Some((5, "bb"))),
                    replica(3, Follower, Some((4, "cc"))),
                ],
                Agreement::Diverged(vec![Divergence {
                    seq: 5,
                    replicas: vec![(1, "aa".into()), (2, "bb".into())],
                }]),
            ),
        ];
        for (name, replicas, want) in cases {
            assert_eq!(channel(Some(1), replicas).agreement(), want, "{name}");
        }
    }

    #[test]
    fn hibernated_needs_no_leader_and_no_running_replica() {
        use Role::*;
        let idle = || vec![replica(1, Hibernated, Some((5, "aa"))), replica(2, Unknown, None)];
        assert!(channel(None, idle()).is_hibernated());
        assert!(!channel(Some(1), idle()).is_hibernated(), "a leader runs it");
        let never_started = vec![ReplicaStatus {
            term: 0,
            ..replica(1, Learner, Some((0, "00")))
        }];
        assert!(channel(None, never_started).is_hibernated());
        let electing = vec![
            replica(1, Candidate, Some((5, "aa"))),
            replica(2, Hibernated, None),
        ];
        assert!(!channel(None, electing).is_hibernated());
        let all_down = vec![replica(1, Unknown, None)];
        assert!(!channel(None, all_down).is_hibernated(), "nobody answered");
    }

    #[test]
    fn lag_and_top_seq() {
        let mut c = channel(
            Some(1),
            vec![
                replica(1, Role::Leader, Some((9, "aa"))),
                replica(2, Role::Follower, Some((7, "bb"))),
                replica(3, Role::Unknown, None),
            ],
        );
        assert_eq!(c.top_seq(), 9);
        assert_eq!(c.max_lag(), None);
        c.replicas[0].lag = Some(0);
        c.replicas[1].lag = Some(4);
        assert_eq!(c.max_lag(), Some(4));
    }
}
