//! `App::update` tested directly: every key, data arriving, going stale, nodes going away.

use std::time::Duration;

use wk_api::Role;

use super::*;
use crate::fixtures::*;
use crate::snapshot::Backlog;

/// Presses `k`; answers the effects it asked for.
fn key(app: &mut App, k: Key) -> Vec<Effect> {
    app.update(Action::Key(k))
}

/// Types `s`; answers the effects all its keys asked for.
fn chars(app: &mut App, s: &str) -> Vec<Effect> {
    s.chars().flat_map(|c| key(app, Key::Char(c))).collect()
}

fn texts(app: &App) -> Vec<String> {
    app.events.entries.iter().map(|e| e.text.clone()).collect()
}

/// An app that has seen the standard scene twice (so rates exist).
fn running(clock: &Clock) -> App {
    let mut app = app(clock);
    app.update(scene(clock, 0));
    app.update(scene(clock, 1));
    app
}

fn visible(app: &App) -> Vec<String> {
    app.visible_channels().iter().map(|r| r.key.id.clone()).collect()
}

#[test]
fn first_snapshot_fills_the_view() {
    let clock = Clock::new();
    let mut app = app(&clock);
    assert!(app.cluster.view.is_none() && app.data_age().is_none() && !app.is_stale());
    app.update(scene(&clock, 0));
    assert_eq!(app.meta_leader(), Some(1));
    assert_eq!(app.nodes().len(), 3);
    assert_eq!(app.channels.rows.len(), CHANNELS.len());
    assert_eq!(app.channels.total, CHANNELS.len() as u64);
    assert!(app.throughput.samples.is_empty(), "no rate from one snapshot");
    assert!(
        app.channels
            .rows
            .values()
            .all(|r| r.rate.is_none() && r.health() == ChannelHealth::Ok)
    );
    assert_eq!(texts(&app), ["· connected: 3/3 nodes up, metadata leader *1"]);
    assert_eq!(app.backlog.report, Backlog::Report(backlog(0, None, 0)));
}

#[test]
fn rates_and_throughput_come_from_seq_deltas() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let rate = |app: &App, id: &str| app.channels.rows[&ChannelKey::new(id, 2)].rate;
    assert_eq!(rate(&app, "orders"), Some(120.0));
    assert_eq!(rate(&app, "quiet"), Some(0.0));
    assert_eq!(app.throughput.samples, [RATES.iter().sum::<u64>()]);
    // Busiest first by default.
    assert_eq!(
        visible(&app),
        ["orders", "room-42", "g1", "g2", "p2p@alice@bob", "quiet"]
    );
    // A half-second poll doubles the per-second rate; a seq that went down has no rate.
    app.update(snapshot(
        &clock,
        1500,
        nodes(Some(1), 2, &[]),
        CHANNELS.iter().map(|c| info(c, &[1, 2, 3])).collect(),
        vec![healthy("orders", 2, 1000 + 120 + 30), healthy("g1", 1, 5)],
    ));
    assert_eq!(rate(&app, "orders"), Some(60.0));
    assert_eq!(rate(&app, "g1"), None);
    assert_eq!(rate(&app, "g2"), Some(3.0), "not polled: keeps its last rate");
    assert_eq!(app.throughput.samples.back(), Some(&60));
}

#[test]
fn going_stale_and_unreachable() {
    let clock = Clock::new();
    let mut app = running(&clock);
    app.update(Action::Tick(clock.at(1_400)));
    assert_eq!(app.data_age(), Some(Duration::from_millis(400)));
    assert!(!app.is_stale());
    assert_eq!(app.node_state(app.nodes()[0]), NodeState::Up);
    // Three refreshes without news: stale, although no poll failed.
    app.update(Action::Tick(clock.at(4_100)));
    assert!(app.is_stale());
    assert_eq!(app.node_state(app.nodes()[0]), NodeState::Stale);
    // A tick never moves the clock backwards.
    app.update(Action::Tick(clock.at(10)));
    assert_eq!(app.now, clock.at(4_100));

    // Failures keep the last view, mark it stale, and make one event, not one per failure.
    let before = app.events.entries.len();
    app.update(failed(&clock, 5_000, "no endpoint answered"));
    app.update(failed(&clock, 6_000, "no endpoint answered"));
    assert_eq!(app.cluster.last_error.as_deref(), Some("no endpoint answered"));
    assert_eq!(app.meta_leader(), Some(1), "the last view is kept");
    assert!(app.is_stale());
    assert_eq!(app.events.entries.len(), before + 1);
    assert_eq!(app.events.entries.back().map(|e| e.severity), Some(Severity::Bad));

    app.update(scene(&clock, 7));
    assert_eq!(app.cluster.last_error, None);
    assert!(!app.is_stale());
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("▲ cluster reachable again")
    );
}

