//! Channel state machine: pure apply logic for one channel's Raft group, and the channel
//! key rules (person channels are keyed by the unordered uid pair, as WuKongIM does).
//!
//! Invariants (per group):
//! - `message_seq` is contiguous from 1: a message gets `last_seq + 1` when applied.
//! - A `(from_uid, client_msg_no)` pair is stored at most once; a retry answers with the
//!   original `message_id`/`message_seq` and marks itself `duplicate`.
//! - `checksum` is a running hash over every applied message, so replicas that applied the
//!   same messages in the same order have the same checksum.

use serde::{Deserialize, Serialize};

use crate::store::{KvRead, KvWrite, Result, Table, keys};

/// WuKongIM's reserved sender for system messages (an empty `from_uid`).
pub const SYSTEM_UID: &str = "____system";

/// Identifies a channel: the stored id (person channels: the fake `a@b` id) and its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelKey {
    pub channel_id: String,
    pub channel_type: u8,
}

impl ChannelKey {
    /// The key as stored in the `Channels` table: type byte then id.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + self.channel_id.len());
        k.push(self.channel_type);
        k.extend_from_slice(self.channel_id.as_bytes());
        k
    }

    pub fn from_bytes(b: &[u8]) -> Option<ChannelKey> {
        let (&t, id) = b.split_first()?;
        Some(ChannelKey {
            channel_id: String::from_utf8(id.to_vec()).ok()?,
            channel_type: t,
        })
    }
}

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.channel_id, self.channel_type)
    }
}

/// WuKongIM's `GetFakeChannelIDWith`: the uid with the larger CRC32-IEEE goes first, joined
/// by `@`; on a tie `to@from`. Both orders of a pair give the same id unless the hashes tie.
pub fn person_channel_id(from_uid: &str, to_uid: &str) -> String {
    let (a, b) = (
        crc32fast::hash(from_uid.as_bytes()),
        crc32fast::hash(to_uid.as_bytes()),
    );
    if a > b {
        format!("{from_uid}@{to_uid}")
    } else {
        format!("{to_uid}@{from_uid}")
    }
}

/// The `channel_id` WuKongIM v2 shows for a stored person message: the part of the fake id
/// that is not the sender (the fake id itself for self-chat).
pub fn person_display_id(fake_id: &str, from_uid: &str) -> String {
    let mut shown = fake_id.to_string();
    for part in fake_id.split('@') {
        if part != from_uid {
            shown = part.to_string();
        }
    }
    shown
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub no_persist: u8,
    pub red_dot: u8,
    pub sync_once: u8,
}

/// A message as proposed by the channel leader: ids and timestamp are fixed before it enters
/// the log so every replica stores the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub message_id: u64,
    /// The idempotency key: from the client, or generated once by the node that took the
    /// request so its internal retries are deduplicated too.
    pub client_msg_no: String,
    pub from_uid: String,
    pub header: Header,
    pub timestamp: u64,
    /// As bytes, not a sequence of u8 (the same postcard encoding, copied in one go).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message_id: u64,
    pub message_seq: u64,
    pub client_msg_no: String,
    pub from_uid: String,
    pub header: Header,
    pub timestamp: u64,
    /// As bytes, not a sequence of u8 (the same postcard encoding, copied in one go).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelCmd {
    Send(Vec<NewMessage>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub message_id: u64,
    pub message_seq: u64,
    /// The message was already stored; these are its original ids.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelResp {
    Sent(Vec<Sent>),
}

/// The part of a channel group's state machine that lives beside `last_applied`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub last_seq: u64,
    pub checksum: u64,
    /// Payload bytes stored, for the backlog's estimate of what a migration copies.
    pub bytes: u64,
}

/// Apply one command to group `g`, reading and writing through `kv`.
pub fn apply(
    kv: &mut impl KvWrite,
    g: u64,
    state: &mut ChannelState,
    cmd: &ChannelCmd,
) -> Result<ChannelResp> {
    match cmd {
        ChannelCmd::Send(msgs) => {
            let mut out = Vec::with_capacity(msgs.len());
            for m in msgs {
                out.push(apply_send(kv, g, state, m)?);
            }
            Ok(ChannelResp::Sent(out))
        }
    }
}

fn apply_send(kv: &mut impl KvWrite, g: u64, state: &mut ChannelState, m: &NewMessage) -> Result<Sent> {
    let dedup_key = keys::dedup(g, &m.from_uid, &m.client_msg_no);
    if let Some(v) = kv.get(Table::Dedup, &dedup_key)? {
        let (message_seq, message_id): (u64, u64) = crate::store::decode(Table::Dedup, &v)?;
        return Ok(Sent {
            message_id,
            message_seq,
            duplicate: true,
        });
    }
    let stored = StoredMessage {
        message_id: m.message_id,
        message_seq: state.last_seq + 1,
        client_msg_no: m.client_msg_no.clone(),
        from_uid: m.from_uid.clone(),
        header: m.header.clone(),
        timestamp: m.timestamp,
        payload: m.payload.clone(),
    };
    let bytes = crate::store::encode(&stored);
    // The running checksum covers the message bytes; the row adds its own seal.
    let checksum = xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, state.checksum);
    let key = keys::group_u64(g, stored.message_seq);
    kv.put(Table::Msgs, &key, &crate::integrity::seal(&key, bytes))?;
    kv.put(
        Table::Dedup,
        &dedup_key,
        &crate::store::encode(&(stored.message_seq, stored.message_id)),
    )?;
    state.last_seq = stored.message_seq;
    state.bytes += stored.payload.len() as u64;
    state.checksum = checksum;
    Ok(Sent {
        message_id: stored.message_id,
        message_seq: stored.message_seq,
        duplicate: false,
    })
}

