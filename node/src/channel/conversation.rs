//! Conversations, the channel's side: pure rules over the `convs` rows of one channel group.
//!
//! A conversation of user U on channel C is derived, never stored per message per member
//! (WuKongIM's read diffusion): C's last seq and last message come from the channel's own
//! state and log, and U's small [`ReadState`] (read seq, deleted-up-to seq, version of its
//! last change) is a row of C's group. So a message costs the same replicated writes however
//! many members the channel has: the sender's row (a sender has read its own message) and
//! the channel's [`ConvClock`].
//!
//! Invariants (per channel group; every rule is a function of the log, so every replica
//! computes the same rows):
//! - `ConvClock::clock` strictly increases with every change (message entry or conversation
//!   command): `max(clock + 1, change time in µs)`, the change time fixed by the node that
//!   proposed it (the message id's millisecond, a command's `at_ms`). So versions grow on
//!   every replica and across leader changes, and are close to wall-clock microseconds,
//!   which orders the conversations of one user across channels (up to the nodes' clock skew).
//! - A conversation's version is `max(msg_version, read.version)`: it changes when a message
//!   arrives or when that user changes their own state, never when another member does.
//! - unread = `last_seq - read_seq` (clamped at 0); a sender's `read_seq` follows its own
//!   messages, so its unread stays 0.
//! - A deleted conversation (`last_seq <= deleted_to`) is hidden until a message past
//!   `deleted_to` arrives; deleting also reads everything, so it comes back with unread 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{KvRead, KvWrite, Result, Table, encode, keys};

/// One user's state in one channel. No row: nothing read, nothing deleted, version 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// Messages `1..=read_seq` count as read.
    pub read_seq: u64,
    /// The conversation is hidden while the channel's last seq is at most this.
    pub deleted_to: u64,
    /// The channel's clock at this user's last change (0: never changed).
    pub version: u64,
}

/// The channel's conversation clock: one row per channel group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvClock {
    /// The newest version given out in this channel.
    pub clock: u64,
    /// The clock at the channel's last message: every member's conversation changed then.
    pub msg_version: u64,
}

/// What a user does to their conversation (WuKongIM's `/conversations/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvOp {
    /// `setUnread`: the newest `n` messages count as unread.
    SetUnread(u64),
    /// `clearUnread`: read up to this seq (0: up to the last message).
    ClearUnread(u64),
    /// `delete`: hide the conversation until a newer message arrives.
    Delete,
}

/// A conversation command, an entry of the channel's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvCmd {
    pub uid: String,
    pub op: ConvOp,
    /// Wall-clock milliseconds, fixed by the node that took the request (before the first
    /// attempt, so retries propose the same entry).
    pub at_ms: u64,
}

/// The epoch of message ids' millisecond field (`cluster::ids`).
const ID_EPOCH_MS: u64 = 1_704_067_200_000;

/// The wall-clock millisecond a message id was made at (`cluster::ids`: 41 bits of
/// milliseconds since 2024-01-01, then 22 bits of node and sequence).
pub fn id_millis(message_id: u64) -> u64 {
    (message_id >> 22) + ID_EPOCH_MS
}

/// The `channel_id` user `uid` sees for the person channel `fake_id` (`a@b`): the other
/// party, itself in a self-chat; None when `uid` is not one of the two.
pub fn person_peer(fake_id: &str, uid: &str) -> Option<String> {
    let (a, b) = fake_id.split_once('@')?;
    if a == uid {
        Some(b.to_string())
    } else if b == uid {
        Some(a.to_string())
    } else {
        None
    }
}

/// The two uids of the person channel `fake_id`, if it is one.
pub fn person_parties(fake_id: &str) -> Option<(&str, &str)> {
    fake_id
        .split_once('@')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('@'))
}

fn row_key(g: u64, uid: &str) -> Vec<u8> {
    let mut k = keys::group(g).to_vec();
    k.extend_from_slice(uid.as_bytes());
    k
}

pub fn read_state(kv: &impl KvRead, g: u64, uid: &str) -> Result<ReadState> {
    Ok(kv
        .get_decoded(Table::Convs, &row_key(g, uid))?
        .unwrap_or_default())
}

pub fn clock(kv: &impl KvRead, g: u64) -> Result<ConvClock> {
    Ok(kv.get_decoded(Table::Convs, &keys::group(g))?.unwrap_or_default())
}

fn tick(c: &mut ConvClock, at_ms: u64) -> u64 {
    c.clock = (c.clock + 1).max(at_ms.saturating_mul(1000));
    c.clock
}

/// After a message entry stored messages (`stored`: sender and seq of each new one, in seq
/// order): every member's conversation changed, and each sender has read its own message.
/// System messages have no reader row. Two rows per entry at most per sender, none per member.
pub fn on_messages(kv: &mut impl KvWrite, g: u64, stored: &[(&str, u64, u64)]) -> Result<()> {
    let Some(&(_, _, last_id)) = stored.last() else {
        return Ok(());
    };
    let mut c = clock(kv, g)?;
    c.msg_version = tick(&mut c, id_millis(last_id));
    kv.put(Table::Convs, &keys::group(g), &encode(&c))?;
    let mut senders: BTreeMap<&str, u64> = BTreeMap::new();
    for &(uid, seq, _) in stored {
        if uid != super::SYSTEM_UID && !uid.is_empty() {
            senders.insert(uid, seq);
        }
    }
    for (uid, seq) in senders {
        let mut r = read_state(kv, g, uid)?;
        if r.read_seq < seq {
            r.read_seq = seq;
            kv.put(Table::Convs, &row_key(g, uid), &encode(&r))?;
        }
    }
    Ok(())
}

/// Apply a user's conversation command with the channel at `last_seq`; answers the new state.
pub fn apply_cmd(kv: &mut impl KvWrite, g: u64, last_seq: u64, cmd: &ConvCmd) -> Result<ReadState> {
    let mut r = read_state(kv, g, &cmd.uid)?;
    match cmd.op {
        ConvOp::SetUnread(n) => r.read_seq = last_seq.saturating_sub(n),
        ConvOp::ClearUnread(0) => r.read_seq = last_seq,
        ConvOp::ClearUnread(seq) => r.read_seq = seq.min(last_seq),
        ConvOp::Delete => {
            r.deleted_to = last_seq;
            r.read_seq = r.read_seq.max(last_seq);
        }
    }
    let mut c = clock(kv, g)?;
    r.version = tick(&mut c, cmd.at_ms);
    kv.put(Table::Convs, &keys::group(g), &encode(&c))?;
    kv.put(Table::Convs, &row_key(g, &cmd.uid), &encode(&r))?;
    Ok(r)
}

/// One user's conversation on one channel as a replica holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvView {
    pub last_seq: u64,
    pub read: ReadState,
    pub msg_version: u64,
}

impl ConvView {
    /// Shown at all: the channel has a message the user did not delete.
    pub fn visible(&self) -> bool {
        self.last_seq > 0 && self.last_seq > self.read.deleted_to
    }

    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read.read_seq)
    }

    pub fn version(&self) -> u64 {
        self.msg_version.max(self.read.version)
    }

    /// Part of a sync that asked for changes after `since` (0: everything).
    pub fn changed_since(&self, since: u64) -> bool {
        self.visible() && (since == 0 || self.version() > since)
    }
}

#[cfg(test)]
#[path = "conversation_tests.rs"]
mod tests;
