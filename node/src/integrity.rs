//! Record integrity: the per-row seal of every stored message and Raft log entry, and the
//! node's register of channel groups found corrupt here.
//!
//! A sealed row is `value ++ xxh3_64(value, seed = xxh3_64(key))` (8 bytes, little-endian).
//! The key is part of the hash so a row that moved (a flipped key byte in a B-tree page) is
//! caught as well as a flipped value byte. Every read path of the `msgs` and `log` tables
//! opens rows with [`open`], so bytes that fail their seal are never decoded, served or
//! replicated.
//!
//! Invariants:
//! - A group in the register is never served here: its Raft group is stopped and refuses to
//!   start (`cluster::Node::group`), so client requests get `Unavailable` and are routed to
//!   another replica, and this replica never becomes leader or replicates from its log.
//! - A group leaves the register only when its rows are deleted (`cluster::Node::drop_group`),
//!   which happens only after the channel leader removed this replica from the membership;
//!   it then comes back as a fresh learner (`cluster::repair`). Nothing is rewritten in place.
//!
//! - The register survives restarts: a channel group's mark is written to the `local` table
//!   when its repair starts ([`persist`]), loaded before the node serves anything ([`load`]),
//!   and deleted in the transaction that deletes the group's rows ([`forget`]). Otherwise a
//!   restart before the repair finished would let the replica serve and campaign again until a
//!   read happened to touch the bad row.
//!
//! The register is process-wide: a process opens exactly one LMDB environment (heed requires
//! it), so "this process" and "this data dir" are the same thing, and the log store (which
//! has no handle on the node runtime) can report what it finds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::raft::GroupId;
use crate::store::{KvRead, KvWrite, StoreError, Table, encode, keys};

/// Bytes a seal adds to a row.
pub const SEAL_LEN: usize = 8;

fn seal_of(key: &[u8], value: &[u8]) -> [u8; SEAL_LEN] {
    let seed = xxhash_rust::xxh3::xxh3_64(key);
    xxhash_rust::xxh3::xxh3_64_with_seed(value, seed).to_le_bytes()
}

/// The row to store for `value` under `key`.
pub fn seal(key: &[u8], mut value: Vec<u8>) -> Vec<u8> {
    let s = seal_of(key, &value);
    value.extend_from_slice(&s);
    value
}

/// The value of a sealed row, or `Corrupt` when the row fails its seal.
pub fn open<'a>(table: Table, key: &[u8], row: &'a [u8]) -> Result<&'a [u8], StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { table, reason };
    let Some(split) = row.len().checked_sub(SEAL_LEN) else {
        return Err(corrupt(format!("row {} is shorter than its seal", hex(key))));
    };
    let (value, stored) = row.split_at(split);
    if stored != seal_of(key, value) {
        return Err(corrupt(format!("row {} fails its checksum", hex(key))));
    }
    Ok(value)
}

/// Open and decode a sealed row.
pub fn decode<T: serde::de::DeserializeOwned>(table: Table, key: &[u8], row: &[u8]) -> Result<T, StoreError> {
    crate::store::decode(table, open(table, key, row)?)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a group is corrupt here, and since when (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    pub reason: String,
    pub since_ms: u64,
}

/// Groups found corrupt on this node; std mutex, held only to look up or edit the map.
static CORRUPT: Mutex<BTreeMap<GroupId, Corruption>> = Mutex::new(BTreeMap::new());
/// Corruptions detected since the process started (a group counts once per detection).
static DETECTED: AtomicU64 = AtomicU64::new(0);
/// Replicas of this node repaired (dropped and rebuilt) since the process started.
static REPAIRED: AtomicU64 = AtomicU64::new(0);

/// Record that group `g` failed a check here. Logged once per group until it is repaired.
pub fn report(g: GroupId, err: &StoreError) {
    let mut map = CORRUPT.lock().expect("corrupt register poisoned");
    if map.contains_key(&g) {
        return;
    }
    tracing::error!(group = g, error = %err, "CORRUPT: stored record fails its checksum; this replica stops serving the group until it is repaired");
    DETECTED.fetch_add(1, Ordering::Relaxed);
    map.insert(
        g,
        Corruption {
            reason: err.to_string(),
            since_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        },
    );
}

/// Report `err` against `g` when it is a corruption; pass it on either way.
pub fn check<T>(g: GroupId, r: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(e @ StoreError::Corrupt { .. }) = &r {
        report(g, e);
    }
    r
}

pub fn corrupt(g: GroupId) -> Option<Corruption> {
    CORRUPT
        .lock()
        .expect("corrupt register poisoned")
        .get(&g)
        .cloned()
}

/// Every group corrupt here.
pub fn corrupt_groups() -> BTreeMap<GroupId, Corruption> {
    CORRUPT.lock().expect("corrupt register poisoned").clone()
}

/// The group's rows are gone (it was removed from this replica): it is no longer corrupt.
pub fn cleared(g: GroupId) {
    if CORRUPT
        .lock()
        .expect("corrupt register poisoned")
        .remove(&g)
        .is_some()
    {
        REPAIRED.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            group = g,
            "corrupt replica data deleted; it rejoins as a fresh learner"
        );
    }
}

/// Where group `g`'s mark is kept in the `local` table.
fn mark_key(g: GroupId) -> Vec<u8> {
    [MARK_PREFIX, &keys::group(g)].concat()
}

