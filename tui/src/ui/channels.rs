//! The Channels pane (busiest first by default) and the replica detail popup.
//!
//! A replica cell reads `*1` for the leader, `2 +0 12ms` for a follower 0 entries behind
//! whose last ack the leader heard 12 ms ago, `3 ✗down` for an offline replica and `2 ?` when
//! the leader does not know.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState};
use wk_api::Role;

use super::{BAD, DIM, GOOD, HEAD, LEADER, WARN, fmt_ms, fmt_rate, pane_block};
use crate::app::{ACK_WARN_MS, App, ChannelHealth, ChannelRow, LAG_WARN_ENTRIES, Mode, Pane, SortColumn};

pub fn health_span(h: ChannelHealth) -> Span<'static> {
    match h {
        ChannelHealth::Ok => Span::styled("✓ ok", GOOD),
        ChannelHealth::Lagging => Span::styled("! lagging", WARN),
        ChannelHealth::ReplicaDown => Span::styled("! rep down", WARN),
        ChannelHealth::NoLeader => Span::styled("✗ no leader", BAD),
        ChannelHealth::Diverged => Span::styled("✗ diverged", BAD),
        ChannelHealth::Error => Span::styled("✗ poll err", BAD),
        ChannelHealth::Hibernated => Span::styled("· idle", DIM),
        ChannelHealth::Unpolled => Span::styled("· unpolled", DIM),
    }
}

/// The replicas as spans: leader first marked `*`, then followers with lag and ack age.
pub fn replica_spans(row: &ChannelRow) -> Vec<Span<'static>> {
    let Some(st) = &row.status else {
        let ids: Vec<String> = row.replicas.iter().map(|r| r.to_string()).collect();
        return vec![Span::styled(ids.join("  "), DIM)];
    };
    if st.is_hibernated() {
        let ids: Vec<String> = st
            .replicas
            .iter()
            .map(|r| {
                if r.online {
                    r.node_id.to_string()
                } else {
                    format!("{} ✗down", r.node_id)
                }
            })
            .collect();
        return vec![Span::styled(
            format!("{} (no group running)", ids.join("  ")),
            DIM,
        )];
    }
    let mut reps: Vec<_> = st.replicas.iter().collect();
    reps.sort_by_key(|r| (Some(r.node_id) != st.leader, r.node_id));
    let mut spans = Vec::new();
    for r in reps {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        if Some(r.node_id) == st.leader {
            spans.push(Span::styled(format!("*{}", r.node_id), LEADER));
        } else if !r.online {
            spans.push(Span::styled(format!("{} ✗down", r.node_id), BAD));
        } else {
            let lag = r.lag.map_or_else(|| "?".to_string(), |l| format!("+{l}"));
            let ack = r
                .last_ack_ms
                .map(|a| format!(" {}", fmt_ms(a)))
                .unwrap_or_default();
            let slow =
                r.lag.is_some_and(|l| l > LAG_WARN_ENTRIES) || r.last_ack_ms.is_some_and(|a| a > ACK_WARN_MS);
            let text = format!("{} {lag}{ack}", r.node_id);
            spans.push(if slow {
                Span::styled(format!("{text}!"), WARN)
            } else {
                Span::raw(text)
            });
        }
    }
    spans
}

