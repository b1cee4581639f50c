//! The snapshot file format (`wkctl snapshot save/status/restore`, `GET /cluster/snapshot`).
//!
//! It lives here, beside the wire types, because three parties share it without sharing code
//! otherwise: the node writes it (streamed from one LMDB read transaction), `wkctl` saves and
//! inspects it (it never depends on node internals), and `wknode --restore` reads it back.
//! Rows are the node's own table rows (opaque bytes here); only `wknode` interprets them.
//!
//! Layout (integers little-endian):
//! ```text
//! magic "WKHASNAP" | u32 format | u32 len | header JSON (SnapshotHeader)
//! rows:    u8 1 | u8 len | table name | u32 len | key | u32 len | value     (repeated)
//! trailer: u8 0xFF | u32 len | trailer JSON (SnapshotTrailer) | u64 xxh3-64 of every byte before it
//! ```
//! A reader refuses a file whose checksum, row counts or framing disagree, and one that ends
//! before its trailer (an interrupted save): `SnapshotError` says which.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"WKHASNAP";
/// The version of the layout above; readers refuse others.
pub const FORMAT: u32 = 1;

const TAG_ROW: u8 = 1;
const TAG_END: u8 = 0xFF;
/// Largest header, trailer or key: far beyond what a node writes, small enough to allocate.
const MAX_META: usize = 1 << 20;
/// Largest value (a message is at most the 4 MiB request body; room for anything stored).
const MAX_VALUE: usize = 256 << 20;

/// Who took the snapshot, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The node whose data this is.
    pub node_id: u64,
    /// The cluster's id (16 hex digits; empty if the node had none).
    pub cluster_id: String,
    /// When the read transaction was opened, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// The node's data-dir format (`wknode` refuses to restore another).
    pub data_format: u32,
    /// The `wknode` version that wrote it.
    pub version: String,
}

/// What the file holds, written last so a reader can check it got everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTrailer {
    /// Rows in the file.
    pub rows: u64,
    /// Rows per table name (`users`, `channels`, `msgs`, `dedup`, `sm`, ...).
    pub tables: BTreeMap<String, u64>,
}

/// `wkctl snapshot status --output json`: a verified file's header and contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub header: SnapshotHeader,
    pub trailer: SnapshotTrailer,
    /// File size in bytes.
    pub bytes: u64,
    /// The whole-file xxh3-64, 16 hex digits.
    pub checksum: String,
}

/// One table row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub table: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a WuKong HA snapshot (bad magic)")]
    NotASnapshot,
    #[error("snapshot format {0} is not supported (this build reads format {FORMAT})")]
    UnsupportedFormat(u32),
    #[error("the file ends early after {rows} rows: truncated (an interrupted save?)")]
    Truncated { rows: u64 },
    #[error("corrupt snapshot after {rows} rows: {reason}")]
    Corrupt { rows: u64, reason: String },
    #[error("checksum mismatch: the file says {expected:016x}, its bytes hash to {actual:016x} (corrupted)")]
    ChecksumMismatch { expected: u64, actual: u64 },
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
}

/// Writes a snapshot: `new` (magic and header), `row` per row, `finish` (trailer, checksum).
pub struct SnapshotWriter<W: Write> {
    out: W,
    hash: Box<Xxh3>,
    trailer: SnapshotTrailer,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(out: W, header: &SnapshotHeader) -> io::Result<Self> {
        let mut w = SnapshotWriter {
            out,
            hash: Box::default(),
            trailer: SnapshotTrailer::default(),
        };
        let header = serde_json::to_vec(header).map_err(io::Error::other)?;
        w.put(MAGIC)?;
        w.put(&FORMAT.to_le_bytes())?;
        w.put(&(header.len() as u32).to_le_bytes())?;
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.hash.update(b);
        self.out.write_all(b)
    }

    pub fn row(&mut self, table: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
        let too_big = table.len() > u8::MAX as usize || key.len() > MAX_META || value.len() > MAX_VALUE;
        if too_big {
            return Err(io::Error::other(format!(
                "row of table {table} too large for the format ({} byte value)",
                value.len()
            )));
        }
        self.put(&[TAG_ROW, table.len() as u8])?;
        self.put(table.as_bytes())?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.trailer.rows += 1;
        *self.trailer.tables.entry(table.to_string()).or_default() += 1;
        Ok(())
    }

    /// Write the trailer and checksum; returns the output and what was written.
    pub fn finish(mut self) -> io::Result<(W, SnapshotTrailer)> {
        let trailer = serde_json::to_vec(&self.trailer).map_err(io::Error::other)?;
        self.put(&[TAG_END])?;
        self.put(&(trailer.len() as u32).to_le_bytes())?;
        self.put(&trailer)?;
        let sum = self.hash.digest();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.flush()?;
        Ok((self.out, self.trailer))
    }
}

/// Reads a snapshot row by row. Rows come before the checksum is known: a caller that must not
/// act on a corrupt file reads it through once with [`verify`] first.
pub struct SnapshotReader<R: Read> {
    input: R,
    hash: Box<Xxh3>,
    seen: SnapshotTrailer,
    /// Set once the trailer and checksum were read and matched.
    done: Option<(SnapshotTrailer, u64)>,
    bytes: u64,
}

