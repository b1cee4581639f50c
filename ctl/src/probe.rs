//! The probe workload shared by `wkctl bench failover` and `wkctl drill`: writers that send
//! one message at a time with client_msg_no retries, the operation history they record, and
//! the read-back that the checkers compare it with.
//!
//! Invariants:
//! - A writer fixes an operation's client_msg_no and payload before the first attempt and
//!   retries exactly that request (on the next endpoint) until it is acknowledged or the
//!   operation's deadline passes, so the node's dedup on `(from_uid, client_msg_no)` makes
//!   every retry return the original message.
//! - Each writer is sequential: an operation starts only after the previous one ended, so the
//!   acknowledged seqs of one writer must increase in history order.
//! - A payload is a pure function of its client_msg_no and size (`payload_for`), so the
//!   checker can tell a stored message from a corrupted one without keeping every payload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wk_api::{CHANNEL_TYPE_GROUP, ChannelReq, Client, MessageHeader, PULL_MODE_UP, SendReq, SyncReq};

use crate::wait::{Poll, retry, wait_for};

/// Distinct random payloads per run for load generators (content does not matter there;
/// generating one per request would only burn client CPU on a 2-core machine).
const PAYLOAD_POOL: usize = 256;

/// Random base64 payloads of `size` bytes.
pub fn payload_pool(size: u32) -> Vec<String> {
    let mut buf = vec![0u8; size as usize];
    (0..PAYLOAD_POOL)
        .map(|_| {
            fastrand::fill(&mut buf);
            base64::engine::general_purpose::STANDARD.encode(&buf)
        })
        .collect()
}

/// The payload a probe writer sends for `client_msg_no`: the id repeated to `size` bytes (at
/// least the id itself), base64. Deterministic, so the checker recomputes it.
pub fn payload_for(client_msg_no: &str, size: u32) -> String {
    let id = client_msg_no.as_bytes();
    let len = (size as usize).max(id.len());
    let bytes: Vec<u8> = id.iter().copied().cycle().take(len).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A per-run tag so client_msg_nos never collide with an earlier run on the same cluster.
pub fn run_tag() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{ms:x}{:04x}", fastrand::u16(..))
}

/// One client per endpoint (sharing one connection pool), for round-robin spreading.
pub fn per_endpoint(client: &Client) -> anyhow::Result<Vec<Client>> {
    client
        .endpoints()
        .iter()
        .map(|e| client.only(e).with_context(|| format!("endpoint {e}")))
        .collect()
}

/// Every node's (id, base URL) from `/cluster/nodes`, with `admin`'s scheme (`Client::node_url`).
/// A node registers its HTTP address a moment after it starts, so this waits until every
/// listed node has one.
pub async fn node_urls(admin: &Client) -> anyhow::Result<Vec<(u64, String)>> {
    let nodes = wait_for(
        "every node's HTTP address in /cluster/nodes",
        Poll::new(Duration::from_secs(30), Duration::from_millis(100)),
        || async {
            admin
                .nodes()
                .await
                .ok()
                .filter(|n| !n.nodes.is_empty() && n.nodes.iter().all(|x| !x.http_addr.is_empty()))
        },
    )
    .await?;
    Ok(nodes
        .nodes
        .iter()
        .map(|n| (n.id, admin.node_url(&n.http_addr)))
        .collect())
}

/// Creates the group channels `ids` with `uid` as subscriber, 32 at a time.
pub async fn create_channels(client: &Client, ids: &[String], uid: &str) -> anyhow::Result<()> {
    create_channels_with(client, ids, &[uid.to_string()]).await
}

