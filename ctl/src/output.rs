//! Rendering results: aligned text tables for people, JSON of the wk-api wire types for
//! scripts. Everything here is pure (strings in, strings out) except the two `write_*`
//! helpers, which only write to the given writer, and `print`, which writes to stdout; errors writing stdout (a closed pipe) are
//! returned, never panicked on.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use serde::Serialize;
use wk_api::{Message, NodesResp, Role, SendResp};

/// Writes `value` as pretty JSON plus a newline.
pub fn write_json<T: Serialize>(out: &mut impl Write, value: &T) -> anyhow::Result<()> {
    // Serialize first, write second: a closed stdout then surfaces as a plain `io::Error`
    // that `main` recognises as a broken pipe (serde_json would wrap it).
    let mut text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    text.push('\n');
    write_text(out, &text)
}

/// Writes text as is (it should end with a newline).
pub fn write_text(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    out.write_all(text.as_bytes()).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Writes a command's result to stdout: `value` as JSON with `--output json`, else the text
/// `text` renders.
pub fn print<T: Serialize>(
    format: crate::cli::OutputFormat,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        crate::cli::OutputFormat::Json => write_json(&mut out, value),
        crate::cli::OutputFormat::Text => write_text(&mut out, &text()),
    }
}

/// How a column lines up: text to the left, numbers to the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of text cells, rendered with columns two spaces apart and no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column titles and alignment; every row has exactly this many cells.
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells render empty, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(t, _)| t.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(t, _)| t.to_string()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The cluster's health as `cluster status` judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Every node online and the metadata group has a leader.
    pub healthy: bool,
    /// One line for people, e.g. `ok (3/3 nodes online)`.
    pub summary: String,
}

pub fn verdict(resp: &NodesResp) -> Verdict {
    // A removed node that still runs is no member: it neither counts nor degrades.
    let members = || resp.nodes.iter().filter(|n| n.role != Role::Removed);
    let online = members().filter(|n| n.online).count();
    let total = members().count();
    let mut problems = Vec::new();
    if resp.meta_leader.is_none() {
        problems.push("no metadata leader".to_string());
    }
    let offline: Vec<String> = members()
        .filter(|n| !n.online)
        .map(|n| n.id.to_string())
        .collect();
    match offline.len() {
        0 => {}
        1 => problems.push(format!("node {} offline", offline[0])),
        _ => problems.push(format!("nodes {} offline", offline.join(", "))),
    }
    if total == 0 {
        problems.push("no nodes".to_string());
    }
    let removed: Vec<String> = resp
        .nodes
        .iter()
        .filter(|n| n.role == Role::Removed)
        .map(|n| n.id.to_string())
        .collect();
    let removed = match removed.len() {
        0 => String::new(),
        1 => format!("; node {} removed but still running", removed[0]),
        _ => format!("; nodes {} removed but still running", removed.join(", ")),
    };
    if problems.is_empty() {
        Verdict {
            healthy: true,
            summary: format!("ok ({online}/{total} nodes online{removed})"),
        }
    } else {
        Verdict {
            healthy: false,
            summary: format!(
                "DEGRADED ({online}/{total} nodes online; {}{removed})",
                problems.join("; ")
            ),
        }
    }
}

/// The role cell: `*` marks the metadata leader, so colour is never the only signal.
fn role_cell(role: Role, is_meta_leader: bool) -> String {
    if is_meta_leader {
        format!("{}*", role.as_str())
    } else {
        role.as_str().to_string()
    }
}

fn leader_text(resp: &NodesResp) -> String {
    resp.meta_leader
        .map_or_else(|| "none".to_string(), |l| l.to_string())
}

/// `cluster status` in text: a header line (leader, verdict) and one row per node.
pub fn nodes_text(resp: &NodesResp) -> String {
    let v = verdict(resp);
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("HTTP", Align::Left),
        ("CLUSTER", Align::Left),
        ("ONLINE", Align::Left),
        ("ROLE", Align::Left),
        ("TERM", Align::Right),
        ("LAST", Align::Right),
        ("APPLIED", Align::Right),
        ("LED", Align::Right),
        ("REPLICATED", Align::Right),
        ("CONNS", Align::Right),
    ]);
    let mut nodes = resp.nodes.clone();
    nodes.sort_by_key(|n| n.id);
    for n in &nodes {
        table.row(vec![
            n.id.to_string(),
            n.http_addr.clone(),
            n.cluster_addr.clone(),
            if n.online { "yes".into() } else { "NO".into() },
            role_cell(n.role, resp.meta_leader == Some(n.id)),
            n.term.to_string(),
            n.last_log_index.to_string(),
            n.applied_index.to_string(),
            n.channels_led.to_string(),
            n.channels_replicated.to_string(),
            n.connections.to_string(),
        ]);
    }
    format!(
        "meta leader: {}   health: {}{}\n{}",
        leader_text(resp),
        v.summary,
        security_text(resp),
        table.render()
    )
}