impl<R: Read> SnapshotReader<R> {
    /// Read and check the magic, format and header.
    pub fn open(input: R) -> Result<(Self, SnapshotHeader), SnapshotError> {
        let mut r = SnapshotReader {
            input,
            hash: Box::default(),
            seen: SnapshotTrailer::default(),
            done: None,
            bytes: 0,
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic).map_err(|e| match e {
            SnapshotError::Truncated { .. } => SnapshotError::NotASnapshot,
            e => e,
        })?;
        if &magic != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let format = r.u32()?;
        if format != FORMAT {
            return Err(SnapshotError::UnsupportedFormat(format));
        }
        let header = r.bytes(MAX_META, "header")?;
        let header = serde_json::from_slice(&header).map_err(|e| r.corrupt(format!("header: {e}")))?;
        Ok((r, header))
    }

    /// The next row, or `None` once the trailer was read and everything matched.
    pub fn next_row(&mut self) -> Result<Option<Row>, SnapshotError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        match tag[0] {
            TAG_ROW => {
                let mut len = [0u8; 1];
                self.take(&mut len)?;
                let mut table = vec![0u8; len[0] as usize];
                self.take(&mut table)?;
                let table = String::from_utf8(table).map_err(|_| self.corrupt("table name is not UTF-8"))?;
                let key = self.bytes(MAX_META, "key")?;
                let value = self.bytes(MAX_VALUE, "value")?;
                self.seen.rows += 1;
                *self.seen.tables.entry(table.clone()).or_default() += 1;
                Ok(Some(Row { table, key, value }))
            }
            TAG_END => {
                let trailer = self.bytes(MAX_META, "trailer")?;
                let actual = self.hash.digest();
                let mut sum = [0u8; 8];
                // The checksum itself is not part of what it sums.
                self.input.read_exact(&mut sum).map_err(|e| self.io(e))?;
                self.bytes += 8;
                let expected = u64::from_le_bytes(sum);
                if expected != actual {
                    return Err(SnapshotError::ChecksumMismatch { expected, actual });
                }
                let trailer: SnapshotTrailer =
                    serde_json::from_slice(&trailer).map_err(|e| self.corrupt(format!("trailer: {e}")))?;
                if trailer != self.seen {
                    return Err(self.corrupt(format!(
                        "the trailer counts {} rows, the file holds {}",
                        trailer.rows, self.seen.rows
                    )));
                }
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra).map_err(|e| self.io(e))? != 0 {
                    return Err(self.corrupt("bytes after the checksum"));
                }
                self.done = Some((trailer, actual));
                Ok(None)
            }
            t => Err(self.corrupt(format!("unknown record tag {t:#04x}"))),
        }
    }

    /// After `next_row` returned `None`: the trailer and the checksum.
    pub fn trailer(&self) -> Option<&(SnapshotTrailer, u64)> {
        self.done.as_ref()
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn corrupt(&self, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            rows: self.seen.rows,
            reason: reason.into(),
        }
    }

    fn io(&self, e: io::Error) -> SnapshotError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated { rows: self.seen.rows }
        } else {
            SnapshotError::Io(e)
        }
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.input.read_exact(buf).map_err(|e| self.io(e))?;
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A u32 length then that many bytes; the length is checked before anything is allocated.
    fn bytes(&mut self, max: usize, what: &str) -> Result<Vec<u8>, SnapshotError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.corrupt(format!("{what} of {len} bytes exceeds the format's limit")));
        }
        let mut b = vec![0u8; len];
        self.take(&mut b)?;
        Ok(b)
    }
}

/// Read a whole snapshot and check it; the header, trailer and checksum of a sound file.
pub fn verify(input: impl Read) -> Result<SnapshotStatus, SnapshotError> {
    let (mut r, header) = SnapshotReader::open(input)?;
    while r.next_row()?.is_some() {}
    let (trailer, sum) = r
        .trailer()
        .cloned()
        .expect("next_row returned None: the trailer was read");
    Ok(SnapshotStatus {
        header,
        trailer,
        bytes: r.bytes_read(),
        checksum: format!("{sum:016x}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = SnapshotHeader {
            node_id: 2,
            cluster_id: "00000000000000ab".into(),
            created_unix_ms: 1,
            data_format: 1,
            version: "0.1.0".into(),
        };
        let mut w = SnapshotWriter::new(Vec::new(), &header).expect("header");
        w.row("users", b"alice", b"token").expect("row");
        w.row("msgs", &[0, 0, 0, 1], &[7; 100]).expect("row");
        w.row("msgs", &[0, 0, 0, 2], b"").expect("row");
        w.finish().expect("finish").0
    }

    #[test]
    fn a_written_file_reads_back() {
        let file = sample();
        let (mut r, header) = SnapshotReader::open(file.as_slice()).expect("open");
        assert_eq!(header.node_id, 2);
        let mut rows = Vec::new();
        while let Some(row) = r.next_row().expect("row") {
            rows.push(row);
        }
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].value, vec![7; 100]);
        let status = verify(file.as_slice()).expect("sound");
        assert_eq!(status.trailer.rows, 3);
        assert_eq!(status.trailer.tables.get("msgs"), Some(&2));
        assert_eq!(status.bytes, file.len() as u64);
    }

    #[test]
    fn every_truncation_is_refused() {
        let file = sample();
        for len in 0..file.len() {
            let err = verify(&file[..len]).expect_err("a truncated file");
            assert!(
                matches!(err, SnapshotError::Truncated { .. } | SnapshotError::NotASnapshot),
                "cut at {len}: {err}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let file = sample();
        for i in 0..file.len() {
            for bit in [0, 3, 7] {
                let mut bad = file.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    verify(bad.as_slice()).is_err(),
                    "flip of bit {bit} in byte {i} passed"
                );
            }
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            verify(longer.as_slice()),
            Err(SnapshotError::Corrupt { .. })
        ));
    }
}
