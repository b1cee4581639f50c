//! `wkctl backlog show|drain`: the channels a join left on their old replicas, and moving them.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wk_api::{Backlog, DrainReq};

use crate::Outcome;
use crate::cli::{DrainArgs, GlobalArgs, OutputFormat};
use crate::output::{self, Align, Table};

pub fn backlog_text(b: &Backlog) -> String {
    let mut s = format!("sync backlog: {} channels, {} at risk", b.total, b.at_risk);
    if let Some(d) = &b.drain {
        s.push_str(&format!(
            "; draining at {:.1}/s ({} migrated, {} failed)",
            d.rate, d.migrated, d.errors
        ));
    }
    s.push('\n');
    if !b.targets.is_empty() {
        let mut t = Table::new(&[
            ("TARGET", Align::Right),
            ("CHANNELS", Align::Right),
            ("ENTRIES", Align::Right),
            ("BYTES", Align::Right),
        ]);
        for x in &b.targets {
            t.row(vec![
                x.node_id.to_string(),
                x.channels.to_string(),
                x.entries.to_string(),
                x.bytes.to_string(),
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    if !b.entries.is_empty() {
        let mut t = Table::new(&[
            ("CHANNEL", Align::Left),
            ("TYPE", Align::Right),
            ("REPLICAS", Align::Left),
            ("DESIRED", Align::Left),
            ("ENTRIES", Align::Right),
            ("", Align::Left),
        ]);
        let ids = |v: &[u64]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        for e in &b.entries {
            t.row(vec![
                e.channel_id.clone(),
                e.channel_type.to_string(),
                ids(&e.replicas),
                ids(&e.desired),
                e.entries.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                if e.at_risk {
                    "! AT RISK: fewer than a quorum of replicas answer, drain first".into()
                } else {
                    String::new()
                },
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    s
}

/// `wkctl backlog show`: exit 1 when a backlogged channel is at risk.
pub async fn show(global: &GlobalArgs, limit: u64) -> anyhow::Result<Outcome> {
    let b = super::client(global)?
        .backlog(limit)
        .await
        .context("GET /cluster/backlog")?;
    output::print(global.output, &b, || backlog_text(&b))?;
    Ok(if b.at_risk > 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// `wkctl backlog drain`: start (or with `--rate 0` stop) the drain; `--wait` follows it.
pub async fn drain(global: &GlobalArgs, args: DrainArgs) -> anyhow::Result<Outcome> {
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!("--rate must be a number of channels per second (0 stops the drain)");
    }
    let client = super::client(global)?;
    client
        .drain(&DrainReq { rate: args.rate })
        .await
        .context("POST /cluster/backlog/drain")?;
    let wait = args.wait.unwrap_or_else(|| std::io::stdout().is_terminal()) && args.rate > 0.0;
    if !wait {
        eprintln!("drain {}", if args.rate > 0.0 { "started" } else { "stopped" });
        return Ok(Outcome::Ok);
    }
    let first = client.backlog(0).await.context("GET /cluster/backlog")?;
    let tty = std::io::stderr().is_terminal();
    let pb = tty.then(|| output::progress_bar(first.total, "draining", ""));
    let mut last_line = Instant::now();
    let started = Instant::now();
    loop {
        let b = client.backlog(0).await.context("GET /cluster/backlog")?;
        let done = first.total.saturating_sub(b.total);
        match &pb {
            Some(pb) => {
                pb.set_position(done);
                pb.set_message(format!("{} left", b.total));
            }
            None if last_line.elapsed() >= Duration::from_secs(1) => {
                eprintln!(
                    "drain: {} of {} channels migrated, {} left",
                    done, first.total, b.total
                );
                last_line = Instant::now();
            }
            None => {}
        }
        if b.total == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(pb) = pb {
        pb.finish_with_message("backlog empty");
    }
    let summary = format!(
        "backlog drained: {} channels in {:.1} s\n",
        first.total,
        started.elapsed().as_secs_f64()
    );
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(
            &mut out,
            &client.backlog(0).await.context("GET /cluster/backlog")?,
        )?,
        OutputFormat::Text => output::write_text(&mut out, &summary)?,
    }
    Ok(Outcome::Ok)
}