/// Creates the group channels `ids`, each with every one of `subscribers` (added to any it
/// already has), 32 at a time.
pub async fn create_channels_with(
    client: &Client,
    ids: &[String],
    subscribers: &[String],
) -> anyhow::Result<()> {
    for chunk in ids.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for id in chunk {
            let client = client.clone();
            let req = ChannelReq {
                channel_id: id.clone(),
                channel_type: CHANNEL_TYPE_GROUP,
                subscribers: subscribers.to_vec(),
                reset: 0,
            };
            set.spawn(async move {
                retry(
                    &format!("POST /channel {}", req.channel_id),
                    Duration::from_secs(30),
                    || client.channel_create(&req),
                )
                .await
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("channel creation task")??;
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C so that the caller's drop guards (nodes, temp dirs) run.
pub async fn interrupted() -> anyhow::Error {
    match tokio::signal::ctrl_c().await {
        Ok(()) => anyhow::anyhow!("interrupted"),
        Err(e) => anyhow::anyhow!("cannot listen for Ctrl-C: {e}"),
    }
}

/// One stored message as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub client_msg_no: String,
    pub seq: u64,
    pub message_id: u64,
    /// Base64, as stored.
    pub payload: String,
}

/// Every message of group channel `channel` as `uid` reads it, oldest first, in pages.
pub async fn read_channel(client: &Client, uid: &str, channel: &str) -> anyhow::Result<Vec<Stored>> {
    let mut out = Vec::new();
    let mut start = 1;
    loop {
        let req = SyncReq {
            login_uid: uid.to_string(),
            channel_id: channel.to_string(),
            channel_type: CHANNEL_TYPE_GROUP,
            start_message_seq: start,
            end_message_seq: 0,
            limit: 1000,
            pull_mode: PULL_MODE_UP,
        };
        let page = retry(
            &format!("POST /channel/messagesync {channel}"),
            Duration::from_secs(30),
            || client.sync(&req),
        )
        .await?;
        let Some(last) = page.messages.last().map(|m| m.message_seq) else {
            break;
        };
        out.extend(page.messages.into_iter().map(|m| Stored {
            client_msg_no: m.client_msg_no,
            seq: m.message_seq,
            message_id: m.message_id,
            payload: m.payload,
        }));
        if page.more == 0 {
            break;
        }
        start = last + 1;
    }
    Ok(out)
}

/// What the read-back of one channel found, compared with what was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Messages acknowledged to the writer.
    pub acked: u64,
    /// Messages read back.
    pub stored: u64,
    /// Acknowledged but absent.
    pub lost: u64,
    /// Extra copies of one client_msg_no (any message, acknowledged or not).
    pub duplicated: u64,
    /// Acknowledged, present, but not at the acknowledged seq.
    pub misplaced: u64,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.misplaced == 0
    }
}

/// Compares acknowledged `(client_msg_no, seq)` pairs with the stored ones (one channel).
pub fn verify(acked: &[(String, u64)], stored: &[(String, u64)]) -> Verification {
    let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
    for (no, seq) in stored {
        seen.entry(no.as_str()).or_default().push(*seq);
    }
    let duplicated = seen.values().map(|s| s.len() as u64 - 1).sum();
    let mut lost = 0;
    let mut misplaced = 0;
    for (no, seq) in acked {
        match seen.get(no.as_str()) {
            None => lost += 1,
            Some(seqs) if !seqs.contains(seq) => misplaced += 1,
            Some(_) => {}
        }
    }
    Verification {
        acked: acked.len() as u64,
        stored: stored.len() as u64,
        lost,
        duplicated,
        misplaced,
    }
}

// ---------------------------------------------------------------------------------------------
// Writers and their history

/// How one operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpOutcome {
    /// Acknowledged: the node answered with a seq and message id.
    Ok,
    /// Not acknowledged before the operation's deadline: indeterminate (it may still have
    /// been stored).
    Failed,
}

/// One write in the operation history (one line of `history.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub writer: u32,
    pub channel: String,
    pub client_msg_no: String,
    /// Milliseconds since the run started.
    pub start_ms: f64,
    pub end_ms: f64,
    pub outcome: OpOutcome,
    /// Attempts made (1 when the first one was acknowledged).
    pub attempts: u32,
    pub seq: Option<u64>,
    pub message_id: Option<u64>,
    /// The last attempt's error, for failed operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the controller tells the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterCmd {
    Run,
    Pause,
    Stop,
}

