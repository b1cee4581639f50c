//! The Sync backlog pane (`GET /cluster/backlog`): channels whose replicas are not yet where
//! placement wants them (e.g. after a node joined), per target node with the entries and
//! bytes that represents; the drain's limit, observed rate and ETA; `STALLED` when a running
//! drain stops making progress; and a sparkline of the backlog over time. A node that does
//! not serve the endpoint gets a clear placeholder.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Wrap};

use super::{BAD, DIM, GOOD, HEAD, WARN, fmt_age, pane_block};
use crate::app::{App, Pane};
use crate::snapshot::Backlog;

/// `950`, `12.3k`, `4.5M`.
pub fn fmt_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / K / K)
    } else {
        format!("{:.1} GiB", f / K / K / K)
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let mut title = vec![Span::styled("Sync backlog", HEAD)];
    let report = match &app.backlog.report {
        Backlog::NotReported => {
            let block = pane_block(app, Pane::Backlog, title);
            let text = if app.cluster.view.is_none() {
                vec![Line::styled("waiting for the first snapshot…", DIM)]
            } else {
                vec![
                    Line::styled("- no backlog data (node does not report it yet)", WARN),
                    Line::styled("needs a node that serves GET /cluster/backlog", DIM),
                ]
            };
            f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
            return;
        }
        Backlog::Failed(e) => {
            let block = pane_block(app, Pane::Backlog, title);
            let text = Line::styled(format!("✗ backlog unavailable: {e}"), BAD);
            f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
            return;
        }
        Backlog::Report(b) => b,
    };
    title.push(Span::raw(format!(" {} ch", report.total)));
    if report.at_risk > 0 {
        title.push(Span::styled(format!(" · {} at risk", report.at_risk), BAD));
    }
    let block = pane_block(app, Pane::Backlog, title);
    let inner = block.inner(area);
    f.render_widget(block, area);

    let mut lines = Vec::new();
    if report.total == 0 {
        lines.push(Line::styled("✓ empty: every channel is placed", GOOD));
    }
    let mut targets = report.targets.clone();
    targets.sort_by_key(|t| t.node_id);
    for t in &targets {
        lines.push(Line::raw(format!(
            "→ node {}: {} ch, {} entries, {}",
            t.node_id,
            t.channels,
            fmt_count(t.entries),
            fmt_bytes(t.bytes)
        )));
    }
    match &report.drain {
        Some(d) => {
            let mut spans = vec![Span::raw(format!(
                "drain ≤{:.1} ch/s, {} moved",
                d.rate, d.migrated
            ))];
            if d.errors > 0 {
                spans.push(Span::styled(format!(", {} errors", d.errors), WARN));
            }
            lines.push(Line::from(spans));
            let mut progress = Vec::new();
            if let Some(r) = app.backlog_rate() {
                progress.push(format!("seen {r:.1} ch/s"));
            }
            if let Some(eta) = app.backlog_eta() {
                progress.push(format!("ETA {}", fmt_age(eta)));
            }
            if !progress.is_empty() {
                lines.push(Line::raw(progress.join(" · ")));
            }
            if app.backlog_stalled() {
                let since = app
                    .backlog
                    .changed_at
                    .map(|t| fmt_age(app.now.saturating_duration_since(t)))
                    .unwrap_or_default();
                lines.push(Line::styled(format!("✗ STALLED: no progress for {since}"), BAD));
            }
        }
        None if report.total > 0 => {
            lines.push(Line::styled("drain not running (wkctl backlog drain)", DIM));
        }
        None => {}
    }
    // The sparkline takes the bottom rows when there is room under the text.
    let spark_h = inner.height.saturating_sub(lines.len() as u16).min(3);
    let [text_a, spark_a] = Layout::vertical([Constraint::Fill(1), Constraint::Length(spark_h)]).areas(inner);
    f.render_widget(Paragraph::new(lines), text_a);
    if spark_h > 0 && app.backlog.samples.iter().any(|(_, n)| *n > 0) {
        let width = spark_a.width as usize;
        let data: Vec<u64> = app
            .backlog
            .samples
            .iter()
            .skip(app.backlog.samples.len().saturating_sub(width))
            .map(|(_, n)| *n)
            .collect();
        let max = data.iter().copied().max().unwrap_or(1).max(1);
        f.render_widget(
            Sparkline::default()
                .data(&data)
                .max(max)
                .style(Style::new().fg(Color::Magenta)),
            spark_a,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bytes() {
        assert_eq!(fmt_count(950), "950");
        assert_eq!(fmt_count(12_345), "12.3k");
        assert_eq!(fmt_count(4_500_000), "4.5M");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }
}
