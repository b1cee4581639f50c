//! Replica placement by rendezvous (highest-random-weight) hashing: every node scores each
//! channel, the top `n` scores hold its replicas, highest first (the preferred leader).
//! Adding a node moves only the channels for which the new node scores in the top `n`,
//! about `n/N` of them.

/// The replica set for `key` among `nodes`, preferred leader first; at most `n` replicas.
pub fn place(key: &[u8], nodes: impl IntoIterator<Item = u64>, n: usize) -> Vec<u64> {
    let mut scored: Vec<(u64, u64)> = nodes.into_iter().map(|id| (score(key, id), id)).collect();
    // Ties (astronomically rare) break on the node id so the order is total.
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, id)| *id);
    scored.into_iter().take(n).map(|(_, id)| id).collect()
}

fn score(key: &[u8], node: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table-driven from testdata/placement.txt: `key nodes n -> expected`.
    #[test]
    fn placement_table() {
        let text = include_str!("../../../testdata/placement.txt");
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (input, expected) = line.split_once("->").expect("line has ->");
            let mut parts = input.split_whitespace();
            let key = parts.next().expect("key");
            let nodes: Vec<u64> = parts
                .next()
                .expect("nodes")
                .split(',')
                .map(|s| s.parse().expect("node id"))
                .collect();
            let n: usize = parts.next().expect("n").parse().expect("n");
            let want: Vec<u64> = expected
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().expect("id"))
                .collect();
            assert_eq!(
                place(key.as_bytes(), nodes, n),
                want,
                "testdata/placement.txt line {}",
                no + 1
            );
        }
    }

    #[test]
    fn placement_is_order_independent_and_capped() {
        let a = place(b"g1", [1, 2, 3, 4, 5], 3);
        let b = place(b"g1", [5, 4, 3, 2, 1], 3);
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(place(b"g1", [1, 2], 3).len(), 2);
        assert!(place(b"g1", [], 3).is_empty());
    }

    #[test]
    fn adding_a_node_moves_about_one_nth() {
        let keys: Vec<String> = (0..4000).map(|i| format!("channel-{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| place(k.as_bytes(), 1..=4, 3) != place(k.as_bytes(), 1..=5, 3))
            .count();
        // With 3 of 5 slots, a new node enters the top 3 for ~3/5 of keys; each such key
        // changes exactly one replica. Anything near "all keys" would mean a bad hash.
        let frac = moved as f64 / keys.len() as f64;
        assert!((0.5..0.7).contains(&frac), "moved fraction {frac}");
        for k in &keys {
            let before = place(k.as_bytes(), 1..=4, 3);
            let after = place(k.as_bytes(), 1..=5, 3);
            let kept = after.iter().filter(|id| before.contains(id)).count();
            assert!(kept >= 2, "{k}: {before:?} -> {after:?}");
        }
    }
}
