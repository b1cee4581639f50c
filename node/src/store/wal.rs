//! The write-ahead log: what makes a Raft append durable between LMDB checkpoints.
//!
//! One file, `wal`, beside LMDB's. Each checkpoint (store module doc) starts a new
//! **generation** and writes it from the start of the file again, over the previous one, so
//! after its first fill the file keeps its size and an `fdatasync` flushes data only. A record
//! is `len u32 | crc32 u32 | generation u64 | rows`, the crc over the generation and the rows;
//! rows are `table u8 | key len u32 | key | value len u32 (u32::MAX: deleted) | value`.
//!
//! Replay reads the file's first generation (the one written last) record by record and stops
//! at the first record that is torn, fails its crc or belongs to another generation (the rest
//! of an older, longer one). It replays only a generation newer than the one the last
//! checkpoint recorded as done (`Local` row `wal_done`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Table;

const HEADER: usize = 4 + 4 + 8;
const DELETED: u32 = u32::MAX;

/// One row of a record, as replay hands it over.
pub struct Row<'a> {
    pub table: Table,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Rows of one batch, encoded for a record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rows(Vec<u8>);

impl Rows {
    pub fn push(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        self.0.push(table.code());
        self.0.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.0.extend_from_slice(key);
        match value {
            Some(v) => {
                self.0.extend_from_slice(&(v.len() as u32).to_le_bytes());
                self.0.extend_from_slice(v);
            }
            None => self.0.extend_from_slice(&DELETED.to_le_bytes()),
        }
    }

    pub fn append(&mut self, other: Rows) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub struct Wal {
    file: File,
    generation: u64,
    offset: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Open (or create) `dir/wal`. If it holds a generation newer than `done`, hand its rows to
    /// `replay` in order; the caller must make them durable and record the returned generation
    /// as done before the log is written again.
    pub fn open(
        dir: &Path,
        done: u64,
        mut replay: impl FnMut(Row<'_>) -> io::Result<()>,
    ) -> io::Result<(Wal, u64)> {
        let path = dir.join("wal");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut replayed = done;
        let mut at = 0;
        let mut first_generation = None;
        while let Some((generation, rows, next)) = record_at(&bytes, at) {
            match first_generation {
                None if generation <= done => break,
                None => first_generation = Some(generation),
                Some(g) if g != generation => break,
                Some(_) => {}
            }
            for row in decode_rows(rows)? {
                replay(row)?;
            }
            replayed = generation;
            at = next;
        }
        if replayed > done {
            tracing::info!(generation = replayed, bytes = at, "replayed the write-ahead log");
        }
        // The directory entry of a new file must survive an OS crash too.
        if bytes.is_empty() {
            File::open(dir)?.sync_all()?;
        }
        Ok((
            Wal {
                file,
                generation: replayed + 1,
                offset: 0,
                buf: Vec::new(),
            },
            replayed,
        ))
    }

    /// The generation being written; a checkpoint records it as done, then calls `restart`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of the current generation.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Write one record and flush it to the disk.
    pub fn append(&mut self, rows: &Rows) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&(rows.0.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(&self.generation.to_le_bytes());
        self.buf.extend_from_slice(&rows.0);
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Start the next generation at the start of the file (after a checkpoint made every
    /// record so far durable in LMDB).
    pub fn restart(&mut self) {
        self.generation += 1;
        self.offset = 0;
    }
}

/// The record at `at`: its generation, rows and the offset after it; `None` if torn or bad.
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let end = at.checked_add(HEADER)?.checked_add(len)?;
    let body = bytes.get(at + 8..end)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let generation = u64::from_le_bytes(body[0..8].try_into().ok()?);
    Some((generation, &body[8..], end))
}

/// The first `n` bytes of `b`, which moves past them.
fn take<'a>(b: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if b.len() < n {
        return Err(io::Error::other("write-ahead log: a row runs past its record"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u32(b: &mut &[u8]) -> io::Result<u32> {
    Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")))
}

fn decode_rows(mut b: &[u8]) -> io::Result<Vec<Row<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let code = take(&mut b, 1)?[0];
        let table = Table::from_code(code)
            .ok_or_else(|| io::Error::other(format!("write-ahead log: unknown table {code}")))?;
        let klen = take_u32(&mut b)? as usize;
        let key = take(&mut b, klen)?;
        let value = match take_u32(&mut b)? {
            DELETED => None,
            vlen => Some(take(&mut b, vlen as usize)?),
        };
        out.push(Row { table, key, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[&[u8]]) -> Rows {
        let mut r = Rows::default();
        for k in keys {
            r.push(Table::Log, k, Some(b"v"));
        }
        r.push(Table::Dedup, b"gone", None);
        r
    }

    /// A replayed row: table, key, value (`None`: deleted).
    type Replayed = (Table, Vec<u8>, Option<Vec<u8>>);

    fn replayed(dir: &Path, done: u64) -> (Vec<Replayed>, u64) {
        let mut got = Vec::new();
        let (_, generation) = Wal::open(dir, done, |r| {
            got.push((r.table, r.key.to_vec(), r.value.map(<[u8]>::to_vec)));
            Ok(())
        })
        .expect("open");
        (got, generation)
    }

    #[test]
    fn replay_takes_the_newest_generation_up_to_its_first_bad_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut wal, done) = Wal::open(dir.path(), 0, |_| Ok(())).expect("open");
        assert_eq!((done, wal.generation()), (0, 1));
        wal.append(&rows(&[b"a1", b"a2"])).expect("append");
        wal.append(&rows(&[b"a3", b"a4", b"a5"])).expect("append");
        wal.append(&rows(&[b"a6"])).expect("append");
        // Generation 2 overwrites the start of generation 1 with a shorter record.
        wal.restart();
        wal.append(&rows(&[b"b1"])).expect("append");
        let (got, generation) = replayed(dir.path(), 1);
        assert_eq!(generation, 2);
        assert_eq!(
            got,
            vec![
                (Table::Log, b"b1".to_vec(), Some(b"v".to_vec())),
                (Table::Dedup, b"gone".to_vec(), None)
            ],
            "generation 1's rest is not replayed"
        );
        // A checkpoint recorded generation 2 as done: nothing to replay.
        assert_eq!(replayed(dir.path(), 2), (vec![], 2));
        // A torn record ends the replay.
        let len = std::fs::metadata(dir.path().join("wal")).expect("stat").len();
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("wal"))
            .expect("open");
        f.write_all_at(&[0xFF; 3], 20).expect("tear the first record");
        assert_eq!(replayed(dir.path(), 1), (vec![], 1));
        assert!(len > 0);
    }
}
