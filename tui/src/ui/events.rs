//! The Events pane: what changed between snapshots (leaders, terms, roles, nodes up and
//! down, reachability), newest first, each with its UTC time and a symbol.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{DIM, HEAD, fmt_clock, pane_block, severity_style};
use crate::app::{App, Pane};

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let mut title = vec![
        Span::styled("Events", HEAD),
        Span::styled(" (UTC, newest first)", DIM),
    ];
    if app.events.scroll > 0 {
        title.push(Span::styled(format!(" ↓{} older", app.events.scroll), DIM));
    }
    let block = pane_block(app, Pane::Events, title);
    let lines: Vec<Line> = app
        .events
        .entries
        .iter()
        .rev()
        .skip(app.events.scroll)
        .take(area.height.saturating_sub(2) as usize)
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{} ", fmt_clock(e.wall)), DIM),
                Span::styled(e.text.clone(), severity_style(e.severity)),
            ])
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::styled("no events yet", DIM)]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(lines).block(block), area);
}
