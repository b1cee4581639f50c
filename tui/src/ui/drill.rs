//! The drill menu (`d`), its confirmation prompt, and the scale-out prompt (`s`), drawn
//! over the screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};

use super::{BAD, DIM, HEAD, WARN, centered};
use crate::app::{App, DRILL_MENU};
use crate::drill::DrillKind;

pub fn draw_menu(f: &mut Frame, area: Rect, app: &App) {
    let mut lines = vec![Line::styled(
        "Failover drills (the node must run with --allow-drills)",
        DIM,
    )];
    for (i, item) in DRILL_MENU.iter().enumerate() {
        let text = if i == 2 {
            item.replace('N', &app.drill.isolate_secs.to_string())
        } else {
            (*item).to_string()
        };
        let target = match app.drill_plan(i) {
            Ok(p) => Span::raw(format!(" → node {}", p.kind.node())),
            Err(why) => Span::styled(format!(" ✗ {why}"), DIM),
        };
        let (mark, style) = if i == app.drill.choice {
            ("▶ ", HEAD)
        } else {
            ("  ", ratatui::style::Style::new())
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark}{}  {text}", i + 1), style),
            target,
        ]));
    }
    let popup = centered(area, 76, lines.len() as u16 + 2);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::styled(" ⚡ Drill ", WARN))
        .title_bottom(Line::styled(
            " 1-4 Enter choose · ↑↓ j k move · +/- seconds · q Esc back ",
            DIM,
        ));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(block),
        popup,
    );
}

pub fn draw_confirm(f: &mut Frame, area: Rect, app: &App) {
    let Some(plan) = &app.drill.pending else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("! ", BAD),
        Span::styled(format!("{}?", plan.kind), HEAD),
    ])];
    if let DrillKind::Restart { .. } = plan.kind {
        lines.push(Line::raw(
            "the demo starts it again; Events shows how far behind it is and its catch-up",
        ));
    } else {
        lines.push(Line::raw(format!(
            "node at {}: {} channel(s) to re-elect",
            plan.target_http,
            plan.affected.len()
        )));
        lines.push(match &plan.probe {
            Some(k) => Line::raw(format!("probe writes go to {k} meanwhile")),
            None => Line::styled("no channel to probe", DIM),
        });
    }
    lines.push(Line::from(vec![
        Span::styled("y", BAD),
        Span::raw(" run it   "),
        Span::styled("n Esc", HEAD),
        Span::raw(" cancel"),
    ]));
    let popup = centered(area, 60, lines.len() as u16 + 2);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::styled(" Confirm drill (y/n) ", BAD));
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(block),
        popup,
    );
}

/// `s` against the local demo cluster: start one more node and admit it?
pub fn draw_scale_confirm(f: &mut Frame, area: Rect) {
    let lines = vec![
        Line::styled("Start one more local wknode (--seed) and admit it?", HEAD),
        Line::raw("progress shows in Events; its metadata sync in Nodes,"),
        Line::raw("the channels it will get in Sync backlog"),
        Line::from(vec![
            Span::styled("y", WARN),
            Span::raw(" start it   "),
            Span::styled("n Esc", HEAD),
            Span::raw(" cancel"),
        ]),
    ];
    let popup = centered(area, 60, lines.len() as u16 + 2);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::styled(" Scale out (y/n) ", WARN));
    f.render_widget(Clear, popup);
    f.render_widget(Paragraph::new(lines).block(block), popup);
}
