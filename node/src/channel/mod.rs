//! Channel state machine: pure apply logic for one channel's Raft group, and the channel
//! key rules (person channels are keyed by the unordered uid pair, as WuKongIM does).
//!
//! **The log is the message store.** A message is stored once, in the Raft log entry that
//! carries it. Apply assigns its seq and writes only small rows: the dedup row, and a `spans`
//! row when the run of "one message per entry" breaks (a batch, a blank or membership entry
//! in between); a channel with one message per entry writes no span row at all after its
//! first. Reads map seqs to log entries through the spans. Messages restored from a backup
//! have no log entry: they are rows of the `msgs` table (`ChannelState::archived`).
//!
//! Invariants (per group):
//! - `message_seq` is contiguous from 1: a message gets `last_seq + 1` when applied.
//! - A `(from_uid, client_msg_no)` pair is stored at most once; a retry answers with the
//!   original `message_id`/`message_seq` and marks itself `duplicate`. Dedup rows are keyed
//!   by a 64-bit hash of the pair and list the seqs stored under it; each is read back and
//!   compared, so a hash collision never makes two messages one.
//! - `checksum` is a running hash over every applied message (its `StoredMessage` encoding),
//!   so replicas that applied the same messages in the same order have the same checksum.
//! - Only applied entries are read as messages, and applied entries are committed: Raft never
//!   truncates them, and the log of a channel group is never purged.
//! - Conversation state (`conversation`) lives beside the messages, in the same group: the
//!   sender's read position and the channel's conversation clock are written by the same
//!   apply as the message, never one row per member.

pub mod conversation;

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

impl StoredMessage {
    fn new(seq: u64, m: &NewMessage) -> StoredMessage {
        StoredMessage {
            message_id: m.message_id,
            message_seq: seq,
            client_msg_no: m.client_msg_no.clone(),
            from_uid: m.from_uid.clone(),
            header: m.header.clone(),
            timestamp: m.timestamp,
            payload: m.payload.clone(),
        }
    }
}

/// The bytes the running checksum covers for message `seq`: a [`StoredMessage`]'s postcard
/// encoding, written without copying the payload.
fn checksum_bytes(seq: u64, m: &NewMessage) -> Vec<u8> {
    #[derive(Serialize)]
    struct View<'a> {
        message_id: u64,
        message_seq: u64,
        client_msg_no: &'a str,
        from_uid: &'a str,
        header: &'a Header,
        timestamp: u64,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    }
    crate::store::encode(&View {
        message_id: m.message_id,
        message_seq: seq,
        client_msg_no: &m.client_msg_no,
        from_uid: &m.from_uid,
        header: &m.header,
        timestamp: m.timestamp,
        payload: &m.payload,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelCmd {
    Send(Vec<NewMessage>),
    /// A user's change to their conversation (read position, unread count, deletion).
    /// After `Send` so existing logs decode unchanged.
    Conversation(conversation::ConvCmd),
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
    /// The user's conversation state after a `Conversation` command.
    Conversation(conversation::ReadState),
}

/// The part of a channel group's state machine that lives beside `last_applied`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub last_seq: u64,
    pub checksum: u64,
    /// Payload bytes stored, for the backlog's estimate of what a migration copies.
    pub bytes: u64,
    /// Messages `1..=archived` are rows of the `msgs` table (restored from a backup); the
    /// rest live in the group's Raft log, found through its `spans`.
    pub archived: u64,
    /// The span that the next single-message entry may extend: its first seq and the log
    /// index of that seq's entry.
    pub linear: Option<(u64, u64)>,
}

/// Where a run of a channel's messages lives in its Raft log: a row of the `spans` table,
/// keyed by group ++ the run's first seq. A run ends where the next span starts (the last
/// one at `last_seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Span {
    /// Seq `first + k` is the only message of entry `index + k`.
    Linear { index: u64 },
    /// Seq `first + k` is message `positions[k]` of entry `index` (message `k` when
    /// `positions` is empty).
    Entry { index: u64, positions: Vec<u32> },
}