#[test]
fn nodes_going_down_coming_back_and_disappearing() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let chans = || CHANNELS.iter().map(|c| info(c, &[1, 2, 3])).collect::<Vec<_>>();

    // Node 1 (the metadata leader) dies; node 2 takes over in term 3.
    app.update(snapshot(&clock, 2000, nodes(Some(2), 3, &[1]), chans(), vec![]));
    let n1 = app.nodes()[0].clone();
    assert_eq!(app.node_state(&n1), NodeState::Down);
    assert_eq!(app.cluster.down_since.get(&1), Some(&clock.at(2000)));
    assert_eq!(
        texts(&app)[1..],
        [
            "* metadata leader 1 → 2",
            "↻ metadata term 2 → 3 (election)",
            "✗ node 1 down (not answering)",
            "↻ node 2 role follower → leader",
        ]
    );

    // It comes back.
    app.update(snapshot(&clock, 3000, nodes(Some(2), 3, &[]), chans(), vec![]));
    assert_eq!(texts(&app).last().map(String::as_str), Some("▲ node 1 up"));
    assert!(app.cluster.down_since.is_empty());

    // Node 3 vanishes from the listing altogether (removed from the membership).
    app.focus = Pane::Nodes;
    key(&mut app, Key::End);
    assert_eq!(app.nodes_pane.sel, 2);
    let mut two = nodes(Some(2), 3, &[]);
    two.nodes.retain(|n| n.id != 3);
    app.update(snapshot(&clock, 4000, two, chans(), vec![]));
    assert_eq!(app.nodes().iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(app.nodes_pane.sel, 1, "the selection stays on a node that exists");
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("- node 3 left the view (no longer listed)")
    );

    // The metadata group loses its leader.
    app.update(snapshot(&clock, 5000, nodes(None, 3, &[]), chans(), vec![]));
    assert!(texts(&app).contains(&"✗ metadata group has NO leader".to_string()));
    app.update(snapshot(&clock, 6000, nodes(Some(3), 4, &[]), chans(), vec![]));
    assert!(texts(&app).contains(&"* metadata leader elected: node 3".to_string()));
    assert!(texts(&app).contains(&"+ node 3 joined the view".to_string()));
}

#[test]
fn channel_leader_changes_removals_and_health() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let n = || nodes(Some(1), 2, &[]);
    let list = |ids: &[&str]| ids.iter().map(|c| info(c, &[1, 2, 3])).collect::<Vec<_>>();

    // g1: leader 1 → 3 with replica 1 down; g2 loses its leader; orders diverges.
    app.update(snapshot(
        &clock,
        2000,
        n(),
        list(CHANNELS),
        vec![
            replicas(
                "g1",
                Some(3),
                &[
                    (1, false, None, None, 0),
                    (2, true, Some(0), Some(5), 1050),
                    (3, true, None, None, 1050),
                ],
            ),
            replicas(
                "g2",
                None,
                &[
                    (1, true, None, None, 1006),
                    (2, true, None, None, 1006),
                    (3, true, None, None, 1006),
                ],
            ),
            {
                let mut r = healthy("orders", 2, 1240);
                r.replicas[0].checksum = "bad".into();
                r
            },
            replicas(
                "room-42",
                Some(2),
                &[
                    (1, true, Some(500), Some(20), 1000),
                    (2, true, None, None, 1080),
                    (3, true, Some(0), Some(3_000), 1080),
                ],
            ),
        ],
    ));
    let row = |app: &App, id: &str| app.channels.rows[&ChannelKey::new(id, 2)].clone();
    assert_eq!(row(&app, "g1").health(), ChannelHealth::ReplicaDown);
    assert_eq!(row(&app, "g1").leader(), Some(3));
    assert_eq!(row(&app, "g2").health(), ChannelHealth::NoLeader);
    assert_eq!(row(&app, "orders").health(), ChannelHealth::Diverged);
    assert_eq!(row(&app, "room-42").health(), ChannelHealth::Lagging);
    assert_eq!(row(&app, "room-42").max_lag(), Some(500));
    assert_eq!(
        row(&app, "quiet").health(),
        ChannelHealth::Ok,
        "not polled: last status kept"
    );
    let t = texts(&app);
    assert!(t.contains(&"* channel g1/2 leader 1 → 3".to_string()), "{t:?}");
    assert!(t.contains(&"* channel g2/2 lost its leader".to_string()), "{t:?}");

    // Many leader changes at once are one event.
    let before = app.events.entries.len();
    let moved = CHANNELS.iter().map(|c| healthy(c, 3, 2000)).collect();
    app.update(snapshot(&clock, 3000, n(), list(CHANNELS), moved));
    assert_eq!(app.events.entries.len(), before + 1);
    assert!(
        app.events
            .entries
            .back()
            .expect("an event")
            .text
            .starts_with("* 4 channels changed leader (")
    );

    // A channel that leaves the list leaves the table; a failed replica poll shows.
    let mut s = snapshot(&clock, 4000, n(), list(&["g1", "g2"]), vec![]);
    if let Action::Snapshot(snap) = &mut s {
        snap.replica_errors
            .push((ChannelKey::new("g2", 2), "timeout".into()));
    }
    app.update(s);
    assert_eq!(app.channels.rows.len(), 2);
    assert_eq!(row(&app, "g2").health(), ChannelHealth::Error);
    assert_eq!(row(&app, "g2").error.as_deref(), Some("timeout"));

    // A failed channel list keeps the rows and says so.
    let mut s = snapshot(&clock, 5000, n(), vec![], vec![]);
    if let Action::Snapshot(snap) = &mut s {
        snap.channels = Err("503".into());
    }
    app.update(s);
    assert_eq!(app.channels.rows.len(), 2);
    assert_eq!(app.channels.error.as_deref(), Some("503"));
    // A group no replica runs is hibernated, not leaderless.
    let idle = replicas(
        "g1",
        None,
        &[
            (1, true, None, None, 9),
            (2, true, None, None, 9),
            (3, false, None, None, 0),
        ],
    );
    let idle = {
        let mut r = idle;
        r.replicas.iter_mut().for_each(|x| x.role = Role::Unknown);
        r
    };
    assert!(idle.is_hibernated());
    // What nodes report today: role `hibernated` on every replica that answers.
    let asleep = {
        let mut r = idle.clone();
        r.replicas
            .iter_mut()
            .filter(|x| x.online)
            .for_each(|x| x.role = Role::Hibernated);
        r
    };
    assert!(asleep.is_hibernated(), "{asleep:?}");
    app.update(snapshot(&clock, 5500, n(), list(&["g1", "g2"]), vec![idle]));
    assert_eq!(row(&app, "g1").health(), ChannelHealth::Hibernated);
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("* channel g1/2 hibernated (idle)")
    );
    // A channel never polled is "unpolled".
    app.update(snapshot(&clock, 6000, n(), list(&["new"]), vec![]));
    assert_eq!(row(&app, "new").health(), ChannelHealth::Unpolled);
}

