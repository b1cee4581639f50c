//! The `?` overlay: every key and what the symbols mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use super::{DIM, HEAD, centered};

const KEYS: &[(&str, &str)] = &[
    ("?", "this help (? q Esc close it)"),
    ("q  Esc", "quit; Esc first clears the filter, q/Esc close popups"),
    ("Tab  S-Tab", "next / previous pane (thick border, ▶)"),
    ("↑↓  j k", "move; PgUp PgDn; g G (Home End) top / bottom"),
    ("/", "filter channels by id/type (Enter keeps, Esc clears)"),
    ("1-5", "sort channels by channel, msg/s, seq, leader, lag"),
    ("", "(the same key again reverses)"),
    ("Enter", "replicas of the selected channel in full"),
    ("f", "freeze / resume refresh (r still takes one)"),
    ("r", "refresh now"),
    ("d", "drills: kill a leader/node, isolate, restart (y/n)"),
    ("s", "scale out: start a local node (demo) or admit ID@ADDR"),
    ("Ctrl-C", "quit"),
];

const SYMBOLS: &[&str] = &[
    "*  leader        ▲ up       ✗ down / failed    ? stale",
    "!  warning       +N replica lag (entries)      12ms since ack",
    "█  channels led  ░ replicated, not led         – unknown",
    "·  idle: no group running (hibernated or never used yet)",
    "▲  (under the throughput) a drill ran during that sample",
];

pub fn draw(f: &mut Frame, area: Rect) {
    let mut lines = vec![Line::styled("Keys", HEAD)];
    let row = |k: &str, v: &str| {
        Line::from(vec![
            Span::styled(format!("  {k:<11}"), HEAD),
            Span::raw(v.to_string()),
        ])
    };
    lines.extend(KEYS.iter().map(|(k, v)| row(k, v)));
    lines.push(Line::styled("Symbols", HEAD));
    lines.extend(SYMBOLS.iter().map(|s| Line::raw(format!("  {s}"))));
    let popup = centered(area, 68, lines.len() as u16 + 2);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::styled(" Help ", HEAD))
        .title_bottom(Line::styled(" ? q Esc close ", DIM));
    f.render_widget(Clear, popup);
    f.render_widget(Paragraph::new(lines).block(block), popup);
}
