//! Metadata state machine: pure apply logic for the cluster-wide metadata group (users and
//! tokens, channels and subscribers, channels' sender blacklists and whitelists, each channel's
//! Raft group id and replica set, nodes). Who may send where is decided from these by `permit`.
//!
//! Invariants:
//! - Channel group ids are allocated from a counter in this state machine, so every node
//!   agrees on them; group 0 is the metadata group itself.
//! - A channel's replica set is computed by `placement` from the metadata group's membership
//!   at the point in the log where the channel is created, so it is the same on every node.
//! - The `members` index (uid -> channels) changes in the same apply as the channel record:
//!   a uid has a row for a channel exactly while it subscribes to it, or is one of the two
//!   users of a person channel (whose record exists once a message was sent there).

pub mod permit;
pub mod placement;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::channel::ChannelKey;
use crate::store::{KvRead, KvWrite, Result, Table, encode, keys};

const NEXT_GROUP_ID: &[u8] = b"next_group_id";
const DRAIN: &[u8] = b"drain_rate_milli";
const DECOMMISSIONED: &[u8] = b"decommissioned";

/// Whether a `Vars` row survives a restore into a new cluster (`crate::snapshot`): the group-id
/// counter does (restored channels keep their groups); a drain and the decommission set
/// describe the old cluster's nodes and do not.
pub fn var_survives_restore(name: &[u8]) -> bool {
    name != DRAIN && name != DECOMMISSIONED
}

/// Nodes being removed: placement no longer chooses them.
pub fn decommissioned(kv: &impl KvRead) -> Result<BTreeSet<u64>> {
    Ok(kv.get_decoded(Table::Vars, DECOMMISSIONED)?.unwrap_or_default())
}

/// The nodes placement may choose: the membership minus the nodes being removed.
pub fn placeable(kv: &impl KvRead, members: &BTreeSet<u64>) -> Result<BTreeSet<u64>> {
    let gone = decommissioned(kv)?;
    Ok(members.difference(&gone).copied().collect())
}

/// Where a channel's replicas belong now.
pub fn desired(
    kv: &impl KvRead,
    members: &BTreeSet<u64>,
    rec: &ChannelRecord,
    replication: usize,
) -> Result<Vec<u64>> {
    Ok(placement::place(
        &rec.key.to_bytes(),
        placeable(kv, members)?,
        replication,
    ))
}

/// The channel whose Raft group is `g`.
pub fn channel_by_group(kv: &impl KvRead, g: u64) -> Result<Option<ChannelRecord>> {
    match kv.get(Table::Groups, &keys::group(g))? {
        Some(k) => match ChannelKey::from_bytes(&k) {
            Some(key) => get_channel(kv, &key),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// The requested drain rate (channels per 1000 s), if a drain is on.
pub fn drain_rate(kv: &impl KvRead) -> Result<Option<u64>> {
    kv.get_decoded(Table::Vars, DRAIN)
}

/// The channels whose replica set differs from their placement for `members`: the sync
/// backlog. Derived from the metadata, so it is as durable as the metadata.
pub fn backlog(
    kv: &impl KvRead,
    members: &BTreeSet<u64>,
    replication: usize,
) -> Result<Vec<(ChannelRecord, Vec<u64>)>> {
    let placeable = placeable(kv, members)?;
    Ok(channels(kv, None, usize::MAX)?
        .into_iter()
        .filter_map(|rec| {
            let desired = placement::place(&rec.key.to_bytes(), placeable.iter().copied(), replication);
            let same =
                desired.len() == rec.replicas.len() && desired.iter().all(|d| rec.replicas.contains(d));
            (!same).then_some((rec, desired))
        })
        .collect())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub token: String,
    pub level: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: String,
    /// One token per device flag (0 app, 1 web, 2 pc).
    pub devices: BTreeMap<u8, Device>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub key: ChannelKey,
    pub subscribers: BTreeSet<String>,
    /// The channel's Raft group.
    pub group_id: u64,
    /// Replica node ids, preferred leader first.
    pub replicas: Vec<u64>,
}

/// WuKongIM's two sender lists of a channel (`/channel/blacklist_*`, `/channel/whitelist_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SenderList {
    /// Its uids may not send to the channel.
    Blacklist,
    /// When not empty, only its uids may send to the channel.
    Whitelist,
}

/// How an `EditSenderList` changes a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListEdit {
    Add,
    Remove,
    /// Replace the list (an empty `uids` clears it).
    Set,
}

/// A channel's sender lists; stored only while one is not empty. A person channel's lists
/// (key: a uid with type 1, as in WuKongIM) are that user's: who may not, or who alone may,
/// send to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderLists {
    pub blacklist: BTreeSet<String>,
    pub whitelist: BTreeSet<String>,
}

