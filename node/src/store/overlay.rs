//! The writes not yet checkpointed into LMDB: the store's memtable.
//!
//! Every batch the writer thread runs (module doc of `store`) leaves its rows here, as one
//! immutable [`Chunk`], once they are durable; a read takes a [`View`] (the chunks at that
//! moment) *before* it opens its LMDB read transaction, and the view's rows win over LMDB's.
//! A checkpoint commits the oldest chunks into LMDB first and removes them after, so a reader
//! that no longer sees them opens its transaction after the commit and sees the rows in LMDB;
//! one that took its view before the removal sees them in the view.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::{TABLES, Table};

/// The rows one batch wrote: per table, key -> value (`None`: deleted).
pub struct Chunk {
    tables: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; TABLES.len()],
    /// Bytes of keys and values held, for the writer's checkpoint trigger.
    pub bytes: usize,
}

impl Default for Chunk {
    fn default() -> Chunk {
        Chunk {
            tables: std::array::from_fn(|_| BTreeMap::new()),
            bytes: 0,
        }
    }
}

impl Chunk {
    pub fn record(&mut self, t: Table, key: &[u8], value: Option<&[u8]>) {
        self.bytes += key.len() + value.map_or(0, <[u8]>::len);
        self.tables[t.code() as usize].insert(key.to_vec(), value.map(<[u8]>::to_vec));
    }

    /// Take `later`'s rows over this chunk's.
    pub fn absorb(&mut self, later: Chunk) {
        self.bytes += later.bytes;
        for (mine, theirs) in self.tables.iter_mut().zip(later.tables) {
            mine.extend(theirs);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(BTreeMap::is_empty)
    }

    /// `Some(row)` when this chunk decides the key (`Some(None)`: deleted).
    pub fn get(&self, t: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.tables[t.code() as usize].get(key).map(Option::as_deref)
    }

    /// Lay this chunk's rows with `from <= key < to` over `out`.
    pub fn range_into(&self, t: Table, from: &[u8], to: &[u8], out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        if from >= to {
            return;
        }
        let bounds = (Bound::Included(from), Bound::Excluded(to));
        for (k, v) in self.tables[t.code() as usize].range::<[u8], _>(bounds) {
            out.insert(k.clone(), v.clone());
        }
    }

    /// Every row, table by table in key order: what a checkpoint writes into LMDB.
    pub fn rows(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        TABLES
            .iter()
            .zip(&self.tables)
            .flat_map(|((t, _), rows)| rows.iter().map(move |(k, v)| (*t, k.as_slice(), v.as_deref())))
    }
}

/// The chunks not yet in LMDB, oldest first.
#[derive(Default)]
pub struct Overlay {
    chunks: Mutex<Vec<Arc<Chunk>>>,
}

impl Overlay {
    /// Show `chunk` to readers; returns it for the checkpoint that will write it into LMDB.
    pub fn push(&self, chunk: Chunk) -> Arc<Chunk> {
        let chunk = Arc::new(chunk);
        self.chunks
            .lock()
            .expect("overlay lock poisoned")
            .push(chunk.clone());
        chunk
    }

    /// After a checkpoint's commit of the oldest `n` chunks: LMDB's readers see their rows now.
    pub fn remove_oldest(&self, n: usize) {
        self.chunks.lock().expect("overlay lock poisoned").drain(..n);
    }

    /// The rows as they are now; take it before opening the LMDB read transaction.
    pub fn view(&self) -> View {
        View(self.chunks.lock().expect("overlay lock poisoned").clone())
    }
}

/// The overlay as one reader sees it.
pub struct View(Vec<Arc<Chunk>>);

impl View {
    /// `Some(row)` when the overlay decides the key (`Some(None)`: deleted), `None` when LMDB does.
    pub fn get(&self, t: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.0.iter().rev().find_map(|c| c.get(t, key))
    }

    /// The overlay's rows with `from <= key < to` (newest write wins), `None` for deleted ones.
    pub fn range(&self, t: Table, from: &[u8], to: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for c in &self.0 {
            c.range_into(t, from, to, &mut out);
        }
        out
    }

    /// Every overlay row of `t` (newest write wins).
    pub fn all(&self, t: Table) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for c in &self.0 {
            for (k, v) in &c.tables[t.code() as usize] {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `rows` (LMDB's first `limit + deleted` rows of the range in the wanted order, where
/// `deleted` counts the overlay's deletions in the range) with the overlay's rows `over`
/// laid on top, cut to `limit`. Every LMDB row among the true first `limit` is among those
/// fetched: at most `deleted` rows before it can be hidden.
pub fn merge(
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    over: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    limit: usize,
    rev: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
    for (k, v) in over {
        match v {
            Some(v) => all.insert(k, v),
            None => all.remove(&k),
        };
    }
    if rev {
        all.into_iter().rev().take(limit).collect()
    } else {
        all.into_iter().take(limit).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(rows: &[(&[u8], Option<&[u8]>)]) -> Chunk {
        let mut c = Chunk::default();
        for (k, v) in rows {
            c.record(Table::Log, k, *v);
        }
        c
    }

    #[test]
    fn the_newest_chunk_decides_a_key() {
        let o = Overlay::default();
        o.push(chunk(&[(b"a", Some(b"1")), (b"b", Some(b"1"))]));
        o.push(chunk(&[(b"a", None), (b"c", Some(b"2"))]));
        let v = o.view();
        assert_eq!(v.get(Table::Log, b"a"), Some(None));
        assert_eq!(v.get(Table::Log, b"b"), Some(Some(&b"1"[..])));
        assert_eq!(v.get(Table::Log, b"d"), None);
        assert_eq!(v.get(Table::Sm, b"b"), None, "tables are apart");
        o.remove_oldest(1);
        assert_eq!(o.view().get(Table::Log, b"b"), None, "the oldest chunk is gone");
        assert_eq!(o.view().get(Table::Log, b"a"), Some(None));
        o.remove_oldest(1);
        assert!(o.view().is_empty());
        assert!(!v.is_empty(), "a view keeps what it saw");
    }

    #[test]
    fn a_merged_range_hides_deleted_rows_and_keeps_its_limit() {
        let lmdb = |keys: &[&[u8]]| {
            keys.iter()
                .map(|k| (k.to_vec(), b"L".to_vec()))
                .collect::<Vec<_>>()
        };
        let o = Overlay::default();
        o.push(chunk(&[(b"a", None), (b"c", Some(b"O"))]));
        let over = o.view().range(Table::Log, b"a", b"z");
        let deleted = over.values().filter(|v| v.is_none()).count();
        assert_eq!(deleted, 1);
        // LMDB holds a, b, d, e; the caller fetched limit + deleted = 3 rows.
        let got = merge(lmdb(&[b"a", b"b", b"d"]), over.clone(), 2, false);
        assert_eq!(
            got,
            vec![(b"b".to_vec(), b"L".to_vec()), (b"c".to_vec(), b"O".to_vec())]
        );
        let got = merge(lmdb(&[b"e", b"d", b"b"]), over, 2, true);
        assert_eq!(
            got,
            vec![(b"e".to_vec(), b"L".to_vec()), (b"d".to_vec(), b"L".to_vec())]
        );
    }
}
