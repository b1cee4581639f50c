//! The drill checker (pure): the operation history and what was read back in, safety verdicts
//! and figures out. No I/O, so every rule is tested table-style below.
//!
//! Rules (Jepsen's, for a register per client_msg_no with sequential writers):
//! - lost: acknowledged, but absent from the read-back;
//! - misplaced: acknowledged at seq s, stored at another seq;
//! - duplicated: one client_msg_no stored at more than one seq;
//! - reordered: a writer's acknowledged seqs do not increase in history order (its operations
//!   never overlap, so a later one must land later);
//! - corrupted: the stored payload differs from what the writer sent;
//! - seq gaps: the channel's seqs are not exactly 1..=n;
//! - failed but visible: an operation recorded as failed (indeterminate) that was stored;
//!   reported, not a violation.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::probe::{Op, OpOutcome, Stored, payload_for};

/// The safety verdicts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safety {
    /// Operations in the history.
    pub ops: u64,
    /// Acknowledged operations (each one is checked).
    pub acked: u64,
    /// Operations recorded as failed (indeterminate).
    pub failed: u64,
    /// Messages read back over all probe channels.
    pub stored: u64,
    pub lost: u64,
    pub misplaced: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Channels whose replicas disagree (same seq, different checksum; or different
    /// read-backs through different nodes) plus messages whose payload was corrupted.
    pub inconsistent: u64,
    /// Missing seqs in 1..=max over all channels.
    pub seq_gaps: u64,
    /// Failed operations that were stored anyway (not a violation).
    pub failed_visible: u64,
}

impl Safety {
    #[cfg(test)]
    pub fn violations(&self) -> u64 {
        self.lost + self.misplaced + self.duplicated + self.reordered + self.inconsistent + self.seq_gaps
    }
}

/// Checks the history against the read-back of every probe channel (`stored` by channel).
/// `inconsistent` starts with what the replica comparison found.
pub fn check(
    ops: &[Op],
    stored: &BTreeMap<String, Vec<Stored>>,
    payload_size: u32,
    replica_mismatches: u64,
) -> Safety {
    let mut s = Safety {
        ops: ops.len() as u64,
        inconsistent: replica_mismatches,
        ..Safety::default()
    };
    // client_msg_no -> every (seq, payload) it is stored at, per channel.
    let mut by_no: HashMap<(&str, &str), Vec<&Stored>> = HashMap::new();
    for (ch, msgs) in stored {
        s.stored += msgs.len() as u64;
        let max = msgs.iter().map(|m| m.seq).max().unwrap_or(0);
        let mut seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        s.seq_gaps += max - seqs.len() as u64;
        for m in msgs {
            by_no
                .entry((ch.as_str(), m.client_msg_no.as_str()))
                .or_default()
                .push(m);
        }
    }
    s.duplicated = by_no.values().map(|v| v.len() as u64 - 1).sum();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    for op in ops {
        let found = by_no.get(&(op.channel.as_str(), op.client_msg_no.as_str()));
        if let Some(found) = found {
            let want = payload_for(&op.client_msg_no, payload_size);
            s.inconsistent += found.iter().filter(|m| m.payload != want).count() as u64;
        }
        match op.outcome {
            OpOutcome::Failed => {
                s.failed += 1;
                if found.is_some() {
                    s.failed_visible += 1;
                }
            }
            OpOutcome::Ok => {
                s.acked += 1;
                let seq = op.seq.unwrap_or(0);
                match found {
                    None => s.lost += 1,
                    Some(v) if !v.iter().any(|m| m.seq == seq) => s.misplaced += 1,
                    Some(_) => {}
                }
                let last = last_seq.entry(op.writer).or_insert(0);
                if seq <= *last {
                    s.reordered += 1;
                } else {
                    *last = seq;
                }
            }
        }
    }
    s
}

/// p50/p99/max of a set of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pct {
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles; None for no values.
pub fn pct(values: &[f64]) -> Option<Pct> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let r = |x: f64| (x * 10.0).round() / 10.0;
    Some(Pct {
        n: v.len() as u64,
        p50: r(rank(0.50)),
        p99: r(rank(0.99)),
        max: r(v[v.len() - 1]),
    })
}