/// Where a node's client gateway listens, as `/route` answers it (empty: that listener is off).
/// Kept apart from `NodeRecord`, whose encoding is in every existing metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    /// `HOST:PORT` for TCP clients.
    pub tcp_addr: String,
    /// `ws://HOST:PORT` for WebSocket clients.
    pub ws_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub http_addr: String,
    pub cluster_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCmd {
    SetToken {
        uid: String,
        token: String,
        device_flag: u8,
        device_level: u8,
    },
    /// Create the channel if missing, then add (or with `reset`, replace) subscribers.
    UpsertChannel {
        key: ChannelKey,
        subscribers: Vec<String>,
        reset: bool,
        replication: usize,
    },
    RemoveSubscribers {
        key: ChannelKey,
        subscribers: Vec<String>,
    },
    /// Create the channel if missing; answer its record.
    EnsureChannel {
        key: ChannelKey,
        replication: usize,
    },
    RegisterNode(NodeRecord),
    /// A channel's group finished a membership change: record its new replica set.
    SetReplicas {
        key: ChannelKey,
        replicas: Vec<u64>,
    },
    /// Start (Some: channels per 1000 s) or stop (None) the backlog drain; durable so a new
    /// metadata leader resumes it.
    SetDrain {
        rate_milli: Option<u64>,
    },
    /// Mark a node as leaving (placement stops choosing it) or not.
    SetDecommissioned {
        node: u64,
        on: bool,
    },
    /// Forget a removed node's addresses.
    UnregisterNode(u64),
    /// Many `SetReplicas` in one entry: the migrations that finished while the previous
    /// metadata write was in flight (one Raft write and one fsync for all of them).
    SetReplicasBatch {
        updates: Vec<(ChannelKey, Vec<u64>)>,
    },
    /// Change a channel's blacklist or whitelist; the channel need not exist (WuKongIM keeps
    /// lists apart from channels, and person channels have none).
    EditSenderList {
        key: ChannelKey,
        list: SenderList,
        edit: ListEdit,
        uids: Vec<String>,
    },
    /// A node's client gateway addresses (it registers them as it does its `NodeRecord`).
    SetGateway {
        node: u64,
        gateway: GatewayRecord,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResp {
    Done,
    Channel(ChannelRecord),
    /// One answer per update of a `SetReplicasBatch`, in order (None: no such channel).
    Channels(Vec<Option<ChannelRecord>>),
}

/// Record a channel's replica set; None if the channel does not exist.
fn set_replicas(kv: &mut impl KvWrite, key: &ChannelKey, replicas: &[u64]) -> Result<Option<ChannelRecord>> {
    let Some(mut rec) = get_channel(kv, key)? else {
        return Ok(None);
    };
    rec.replicas = replicas.to_vec();
    kv.put(Table::Channels, &key.to_bytes(), &encode(&rec))?;
    Ok(Some(rec))
}

/// Apply one command. `members` are the node ids of the metadata group's membership (voters
/// and learners) at this log position.
pub fn apply(kv: &mut impl KvWrite, members: &BTreeSet<u64>, cmd: &MetaCmd) -> Result<MetaResp> {
    match cmd {
        MetaCmd::SetToken {
            uid,
            token,
            device_flag,
            device_level,
        } => {
            let mut user: User = kv.get_decoded(Table::Users, uid.as_bytes())?.unwrap_or_default();
            user.uid = uid.clone();
            user.devices.insert(
                *device_flag,
                Device {
                    token: token.clone(),
                    level: *device_level,
                },
            );
            kv.put(Table::Users, uid.as_bytes(), &encode(&user))?;
            Ok(MetaResp::Done)
        }
        MetaCmd::UpsertChannel {
            key,
            subscribers,
            reset,
            replication,
        } => {
            let mut rec = ensure_channel(kv, members, key, *replication)?;
            if *reset {
                for old in &rec.subscribers {
                    if !subscribers.contains(old) {
                        kv.delete(Table::Members, &member_key(old, key))?;
                    }
                }
                rec.subscribers.clear();
            }
            for uid in subscribers {
                kv.put(Table::Members, &member_key(uid, key), &[])?;
            }
            rec.subscribers.extend(subscribers.iter().cloned());
            kv.put(Table::Channels, &key.to_bytes(), &encode(&rec))?;
            Ok(MetaResp::Channel(rec))
        }
        MetaCmd::RemoveSubscribers { key, subscribers } => {
            let Some(mut rec) = get_channel(kv, key)? else {
                return Ok(MetaResp::Done);
            };
            for s in subscribers {
                rec.subscribers.remove(s);
                if !is_person_party(key, s) {
                    kv.delete(Table::Members, &member_key(s, key))?;
                }
            }
            kv.put(Table::Channels, &key.to_bytes(), &encode(&rec))?;
            Ok(MetaResp::Channel(rec))
        }
        MetaCmd::EnsureChannel { key, replication } => {
            Ok(MetaResp::Channel(ensure_channel(kv, members, key, *replication)?))
        }
        MetaCmd::RegisterNode(node) => {
            kv.put(Table::Nodes, &keys::group(node.id), &encode(node))?;
            Ok(MetaResp::Done)
        }
        MetaCmd::SetReplicas { key, replicas } => Ok(match set_replicas(kv, key, replicas)? {
            Some(rec) => MetaResp::Channel(rec),
            None => MetaResp::Done,
        }),
        MetaCmd::SetReplicasBatch { updates } => Ok(MetaResp::Channels(
            updates
                .iter()
                .map(|(key, replicas)| set_replicas(kv, key, replicas))
                .collect::<Result<_>>()?,
        )),
        MetaCmd::SetDecommissioned { node, on } => {
            let mut set = decommissioned(kv)?;
            if *on {
                set.insert(*node);
            } else {
                set.remove(node);
            }
            kv.put(Table::Vars, DECOMMISSIONED, &encode(&set))?;
            Ok(MetaResp::Done)
        }
        MetaCmd::UnregisterNode(id) => {
            kv.delete(Table::Nodes, &keys::group(*id))?;
            kv.delete(Table::Gateways, &keys::group(*id))?;
            Ok(MetaResp::Done)
        }
        MetaCmd::SetGateway { node, gateway } => {
            kv.put(Table::Gateways, &keys::group(*node), &encode(gateway))?;
            Ok(MetaResp::Done)
        }
        MetaCmd::SetDrain { rate_milli } => {
            match rate_milli {
                Some(r) => kv.put(Table::Vars, DRAIN, &encode(r))?,
                None => kv.delete(Table::Vars, DRAIN)?,
            }
            Ok(MetaResp::Done)
        }
        MetaCmd::EditSenderList {
            key,
            list,
            edit,
            uids,
        } => {
            let mut lists = sender_lists(kv, key)?;
            let set = match list {
                SenderList::Blacklist => &mut lists.blacklist,
                SenderList::Whitelist => &mut lists.whitelist,
            };
            match edit {
                ListEdit::Add => set.extend(uids.iter().cloned()),
                ListEdit::Remove => {
                    for u in uids {
                        set.remove(u);
                    }
                }
                ListEdit::Set => *set = uids.iter().cloned().collect(),
            }
            if lists == SenderLists::default() {
                kv.delete(Table::Lists, &key.to_bytes())?;
            } else {
                kv.put(Table::Lists, &key.to_bytes(), &encode(&lists))?;
            }
            Ok(MetaResp::Done)
        }
    }
}

fn ensure_channel(
    kv: &mut impl KvWrite,
    members: &BTreeSet<u64>,
    key: &ChannelKey,
    replication: usize,
) -> Result<ChannelRecord> {
    if let Some(rec) = get_channel(kv, key)? {
        return Ok(rec);
    }
    let group_id: u64 = kv.get_decoded(Table::Vars, NEXT_GROUP_ID)?.unwrap_or(1);
    kv.put(Table::Vars, NEXT_GROUP_ID, &encode(&(group_id + 1)))?;
    let rec = ChannelRecord {
        key: key.clone(),
        subscribers: BTreeSet::new(),
        group_id,
        replicas: placement::place(&key.to_bytes(), placeable(kv, members)?, replication),
    };
    kv.put(Table::Channels, &key.to_bytes(), &encode(&rec))?;
    kv.put(Table::Groups, &keys::group(group_id), &key.to_bytes())?;
    index_channel(kv, &rec)?;
    Ok(rec)
}

/// The `members` row of `uid` in channel `key`: len(uid) ++ uid ++ channel key, so one uid's
/// rows are one contiguous range and no uid is a prefix of another's.
pub fn member_key(uid: &str, key: &ChannelKey) -> Vec<u8> {
    let mut k = member_prefix(uid);
    k.extend_from_slice(&key.to_bytes());
    k
}

fn member_prefix(uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + uid.len() + 16);
    k.extend_from_slice(&(uid.len() as u16).to_be_bytes());
    k.extend_from_slice(uid.as_bytes());
    k
}

fn is_person_party(key: &ChannelKey, uid: &str) -> bool {
    key.channel_type == wk_api::CHANNEL_TYPE_PERSON
        && crate::channel::conversation::person_parties(&key.channel_id)
            .is_some_and(|(a, b)| a == uid || b == uid)
}

/// Write the `members` rows of a channel record: its subscribers, and both users of a person
/// channel. Also how a restore rebuilds the index from the channel records.
pub fn index_channel(kv: &mut impl KvWrite, rec: &ChannelRecord) -> Result<()> {
    for uid in &rec.subscribers {
        kv.put(Table::Members, &member_key(uid, &rec.key), &[])?;
    }
    if rec.key.channel_type == wk_api::CHANNEL_TYPE_PERSON
        && let Some((a, b)) = crate::channel::conversation::person_parties(&rec.key.channel_id)
    {
        kv.put(Table::Members, &member_key(a, &rec.key), &[])?;
        kv.put(Table::Members, &member_key(b, &rec.key), &[])?;
    }
    Ok(())
}

/// The channels `uid` is in (the `members` index), in key order.
pub fn channels_of(kv: &impl KvRead, uid: &str) -> Result<Vec<ChannelKey>> {
    let prefix = member_prefix(uid);
    kv.range(
        Table::Members,
        &prefix,
        &keys::prefix_end(&prefix),
        usize::MAX,
        false,
    )?
    .iter()
    .map(|(k, _)| {
        ChannelKey::from_bytes(&k[prefix.len()..]).ok_or_else(|| crate::store::StoreError::Corrupt {
            table: Table::Members,
            reason: "a key that names no channel".into(),
        })
    })
    .collect()
}

pub fn get_channel(kv: &impl KvRead, key: &ChannelKey) -> Result<Option<ChannelRecord>> {
    kv.get_decoded(Table::Channels, &key.to_bytes())
}

/// A channel's record without its subscribers, which are skipped without being copied: where
/// its group lives, for a reader that needs only that (a user's conversations name up to
/// thousands of channels, each with up to thousands of subscribers).
pub fn channel_place(kv: &impl KvRead, key: &ChannelKey) -> Result<Option<ChannelRecord>> {
    /// `ChannelRecord`'s encoding, the subscribers borrowed (postcard encodes a set of strings
    /// and a sequence of them alike).
    #[derive(Deserialize)]
    struct Place<'a> {
        key: ChannelKey,
        #[serde(borrow)]
        _subscribers: Vec<&'a str>,
        group_id: u64,
        replicas: Vec<u64>,
    }
    let Some(v) = kv.get(Table::Channels, &key.to_bytes())? else {
        return Ok(None);
    };
    let p: Place = postcard::from_bytes(&v).map_err(|e| crate::store::StoreError::Corrupt {
        table: Table::Channels,
        reason: e.to_string(),
    })?;
    Ok(Some(ChannelRecord {
        key: p.key,
        subscribers: BTreeSet::new(),
        group_id: p.group_id,
        replicas: p.replicas,
    }))
}

