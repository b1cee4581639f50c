//! Bulk loading for the scale benches (`catchup`, `idle`, `drain`, `failover --active`):
//! users, channels and messages created with many requests in flight, spread round-robin over
//! the endpoints. Every item is retried (a cluster that just started may have no metadata
//! leader yet; every request is idempotent), so a bulk load either completes or fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use wk_api::{
    CHANNEL_TYPE_GROUP, ChannelReq, Client, ClientError, MessageHeader, SendBatchReq, SendReq, UserTokenReq,
};

use crate::probe::payload_pool;
use crate::wait::retry;

/// How long one item may keep failing before the whole load fails.
const ITEM_DEADLINE: Duration = Duration::from_secs(60);
/// Messages per `/message/sendbatch` when filling one channel (the node allows 1,000).
pub const FILL_BATCH: u64 = 500;

/// Runs `job(client, i)` for every `i` in `0..n` with `inflight` at a time, request `i` going
/// to endpoint `i % endpoints`; prints a progress line to stderr every 5 s. Returns the
/// elapsed time.
pub async fn for_each<F, Fut>(
    what: &str,
    clients: &[Client],
    n: u64,
    inflight: usize,
    job: F,
) -> anyhow::Result<Duration>
where
    F: Fn(Client, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let job = Arc::new(job);
    let clients: Arc<Vec<Client>> = Arc::new(clients.to_vec());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..inflight.max(1) {
        let (next, done, job, clients) = (next.clone(), done.clone(), job.clone(), clients.clone());
        let what = what.to_string();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let client = clients[(i % clients.len() as u64) as usize].clone();
                retry(&format!("{what} #{i}"), ITEM_DEADLINE, || job(client.clone(), i)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(r) => r.context("bulk load task")??,
                None => break,
            },
            _ = tick.tick() => {
                let d = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("wkctl: {what}: {d} of {n} ({:.0}/s)", d as f64 / secs);
            }
        }
    }
    Ok(started.elapsed())
}

/// Registers users `<prefix><i>` (token `t<i>`, device flag 0) for `i` in `0..n`.
pub async fn users(clients: &[Client], prefix: &str, n: u64, inflight: usize) -> anyhow::Result<Duration> {
    let prefix = prefix.to_string();
    for_each("users", clients, n, inflight, move |c, i| {
        let req = UserTokenReq {
            uid: format!("{prefix}{i}"),
            token: format!("t{i}"),
            device_flag: 0,
            device_level: 1,
        };
        async move { c.user_token(&req).await.map(|_| ()) }
    })
    .await
}

/// The group channel id `<prefix><i>`.
pub fn channel_id(prefix: &str, i: u64) -> String {
    format!("{prefix}{i}")
}

/// Creates the group channels `<prefix><i>` for `i` in `0..n`, with `uid` as subscriber.
pub async fn channels(
    clients: &[Client],
    prefix: &str,
    n: u64,
    uid: &str,
    inflight: usize,
) -> anyhow::Result<Duration> {
    let (prefix, uid) = (prefix.to_string(), uid.to_string());
    for_each("channels", clients, n, inflight, move |c, i| {
        let req = ChannelReq {
            channel_id: channel_id(&prefix, i),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec![uid.clone()],
            reset: 0,
        };
        async move { c.channel_create(&req).await.map(|_| ()) }
    })
    .await
}

/// A message with a fixed client_msg_no (so a retry is deduplicated, never stored twice).
pub fn message(uid: &str, channel: &str, client_msg_no: String, payload: &str) -> SendReq {
    SendReq {
        header: MessageHeader::default(),
        client_msg_no,
        from_uid: uid.to_string(),
        channel_id: channel.to_string(),
        channel_type: CHANNEL_TYPE_GROUP,
        payload: payload.to_string(),
    }
}

/// Sends `per_channel` messages of `size` bytes to each of the channels `<prefix><i>`,
/// `i` in `first..first + n`, one `/message/sendbatch` per channel; this wakes each
/// channel's group.
#[allow(clippy::too_many_arguments)]
pub async fn messages_per_channel(
    clients: &[Client],
    prefix: &str,
    first: u64,
    n: u64,
    per_channel: u64,
    uid: &str,
    size: u32,
    inflight: usize,
) -> anyhow::Result<Duration> {
    let (prefix, uid, tag) = (prefix.to_string(), uid.to_string(), crate::probe::run_tag());
    let payloads = Arc::new(payload_pool(size));
    for_each("channel messages", clients, n, inflight, move |c, i| {
        let i = first + i;
        let ch = channel_id(&prefix, i);
        let req = SendBatchReq {
            messages: (0..per_channel)
                .map(|k| {
                    let p = &payloads[((i + k) % payloads.len() as u64) as usize];
                    message(&uid, &ch, format!("{tag}-{i}-{k}"), p)
                })
                .collect(),
        };
        async move { send_all(&c, &req).await }
    })
    .await
}

/// Sends a batch; a partly failed batch is an error (the caller retries it whole, and the
/// acknowledged messages dedup on their client_msg_no).
async fn send_all(c: &Client, req: &SendBatchReq) -> Result<(), ClientError> {
    let resp = c.send_batch(req).await?;
    match resp.results.into_iter().find_map(|r| r.error) {
        Some(e) => Err(ClientError::Api(e)),
        None => Ok(()),
    }
}

/// Sends `n` messages of `size` bytes to one channel in batches of `FILL_BATCH`.
pub async fn fill_channel(
    clients: &[Client],
    channel: &str,
    n: u64,
    uid: &str,
    size: u32,
    inflight: usize,
) -> anyhow::Result<Duration> {
    let (channel, uid, tag) = (channel.to_string(), uid.to_string(), crate::probe::run_tag());
    let payloads = Arc::new(payload_pool(size));
    let batches = n.div_ceil(FILL_BATCH);
    for_each("message batches", clients, batches, inflight, move |c, b| {
        let req = SendBatchReq {
            messages: (b * FILL_BATCH..((b + 1) * FILL_BATCH).min(n))
                .map(|k| {
                    let p = &payloads[(k % payloads.len() as u64) as usize];
                    message(&uid, &channel, format!("{tag}-{k}"), p)
                })
                .collect(),
        };
        async move { send_all(&c, &req).await }
    })
    .await
}