#[test]
fn quit_keys() {
    let clock = Clock::new();
    for k in [Key::Char('q'), Key::Esc, Key::CtrlC] {
        let mut app = running(&clock);
        assert_eq!(key(&mut app, k), [Effect::Quit], "{k:?}");
    }
    // Esc first clears a filter, then quits.
    let mut app = running(&clock);
    key(&mut app, Key::Char('/'));
    chars(&mut app, "g");
    key(&mut app, Key::Enter);
    assert!(key(&mut app, Key::Esc).is_empty() && app.channels.filter.is_empty());
    assert_eq!(key(&mut app, Key::Esc), [Effect::Quit]);
    // Ctrl-C quits from any mode.
    for open in [Key::Char('?'), Key::Char('/'), Key::Enter] {
        let mut app = running(&clock);
        key(&mut app, open);
        assert_ne!(app.mode, Mode::Normal, "{open:?}");
        assert_eq!(key(&mut app, Key::CtrlC), [Effect::Quit], "{open:?}");
    }
}

#[test]
fn help_opens_and_closes_without_quitting() {
    let clock = Clock::new();
    for close in [Key::Char('?'), Key::Char('q'), Key::Esc] {
        let mut app = running(&clock);
        key(&mut app, Key::Char('?'));
        assert_eq!(app.mode, Mode::Help);
        key(&mut app, Key::Char('j'));
        key(&mut app, Key::Char('f'));
        assert_eq!(app.mode, Mode::Help);
        assert!(!app.frozen, "keys other than close do nothing in help");
        let effects = key(&mut app, close);
        assert_eq!(app.mode, Mode::Normal, "{close:?}");
        assert!(effects.is_empty(), "{close:?}");
    }
}

#[test]
fn freeze_and_refresh() {
    let clock = Clock::new();
    let mut app = running(&clock);
    assert_eq!(key(&mut app, Key::Char('r')), [Effect::Refresh]);
    assert!(!app.accept_one);

    key(&mut app, Key::Char('f'));
    assert!(app.frozen);
    app.update(snapshot(&clock, 2000, nodes(Some(2), 3, &[1]), vec![], vec![]));
    app.update(failed(&clock, 3000, "down"));
    assert_eq!(app.meta_leader(), Some(1), "frozen: snapshots ignored");
    assert_eq!(app.cluster.last_error, None, "frozen: failures ignored");
    assert_eq!(app.cluster.taken_at, Some(clock.at(1000)));

    // r while frozen lets exactly one snapshot through.
    assert_eq!(key(&mut app, Key::Char('r')), [Effect::Refresh]);
    assert!(app.accept_one);
    app.update(snapshot(&clock, 4000, nodes(Some(2), 3, &[]), vec![], vec![]));
    assert_eq!(app.meta_leader(), Some(2));
    app.update(snapshot(&clock, 5000, nodes(Some(3), 4, &[]), vec![], vec![]));
    assert_eq!(app.meta_leader(), Some(2));

    key(&mut app, Key::Char('f'));
    assert!(!app.frozen);
    app.update(snapshot(&clock, 6000, nodes(Some(3), 4, &[]), vec![], vec![]));
    assert_eq!(app.meta_leader(), Some(3));
}

