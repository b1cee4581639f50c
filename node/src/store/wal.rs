//! The write-ahead log: what makes a Raft append durable between LMDB checkpoints.
//!
//! Two files beside LMDB's, `wal` for even **generations** and `wal.1` for odd ones. Each
//! checkpoint (store module doc) covers one generation; the writer starts the next in the
//! other file while the checkpoint runs, from the start of the file, over the generation before
//! (whose checkpoint has committed), so after their first fill the files keep their size and an
//! `fdatasync` flushes data only. A record is `len u32 | crc32 u32 | generation u64 | rows`, the
//! crc over the generation and the rows; rows are `table u8 | key len u32 | key | value len u32
//! (u32::MAX: deleted) | value`.
//!
//! Replay reads each file's first generation (the one written last) record by record and stops
//! at the first record that is torn, fails its crc or belongs to another generation (the rest
//! of an older, longer one). It replays, oldest first, the generations newer than the one the
//! last checkpoint recorded as done (`Local` row `wal_done`).

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

/// The file of generation `g`.
fn file_name(g: u64) -> &'static str {
    if g.is_multiple_of(2) { "wal" } else { "wal.1" }
}

pub struct Wal {
    /// The files of even and odd generations.
    files: [File; 2],
    generation: u64,
    offset: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Open (or create) the two files under `dir`. Hand the rows of every generation newer than
    /// `done` to `replay`, oldest first; the caller must make them durable and record the
    /// returned generation as done before the log is written again.
    pub fn open(
        dir: &Path,
        done: u64,
        mut replay: impl FnMut(Row<'_>) -> io::Result<()>,
    ) -> io::Result<(Wal, u64)> {
        let mut files = Vec::with_capacity(2);
        let mut contents = Vec::with_capacity(2);
        let mut created = false;
        for parity in 0..2 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(file_name(parity)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            created |= bytes.is_empty();
            files.push(file);
            contents.push(bytes);
        }
        let mut generations: Vec<(u64, Vec<&[u8]>)> = contents
            .iter()
            .filter_map(|bytes| leading_generation(bytes))
            .filter(|(g, _)| *g > done)
            .collect();
        generations.sort_by_key(|(g, _)| *g);
        let mut replayed = done;
        for (generation, records) in generations {
            for rows in records {
                for row in decode_rows(rows)? {
                    replay(row)?;
                }
            }
            tracing::info!(generation, "replayed the write-ahead log");
            replayed = generation;
        }
        // The directory entry of a new file must survive an OS crash too.
        if created {
            File::open(dir)?.sync_all()?;
        }
        let files: [File; 2] = files.try_into().expect("two files");
        Ok((
            Wal {
                files,
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
        let file = &self.files[(self.generation % 2) as usize];
        file.write_all_at(&self.buf, self.offset)?;
        file.sync_data()?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Start the next generation at the start of the other file. The caller makes sure the
    /// generation that file holds is durable in LMDB (its checkpoint has committed).
    pub fn next_generation(&mut self) {
        self.generation += 1;
        self.offset = 0;
    }
}

/// The generation a file starts with and the rows of each of its records, up to the first
/// record that is torn, bad or of another generation; `None` for an empty or torn start.
fn leading_generation(bytes: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    let (first, rows, mut at) = record_at(bytes, 0)?;
    let mut records = vec![rows];
    while let Some((generation, rows, next)) = record_at(bytes, at) {
        if generation != first {
            break;
        }
        records.push(rows);
        at = next;
    }
    Some((first, records))
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
    fn replay_takes_every_newer_generation_oldest_first_up_to_its_first_bad_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut wal, done) = Wal::open(dir.path(), 0, |_| Ok(())).expect("open");
        assert_eq!((done, wal.generation()), (0, 1));
        wal.append(&rows(&[b"a1", b"a2"])).expect("append");
        wal.append(&rows(&[b"a3", b"a4", b"a5"])).expect("append");
        wal.next_generation();
        wal.append(&rows(&[b"b1"])).expect("append");
        // Generation 3 overwrites the start of generation 1, in the same file, with a shorter
        // record.
        wal.next_generation();
        wal.append(&rows(&[b"c1"])).expect("append");
        let row = |k: &[u8]| (Table::Log, k.to_vec(), Some(b"v".to_vec()));
        let gone = (Table::Dedup, b"gone".to_vec(), None);
        let (b, c) = (vec![row(b"b1"), gone.clone()], vec![row(b"c1"), gone.clone()]);
        assert_eq!(replayed(dir.path(), 1), ([b.clone(), c.clone()].concat(), 3));
        assert_eq!(
            replayed(dir.path(), 0),
            ([b, c.clone()].concat(), 3),
            "generation 1's rest is not replayed"
        );
        assert_eq!(replayed(dir.path(), 2), (c, 3));
        assert_eq!(replayed(dir.path(), 3), (vec![], 3));
        // A torn record ends the replay.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(file_name(3)))
            .expect("open");
        f.write_all_at(&[0xFF; 3], 20).expect("tear the first record");
        assert_eq!(replayed(dir.path(), 2), (vec![], 2));
    }
}