/// The history all writers of a run append to. std `Mutex`: pushed once per operation and
/// read between phases; never held across an `.await`.
#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<Op>>,
    /// Attempts that failed (each was retried or ended the operation).
    pub failed_attempts: AtomicU64,
}

impl History {
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock poisoned").clone()
    }

    /// End times (ms) of the acknowledged operations, in history order.
    pub fn ack_times(&self) -> Vec<f64> {
        self.ops
            .lock()
            .expect("history lock poisoned")
            .iter()
            .filter(|o| o.outcome == OpOutcome::Ok)
            .map(|o| o.end_ms)
            .collect()
    }

    pub fn acked(&self) -> usize {
        self.ops
            .lock()
            .expect("history lock poisoned")
            .iter()
            .filter(|o| o.outcome == OpOutcome::Ok)
            .count()
    }
}

/// What one writer does.
#[derive(Clone)]
pub struct WriterSpec {
    pub id: u32,
    /// One client per endpoint; attempts rotate on errors.
    pub clients: Vec<Client>,
    pub uid: String,
    pub channel: String,
    /// Prefix of every client_msg_no (unique per run and writer).
    pub tag: String,
    pub payload_size: u32,
    /// Minimum time between operation starts; None: back to back.
    pub interval: Option<Duration>,
    /// An operation not acknowledged this long after it started is recorded as failed.
    pub op_timeout: Duration,
    /// Time zero of the history.
    pub t0: Instant,
}