/// Apply one command, found at log index `index`, to group `g`.
pub fn apply(
    kv: &mut impl KvWrite,
    g: u64,
    state: &mut ChannelState,
    index: u64,
    cmd: &ChannelCmd,
) -> Result<ChannelResp> {
    // The entry's log row must be there: it is the message store. The writer commits the
    // append before (or with) the apply; should the append alone have failed, applying would
    // record seqs that point at nothing.
    if !kv.contains(Table::Log, &keys::group_u64(g, index))? {
        return Err(crate::store::StoreError::Lmdb(format!(
            "group {g}: applying entry {index}, whose log row is not written"
        )));
    }
    match cmd {
        ChannelCmd::Send(msgs) => apply_send(kv, g, state, index, msgs),
        ChannelCmd::Conversation(cmd) => Ok(ChannelResp::Conversation(conversation::apply_cmd(
            kv,
            g,
            state.last_seq,
            cmd,
        )?)),
    }
}

fn apply_send(
    kv: &mut impl KvWrite,
    g: u64,
    state: &mut ChannelState,
    index: u64,
    msgs: &[NewMessage],
) -> Result<ChannelResp> {
    let first = state.last_seq + 1;
    let (mut out, mut fresh) = (Vec::with_capacity(msgs.len()), Vec::new());
    for (pos, m) in msgs.iter().enumerate() {
        let dedup_key = keys::dedup(g, &m.from_uid, &m.client_msg_no);
        let mut seqs: Vec<u64> = kv.get_decoded(Table::Dedup, &dedup_key)?.unwrap_or_default();
        if let Some(original) = find_duplicate(kv, g, state, msgs, first, &fresh, &seqs, m)? {
            out.push(original);
            continue;
        }
        let seq = state.last_seq + 1;
        seqs.push(seq);
        kv.put(Table::Dedup, &dedup_key, &crate::store::encode(&seqs))?;
        state.checksum = xxhash_rust::xxh3::xxh3_64_with_seed(&checksum_bytes(seq, m), state.checksum);
        state.last_seq = seq;
        state.bytes += m.payload.len() as u64;
        fresh.push(pos as u32);
        out.push(Sent {
            message_id: m.message_id,
            message_seq: seq,
            duplicate: false,
        });
    }
    if !fresh.is_empty() {
        let stored: Vec<(&str, u64, u64)> = fresh
            .iter()
            .zip(first..)
            .map(|(pos, seq)| {
                let m = &msgs[*pos as usize];
                (m.from_uid.as_str(), seq, m.message_id)
            })
            .collect();
        conversation::on_messages(kv, g, &stored)?;
        let extends = state
            .linear
            .is_some_and(|(seq, at)| at + (first - seq) == index && msgs.len() == 1);
        if !extends {
            let span = if msgs.len() == 1 {
                state.linear = Some((first, index));
                Span::Linear { index }
            } else {
                state.linear = None;
                let all = fresh.len() == msgs.len();
                Span::Entry {
                    index,
                    positions: if all { Vec::new() } else { fresh },
                }
            };
            kv.put(
                Table::Spans,
                &keys::group_u64(g, first),
                &crate::store::encode(&span),
            )?;
        }
    }
    Ok(ChannelResp::Sent(out))
}