/// How the answering node is exposed, for the header: `   tls: on`, plus `   INSECURE` for a
/// node started with `--insecure`; nothing from a node that does not say.
fn security_text(resp: &NodesResp) -> String {
    match resp.security {
        None => String::new(),
        Some(s) => format!(
            "   tls: {}{}",
            if s.tls { "on" } else { "off" },
            if s.insecure {
                "   INSECURE (--insecure: no tokens needed beyond loopback)"
            } else {
                ""
            }
        ),
    }
}

/// One line per refresh for `demo` when stdout is not a terminal, e.g.
/// `leader 1 | ok (3/3 nodes online) | 1 leader* t2 applied 7 led 3 | 2 follower ...`.
pub fn nodes_line(resp: &NodesResp) -> String {
    let mut nodes = resp.nodes.clone();
    nodes.sort_by_key(|n| n.id);
    let mut line = format!("leader {} | {}", leader_text(resp), verdict(resp).summary);
    for n in &nodes {
        let role = if n.online {
            role_cell(n.role, resp.meta_leader == Some(n.id))
        } else {
            "OFFLINE".into()
        };
        line.push_str(&format!(
            " | {} {} t{} applied {} led {} conns {}",
            n.id, role, n.term, n.applied_index, n.channels_led, n.connections
        ));
    }
    line
}

pub fn send_text(resp: &SendResp) -> String {
    format!(
        "message_id {}  message_seq {}  client_msg_no {}\n",
        resp.message_id, resp.message_seq, resp.client_msg_no
    )
}

/// Decodes a base64 payload as UTF-8 (lossy); not base64 shows as `<not base64: ...>`.
pub fn payload_text(payload: &str) -> String {
    match base64::engine::general_purpose::STANDARD.decode(payload) {
        Ok(bytes) => escape_controls(&String::from_utf8_lossy(&bytes)),
        Err(_) => format!("<not base64: {}>", escape_controls(payload)),
    }
}