fn header_cell(app: &App, col: SortColumn, label: &'static str) -> Cell<'static> {
    if app.channels.sort == col {
        Cell::from(format!(
            "{label}{}",
            if app.channels.sort_desc { "▼" } else { "▲" }
        ))
    } else {
        Cell::from(label)
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let rows = app.visible_channels();
    let mut title = vec![Span::styled("Channels", HEAD)];
    let shown = rows.len();
    let listed = app.channels.rows.len();
    let mut note = if app.channels.total > listed as u64 {
        format!(" {listed} of {} (list limit)", app.channels.total)
    } else {
        format!(" {listed}")
    };
    if !app.channels.filter.is_empty() {
        note.push_str(&format!(", {shown} match \"{}\"", app.channels.filter));
    }
    note.push_str(&format!(
        " · sort {} {}",
        app.channels.sort.label(),
        if app.channels.sort_desc { "▼" } else { "▲" }
    ));
    title.push(Span::styled(note, DIM));
    if let Some(e) = &app.channels.error {
        title.push(Span::styled(format!(" ✗ list failed: {e}"), BAD));
    }
    let block = pane_block(app, Pane::Channels, title);
    if rows.is_empty() {
        let text = if app.cluster.view.is_none() {
            "waiting for the first snapshot…"
        } else if !app.channels.filter.is_empty() {
            "no channel matches the filter (Esc clears it)"
        } else {
            "no channels yet (create one with POST /channel or send a message)"
        };
        f.render_widget(Paragraph::new(Line::styled(text, DIM)).block(block), area);
        return;
    }
    // Narrow screens drop the LEAD column: the replica cell starts with the `*` leader anyway.
    let wide = area.width >= super::WIDE;
    let key_w = rows
        .iter()
        .map(|r| r.key.to_string().chars().count())
        .max()
        .unwrap_or(7)
        .clamp(9, if wide { 24 } else { 16 });
    let mut widths = vec![
        Constraint::Length(key_w as u16),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let mut header = vec![
        header_cell(app, SortColumn::Channel, "1 CHANNEL"),
        header_cell(app, SortColumn::Rate, "2 MSG/S"),
        header_cell(app, SortColumn::Seq, "3 SEQ"),
    ];
    if wide {
        widths.push(Constraint::Length(6));
        header.push(header_cell(app, SortColumn::Leader, "4 LEAD"));
    }
    widths.extend([Constraint::Length(11), Constraint::Fill(1)]);
    header.extend([
        Cell::from("STATE"),
        header_cell(app, SortColumn::Lag, "5 REPLICAS (*leader +lag ack)"),
    ]);
    let header = Row::new(header).style(HEAD);
    let table_rows = rows.iter().map(|r| {
        let mut cells = vec![
            Cell::from(r.key.to_string()),
            Cell::from(Line::from(fmt_rate(r.rate)).right_aligned()),
            Cell::from(Line::from(r.seq().map_or_else(|| "–".into(), |s| s.to_string())).right_aligned()),
        ];
        if wide {
            cells.push(Cell::from(match r.leader() {
                Some(l) => Span::styled(format!("*{l}"), LEADER),
                None if r.status.is_some() => Span::styled("none", BAD),
                None => Span::styled("–", DIM),
            }));
        }
        cells.extend([
            Cell::from(health_span(r.health())),
            Cell::from(Line::from(replica_spans(r))),
        ]);
        Row::new(cells)
    });
    let focused = app.focus == Pane::Channels;
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(block)
        .highlight_spacing(HighlightSpacing::Always)
        .highlight_symbol("▶ ")
        .row_highlight_style(if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        });
    let mut state = TableState::default().with_selected(if focused || app.mode == Mode::Detail {
        app.selected_channel_index(&rows)
    } else {
        None
    });
    f.render_stateful_widget(table, area, &mut state);
}

/// The popup `Enter` opens: every replica of the selected channel in full.
pub fn draw_detail(f: &mut Frame, area: Rect, app: &App) {
    let Some(row) = app.selected_channel() else {
        return;
    };
    let n = row.status.as_ref().map_or(1, |s| s.replicas.len().max(1)) as u16;
    let popup = super::centered(area, 100, n + 3);
    let mut title = vec![Span::raw(" "), Span::styled(format!("Channel {}", row.key), HEAD)];
    if let Some(st) = &row.status {
        title.push(Span::raw(format!(" · group {}", st.group_id)));
        match st.leader {
            Some(l) => title.push(Span::styled(format!(" · leader *{l}"), LEADER)),
            None => title.push(Span::styled(" · ✗ no leader", BAD)),
        }
    }
    title.push(Span::raw(" · "));
    title.push(health_span(row.health()));
    title.push(Span::raw(" "));
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(Line::from(title))
        .title_bottom(Line::styled(" q/Esc/Enter back · ↑↓ other channel ", DIM));
    f.render_widget(Clear, popup);
    let Some(st) = &row.status else {
        let text = row.error.clone().map_or_else(
            || "not polled yet: wait a refresh (r refreshes now)".to_string(),
            |e| format!("✗ replica poll failed: {e}"),
        );
        f.render_widget(Paragraph::new(text).block(block), popup);
        return;
    };
    let mut reps: Vec<_> = st.replicas.iter().collect();
    reps.sort_by_key(|r| r.node_id);
    let rows = reps.into_iter().map(|r| {
        let is_leader = st.leader == Some(r.node_id);
        let node = if is_leader {
            Span::styled(format!("*{}", r.node_id), LEADER)
        } else {
            Span::raw(r.node_id.to_string())
        };
        let online = if r.online {
            Span::styled("▲ up", GOOD)
        } else {
            Span::styled("✗ down", BAD)
        };
        let role = if r.role == Role::Unknown {
            Span::styled("unknown", DIM)
        } else {
            Span::raw(r.role.as_str())
        };
        let right = |s: String| Cell::from(Line::from(s).right_aligned());
        Row::new(vec![
            Cell::from(node),
            Cell::from(online),
            Cell::from(role),
            right(r.term.to_string()),
            right(r.last_log_index.to_string()),
            right(r.applied_index.to_string()),
            right(r.lag.map_or_else(|| "?".into(), |l| format!("+{l}"))),
            right(r.last_ack_ms.map_or_else(|| "–".into(), fmt_ms)),
            right(r.message_seq.to_string()),
            Cell::from(r.checksum.chars().take(16).collect::<String>()),
        ])
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let header = Row::new(vec![
        "NODE", "STATE", "ROLE", "TERM", "LAST", "APPLIED", "LAG", "ACK", "SEQ", "CHECKSUM",
    ])
    .style(HEAD);
    f.render_widget(Table::new(rows, widths).header(header).block(block), popup);
}