const MARK_PREFIX: &[u8] = b"corrupt/";

/// Keep group `g`'s mark (it is in the register) across restarts, while its rows are here: a
/// repair attempt racing the delete of the rows must not bring the mark back without them.
pub fn persist(w: &mut impl KvWrite, g: GroupId) -> Result<(), StoreError> {
    let Some(c) = corrupt(g) else { return Ok(()) };
    let (from, to) = (keys::group(g), keys::prefix_end(&keys::group(g)));
    let has_rows =
        w.get(Table::Sm, &from)?.is_some() || !w.range(Table::Log, &from, &to, 1, false)?.is_empty();
    if has_rows {
        w.put(Table::Local, &mark_key(g), &encode(&c))?;
    }
    Ok(())
}

/// Delete group `g`'s kept mark; part of the transaction that deletes its rows.
pub fn forget(w: &mut impl KvWrite, g: GroupId) -> Result<(), StoreError> {
    w.delete(Table::Local, &mark_key(g))
}

/// Put every kept mark back into the register (at start, before anything is served).
pub fn load(kv: &impl KvRead) -> Result<(), StoreError> {
    let rows = kv.range(
        Table::Local,
        MARK_PREFIX,
        &keys::prefix_end(MARK_PREFIX),
        usize::MAX,
        false,
    )?;
    let mut map = CORRUPT.lock().expect("corrupt register poisoned");
    for (k, v) in rows {
        let Some(g) = keys::u64_suffix(&k) else { continue };
        let c: Corruption = crate::store::decode(Table::Local, &v)?;
        tracing::error!(group = g, reason = %c.reason, "CORRUPT since before the restart: this replica serves nothing of the group until it is repaired");
        map.insert(g, c);
    }
    Ok(())
}

/// (detected, repaired) since the process started, for `/metrics`.
pub fn counters() -> (u64, u64) {
    (DETECTED.load(Ordering::Relaxed), REPAIRED.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_catch_flipped_value_key_and_truncation() {
        let row = seal(b"k1", b"hello".to_vec());
        assert_eq!(open(Table::Msgs, b"k1", &row).expect("intact"), b"hello");
        for i in 0..row.len() {
            let mut bad = row.clone();
            bad[i] ^= 0x01;
            assert!(open(Table::Msgs, b"k1", &bad).is_err(), "flip at {i} undetected");
        }
        assert!(open(Table::Msgs, b"k2", &row).is_err(), "a moved row is caught");
        assert!(open(Table::Msgs, b"k1", &row[..4]).is_err());
        assert!(open(Table::Msgs, b"k1", &[]).is_err());
    }

    #[test]
    fn register_reports_once_and_clears() {
        let g = 9_999_001;
        let e = StoreError::Corrupt {
            table: Table::Log,
            reason: "test".into(),
        };
        let (d0, r0) = counters();
        report(g, &e);
        report(g, &e);
        assert!(corrupt(g).is_some());
        assert_eq!(counters().0, d0 + 1);
        cleared(g);
        assert!(corrupt(g).is_none());
        assert_eq!(counters().1, r0 + 1);
    }

    #[tokio::test]
    async fn the_register_survives_a_restart_until_the_rows_go() {
        let (g, other) = (9_999_002, 9_999_003);
        let dir = tempfile::tempdir().expect("tempdir");
        let e = StoreError::Corrupt {
            table: Table::Msgs,
            reason: "row 01 fails its checksum".into(),
        };
        // Into the register directly: `report` would move the counters the test above checks.
        let c = Corruption {
            reason: e.to_string(),
            since_ms: 1,
        };
        CORRUPT
            .lock()
            .expect("register")
            .extend([(g, c.clone()), (other, c)]);
        let store = crate::store::Store::open(dir.path()).expect("open");
        let (gone, gone_c) = (9_999_004, CORRUPT.lock().expect("register")[&g].clone());
        CORRUPT.lock().expect("register").insert(gone, gone_c);
        store
            .write(move |w| {
                for group in [g, other] {
                    let key = crate::store::keys::group_u64(group, 1);
                    w.put(Table::Log, &key, &seal(&key, b"entry".to_vec()))?;
                }
                persist(w, g)?;
                persist(w, other)?;
                // Its rows were deleted meanwhile: no mark is kept for it.
                persist(w, gone)
            })
            .await
            .expect("persist");
        CORRUPT.lock().expect("register").remove(&gone);
        // A restart: the process forgets, the data dir does not. (Only these two: the other
        // tests share the register. heed opens an environment once per process, so the same
        // store reads the marks back.)
        let forget_both = || {
            let mut map = CORRUPT.lock().expect("register");
            map.remove(&g);
            map.remove(&other);
        };
        forget_both();
        store.read(|r| load(r)).await.expect("load");
        assert_eq!(corrupt(g).map(|c| c.reason), Some(e.to_string()));
        assert!(corrupt(other).is_some());
        assert!(corrupt(gone).is_none(), "a mark without rows was kept");
        store.write(move |w| forget(w, g)).await.expect("forget");
        forget_both();
        store.read(|r| load(r)).await.expect("load");
        assert!(corrupt(g).is_none(), "its rows went, and so did its mark");
        assert!(corrupt(other).is_some());
        forget_both();
    }
}
