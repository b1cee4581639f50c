//! The Throughput pane: cluster messages/s as a sparkline, one bar per snapshot, newest on
//! the right. Rates come from `message_seq` deltas of the channels polled between snapshots.
//! Samples taken while a drill ran get a `▲` in a marker row under the bars, and the last
//! drill's result (slowest re-election, probe unavailability) is the pane's bottom title.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Wrap};

use super::{DIM, HEAD, WARN, pane_block};
use crate::app::{App, Pane};

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let width = area.width.saturating_sub(2) as usize;
    let samples: Vec<u64> = app
        .throughput
        .samples
        .iter()
        .skip(app.throughput.samples.len().saturating_sub(width))
        .copied()
        .collect();
    // The longest title that fits: the current rate matters more than the peak or the name.
    let mut title = vec![Span::styled("Throughput", HEAD)];
    if let Some(last) = samples.last() {
        let peak = samples.iter().copied().max().unwrap_or(0);
        let fits = |s: &str| s.chars().count() + 5 <= area.width as usize;
        let full = format!(" {last} msg/s · peak {peak}");
        if fits(&format!("Throughput{full}")) {
            title.push(Span::raw(full));
        } else if fits(&format!("Throughput {last} msg/s")) {
            title.push(Span::raw(format!(" {last} msg/s")));
        } else {
            title = vec![Span::styled(format!("{last} msg/s"), HEAD)];
        }
    }
    let mut block = pane_block(app, Pane::Throughput, title);
    if let Some(r) = &app.drill.last {
        block = block.title_bottom(Line::styled(r.short(), DIM));
    } else if let Some(p) = &app.drill.running {
        block = block.title_bottom(Line::styled(format!("⚡ {} …", p.kind), WARN));
    }
    let marks: Vec<bool> = app
        .throughput
        .drill_marks
        .iter()
        .skip(app.throughput.drill_marks.len().saturating_sub(width))
        .copied()
        .collect();
    if samples.is_empty() {
        let text = Line::styled("msg/s shows from the second snapshot on", DIM);
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let peak = samples.iter().copied().max().unwrap_or(0).max(1);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let spark_a = if marks.iter().any(|m| *m) && inner.height >= 2 {
        let [s, m] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
        let row: String = marks.iter().map(|d| if *d { '▲' } else { ' ' }).collect();
        f.render_widget(Paragraph::new(Line::styled(row, WARN)), m);
        s
    } else {
        inner
    };
    let spark = Sparkline::default()
        .data(&samples)
        .max(peak)
        .style(Style::new().fg(Color::Cyan));
    f.render_widget(spark, spark_a);
}