/// The stored message that `m` repeats, if any: one of the seqs its dedup row lists (the row
/// is keyed by a hash, so each candidate is read back and compared), or an earlier message of
/// the same entry (`fresh` positions of `msgs`, numbered from `first`).
#[allow(clippy::too_many_arguments)]
fn find_duplicate(
    kv: &impl KvRead,
    g: u64,
    state: &ChannelState,
    msgs: &[NewMessage],
    first: u64,
    fresh: &[u32],
    seqs: &[u64],
    m: &NewMessage,
) -> Result<Option<Sent>> {
    let same = |o: &NewMessage| o.from_uid == m.from_uid && o.client_msg_no == m.client_msg_no;
    for (k, pos) in fresh.iter().enumerate() {
        let o = &msgs[*pos as usize];
        if same(o) {
            return Ok(Some(Sent {
                message_id: o.message_id,
                message_seq: first + k as u64,
                duplicate: true,
            }));
        }
    }
    for &seq in seqs.iter().filter(|s| **s < first) {
        let stored = read_messages(kv, g, state, seq, seq)?;
        if let Some(o) = stored.first()
            && o.from_uid == m.from_uid
            && o.client_msg_no == m.client_msg_no
        {
            return Ok(Some(Sent {
                message_id: o.message_id,
                message_seq: seq,
                duplicate: true,
            }));
        }
    }
    Ok(None)
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

fn corrupt(table: Table, reason: String) -> crate::store::StoreError {
    crate::store::StoreError::Corrupt { table, reason }
}

/// Read messages `lo..=hi` of group `g` (at most `state.last_seq`): archived ones from the
/// `msgs` table, the rest from the Raft log through the group's spans. A row that fails its
/// seal, or a span that points at no message, is `Corrupt`, never returned.
pub fn read_messages(
    kv: &impl KvRead,
    g: u64,
    state: &ChannelState,
    lo: u64,
    hi: u64,
) -> Result<Vec<StoredMessage>> {
    let hi = hi.min(state.last_seq);
    let mut out = Vec::with_capacity(hi.saturating_sub(lo).saturating_add(1).min(4096) as usize);
    if lo > hi {
        return Ok(out);
    }
    if lo <= state.archived {
        out.extend(read_archived(kv, g, lo, hi.min(state.archived))?);
    }
    let lo = lo.max(state.archived + 1);
    if lo <= hi {
        for (first, end, span) in spans_covering(kv, g, state, lo, hi)? {
            read_span(kv, g, first, &span, lo.max(first), hi.min(end), &mut out)?;
        }
    }
    Ok(out)
}

/// The spans that hold seqs `lo..=hi`: (first seq, last seq, span), ascending.
fn spans_covering(
    kv: &impl KvRead,
    g: u64,
    state: &ChannelState,
    lo: u64,
    hi: u64,
) -> Result<Vec<(u64, u64, Span)>> {
    let mut rows = kv.range(
        Table::Spans,
        &keys::group_u64(g, 0),
        &keys::group_u64(g, lo + 1),
        1,
        true,
    )?;
    rows.extend(kv.range(
        Table::Spans,
        &keys::group_u64(g, lo + 1),
        &keys::group_u64(g, hi.saturating_add(1)),
        usize::MAX,
        false,
    )?);
    let mut spans: Vec<(u64, u64, Span)> = Vec::with_capacity(rows.len());
    for (k, v) in &rows {
        let first =
            keys::u64_suffix(k).ok_or_else(|| corrupt(Table::Spans, format!("group {g}: bad key")))?;
        let span: Span = crate::store::decode(Table::Spans, v)?;
        if let Some(prev) = spans.last_mut() {
            prev.1 = first - 1;
        }
        spans.push((first, state.last_seq, span));
    }
    match spans.first() {
        Some((first, _, _)) if *first <= lo => Ok(spans),
        _ => Err(corrupt(
            Table::Spans,
            format!("group {g}: no span holds seq {lo}"),
        )),
    }
}

/// Append messages `lo..=hi` of `span` (which starts at seq `first`) to `out`.
fn read_span(
    kv: &impl KvRead,
    g: u64,
    first: u64,
    span: &Span,
    lo: u64,
    hi: u64,
    out: &mut Vec<StoredMessage>,
) -> Result<()> {
    let message = |e: &crate::raft::Entry, pos: usize, seq: u64| -> Result<StoredMessage> {
        match &e.payload {
            openraft::EntryPayload::Normal(crate::raft::Request::Channel(ChannelCmd::Send(msgs))) => {
                msgs.get(pos).map(|m| StoredMessage::new(seq, m)).ok_or_else(|| {
                    corrupt(
                        Table::Spans,
                        format!("group {g}: seq {seq} points past its entry"),
                    )
                })
            }
            _ => Err(corrupt(
                Table::Spans,
                format!("group {g}: seq {seq} points at a log entry without messages"),
            )),
        }
    };
    match span {
        Span::Linear { index } => {
            let (from, to) = (index + (lo - first), index + (hi - first));
            let rows = kv.range(
                Table::Log,
                &keys::group_u64(g, from),
                &keys::group_u64(g, to.saturating_add(1)),
                usize::MAX,
                false,
            )?;
            if rows.len() as u64 != to - from + 1 {
                return Err(corrupt(
                    Table::Log,
                    format!("group {g}: log entries {from}..={to} have {} rows", rows.len()),
                ));
            }
            for ((k, v), seq) in rows.iter().zip(lo..) {
                let e: crate::raft::Entry = crate::integrity::decode(Table::Log, k, v)?;
                out.push(message(&e, 0, seq)?);
            }
        }
        Span::Entry { index, positions } => {
            let key = keys::group_u64(g, *index);
            let row = kv
                .get(Table::Log, &key)?
                .ok_or_else(|| corrupt(Table::Log, format!("group {g}: log entry {index} is missing")))?;
            let e: crate::raft::Entry = crate::integrity::decode(Table::Log, &key, &row)?;
            for seq in lo..=hi {
                let k = (seq - first) as usize;
                let pos = if positions.is_empty() {
                    k
                } else {
                    *positions
                        .get(k)
                        .ok_or_else(|| corrupt(Table::Spans, format!("group {g}: seq {seq} past its span")))?
                        as usize
                };
                out.push(message(&e, pos, seq)?);
            }
        }
    }
    Ok(())
}

/// Archived messages `lo..=hi` of group `g` (all must be there).
fn read_archived(kv: &impl KvRead, g: u64, lo: u64, hi: u64) -> Result<Vec<StoredMessage>> {
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
            return Err(corrupt(
                Table::Msgs,
                format!("group {g}: expected seq {want}, found {}", m.message_seq),
            ));
        }
        out.push(m);
    }
    if (out.len() as u64) < (hi - lo).saturating_add(1) {
        return Err(corrupt(
            Table::Msgs,
            format!("group {g}: messages {lo}..={hi} have {} rows", out.len()),
        ));
    }
    Ok(out)
}

/// What re-reading a group's stored messages found: the rows read and the running checksum
/// recomputed over seqs `1..=upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    pub rows: u64,
    pub checksum: u64,
}

/// Re-read messages `1..=upto` of group `g` in pages, checking every seal and that seqs are
/// contiguous, and recompute the running checksum the state machine keeps.
pub fn scan_messages(kv: &impl KvRead, g: u64, state: &ChannelState, upto: u64) -> Result<Scan> {
    const PAGE: u64 = 1024;
    let mut scan = Scan { rows: 0, checksum: 0 };
    let upto = upto.min(state.last_seq);
    let mut lo = 1;
    while lo <= upto {
        let hi = upto.min(lo + PAGE - 1);
        for m in read_messages(kv, g, state, lo, hi)? {
            scan.checksum = xxhash_rust::xxh3::xxh3_64_with_seed(&crate::store::encode(&m), scan.checksum);
            scan.rows += 1;
        }
        if scan.rows != hi {
            return Err(corrupt(
                Table::Msgs,
                format!("group {g}: messages 1..={hi} have {} rows", scan.rows),
            ));
        }
        lo = hi + 1;
    }
    Ok(scan)
}

#[cfg(test)]
#[path = "channel_tests.rs"]
pub(crate) mod tests;
