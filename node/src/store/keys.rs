//! Key encodings. Integers are big-endian so LMDB's byte order is numeric order, and every
//! per-group key starts with the group id so one group's rows are one contiguous range.

pub fn group(g: u64) -> [u8; 8] {
    g.to_be_bytes()
}

pub fn group_u64(g: u64, n: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&g.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Decode the second half of a `group_u64` key.
pub fn u64_suffix(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The smallest key greater than every key starting with `prefix` (exclusive range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no finite upper bound; a key longer than any we write serves.
    vec![u8::MAX; prefix.len() + 1]
}

/// Dedup index key: the group, then a 64-bit hash of the sender and client_msg_no (the uid is
/// length-prefixed so no uid/client_msg_no split is ambiguous).
pub fn dedup(g: u64, from_uid: &str, client_msg_no: &str) -> [u8; 16] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(from_uid.len() as u16).to_be_bytes());
    h.update(from_uid.as_bytes());
    h.update(client_msg_no.as_bytes());
    group_u64(g, h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ranges_do_not_overlap() {
        let end = prefix_end(&group(7));
        assert!(group_u64(7, u64::MAX).as_slice() < end.as_slice());
        assert!(group_u64(8, 0).as_slice() >= end.as_slice());
        assert_eq!(u64_suffix(&group_u64(3, 42)), Some(42));
        assert_eq!(prefix_end(&[1, 0xFF]), vec![2]);
    }

    #[test]
    fn dedup_keys_are_unambiguous() {
        assert_ne!(dedup(1, "ab", "c"), dedup(1, "a", "bc"));
    }
}
