//! Whole-table scans inside one read transaction, for the snapshot stream: rows are handed to a
//! callback one at a time instead of collected, so a large table never sits in memory.

use super::{ReadTxn, TABLES, Table};

impl Table {
    /// The table's name in LMDB and in snapshot files.
    pub fn name(self) -> &'static str {
        TABLES
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, n)| *n)
            .expect("every table is in TABLES")
    }

    pub fn from_name(name: &str) -> Option<Table> {
        TABLES.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
    }
}

impl ReadTxn<'_> {
    /// Call `f` on every row of `t` in key order (the overlay's rows laid over LMDB's),
    /// stopping at its first error.
    pub fn for_each<E: From<super::StoreError>>(
        &self,
        t: Table,
        mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut over = self.view.all(t).into_iter().peekable();
        let rows = self.dbs.of(t).iter(&self.txn).map_err(super::StoreError::from)?;
        for row in rows {
            let (k, v) = row.map_err(super::StoreError::from)?;
            while let Some((ok, ov)) = over.next_if(|(ok, _)| ok.as_slice() < k) {
                if let Some(ov) = ov {
                    f(&ok, &ov)?;
                }
            }
            match over.next_if(|(ok, _)| ok.as_slice() == k) {
                Some((_, Some(ov))) => f(k, &ov)?,
                Some((_, None)) => {}
                None => f(k, v)?,
            }
        }
        for (ok, ov) in over {
            if let Some(ov) = ov {
                f(&ok, &ov)?;
            }
        }
        Ok(())
    }

    /// The rows of `t` (the overlay's laid over LMDB's), counted without copying them.
    pub fn count(&self, t: Table) -> super::Result<u64> {
        let mut n = 0;
        self.for_each(t, |_, _| {
            n += 1;
            Ok::<_, super::StoreError>(())
        })?;
        Ok(n)
    }
}