/// The unavailability window of one writer around a fault at `t` (ms): from its last
/// acknowledgement at or before `t` to its first one after `t`. None when it has no ack on
/// one side.
pub fn window(ack_times: &[f64], t: f64) -> Option<f64> {
    let before = ack_times.iter().copied().filter(|a| *a <= t).reduce(f64::max)?;
    let after = ack_times.iter().copied().filter(|a| *a > t).reduce(f64::min)?;
    Some(after - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(writer: u32, ch: &str, no: &str, ok: Option<u64>) -> Op {
        Op {
            writer,
            channel: ch.into(),
            client_msg_no: no.into(),
            start_ms: 0.0,
            end_ms: 0.0,
            outcome: if ok.is_some() {
                OpOutcome::Ok
            } else {
                OpOutcome::Failed
            },
            attempts: 1,
            seq: ok,
            message_id: ok,
            error: None,
        }
    }

    fn st(no: &str, seq: u64) -> Stored {
        Stored {
            client_msg_no: no.into(),
            seq,
            message_id: seq,
            payload: payload_for(no, 8),
        }
    }

    #[test]
    fn verdicts() {
        type Case = (&'static str, Vec<Op>, Vec<Stored>, [u64; 7]);
        // [lost, misplaced, duplicated, reordered, inconsistent, seq_gaps, failed_visible]
        let cases: Vec<Case> = vec![
            (
                "clean",
                vec![op(0, "c", "a", Some(1)), op(0, "c", "b", Some(2))],
                vec![st("a", 1), st("b", 2)],
                [0, 0, 0, 0, 0, 0, 0],
            ),
            (
                "lost",
                vec![op(0, "c", "a", Some(1)), op(0, "c", "b", Some(2))],
                vec![st("a", 1)],
                [1, 0, 0, 0, 0, 0, 0],
            ),
            (
                "misplaced",
                vec![op(0, "c", "a", Some(1))],
                vec![st("x", 1), st("a", 2)],
                [0, 1, 0, 0, 0, 0, 0],
            ),
            (
                "duplicated",
                vec![op(0, "c", "a", Some(1))],
                vec![st("a", 1), st("a", 2)],
                [0, 0, 1, 0, 0, 0, 0],
            ),
            (
                "reordered per writer",
                vec![
                    op(0, "c", "a", Some(2)),
                    op(0, "c", "b", Some(1)),
                    op(1, "c", "z", Some(3)),
                ],
                vec![st("b", 1), st("a", 2), st("z", 3)],
                [0, 0, 0, 1, 0, 0, 0],
            ),
            (
                "two writers interleave fine",
                vec![op(0, "c", "a", Some(2)), op(1, "c", "b", Some(1))],
                vec![st("b", 1), st("a", 2)],
                [0, 0, 0, 0, 0, 0, 0],
            ),
            (
                "corrupted payload",
                vec![op(0, "c", "a", Some(1))],
                vec![Stored {
                    payload: payload_for("other", 8),
                    ..st("a", 1)
                }],
                [0, 0, 0, 0, 1, 0, 0],
            ),
            (
                "gap",
                vec![op(0, "c", "a", Some(1)), op(0, "c", "b", Some(3))],
                vec![st("a", 1), st("b", 3)],
                [0, 0, 0, 0, 0, 1, 0],
            ),
            (
                "failed but visible",
                vec![op(0, "c", "a", None), op(0, "c", "b", Some(2))],
                vec![st("a", 1), st("b", 2)],
                [0, 0, 0, 0, 0, 0, 1],
            ),
            (
                "failed and absent",
                vec![op(0, "c", "a", None)],
                vec![],
                [0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (name, ops, stored, want) in cases {
            let mut m = BTreeMap::new();
            m.insert("c".to_string(), stored);
            let s = check(&ops, &m, 8, 0);
            let got = [
                s.lost,
                s.misplaced,
                s.duplicated,
                s.reordered,
                s.inconsistent,
                s.seq_gaps,
                s.failed_visible,
            ];
            assert_eq!(got, want, "{name}: {s:?}");
            assert_eq!(s.violations() == 0, want[..6].iter().all(|v| *v == 0), "{name}");
        }
    }

    #[test]
    fn same_no_on_two_channels_is_two_messages() {
        let mut m = BTreeMap::new();
        m.insert("c1".to_string(), vec![st("a", 1)]);
        m.insert("c2".to_string(), vec![st("a", 1)]);
        let s = check(&[op(0, "c1", "a", Some(1)), op(1, "c2", "a", Some(1))], &m, 8, 2);
        assert_eq!((s.duplicated, s.lost, s.inconsistent), (0, 0, 2));
    }

    #[test]
    fn percentiles_and_windows() {
        assert_eq!(pct(&[]), None);
        let p = pct(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((p.n, p.p50, p.p99, p.max), (3, 2.0, 3.0, 3.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = pct(&v).expect("values");
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let acks = [10.0, 20.0, 500.0, 510.0];
        assert_eq!(window(&acks, 25.0), Some(480.0));
        assert_eq!(window(&acks, 20.0), Some(480.0));
        assert_eq!(window(&acks, 5.0), None);
        assert_eq!(window(&acks, 600.0), None);
    }
}
