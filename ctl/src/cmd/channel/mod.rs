//! `wkctl channel list|show|transfer-leader`: channel groups, their replicas and leaders.
//!
//! Also the shared plumbing of the per-channel views (`cluster health`, `node show`): listing
//! every channel and asking for each one's replica status, a bounded number at a time so a
//! large cluster is not flooded.

pub mod verify;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use wk_api::{ChannelInfo, ChannelReplicas, Client, ClientError, ErrorCode};

use crate::Outcome;
use crate::cli::{ChannelListArgs, GlobalArgs, OutputFormat, TransferArgs};
use crate::output;
use crate::render::{self, ChannelListing};

/// Per-channel status requests in flight at once.
pub const CONCURRENCY: usize = 8;
/// The most channels the node lists in one answer.
pub const MAX_LIST: u64 = 10_000;
/// Channels asked per page when a command follows the pages of `/cluster/channels`.
pub const PAGE: u64 = 1_000;
/// A leader transfer waits up to 5 s on the node; the request may take a little longer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `f` on every item, at most `limit` at a time; the results keep the input order.
pub async fn bounded<I, T, F, Fut>(items: Vec<I>, limit: usize, f: F) -> Vec<T>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    let mut pending = items.into_iter().enumerate();
    let mut set = JoinSet::new();
    loop {
        while set.len() < limit.max(1) {
            let Some((i, item)) = pending.next() else { break };
            let fut = f(item);
            set.spawn(async move { (i, fut.await) });
        }
        match set.join_next().await {
            Some(Ok((i, v))) => out[i] = Some(v),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(e)) => panic!("status task cancelled: {e}"),
            None => break,
        }
    }
    out.into_iter()
        .map(|v| v.expect("every spawned task returned"))
        .collect()
}

/// The live replica status of each channel, in order; failures are kept per channel.
pub async fn replicas_of(
    client: &Client,
    channels: Vec<ChannelInfo>,
) -> Vec<(ChannelInfo, Result<ChannelReplicas, ClientError>)> {
    bounded(channels, CONCURRENCY, |c| {
        let client = client.clone();
        async move {
            let r = client.channel_replicas(&c.channel_id, c.channel_type).await;
            (c, r)
        }
    })
    .await
}

/// `a/2`: how the node names a channel in its answers.
pub fn key(channel_id: &str, channel_type: u8) -> String {
    format!("{channel_id}/{channel_type}")
}

/// A replica is lagging when it is offline or the leader sees it behind.
fn is_lagging(c: &ChannelReplicas) -> bool {
    c.replicas.iter().any(|r| !r.online) || c.max_lag().is_some_and(|l| l > 0)
}

/// `wkctl channel list`: exit 1 when some channel's status could not be read.
pub async fn list(global: &GlobalArgs, args: ChannelListArgs) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let all = client
        .channels_all(args.limit, PAGE)
        .await
        .context("GET /cluster/channels")?;
    let listed = all.channels.len();
    let mut failed = 0;
    let mut channels = Vec::new();
    for (info, res) in replicas_of(&client, all.channels).await {
        match res {
            Ok(c) => channels.push(c),
            Err(e) => {
                failed += 1;
                eprintln!("wkctl: channel {}: {e}", key(&info.channel_id, info.channel_type));
            }
        }
    }
    channels.retain(|c| args.leader_on.is_none_or(|id| c.leader == Some(id)));
    if args.lagging {
        channels.retain(is_lagging);
    }
    let listing = ChannelListing {
        total: all.total,
        channels,
    };
    output::print(global.output, &listing, || {
        render::channel_list_text(&listing, listed)
    })?;
    Ok(if failed > 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// `wkctl channel show ID TYPE`: exit 1 on a checksum mismatch among caught-up replicas or a
/// corrupt replica.
pub async fn show(global: &GlobalArgs, channel_id: &str, channel_type: u8) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let c = client
        .channel_replicas(channel_id, channel_type)
        .await
        .with_context(|| format!("GET /cluster/channels/{channel_id}/{channel_type}/replicas"))?;
    let mismatches = render::checksum_mismatches(&c);
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => {
            output::write_json(&mut out, &c)?;
            for m in &mismatches {
                eprintln!("!! CHECKSUM MISMATCH among caught-up replicas, {m}");
            }
        }
        OutputFormat::Text => output::write_text(&mut out, &render::channel_show_text(&c))?,
    }
    let corrupt = c.replicas.iter().any(|r| r.corrupt.is_some());
    Ok(if mismatches.is_empty() && !corrupt {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// `wkctl channel transfer-leader ID TYPE --to NODE`: prints the configuration after the
/// transfer; exit 1 when the leader did not move to `--to`.
pub async fn transfer_leader(global: &GlobalArgs, args: TransferArgs) -> anyhow::Result<Outcome> {
    let name = key(&args.channel_id, args.channel_type);
    let client = super::client_with_timeout(global, TRANSFER_TIMEOUT)?;
    let before = client
        .channel_config(&args.channel_id, args.channel_type)
        .await
        .with_context(|| {
            format!(
                "GET /cluster/channels/{}/{}/config",
                args.channel_id, args.channel_type
            )
        })?;
    if !before.replicas.contains(&args.to) {
        anyhow::bail!(
            "node {} is not a replica of {name} (replicas {})",
            args.to,
            render::ids(&before.replicas)
        );
    }
    let from = before
        .leader
        .map_or_else(|| "no leader".to_string(), |l| format!("node {l}"));
    eprintln!(
        "moving the leadership of {name} from {from} to node {}...",
        args.to
    );
    let after = match client
        .transfer_leader(&args.channel_id, args.channel_type, args.to)
        .await
    {
        Ok(c) => c,
        // The node could not complete it in time: report where the leader is now.
        Err(ClientError::Api(e))
            if matches!(
                e.error_code(),
                Some(ErrorCode::Unavailable | ErrorCode::NotLeader)
            ) =>
        {
            eprintln!("wkctl: transfer did not complete: {} ({})", e.msg, e.code);
            client
                .channel_config(&args.channel_id, args.channel_type)
                .await
                .context("GET .../config after the failed transfer")?
        }
        Err(e) => return Err(e).with_context(|| format!("POST .../{name}/transfer-leader")),
    };
    let moved = after.leader == Some(args.to);
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(&mut out, &after)?,
        OutputFormat::Text => {
            let verdict = if moved {
                format!("✓ ok    node {} leads {name} (term {})\n", args.to, after.term)
            } else {
                let now = after
                    .leader
                    .map_or_else(|| "no leader".to_string(), |l| format!("node {l}"));
                format!(
                    "✗ FAIL  the leader did not move to node {}: {now} leads {name}\n",
                    args.to
                )
            };
            output::write_text(&mut out, &format!("{}{verdict}", render::config_text(&after)))?
        }
    }
    if !moved && global.output == OutputFormat::Json {
        eprintln!("wkctl: the leader of {name} did not move to node {}", args.to);
    }
    Ok(if moved { Outcome::Ok } else { Outcome::CheckFailed })
}