/// Runs one writer until told to stop. Reports `true` on `idle` while it is between
/// operations and paused or stopped (the controller waits on that before checking).
pub async fn writer(
    spec: WriterSpec,
    mut cmd: watch::Receiver<WriterCmd>,
    idle: watch::Sender<bool>,
    history: Arc<History>,
) {
    let ms = |t: Instant| t.saturating_duration_since(spec.t0).as_secs_f64() * 1000.0;
    let mut n = 0u64;
    let mut ep = (spec.id as usize) % spec.clients.len().max(1);
    let mut next_start = Instant::now();
    loop {
        loop {
            let c = *cmd.borrow_and_update();
            match c {
                WriterCmd::Run => break,
                WriterCmd::Stop => {
                    let _ = idle.send(true);
                    return;
                }
                WriterCmd::Pause => {
                    let _ = idle.send(true);
                    if cmd.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = idle.send(false);
        if let Some(iv) = spec.interval {
            tokio::time::sleep_until(next_start.into()).await;
            next_start = Instant::now().max(next_start + iv);
        }
        n += 1;
        let client_msg_no = format!("{}-{n}", spec.tag);
        let req = SendReq {
            header: MessageHeader::default(),
            payload: payload_for(&client_msg_no, spec.payload_size),
            client_msg_no,
            from_uid: spec.uid.clone(),
            channel_id: spec.channel.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
        };
        let started = Instant::now();
        let mut attempts = 0u32;
        // The operation as it ended: acknowledged with its (seq, id), or failed with the last error.
        let ended = |attempts: u32, result: Result<(u64, u64), String>| {
            let (outcome, ack, error) = match result {
                Ok(ack) => (OpOutcome::Ok, Some(ack), None),
                Err(e) => (OpOutcome::Failed, None, Some(e)),
            };
            Op {
                writer: spec.id,
                channel: spec.channel.clone(),
                client_msg_no: req.client_msg_no.clone(),
                start_ms: ms(started),
                end_ms: ms(Instant::now()),
                outcome,
                attempts,
                seq: ack.map(|a| a.0),
                message_id: ack.map(|a| a.1),
                error,
            }
        };
        let op = loop {
            attempts += 1;
            let err = match spec.clients[ep].send(&req).await {
                Ok(resp) => break ended(attempts, Ok((resp.message_seq, resp.message_id))),
                Err(e) => e,
            };
            history.failed_attempts.fetch_add(1, Ordering::Relaxed);
            ep = (ep + 1) % spec.clients.len();
            if started.elapsed() >= spec.op_timeout {
                break ended(attempts, Err(err.to_string()));
            }
            if (attempts as usize).is_multiple_of(spec.clients.len()) {
                // Every node failed once: give the cluster a moment.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        history.ops.lock().expect("history lock poisoned").push(op);
    }
}

/// A set of running writers and their controls.
pub struct Writers {
    pub history: Arc<History>,
    cmd: watch::Sender<WriterCmd>,
    idle: Vec<watch::Receiver<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub fn start(specs: Vec<WriterSpec>) -> Writers {
        let history = Arc::new(History::default());
        let (cmd, cmd_rx) = watch::channel(WriterCmd::Run);
        let mut idle = Vec::new();
        let mut tasks = Vec::new();
        for spec in specs {
            let (tx, rx) = watch::channel(false);
            idle.push(rx);
            tasks.push(tokio::spawn(writer(spec, cmd_rx.clone(), tx, history.clone())));
        }
        Writers {
            history,
            cmd,
            idle,
            tasks,
        }
    }

    pub fn resume(&self) {
        let _ = self.cmd.send(WriterCmd::Run);
    }

    /// Asks every writer to pause and waits until all are between operations (an operation
    /// in flight ends first: acknowledged or timed out).
    pub async fn pause(&mut self, within: Duration) -> anyhow::Result<()> {
        let _ = self.cmd.send(WriterCmd::Pause);
        self.wait_idle(within).await
    }

    async fn wait_idle(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        for rx in &mut self.idle {
            while !*rx.borrow_and_update() {
                if tokio::time::timeout_at(deadline.into(), rx.changed())
                    .await
                    .is_err()
                {
                    bail!(
                        "a writer did not pause within {}",
                        humantime::format_duration(within)
                    );
                }
            }
        }
        Ok(())
    }

    /// Stops every writer (operations in flight end first) and waits for the tasks.
    pub async fn stop(mut self, within: Duration) -> anyhow::Result<Arc<History>> {
        let _ = self.cmd.send(WriterCmd::Stop);
        let deadline = Instant::now() + within;
        for t in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout_at(deadline.into(), t).await {
                Ok(r) => r.context("writer task")?,
                Err(_) => bail!(
                    "the writers did not stop within {}",
                    humantime::format_duration(within)
                ),
            }
        }
        Ok(self.history.clone())
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification() {
        let s = |v: &[(&str, u64)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
        type Pairs = &'static [(&'static str, u64)];
        let cases: &[(Pairs, Pairs, (u64, u64, u64))] = &[
            (&[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)], (0, 0, 0)),
            // an unacknowledged write that landed is fine
            (&[("a", 1)], &[("a", 1), ("x", 2)], (0, 0, 0)),
            (&[("a", 1), ("b", 2)], &[("a", 1)], (1, 0, 0)),
            (&[("a", 1)], &[("a", 1), ("a", 2)], (0, 1, 0)),
            (&[("a", 1), ("b", 2)], &[("b", 1), ("a", 2)], (0, 0, 2)),
        ];
        for (acked, stored, (lost, dup, mis)) in cases {
            let v = verify(&s(acked), &s(stored));
            assert_eq!(
                (v.lost, v.duplicated, v.misplaced),
                (*lost, *dup, *mis),
                "{acked:?} vs {stored:?}"
            );
            assert_eq!(v.ok(), *lost + *dup + *mis == 0);
        }
    }

    #[test]
    fn payloads_are_deterministic() {
        assert_eq!(payload_for("ab", 5), payload_for("ab", 5));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(payload_for("ab", 5))
            .expect("base64");
        assert_eq!(raw, b"ababa");
        // never shorter than the id itself
        let raw = base64::engine::general_purpose::STANDARD
            .decode(payload_for("abcdef", 2))
            .expect("base64");
        assert_eq!(raw, b"abcdef");
    }
}
