//! `wkctl channel verify ID TYPE` and `wkctl cluster verify`: every replica re-reads its copy
//! of a channel and the checksums up to a common seq are compared (like `etcdctl endpoint
//! hashkv`). Exit 1 on a corrupt replica, a mismatch, or a replica that could not be verified.

use std::time::Duration;

use anyhow::Context;
use wk_api::{ChannelVerify, ClusterVerify};

use super::{CONCURRENCY, PAGE, bounded, key};
use crate::Outcome;
use crate::cli::{ClusterVerifyArgs, GlobalArgs};
use crate::{output, render};

/// Each replica re-reads its whole copy; the node allows a minute per replica.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(90);

fn outcome(channels: &[ChannelVerify], errors: usize) -> Outcome {
    if errors == 0 && channels.iter().all(|c| c.ok) {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    }
}

pub async fn channel(global: &GlobalArgs, channel_id: &str, channel_type: u8) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client_with_timeout(global, VERIFY_TIMEOUT)?;
    let c = client
        .channel_verify(channel_id, channel_type)
        .await
        .with_context(|| format!("GET /cluster/channels/{channel_id}/{channel_type}/verify"))?;
    output::print(global.output, &c, || {
        render::verify_text(std::slice::from_ref(&c), 1)
    })?;
    Ok(outcome(std::slice::from_ref(&c), 0))
}

pub async fn cluster(global: &GlobalArgs, args: ClusterVerifyArgs) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client_with_timeout(global, VERIFY_TIMEOUT)?;
    let all = client
        .channels_all(args.limit, PAGE)
        .await
        .context("GET /cluster/channels")?;
    let results = bounded(all.channels, CONCURRENCY, |c| {
        let client = client.clone();
        async move {
            let r = client.channel_verify(&c.channel_id, c.channel_type).await;
            (key(&c.channel_id, c.channel_type), r)
        }
    })
    .await;
    let mut report = ClusterVerify {
        total: all.total,
        checked: 0,
        failed: 0,
        channels: Vec::new(),
        errors: Vec::new(),
    };
    for (name, r) in results {
        match r {
            Ok(c) => report.channels.push(c),
            Err(e) => {
                eprintln!("wkctl: channel {name}: {e}");
                report.errors.push((name, e.to_string()));
            }
        }
    }
    report.checked = report.channels.len() as u64;
    report.failed = report.channels.iter().filter(|c| !c.ok).count() as u64 + report.errors.len() as u64;
    output::print(global.output, &report, || {
        render::verify_text(&report.channels, report.total)
    })?;
    Ok(outcome(&report.channels, report.errors.len()))
}
