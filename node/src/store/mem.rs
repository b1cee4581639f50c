//! An in-memory table store for unit tests of the pure apply logic.

use std::collections::BTreeMap;

use super::{KvRead, KvWrite, Result, Table};

#[derive(Default)]
pub struct MemKv(BTreeMap<(u8, Vec<u8>), Vec<u8>>);

impl MemKv {
    /// How many rows table `t` holds.
    pub fn rows_of(&self, t: Table) -> usize {
        self.0.keys().filter(|(c, _)| *c == t.code()).count()
    }
}

impl KvRead for MemKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(t.code(), key.to_vec())).cloned())
    }

    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self
            .0
            .range((t.code(), from.to_vec())..(t.code(), to.to_vec()))
            .map(|((_, k), v)| (k.clone(), v.clone()));
        Ok(if rev {
            rows.rev().take(limit).collect()
        } else {
            rows.take(limit).collect()
        })
    }
}

impl KvWrite for MemKv {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.0.insert((t.code(), key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, t: Table, key: &[u8]) -> Result<()> {
        self.0.remove(&(t.code(), key.to_vec()));
        Ok(())
    }

    fn delete_range(&mut self, t: Table, from: &[u8], to: &[u8]) -> Result<usize> {
        let keys: Vec<_> = self
            .range(t, from, to, usize::MAX, false)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.delete(t, k)?;
        }
        Ok(keys.len())
    }
}