/// A channel's sender lists (empty when none were set).
pub fn sender_lists(kv: &impl KvRead, key: &ChannelKey) -> Result<SenderLists> {
    Ok(kv.get_decoded(Table::Lists, &key.to_bytes())?.unwrap_or_default())
}

pub fn get_user(kv: &impl KvRead, uid: &str) -> Result<Option<User>> {
    kv.get_decoded(Table::Users, uid.as_bytes())
}

pub fn nodes(kv: &impl KvRead) -> Result<Vec<NodeRecord>> {
    kv.range(Table::Nodes, &[], &[0xFF; 9], usize::MAX, false)?
        .iter()
        .map(|(_, v)| crate::store::decode(Table::Nodes, v))
        .collect()
}

/// Every registered node's gateway addresses, by node id.
pub fn gateways(kv: &impl KvRead) -> Result<BTreeMap<u64, GatewayRecord>> {
    kv.range(Table::Gateways, &[], &[0xFF; 9], usize::MAX, false)?
        .iter()
        .map(|(k, v)| {
            let id = keys::u64_suffix(k).ok_or_else(|| crate::store::StoreError::Corrupt {
                table: Table::Gateways,
                reason: "a key that is not a node id".into(),
            })?;
            Ok((id, crate::store::decode(Table::Gateways, v)?))
        })
        .collect()
}

/// Channels in key order, starting after `after` (exclusive), at most `limit`.
pub fn channels(kv: &impl KvRead, after: Option<&ChannelKey>, limit: usize) -> Result<Vec<ChannelRecord>> {
    let from = match after {
        Some(k) => {
            let mut b = k.to_bytes();
            b.push(0);
            b
        }
        None => Vec::new(),
    };
    kv.range(Table::Channels, &from, &[0xFF; 1], limit, false)?
        .iter()
        .map(|(_, v)| crate::store::decode(Table::Channels, v))
        .collect()
}

/// The tables the metadata group owns, for snapshots.
pub const TABLES: [Table; 8] = [
    Table::Users,
    Table::Channels,
    Table::Groups,
    Table::Nodes,
    Table::Vars,
    Table::Lists,
    Table::Gateways,
    Table::Members,
];

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
