//! Pure render functions: `&App` in, widgets drawn into a frame out. No I/O, no clock (the
//! time is `app.now`), so a screen is a function of the state and is snapshot-tested with
//! ratatui's `TestBackend` (`tui/tests/snapshots.rs`, expected screens in `testdata/tui/`).
//!
//! Colour is never the only signal: every state also has a symbol or a word (`*` leader,
//! `▲` up, `✗` down or failed, `?` stale, `!` warning), and the focused pane has a thick
//! border and a `▶` in its title.

mod backlog;
mod channels;
mod drill;
mod events;
mod help;
mod nodes;
#[cfg(test)]
mod snapshot_tests;
mod throughput;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};

use crate::app::{App, Mode, Pane, Severity};

/// From this many columns on, the wide layout (and the wider tables) are used.
pub(crate) const WIDE: u16 = 100;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let [header_a, body, footer_a] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    let nodes = app.nodes().len().max(1) as u16;
    let top_h = (nodes + 3).clamp(6, 14).min((body.height / 3).max(6));
    let bottom_h = if body.height >= 30 { 9 } else { 6 };
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Length(top_h),
        Constraint::Min(5),
        Constraint::Length(bottom_h),
    ])
    .areas(body);
    // Wide: throughput beside the nodes. Narrow (e.g. 80 columns): the nodes get the whole
    // width and the throughput sits between events and backlog.
    let (nodes_a, thr_a, events_a, backlog_a) = if area.width >= WIDE {
        let [n, t] = Layout::horizontal([Constraint::Percentage(70), Constraint::Fill(1)]).areas(top);
        let [e, b] = Layout::horizontal([Constraint::Percentage(60), Constraint::Fill(1)]).areas(bottom);
        (n, t, e, b)
    } else {
        let [e, t, b] = Layout::horizontal([
            Constraint::Percentage(46),
            Constraint::Percentage(27),
            Constraint::Fill(1),
        ])
        .areas(bottom);
        (top, t, e, b)
    };

    f.render_widget(Paragraph::new(header(app)), header_a);
    nodes::draw(f, nodes_a, app);
    throughput::draw(f, thr_a, app);
    channels::draw(f, mid, app);
    events::draw(f, events_a, app);
    backlog::draw(f, backlog_a, app);
    f.render_widget(Paragraph::new(footer(app, area.width)), footer_a);

    match app.mode {
        Mode::Help => help::draw(f, area),
        Mode::Detail => channels::draw_detail(f, mid, app),
        Mode::DrillMenu => drill::draw_menu(f, area, app),
        Mode::DrillConfirm => drill::draw_confirm(f, area, app),
        Mode::ScaleConfirm => drill::draw_scale_confirm(f, area),
        Mode::Normal | Mode::Filter | Mode::ScaleInput => {}
    }
}

/// Renders the whole screen at `width` x `height` into plain text, one line per row with
/// trailing spaces trimmed: `wkctl top --once` and the snapshot tests.
pub fn render_text(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("TestBackend cannot fail");
    terminal.draw(|f| draw(f, app)).expect("TestBackend cannot fail");
    buffer_text(terminal.backend().buffer())
}