#[test]
fn tab_cycles_every_pane() {
    let clock = Clock::new();
    let mut app = running(&clock);
    assert_eq!(app.focus, Pane::Channels);
    let mut seen = vec![app.focus];
    for _ in 0..Pane::ALL.len() {
        key(&mut app, Key::Tab);
        seen.push(app.focus);
    }
    assert_eq!(seen.first(), seen.last(), "wraps around");
    seen.pop();
    seen.sort_by_key(|p| Pane::ALL.iter().position(|q| q == p));
    assert_eq!(seen, Pane::ALL);
    key(&mut app, Key::BackTab);
    assert_eq!(app.focus, Pane::Throughput);
    key(&mut app, Key::Tab);
    assert_eq!(app.focus, Pane::Channels);
}

#[test]
fn moving_in_each_pane() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let sel = |app: &App| app.selected_channel().map(|r| r.key.id.clone());
    // Channels (focused at start): busiest first.
    assert_eq!(sel(&app).as_deref(), Some("orders"));
    for (k, want) in [
        (Key::Down, "room-42"),
        (Key::Char('j'), "g1"),
        (Key::Up, "room-42"),
        (Key::Char('k'), "orders"),
        (Key::Char('k'), "orders"),
        (Key::PageDown, "quiet"),
        (Key::PageUp, "orders"),
        (Key::End, "quiet"),
        (Key::Home, "orders"),
        (Key::Char('G'), "quiet"),
        (Key::Char('g'), "orders"),
    ] {
        key(&mut app, k);
        assert_eq!(sel(&app).as_deref(), Some(want), "{k:?}");
    }
    // The selection follows the channel, not the row, when the order changes.
    key(&mut app, Key::Down);
    key(&mut app, Key::Char('1'));
    assert_eq!(sel(&app).as_deref(), Some("room-42"));

    // Nodes.
    app.focus = Pane::Nodes;
    for (k, want) in [
        (Key::Down, 1),
        (Key::Char('j'), 2),
        (Key::Down, 2),
        (Key::Char('k'), 1),
        (Key::Home, 0),
        (Key::End, 2),
    ] {
        key(&mut app, k);
        assert_eq!(app.nodes_pane.sel, want, "{k:?}");
    }

    // Events scroll (newest first; down shows older ones).
    app.focus = Pane::Events;
    assert_eq!(app.events.entries.len(), 1);
    key(&mut app, Key::Down);
    assert_eq!(app.events.scroll, 0, "nothing older");
    app.update(failed(&clock, 2000, "x"));
    app.update(scene(&clock, 3));
    key(&mut app, Key::Char('j'));
    key(&mut app, Key::Char('j'));
    assert_eq!(app.events.scroll, 2);
    app.update(failed(&clock, 4000, "y"));
    assert_eq!(
        app.events.scroll, 3,
        "a new event keeps the scrolled view in place"
    );
    key(&mut app, Key::Home);
    assert_eq!(app.events.scroll, 0);

    // Throughput and backlog have nothing to move.
    app.focus = Pane::Throughput;
    key(&mut app, Key::Down);
    app.focus = Pane::Backlog;
    key(&mut app, Key::Down);
    assert_eq!((app.nodes_pane.sel, app.events.scroll), (2, 0));
}

#[test]
fn filter_typing() {
    let clock = Clock::new();
    let mut app = running(&clock);
    app.focus = Pane::Nodes;
    key(&mut app, Key::Char('/'));
    assert_eq!((app.mode, app.focus), (Mode::Filter, Pane::Channels));
    // Letters that are keys elsewhere are text here.
    let effects = chars(&mut app, "qG?frsd");
    assert_eq!(app.channels.filter, "qG?frsd");
    assert!(effects.is_empty() && !app.frozen && app.mode == Mode::Filter);
    for _ in 0..7 {
        key(&mut app, Key::Backspace);
    }
    key(&mut app, Key::Backspace);
    assert_eq!(app.channels.filter, "");
    chars(&mut app, "G");
    assert_eq!(visible(&app), ["g1", "g2"], "case-insensitive, on id/type");
    key(&mut app, Key::Down);
    assert_eq!(app.selected_channel().map(|r| r.key.id.as_str()), Some("g2"));
    key(&mut app, Key::Enter);
    assert_eq!((app.mode, app.channels.filter.as_str()), (Mode::Normal, "G"));
    key(&mut app, Key::Char('/'));
    chars(&mut app, "1");
    assert_eq!(visible(&app), ["g1"]);
    key(&mut app, Key::Esc);
    assert_eq!((app.mode, app.channels.filter.as_str()), (Mode::Normal, ""));
    assert_eq!(visible(&app).len(), CHANNELS.len());
    chars(&mut app, "/zzz");
    assert!(app.visible_channels().is_empty());
    assert!(app.selected_channel().is_none());
    key(&mut app, Key::Enter);
    key(&mut app, Key::Enter);
    assert_eq!(
        app.mode,
        Mode::Normal,
        "Enter with nothing selected opens nothing"
    );
}

