//! `wkctl top`: the live dashboard (crate `wk-tui`) over the cluster at `--endpoint`, or with
//! `--once` a single frame as plain text on stdout (for scripts, CI and bug reports).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Outcome;
use crate::cli::{GlobalArgs, OutputFormat, TopArgs};
use crate::output;

/// The `--once` frame size when stdout is not a terminal.
const DEFAULT_SIZE: (u16, u16) = (120, 40);

/// Dashboard options for a client with per-request `timeout`: a whole poll may take a few
/// requests (with failover), so it is bounded by a multiple of it.
pub fn options(title: String, refresh: Duration, timeout: Duration, channels: u64) -> wk_tui::Options {
    wk_tui::Options {
        refresh,
        title,
        channel_limit: channels,
        deadline: (timeout * 2).max(Duration::from_secs(3)),
        ..wk_tui::Options::default()
    }
}

pub async fn run(global: &GlobalArgs, args: TopArgs) -> anyhow::Result<Outcome> {
    if global.output == OutputFormat::Json {
        bail!("`wkctl top` draws text only; for JSON use `wkctl --output json cluster status`");
    }
    // A dashboard should notice a dead node quickly: requests time out at 2 s at most.
    let timeout = global.timeout.min(Duration::from_secs(2));
    let client = super::endpoint_client(global, timeout)?;
    let mut opts = options(global.endpoint.clone(), args.refresh, timeout, args.channels);
    // `s` admits a node; the join blocks until it caught up, far longer than a poll.
    opts.join_client = Some(super::endpoint_client(
        global,
        super::cluster::join::JOIN_TIMEOUT,
    )?);
    let mut stdout = std::io::stdout().lock();
    if args.once {
        let (w, h) = args
            .size
            .or_else(|| stdout.is_terminal().then(wk_tui::terminal_size).flatten())
            .unwrap_or(DEFAULT_SIZE);
        let (text, reached) = wk_tui::render_once(&client, &opts, w, h).await;
        output::write_text(&mut stdout, &text)?;
        return Ok(if reached {
            Outcome::Ok
        } else {
            Outcome::CheckFailed
        });
    }
    if !stdout.is_terminal() {
        bail!("`wkctl top` needs a terminal; use `wkctl top --once` for one plain-text frame");
    }
    drop(stdout);
    wk_tui::run(client, opts).await.context("dashboard")?;
    Ok(Outcome::Ok)
}