/// The seq range `[lo, hi]` a `messagesync` returns and whether the request's range holds
/// more beyond it, following WuKongIM v2:
/// - start 0 and end 0: the newest `limit` messages;
/// - pull up (1): `[start, end)` (start 0 = the first, end 0 = unbounded), the first `limit`;
/// - pull down (0): only when `end <= start` (end 0 = unbounded), the `limit` messages up to
///   and including `start` and newer than `end`.
///
/// Unlike v2, a down-pull `start` past the last seq is capped first, so it still returns the
/// newest messages. Returns None for an empty result. `limit` must be at least 1.
pub fn sync_range(
    last_seq: u64,
    start: u64,
    end: u64,
    limit: u64,
    pull_up: bool,
) -> Option<(u64, u64, bool)> {
    if last_seq == 0 || limit == 0 {
        return None;
    }
    if start == 0 && end == 0 {
        let lo = (last_seq + 1).saturating_sub(limit).max(1);
        return Some((lo, last_seq, lo > 1));
    }
    if pull_up {
        let lo = start.max(1);
        let upper = if end == 0 {
            last_seq
        } else {
            (end - 1).min(last_seq)
        };
        if lo > upper {
            return None;
        }
        let hi = upper.min(lo.saturating_add(limit - 1));
        Some((lo, hi, hi < upper))
    } else {
        if end != 0 && end > start {
            return None;
        }
        let hi = start.min(last_seq);
        let lower = end.saturating_add(1);
        if hi < lower {
            return None;
        }
        let lo = lower.max((hi + 1).saturating_sub(limit));
        Some((lo, hi, lo > lower))
    }
}

/// Read stored messages `lo..=hi` of group `g`; a row that fails its seal (or is missing
/// from the range) is `Corrupt`, never returned.
pub fn read_messages(kv: &impl KvRead, g: u64, lo: u64, hi: u64) -> Result<Vec<StoredMessage>> {
    let rows = kv.range(
        Table::Msgs,
        &keys::group_u64(g, lo),
        &keys::group_u64(g, hi.saturating_add(1)),
        usize::MAX,
        false,
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for ((k, v), want) in rows.iter().zip(lo..) {
        let m: StoredMessage = crate::integrity::decode(Table::Msgs, k, v)?;
        if m.message_seq != want {
            return Err(crate::store::StoreError::Corrupt {
                table: Table::Msgs,
                reason: format!("group {g}: expected seq {want}, found {}", m.message_seq),
            });
        }
        out.push(m);
    }
    if lo <= hi && (out.len() as u64) < (hi - lo).saturating_add(1) {
        return Err(crate::store::StoreError::Corrupt {
            table: Table::Msgs,
            reason: format!("group {g}: messages {lo}..={hi} have {} rows", out.len()),
        });
    }
    Ok(out)
}

/// What re-reading a group's stored messages found: the last seq read and the running
/// checksum recomputed over seqs `1..=upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    pub rows: u64,
    pub checksum: u64,
}

/// Re-read messages `1..=upto` of group `g` in pages, checking every seal and that seqs are
/// contiguous, and recompute the running checksum the state machine keeps.
pub fn scan_messages(kv: &impl KvRead, g: u64, upto: u64) -> Result<Scan> {
    const PAGE: u64 = 1024;
    let mut scan = Scan { rows: 0, checksum: 0 };
    let mut lo = 1;
    while lo <= upto {
        let hi = upto.min(lo + PAGE - 1);
        let rows = kv.range(
            Table::Msgs,
            &keys::group_u64(g, lo),
            &keys::group_u64(g, hi + 1),
            usize::MAX,
            false,
        )?;
        for ((k, v), want) in rows.iter().zip(lo..) {
            let value = crate::integrity::open(Table::Msgs, k, v)?;
            let m: StoredMessage = crate::store::decode(Table::Msgs, value)?;
            if m.message_seq != want {
                return Err(crate::store::StoreError::Corrupt {
                    table: Table::Msgs,
                    reason: format!("group {g}: expected seq {want}, found {}", m.message_seq),
                });
            }
            scan.checksum = xxhash_rust::xxh3::xxh3_64_with_seed(value, scan.checksum);
            scan.rows += 1;
        }
        if (rows.len() as u64) < hi - lo + 1 {
            return Err(crate::store::StoreError::Corrupt {
                table: Table::Msgs,
                reason: format!("group {g}: messages {lo}..={hi} have {} rows", rows.len()),
            });
        }
        lo = hi + 1;
    }
    Ok(scan)
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