#[test]
fn sort_keys() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let cases = [
        ('1', SortColumn::Channel, false, "g1"),
        ('1', SortColumn::Channel, true, "room-42"),
        ('2', SortColumn::Rate, true, "orders"),
        ('2', SortColumn::Rate, false, "quiet"),
        ('3', SortColumn::Seq, true, "orders"),
        ('4', SortColumn::Leader, false, "g1"),
        ('4', SortColumn::Leader, true, "p2p@alice@bob"),
        ('5', SortColumn::Lag, true, "g1"),
    ];
    for (c, col, desc, first) in cases {
        key(&mut app, Key::Char(c));
        assert_eq!(
            (app.channels.sort, app.channels.sort_desc),
            (col, desc),
            "key {c}"
        );
        assert_eq!(visible(&app)[0], first, "key {c}");
    }
}

#[test]
fn replica_details() {
    let clock = Clock::new();
    let mut app = running(&clock);
    // Enter only opens details from the Channels pane.
    app.focus = Pane::Nodes;
    key(&mut app, Key::Enter);
    assert_eq!(app.mode, Mode::Normal);
    app.focus = Pane::Channels;
    key(&mut app, Key::Enter);
    assert_eq!(app.mode, Mode::Detail);
    assert_eq!(app.channels.sel, Some(ChannelKey::new("orders", 2)));
    key(&mut app, Key::Char('j'));
    assert_eq!(app.channels.sel, Some(ChannelKey::new("room-42", 2)));
    key(&mut app, Key::Up);
    assert_eq!(app.channels.sel, Some(ChannelKey::new("orders", 2)));
    key(&mut app, Key::Char('f'));
    assert!(app.frozen);
    assert_eq!(key(&mut app, Key::Char('r')), [Effect::Refresh]);
    key(&mut app, Key::Tab);
    assert_eq!(app.focus, Pane::Channels, "Tab does nothing in the popup");
    for close in [Key::Char('q'), Key::Esc, Key::Enter] {
        app.mode = Mode::Detail;
        let effects = key(&mut app, close);
        assert_eq!(app.mode, Mode::Normal, "{close:?}");
        assert!(effects.is_empty());
    }
}

#[test]
fn unknown_keys_do_nothing() {
    let clock = Clock::new();
    let mut app = running(&clock);
    app.notice = Some("old".into());
    key(&mut app, Key::Char('x'));
    assert_eq!(app.notice, None, "the next key clears the notice");
    let focus = app.focus;
    for k in [Key::Char('x'), Key::Backspace, Key::Char('9')] {
        assert!(key(&mut app, k).is_empty(), "{k:?}");
    }
    assert_eq!((app.focus, app.mode), (focus, Mode::Normal));
    app.update(Action::Redraw);
}

#[test]
fn scale_out_against_a_remote_cluster_asks_for_a_node() {
    let clock = Clock::new();
    let mut app = running(&clock);
    key(&mut app, Key::Char('s'));
    assert_eq!(app.mode, Mode::ScaleInput);
    chars(&mut app, "4@10.0.0.4");
    assert!(key(&mut app, Key::Enter).is_empty());
    assert_eq!(app.mode, Mode::ScaleInput, "a bad address keeps the prompt");
    assert!(app.notice.clone().expect("why").contains("no :PORT"));
    chars(&mut app, ":1111x");
    key(&mut app, Key::Backspace);
    chars(&mut app, "0");
    assert_eq!(app.scale.input, "4@10.0.0.4:11110");
    let effects = key(&mut app, Key::Enter);
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(
        effects,
        [Effect::ScaleOut(ScaleRequest::Admit {
            node_id: 4,
            cluster_addr: "10.0.0.4:11110".into()
        })]
    );
    assert!(app.scale.running && app.scale.input.is_empty());
    // One at a time.
    assert!(key(&mut app, Key::Char('s')).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.notice
            .clone()
            .expect("a notice")
            .contains("a scale-out is running")
    );
    // Progress lands in the events; the last step ends the scale-out.
    app.update(Action::ScaleProgress {
        wall: wall0(),
        severity: Severity::Info,
        text: "→ scale-out: admitting node 4".into(),
        done: false,
    });
    assert!(app.scale.running);
    app.update(Action::ScaleProgress {
        wall: wall0(),
        severity: Severity::Good,
        text: "✓ node 4 joined".into(),
        done: true,
    });
    assert!(!app.scale.running);
    assert_eq!(texts(&app).last().map(String::as_str), Some("✓ node 4 joined"));
    // Esc cancels the prompt and forgets what was typed; q is text there, not quit.
    chars(&mut app, "sq");
    assert_eq!((app.mode, app.scale.input.as_str()), (Mode::ScaleInput, "q"));
    assert!(key(&mut app, Key::Esc).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.scale.input.is_empty());
}

