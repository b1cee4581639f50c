//! The Nodes pane: one row per node with its state, metadata role (`*` marks the leader),
//! term, progress and a bar of channels led (`█`) within channels replicated (`░`), scaled
//! to the busiest node so leader skew is visible at a glance.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, HighlightSpacing, Paragraph, Row, Table, TableState};
use wk_api::{NodeStatus, Role};

use super::{BAD, DIM, GOOD, HEAD, LEADER, fmt_age, pane_block};
use crate::app::{App, NodeState, Pane};

/// `█` for led, `░` for replicated but not led, `width` cells for `scale` channels.
pub fn bar(led: u64, replicated: u64, scale: u64, width: usize) -> String {
    let scale = scale.max(1) as f64;
    let cells = |n: u64| ((n as f64 / scale) * width as f64).round() as usize;
    let total = cells(replicated.max(led)).min(width);
    let mut led_cells = cells(led).min(total);
    // A node that leads anything gets at least one cell, so "some" never looks like "none".
    if led > 0 && led_cells == 0 && total > 0 {
        led_cells = 1;
    }
    format!("{}{}", "█".repeat(led_cells), "░".repeat(total - led_cells))
}

fn role_cell(n: &NodeStatus, is_leader: bool) -> Span<'static> {
    if is_leader {
        Span::styled(format!("{}*", n.role.as_str()), LEADER)
    } else if n.role == Role::Candidate {
        Span::styled(n.role.as_str(), super::WARN)
    } else {
        Span::raw(n.role.as_str())
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let nodes = app.nodes();
    let title = vec![
        Span::styled("Nodes", HEAD),
        Span::styled(" (* meta leader; █ led ░ replicated)", DIM),
    ];
    let block = pane_block(app, Pane::Nodes, title);
    if nodes.is_empty() {
        let text = if app.cluster.view.is_some() {
            "no nodes listed"
        } else {
            "waiting for the first snapshot…"
        };
        f.render_widget(Paragraph::new(Line::styled(text, DIM)).block(block), area);
        return;
    }
    let inner_w = area.width.saturating_sub(2) as usize;
    let wide = inner_w >= 77;
    let addr_w = nodes
        .iter()
        .map(|n| n.http_addr.chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let scale = nodes
        .iter()
        .map(|n| n.channels_replicated.max(n.channels_led))
        .max()
        .unwrap_or(1);
    let led_w = nodes
        .iter()
        .map(|n| format!("{}/{}", n.channels_led, n.channels_replicated).len())
        .max()
        .unwrap_or(3)
        .max("LED/REP".len());

    let mut widths = vec![
        Constraint::Length(3),
        Constraint::Length(addr_w as u16),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(5),
    ];
    let mut header = vec!["ID", "ADDRESS", "STATE", "ROLE", "TERM"];
    if wide {
        widths.push(Constraint::Length(8));
        header.push("APPLIED");
    }
    widths.push(Constraint::Length(5));
    header.push("CONNS");
    widths.push(Constraint::Length(led_w as u16));
    header.push("LED/REP");
    // The bar gets what is left (2 for the highlight symbol, 1 between columns).
    let used: usize = 2 + widths.len() + 3 + addr_w + 11 + 9 + 5 + if wide { 8 } else { 0 } + 5 + led_w;
    let bar_w = inner_w.saturating_sub(used).max(3);
    widths.push(Constraint::Fill(1));
    header.push("CHANNELS");

    let leader = app.meta_leader();
    let rows = nodes.iter().map(|n| {
        let state = match app.node_state(n) {
            NodeState::Up => Span::styled("▲ up", GOOD),
            NodeState::Down => {
                let since = app
                    .cluster
                    .down_since
                    .get(&n.id)
                    .map(|t| format!(" {}", fmt_age(app.now.saturating_duration_since(*t))))
                    .unwrap_or_default();
                Span::styled(format!("✗ down{since}"), BAD)
            }
            NodeState::Stale => Span::styled("? stale", DIM),
        };
        let is_leader = leader == Some(n.id);
        let mut cells = vec![
            Cell::from(Span::styled(
                n.id.to_string(),
                if is_leader { LEADER } else { Style::new() },
            )),
            Cell::from(n.http_addr.clone()),
            Cell::from(state),
            Cell::from(role_cell(n, is_leader)),
            Cell::from(Line::from(n.term.to_string()).right_aligned()),
        ];
        if wide {
            cells.push(Cell::from(
                Line::from(n.applied_index.to_string()).right_aligned(),
            ));
        }
        cells.push(Cell::from(Line::from(n.connections.to_string()).right_aligned()));
        cells.push(Cell::from(format!(
            "{}/{}",
            n.channels_led, n.channels_replicated
        )));
        cells.push(Cell::from(bar(
            n.channels_led,
            n.channels_replicated,
            scale,
            bar_w,
        )));
        let row = Row::new(cells);
        if n.online { row } else { row.style(DIM) }
    });
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(HEAD))
        .block(block)
        .highlight_spacing(HighlightSpacing::Always)
        .highlight_symbol("▶ ")
        .row_highlight_style(if app.focus == Pane::Nodes {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        });
    let mut state = TableState::default().with_selected(Some(app.nodes_pane.sel.min(nodes.len() - 1)));
    if app.focus != Pane::Nodes {
        state.select(None);
    }
    f.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_node() {
        assert_eq!(bar(5, 10, 10, 10), "█████░░░░░");
        assert_eq!(bar(0, 10, 10, 10), "░░░░░░░░░░");
        assert_eq!(bar(10, 10, 20, 10), "█████");
        assert_eq!(bar(0, 0, 0, 10), "");
        assert_eq!(bar(3, 3, 3, 4), "████");
        assert_eq!(bar(1, 100, 100, 10), "█░░░░░░░░░");
    }
}
