//! Verification, like `etcdctl endpoint hashkv`: every replica re-reads its copy of a
//! channel (every message and log row against its seal, seqs contiguous) and recomputes the
//! running checksum up to a seq all replicas have; the node that asked compares the answers.
//!
//! A replica that finds a bad row reports it (`integrity::report`), which stops it serving
//! the group and starts its repair (`cluster::repair`): verifying is also how an operator
//! scrubs a cluster (`wkctl cluster verify`).

use std::time::Duration;

use openraft::entry::RaftEntry;
use serde::{Deserialize, Serialize};
use wk_api::{ChannelVerify, ReplicaVerify};

use super::Node;
use super::rpc::{AppReply, AppRpc};
use crate::error::Result;
use crate::meta::ChannelRecord;
use crate::raft::{Entry, GroupId};
use crate::store::{KvRead, StoreError, Table, keys};

/// A replica re-reads its whole copy: allow for a big channel on a busy disk.
const VERIFY_TTL: Duration = Duration::from_secs(60);
/// Log rows read per range call.
const LOG_PAGE: usize = 1024;

/// One replica's findings about its own copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalVerify {
    pub message_seq: u64,
    pub verified_seq: u64,
    pub checksum: u64,
    pub log_entries: u64,
    pub corrupt: Option<String>,
}

/// Check every log row of group `g` against its seal and its key; answers how many.
fn scan_log(kv: &impl KvRead, g: GroupId) -> crate::store::Result<u64> {
    let end = keys::prefix_end(&keys::group(g));
    let mut from = keys::group(g).to_vec();
    let mut n = 0u64;
    loop {
        let rows = kv.range(Table::Log, &from, &end, LOG_PAGE, false)?;
        for (k, v) in &rows {
            let e: Entry = crate::integrity::decode(Table::Log, k, v)?;
            if k[..] != keys::group_u64(g, e.index())[..] {
                return Err(StoreError::Corrupt {
                    table: Table::Log,
                    reason: format!("group {g}: entry {} stored under another index", e.index()),
                });
            }
            n += 1;
        }
        match rows.last() {
            Some((k, _)) if rows.len() == LOG_PAGE => {
                // The next key after `k`: the same bytes with a 0 appended.
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(n),
        }
    }
}

impl Node {
    /// This replica's copy of group `g`, re-read: messages `1..=upto` (capped at what it
    /// applied) and every log row.
    pub(super) async fn verify_local(&self, g: GroupId, upto: u64) -> Result<LocalVerify> {
        let found = self
            .store
            .read(move |r| {
                let st = crate::raft::state_machine::load_state(r, g)?.channel;
                let upto = upto.min(st.last_seq);
                let scan = crate::channel::scan_messages(r, g, &st, upto)?;
                if upto == st.last_seq && scan.checksum != st.checksum {
                    return Err(StoreError::Corrupt {
                        table: Table::Msgs,
                        reason: format!(
                            "group {g}: messages recompute to checksum {:016x}, the state says {:016x}",
                            scan.checksum, st.checksum
                        ),
                    });
                }
                Ok(LocalVerify {
                    message_seq: st.last_seq,
                    verified_seq: upto,
                    checksum: scan.checksum,
                    log_entries: scan_log(r, g)?,
                    corrupt: None,
                })
            })
            .await;
        match crate::integrity::check(g, found) {
            Ok(v) => Ok(v),
            Err(StoreError::Corrupt { .. }) => {
                let st = self
                    .store
                    .read(move |r| crate::raft::state_machine::load_state(r, g))
                    .await?;
                Ok(LocalVerify {
                    message_seq: st.channel.last_seq,
                    verified_seq: 0,
                    checksum: 0,
                    log_entries: 0,
                    corrupt: crate::integrity::corrupt(g).map(|c| c.reason),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /cluster/channels/{id}/{type}/verify`: every replica verifies its copy up to the
    /// lowest seq among them; the checksums must agree.
    pub async fn channel_verify(&self, rec: &ChannelRecord) -> ChannelVerify {
        let probes = self.probe_replicas(rec).await;
        let common_seq = probes
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| s.message_seq))
            .min()
            .unwrap_or(0);
        let asks = rec
            .replicas
            .iter()
            .map(|id| self.ask(*id, AppRpc::Verify(rec.group_id, common_seq), VERIFY_TTL));
        let answers = futures::future::join_all(asks).await;
        let replicas: Vec<ReplicaVerify> = rec
            .replicas
            .iter()
            .zip(answers)
            .map(|(id, a)| {
                let mut r = ReplicaVerify {
                    node_id: *id,
                    online: false,
                    message_seq: 0,
                    verified_seq: 0,
                    checksum: String::new(),
                    log_entries: 0,
                    corrupt: None,
                    error: None,
                };
                match a {
                    Ok(AppReply::Verified(v)) => {
                        r.online = true;
                        r.message_seq = v.message_seq;
                        r.verified_seq = v.verified_seq;
                        r.log_entries = v.log_entries;
                        if v.corrupt.is_none() {
                            r.checksum = format!("{:016x}", v.checksum);
                        }
                        r.corrupt = v.corrupt;
                    }
                    Ok(AppReply::Err(e)) => r.error = Some(e.to_string()),
                    Ok(other) => r.error = Some(format!("unexpected answer {other:?}")),
                    Err(e) => r.error = Some(e.to_string()),
                }
                r
            })
            .collect();
        let ok = replicas.iter().all(|r| r.online && r.corrupt.is_none())
            && replicas
                .windows(2)
                .all(|w| w[0].checksum == w[1].checksum && w[0].verified_seq == w[1].verified_seq);
        if !ok {
            tracing::warn!(channel = %rec.key, ?replicas, "verification failed");
        }
        ChannelVerify {
            channel_id: rec.key.channel_id.clone(),
            channel_type: rec.key.channel_type,
            group_id: rec.group_id,
            common_seq,
            ok,
            replicas,
        }
    }
}