#[test]
fn scale_out_against_the_demo_starts_a_node_after_y() {
    let clock = Clock::new();
    let mut app = App::new(
        Config {
            local_scale: true,
            ..config()
        },
        clock.at(0),
    );
    for cancel in [Key::Char('n'), Key::Esc, Key::Char('q')] {
        key(&mut app, Key::Char('s'));
        assert_eq!(app.mode, Mode::ScaleConfirm);
        assert!(key(&mut app, cancel).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.notice.as_deref(), Some("scale-out cancelled"));
    }
    assert_eq!(chars(&mut app, "sxy"), [Effect::ScaleOut(ScaleRequest::Local)]);
    assert!(app.scale.running);
}

#[test]
fn drill_menu_moves_chooses_and_backs_out() {
    let clock = Clock::new();
    let mut app = running(&clock);
    key(&mut app, Key::Char('d'));
    assert_eq!(app.mode, Mode::DrillMenu);
    key(&mut app, Key::Down);
    key(&mut app, Key::Char('j'));
    key(&mut app, Key::Char('j'));
    key(&mut app, Key::Char('j'));
    assert_eq!(app.drill.choice, 3, "the menu stops at its last entry");
    key(&mut app, Key::Char('k'));
    key(&mut app, Key::Char('k'));
    assert_eq!(app.drill.choice, 1);
    for (k, secs) in [('+', 15), ('=', 20), ('-', 15)] {
        key(&mut app, Key::Char(k));
        assert_eq!(app.drill.isolate_secs, secs);
    }
    for _ in 0..10 {
        key(&mut app, Key::Char('-'));
    }
    assert_eq!(app.drill.isolate_secs, 5, "at least 5 s");
    for back in [Key::Char('q'), Key::Esc] {
        app.mode = Mode::DrillMenu;
        assert!(key(&mut app, back).is_empty(), "{back:?}");
        assert_eq!(app.mode, Mode::Normal, "{back:?}");
        assert!(app.drill.pending.is_none());
    }
}

#[test]
fn kill_leader_asks_first_and_is_requested_once_confirmed() {
    let clock = Clock::new();
    let mut app = running(&clock);
    let sel = app.selected_channel().expect("a channel").key.clone();
    let leader = app.selected_channel().and_then(|r| r.leader()).expect("a leader");
    assert!(chars(&mut app, "d1").is_empty(), "nothing runs before y");
    assert_eq!(app.mode, Mode::DrillConfirm);
    let plan = app.drill.pending.clone().expect("a pending drill");
    assert_eq!(
        plan.kind,
        DrillKind::KillLeader {
            channel: sel.clone(),
            node: leader
        }
    );
    assert_eq!(plan.target_http, format!("127.0.0.1:500{leader}"));
    assert_eq!(plan.affected[0], sel, "the drilled channel first");
    assert!(
        plan.affected
            .iter()
            .all(|k| app.channels.rows[k].leader() == Some(leader)),
        "only channels the node leads"
    );
    assert_eq!(plan.probe, Some(sel));
    // Keys other than y/n do nothing in the prompt.
    assert!(key(&mut app, Key::Char('x')).is_empty());
    assert_eq!(app.mode, Mode::DrillConfirm);
    assert_eq!(key(&mut app, Key::Char('y')), [Effect::Drill(plan.clone())]);
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.drill.running.as_ref(), Some(&plan));
    // One drill at a time.
    key(&mut app, Key::Char('d'));
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        app.notice
            .clone()
            .expect("a notice")
            .contains("a drill is running")
    );
}

#[test]
fn drill_prompt_cancels_with_n_and_esc() {
    let clock = Clock::new();
    let mut app = running(&clock);
    for cancel in [Key::Char('n'), Key::Esc, Key::Char('q')] {
        chars(&mut app, "d2");
        assert_eq!(app.mode, Mode::DrillConfirm);
        assert!(key(&mut app, cancel).is_empty(), "{cancel:?}");
        assert_eq!(app.mode, Mode::Normal, "{cancel:?}");
        assert!(app.drill.pending.is_none());
        assert_eq!(app.notice.as_deref(), Some("drill cancelled"));
    }
}