/// A buffer as text: cell symbols row by row, trailing spaces trimmed.
pub fn buffer_text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in buf.area.top()..buf.area.bottom() {
        let mut line = String::new();
        for x in buf.area.left()..buf.area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn header(app: &App) -> Line<'static> {
    let sep = || Span::styled(" │ ", Style::new().fg(Color::DarkGray));
    let mut spans = vec![Span::styled(
        "WuKong HA",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    spans.push(sep());
    match (&app.cluster.view, app.meta_leader()) {
        (None, _) => spans.push(Span::raw("waiting for the first snapshot")),
        (Some(_), Some(l)) => spans.push(Span::styled(format!("meta leader *{l}"), LEADER)),
        (Some(_), None) => spans.push(Span::styled("✗ NO meta leader", BAD)),
    }
    if app.cluster.view.is_some() {
        let nodes = app.nodes();
        let up = nodes.iter().filter(|n| n.online).count();
        spans.push(sep());
        let style = if up == nodes.len() { GOOD } else { BAD };
        spans.push(Span::styled(format!("{up}/{} nodes up", nodes.len()), style));
    }
    spans.push(sep());
    match app.data_age() {
        Some(age) if app.is_stale() => {
            spans.push(Span::styled(format!("! STALE: data {} old", fmt_age(age)), BAD))
        }
        Some(age) => spans.push(Span::raw(format!("data {} old", fmt_age(age)))),
        None => spans.push(Span::styled("no data yet", DIM)),
    }
    if app.frozen {
        spans.push(sep());
        spans.push(Span::styled(
            "[FROZEN] f resumes",
            WARN.add_modifier(Modifier::REVERSED),
        ));
    }
    if let Some(e) = &app.cluster.last_error {
        spans.push(sep());
        spans.push(Span::styled(format!("✗ unreachable: {e}"), BAD));
    }
    spans.push(sep());
    spans.push(Span::styled(app.title(), DIM));
    Line::from(spans)
}

fn footer(app: &App, width: u16) -> Line<'static> {
    if app.mode == Mode::Filter {
        return Line::from(vec![
            Span::styled("/", WARN),
            Span::raw(format!("{}█", app.channels.filter)),
            Span::styled("   Enter keep filter · Esc clear", DIM),
        ]);
    }
    if app.mode == Mode::ScaleInput {
        let mut spans = vec![
            Span::styled("admit node ID@HOST:PORT (started with --seed): ", WARN),
            Span::raw(format!("{}█", app.scale.input)),
        ];
        match &app.notice {
            Some(n) => spans.push(Span::styled(format!("  ✗ {n}"), BAD)),
            None => spans.push(Span::styled("   Enter admit · Esc cancel", DIM)),
        }
        return Line::from(spans);
    }
    if let Some(n) = &app.notice {
        return Line::from(Span::styled(n.clone(), WARN));
    }
    let mut spans = Vec::new();
    if !app.channels.filter.is_empty() {
        spans.push(Span::styled(
            format!("filter \"{}\" (Esc clears) │ ", app.channels.filter),
            WARN,
        ));
    }
    let keys = match app.mode {
        Mode::Help => "? q Esc close help",
        Mode::DrillMenu => "1-4 Enter choose · ↑↓ j k move · +/- isolate seconds · q Esc back",
        Mode::DrillConfirm => "y run the drill · n Esc cancel",
        Mode::ScaleConfirm => "y start and admit a node · n Esc cancel",
        Mode::Detail => "q Esc Enter back · ↑↓ j k other channel · f freeze · r refresh",
        _ if width >= WIDE => {
            "? help · q quit · Tab pane · ↑↓ j k move · / filter · 1-5 sort · Enter replicas · d drill · s scale · f freeze · r refresh"
        }
        _ => "? help · q quit · Tab pane · / filter · 1-5 sort · Enter replicas · d drill",
    };
    spans.push(Span::styled(keys, DIM));
    Line::from(spans)
}

pub(crate) const LEADER: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
pub(crate) const GOOD: Style = Style::new().fg(Color::Green);
pub(crate) const WARN: Style = Style::new().fg(Color::Yellow);
pub(crate) const BAD: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
pub(crate) const DIM: Style = Style::new().fg(Color::DarkGray);
pub(crate) const HEAD: Style = Style::new().add_modifier(Modifier::BOLD);

pub(crate) fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Info => Style::new(),
        Severity::Good => GOOD,
        Severity::Warn => WARN,
        Severity::Bad => BAD,
    }
}

/// A pane's frame: the focused one has a thick border and `▶` before its title.
pub(crate) fn pane_block<'a>(app: &App, pane: Pane, title: Vec<Span<'a>>) -> Block<'a> {
    let focused = app.focus == pane && app.mode != Mode::Help;
    let mut spans = vec![Span::raw(if focused { "▶ " } else { " " })];
    spans.extend(title);
    spans.push(Span::raw(" "));
    let block = Block::bordered().title(Line::from(spans));
    if focused {
        block
            .border_type(BorderType::Thick)
            .border_style(Style::new().fg(Color::Cyan))
    } else {
        block.border_style(DIM)
    }
}

/// `0.4s`, `12s`, `3m05s`, `2h07m`.
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Milliseconds as `12ms`, `1.5s`, `42s`.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// Messages per second: `–` when unknown, one decimal below 10.
pub fn fmt_rate(r: Option<f64>) -> String {
    match r {
        None => "–".into(),
        Some(r) if r < 10.0 => format!("{r:.1}"),
        Some(r) => format!("{}", r.round() as u64),
    }
}

/// `HH:MM:SS` (UTC) of a wall-clock time.
pub fn fmt_clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// A rectangle of at most `w` x `h` centred in `area`.
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let ages = [
            (400, "0.4s"),
            (9_949, "9.9s"),
            (12_000, "12s"),
            (185_000, "3m05s"),
            (7_620_000, "2h07m"),
        ];
        for (ms, want) in ages {
            assert_eq!(fmt_age(Duration::from_millis(ms)), want);
        }
        assert_eq!(fmt_ms(12), "12ms");
        assert_eq!(fmt_ms(1_500), "1.5s");
        assert_eq!(fmt_ms(42_000), "42s");
        assert_eq!(fmt_rate(None), "–");
        assert_eq!(fmt_rate(Some(2.26)), "2.3");
        assert_eq!(fmt_rate(Some(123.6)), "124");
        assert_eq!(
            fmt_clock(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3_723)),
            "01:02:03"
        );
    }
}