/// Keeps one message on one line: control characters (newlines, tabs, ESC) are escaped.
fn escape_controls(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn timestamp_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `conversation list` in text: one row per conversation, as the node ordered them.
pub fn conversations_text(convs: &[wk_api::Conversation]) -> String {
    let mut table = Table::new(&[
        ("CHANNEL", Align::Left),
        ("TYPE", Align::Right),
        ("UNREAD", Align::Right),
        ("LAST_SEQ", Align::Right),
        ("READ_TO", Align::Right),
        ("TIME", Align::Left),
        ("VERSION", Align::Right),
        ("LAST", Align::Left),
    ]);
    for c in convs {
        table.row(vec![
            c.channel_id.clone(),
            c.channel_type.to_string(),
            c.unread.to_string(),
            c.last_msg_seq.to_string(),
            c.readed_to_msg_seq.to_string(),
            timestamp_text(c.timestamp),
            c.version.to_string(),
            c.recents
                .last()
                .map(|m| payload_text(&m.payload))
                .unwrap_or_default(),
        ]);
    }
    let mut out = table.render();
    if convs.is_empty() {
        out.push_str("(no conversations)\n");
    }
    out
}

/// `message sync` in text: one row per message, oldest first.
pub fn messages_text(messages: &[Message], more: bool) -> String {
    let mut table = Table::new(&[
        ("SEQ", Align::Right),
        ("MESSAGE_ID", Align::Right),
        ("FROM", Align::Left),
        ("TIME", Align::Left),
        ("CLIENT_MSG_NO", Align::Left),
        ("TEXT", Align::Left),
    ]);
    for m in messages {
        table.row(vec![
            m.message_seq.to_string(),
            m.message_id.to_string(),
            m.from_uid.clone(),
            timestamp_text(m.timestamp),
            m.client_msg_no.clone(),
            payload_text(&m.payload),
        ]);
    }
    let mut out = table.render();
    if more {
        out.push_str("(more messages in range: raise --limit or move --start)\n");
    }
    out
}

/// The progress bar of a long operation on a terminal: `prefix [=====>   ] pos/len unit msg
/// (eta ..)`; `unit` may be empty.
pub fn progress_bar(len: u64, prefix: &str, unit: &str) -> indicatif::ProgressBar {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!("{unit} ")
    };
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix:>10}} [{{bar:40}}] {{pos}}/{{len}} {unit}{{msg}} (eta {{eta}})"
        ))
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;
    use wk_api::{MessageHeader, NodeStatus};

    fn node(id: u64, role: Role, online: bool) -> NodeStatus {
        NodeStatus {
            id,
            http_addr: format!("127.0.0.1:500{id}"),
            tcp_addr: String::new(),
            ws_addr: String::new(),
            cluster_addr: format!("127.0.0.1:1111{}", id - 1),
            online,
            role,
            term: 3,
            last_log_index: 120,
            applied_index: if online { 120 } else { 7 },
            channels_led: id,
            channels_replicated: 10,
            connections: 5 * id,
        }
    }

    #[test]
    fn table_aligns_and_trims() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right), ("NOTE", Align::Left)]);
        t.row(vec!["a".into(), "1".into(), "".into()]);
        t.row(vec!["longer".into(), "1000".into(), "x".into()]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "NAME       N  NOTE\n\
             a          1\n\
             longer  1000  x\n\
             short\n"
        );
    }

    #[test]
    fn healthy_cluster() {
        let resp = NodesResp {
            meta_leader: Some(1),
            nodes: vec![
                node(2, Role::Follower, true),
                node(1, Role::Leader, true),
                node(3, Role::Follower, true),
            ],
            security: None,
        };
        assert!(verdict(&resp).healthy);
        assert_eq!(
            nodes_text(&resp),
            "meta leader: 1   health: ok (3/3 nodes online)\n\
             ID  HTTP            CLUSTER          ONLINE  ROLE      TERM  LAST  APPLIED  LED  REPLICATED  CONNS\n \
              1  127.0.0.1:5001  127.0.0.1:11110  yes     leader*      3   120      120    1          10      5\n \
              2  127.0.0.1:5002  127.0.0.1:11111  yes     follower     3   120      120    2          10     10\n \
              3  127.0.0.1:5003  127.0.0.1:11112  yes     follower     3   120      120    3          10     15\n"
        );
        let header = |tls, insecure| {
            let resp = NodesResp {
                security: Some(wk_api::Security { tls, insecure }),
                ..resp.clone()
            };
            nodes_text(&resp).lines().next().unwrap_or_default().to_string()
        };
        assert_eq!(
            header(true, false),
            "meta leader: 1   health: ok (3/3 nodes online)   tls: on"
        );
        assert!(
            header(false, true)
                .ends_with("tls: off   INSECURE (--insecure: no tokens needed beyond loopback)")
        );
    }

    #[test]
    fn verdicts() {
        let cases = [
            (Some(1), vec![true, true, true], true, "ok (3/3 nodes online)"),
            (
                None,
                vec![true, true, true],
                false,
                "DEGRADED (3/3 nodes online; no metadata leader)",
            ),
            (
                Some(1),
                vec![true, false, true],
                false,
                "DEGRADED (2/3 nodes online; node 2 offline)",
            ),
            (
                None,
                vec![true, false, false],
                false,
                "DEGRADED (1/3 nodes online; no metadata leader; nodes 2, 3 offline)",
            ),
            (
                None,
                vec![],
                false,
                "DEGRADED (0/0 nodes online; no metadata leader; no nodes)",
            ),
        ];
        for (leader, online, healthy, summary) in cases {
            let nodes = online
                .iter()
                .enumerate()
                .map(|(i, on)| {
                    node(
                        i as u64 + 1,
                        if *on { Role::Follower } else { Role::Unknown },
                        *on,
                    )
                })
                .collect();
            let v = verdict(&NodesResp {
                meta_leader: leader,
                nodes,
                security: None,
            });
            assert_eq!((v.healthy, v.summary.as_str()), (healthy, summary));
        }
    }

    #[test]
    fn status_line() {
        let resp = NodesResp {
            meta_leader: Some(1),
            nodes: vec![node(1, Role::Leader, true), node(2, Role::Unknown, false)],
            security: None,
        };
        assert_eq!(
            nodes_line(&resp),
            "leader 1 | DEGRADED (1/2 nodes online; node 2 offline) \
             | 1 leader* t3 applied 120 led 1 conns 5 | 2 OFFLINE t3 applied 7 led 2 conns 10"
        );
    }

    #[test]
    fn payloads() {
        assert_eq!(payload_text("aGVsbG8="), "hello");
        assert_eq!(payload_text("YQpi"), "a\\nb");
        assert_eq!(payload_text("/w=="), "\u{fffd}");
        assert_eq!(payload_text("%%"), "<not base64: %%>");
    }

    #[test]
    fn messages_table() {
        let m = Message {
            header: MessageHeader::default(),
            message_id: 42,
            message_idstr: "42".into(),
            message_seq: 1,
            client_msg_no: "c1".into(),
            from_uid: "alice".into(),
            channel_id: "g1".into(),
            channel_type: 2,
            timestamp: 1_700_000_000,
            payload: "aGVsbG8=".into(),
        };
        assert_eq!(
            messages_text(&[m], true),
            "SEQ  MESSAGE_ID  FROM   TIME                  CLIENT_MSG_NO  TEXT\n  \
               1          42  alice  2023-11-14T22:13:20Z  c1             hello\n\
             (more messages in range: raise --limit or move --start)\n"
        );
    }
}