#[test]
fn node_drills_target_the_selected_node() {
    let clock = Clock::new();
    let mut app = running(&clock);
    app.focus = Pane::Nodes;
    key(&mut app, Key::Down);
    chars(&mut app, "d2");
    let plan = app.drill.pending.clone().expect("a pending drill");
    assert_eq!(plan.kind, DrillKind::KillNode { node: 2 });
    key(&mut app, Key::Esc);
    chars(&mut app, "d++3");
    let plan = app.drill.pending.clone().expect("a pending drill");
    assert_eq!(plan.kind, DrillKind::Isolate { node: 2, secs: 20 });
    assert!(
        plan.affected
            .iter()
            .all(|k| app.channels.rows[k].leader() == Some(2))
    );
}

#[test]
fn drills_that_cannot_run_say_why() {
    let clock = Clock::new();
    // No data yet: no channel, no node.
    let mut app = app(&clock);
    for choice in ['1', '2', '3'] {
        chars(&mut app, &format!("d{choice}"));
        assert_eq!(app.mode, Mode::Normal);
        let notice = app.notice.clone().expect("a notice");
        assert!(notice.starts_with("drill not possible"), "{notice}");
    }
    // A node that is already down.
    app.update(snapshot(&clock, 0, nodes(Some(1), 2, &[1]), vec![], vec![]));
    chars(&mut app, "d2");
    assert_eq!(
        app.notice.as_deref(),
        Some("drill not possible: node 1 is already down")
    );
    // A node whose HTTP address is not known yet cannot be reached.
    let mut view = nodes(Some(1), 2, &[]);
    view.nodes[0].http_addr.clear();
    app.update(snapshot(&clock, 1000, view, vec![], vec![]));
    chars(&mut app, "d2");
    assert_eq!(
        app.notice.as_deref(),
        Some("drill not possible: node 1 has not reported its HTTP address yet")
    );
}

#[test]
fn drill_reports_are_logged_and_mark_the_throughput() {
    let clock = Clock::new();
    let mut app = running(&clock);
    chars(&mut app, "d1y");
    let plan = app.drill.running.clone().expect("running");
    app.update(Action::DrillStarted {
        wall: wall0(),
        text: plan.kind.to_string(),
    });
    assert!(
        texts(&app)
            .last()
            .expect("an event")
            .starts_with("⚡ drill started: kill the leader")
    );
    app.update(scene(&clock, 2));
    // Frozen screens still take drill results.
    app.frozen = true;
    let report = DrillReport {
        kind: plan.kind.clone(),
        elected: vec![(plan.affected[0].clone(), Some(Duration::from_millis(800)))],
        probe_writes: 10,
        probe_failures: 3,
        probe_window: Some(Duration::from_millis(450)),
        error: None,
    };
    app.update(Action::DrillDone {
        wall: wall0(),
        report: Box::new(report.clone()),
    });
    assert!(app.drill.running.is_none());
    assert_eq!(app.drill.last.as_ref(), Some(&report));
    let last = app.events.entries.back().expect("an event");
    assert_eq!(
        (last.severity, last.text.clone()),
        (Severity::Good, report.summary())
    );
    app.frozen = false;
    app.update(scene(&clock, 3));
    assert_eq!(
        app.throughput.drill_marks.iter().copied().collect::<Vec<_>>(),
        [false, true, false],
        "the sample taken while the drill ran is marked"
    );
    assert_eq!(app.throughput.drill_marks.len(), app.throughput.samples.len());
    // A failed drill is bad news.
    let failed = DrillReport {
        error: Some("node 1 refuses drills (start it with --allow-drills)".into()),
        ..report
    };
    app.update(Action::DrillDone {
        wall: wall0(),
        report: Box::new(failed),
    });
    assert_eq!(
        app.events.entries.back().expect("an event").severity,
        Severity::Bad
    );
}

#[test]
fn focus_channels_for_the_poller() {
    let clock = Clock::new();
    let mut app = running(&clock);
    key(&mut app, Key::End);
    let focus = app.focus_channels(3);
    let ids: Vec<&str> = focus.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(
        ids,
        ["quiet", "orders", "room-42"],
        "the selection, then the top of the view"
    );
    let all = app.focus_channels(100);
    assert_eq!(all.len(), CHANNELS.len());
}

#[test]
fn backlog_rate_eta_stall_and_events() {
    let clock = Clock::new();
    let mut app = running(&clock);
    assert_eq!(app.backlog_report().map(|b| b.total), Some(0));
    assert_eq!(app.backlog_eta(), None, "no drain");
    let step = |app: &mut App, ms: u64, b: wk_api::Backlog| {
        app.update(with_backlog(scene(&clock, ms / 1000), Backlog::Report(b)));
    };
    // A node joins: 100 channels to move; then a drain starts and moves 5 per second.
    step(&mut app, 2000, backlog(100, None, 0));
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("! sync backlog: 100 channels to move (1 at risk)")
    );
    step(&mut app, 3000, backlog(100, Some(5.0), 0));
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("→ backlog drain started (5.0 ch/s)")
    );
    assert_eq!(
        app.backlog_eta(),
        Some(Duration::from_secs(20)),
        "nothing seen yet: the limit"
    );
    step(&mut app, 4000, backlog(96, Some(5.0), 4));
    step(&mut app, 5000, backlog(92, Some(5.0), 8));
    assert_eq!(
        app.backlog_rate(),
        Some(8.0 / 5.0),
        "decreases over the window's 5 s"
    );
    assert_eq!(app.backlog_eta(), Some(Duration::from_secs_f64(92.0 / 1.6)));
    assert!(!app.backlog_stalled());

    // The drain stops moving: stalled after the patience (10 s), one event.
    let before = app.events.entries.len();
    step(&mut app, 9000, backlog(92, Some(5.0), 8));
    assert!(!app.backlog_stalled());
    step(&mut app, 16_000, backlog(92, Some(5.0), 8));
    assert!(app.backlog_stalled());
    step(&mut app, 17_000, backlog(92, Some(5.0), 8));
    assert_eq!(app.events.entries.len(), before + 1);
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("✗ backlog drain stalled: 92 channels left, no progress")
    );
    // Progress clears the stall; the end is an event too.
    step(&mut app, 18_000, backlog(50, Some(5.0), 50));
    assert!(!app.backlog_stalled());
    step(&mut app, 19_000, backlog(0, None, 0));
    let t = texts(&app);
    assert_eq!(
        t[t.len() - 2..],
        ["✓ sync backlog drained", "· backlog drain stopped"]
    );
    assert_eq!(app.backlog_eta(), None);

    // An older node without the endpoint, or a failure: shown, no events, samples kept.
    let n = app.backlog.samples.len();
    app.update(with_backlog(scene(&clock, 20), Backlog::NotReported));
    app.update(with_backlog(scene(&clock, 21), Backlog::Failed("503".into())));
    assert_eq!(app.backlog.samples.len(), n);
    assert_eq!(app.backlog_report(), None);
    assert!(!app.backlog_stalled());
}

#[test]
fn the_title_counts_the_nodes_of_the_latest_view() {
    let clock = Clock::new();
    let mut app = app(&clock);
    app.config.title = "demo: {nodes} local node(s)".into();
    assert_eq!(app.title(), "demo: … local node(s)");
    app.update(scene(&clock, 0));
    assert_eq!(app.title(), "demo: 3 local node(s)");
    // A scale-out: the next view lists a fourth node.
    let mut four = nodes(Some(1), 1, &[]);
    four.nodes.push(node(4, Role::Learner, true, 1, 0, 0));
    let Action::Snapshot(mut s) = scene(&clock, 1) else {
        panic!("scene is a snapshot")
    };
    s.nodes = four;
    app.update(Action::Snapshot(s));
    assert_eq!(app.title(), "demo: 4 local node(s)");
}

#[test]
fn a_node_killed_from_the_demo_dashboard_can_be_restarted() {
    let clock = Clock::new();
    let mut app = running(&clock);
    app.config.local_scale = true;
    app.focus = Pane::Nodes;
    key(&mut app, Key::Down);
    let not_killed = app.drill_plan(3).expect_err("node 2 was not killed from here");
    assert_eq!(not_killed, "node 2 was not killed here");
    let effects = chars(&mut app, "d2y");
    assert!(
        matches!(&effects[..], [Effect::Drill(p)] if p.kind == DrillKind::KillNode { node: 2 }),
        "{effects:?}"
    );
    let report = DrillReport {
        kind: DrillKind::KillNode { node: 2 },
        elected: Vec::new(),
        probe_writes: 0,
        probe_failures: 0,
        probe_window: None,
        error: None,
    };
    app.update(Action::DrillDone {
        wall: wall0(),
        report: Box::new(report),
    });
    assert_eq!(app.drill_plan(3).expect_err("still up"), "node 2 is running");
    app.update(snapshot(&clock, 3000, nodes(Some(1), 2, &[2]), vec![], vec![]));
    assert_eq!(
        app.drill_plan(3).expect("restartable").kind,
        DrillKind::Restart { node: 2 }
    );
    let effects = chars(&mut app, "d4y");
    assert_eq!(effects, vec![Effect::Restart(2)]);
    assert!(app.drill.running.is_none() && !app.drill.killed.contains(&2));
    app.update(Action::RestartProgress {
        wall: wall0(),
        severity: Severity::Good,
        text: "✓ node 2 caught up in 120 ms".into(),
    });
    assert_eq!(
        texts(&app).last().map(String::as_str),
        Some("✓ node 2 caught up in 120 ms")
    );
    // Only the demo's own dashboard restarts nodes.
    app.config.local_scale = false;
    assert!(app.drill_plan(3).is_err());
}
