//! Whole screens rendered with `TestBackend` at fixed sizes and compared with the expected
//! text in `testdata/tui/<name>.txt`. Regenerate after an intended change with
//! `WK_UPDATE_SNAPSHOTS=1 cargo test -p wk-tui` and review the diff.
//!
//! Everything on screen comes from fixed fixtures and an injected clock, so the screens are
//! the same on every machine.

use std::path::PathBuf;

use super::render_text;
use crate::app::{Action, App, Pane};
use crate::event::Key;
use crate::fixtures::*;
use crate::snapshot::Backlog;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/tui")
        .join(format!("{name}.txt"))
}

fn check(name: &str, app: &App, width: u16, height: u16) {
    let got = render_text(app, width, height);
    let file = path(name);
    if std::env::var_os("WK_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().expect("has a parent")).expect("create testdata/tui");
        std::fs::write(&file, &got).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with WK_UPDATE_SNAPSHOTS=1 cargo test -p wk-tui",
            file.display()
        )
    });
    if got != want {
        panic!(
            "screen {name} ({width}x{height}) differs from {}\n--- expected\n{want}--- got\n{got}\
             (if the change is intended: WK_UPDATE_SNAPSHOTS=1 cargo test -p wk-tui)",
            file.display()
        );
    }
}

fn key(app: &mut App, k: Key) {
    app.update(Action::Key(k));
}

/// The standard scene seen for `steps` seconds, rendered 400 ms after the last snapshot.
fn healthy(clock: &Clock, steps: u64) -> App {
    let mut app = app(clock);
    for k in 0..=steps {
        app.update(scene(clock, k));
    }
    app.update(Action::Tick(clock.at(steps * 1000 + 400)));
    app
}

/// Node 3 went down a while ago; node 1 lost the metadata lead to node 2 and the channels
/// that node 3 led moved; one channel lags.
fn degraded(clock: &Clock) -> App {
    let mut app = healthy(clock, 3);
    let channels = CHANNELS.iter().map(|c| info(c, &[1, 2, 3])).collect::<Vec<_>>();
    let reps = |k: u64| {
        vec![
            replicas(
                "g1",
                Some(2),
                &[
                    (1, true, Some(0), Some(12), 1000 + 25 * k),
                    (2, true, None, None, 1000 + 25 * k),
                    (3, false, None, None, 0),
                ],
            ),
            replicas(
                "orders",
                Some(2),
                &[
                    (1, true, Some(250), Some(1_800), 1000 + 120 * k - 250),
                    (2, true, None, None, 1000 + 120 * k),
                    (3, false, None, None, 0),
                ],
            ),
            replicas(
                "p2p@alice@bob",
                Some(1),
                &[
                    (1, true, None, None, 1000 + k),
                    (2, true, Some(0), Some(40), 1000 + k),
                    (3, false, None, None, 0),
                ],
            ),
            replicas(
                "room-42",
                None,
                &[
                    (1, true, None, None, 1160),
                    (2, true, None, None, 1160),
                    (3, false, None, None, 0),
                ],
            ),
        ]
    };
    // A node joined meanwhile: 120 channels to move to it, drained at 5/s (4 per second seen).
    for k in [4, 16, 17] {
        let s = snapshot(
            clock,
            k * 1000,
            nodes(Some(2), 3, &[3]),
            channels.clone(),
            reps(k),
        );
        let left = 120 - 4 * (k - 4);
        app.update(with_backlog(
            s,
            Backlog::Report(backlog(left, Some(5.0), 4 * (k - 4))),
        ));
    }
    app.update(Action::Tick(clock.at(17_300)));
    app
}

#[test]
fn waiting_for_data() {
    let clock = Clock::new();
    let app = app(&clock);
    check("waiting_80x24", &app, 80, 24);
}

#[test]
fn healthy_cluster() {
    let clock = Clock::new();
    let app = healthy(&clock, 12);
    check("healthy_120x40", &app, 120, 40);
    check("healthy_80x24", &app, 80, 24);
}

#[test]
fn degraded_cluster() {
    let clock = Clock::new();
    let mut app = degraded(&clock);
    check("degraded_120x40", &app, 120, 40);
    app.focus = Pane::Nodes;
    check("degraded_nodes_focus_80x24", &app, 80, 24);
}

#[test]
fn unreachable_and_stale() {
    let clock = Clock::new();
    let mut app = healthy(&clock, 3);
    app.update(failed(
        &clock,
        5000,
        "no endpoint answered: http://127.0.0.1:5001/: Connection refused",
    ));
    app.update(Action::Tick(clock.at(9_000)));
    check("unreachable_120x40", &app, 120, 40);
    check("unreachable_80x24", &app, 80, 24);
}

#[test]
fn frozen_filtered_sorted() {
    let clock = Clock::new();
    let mut app = healthy(&clock, 3);
    for k in [Key::Char('f'), Key::Char('1'), Key::Char('/'), Key::Char('g')] {
        key(&mut app, k);
    }
    check("frozen_filter_typing_80x24", &app, 80, 24);
    key(&mut app, Key::Enter);
    key(&mut app, Key::Char('s'));
    check("filtered_notice_80x24", &app, 80, 24);
}

#[test]
fn node_without_backlog_endpoint() {
    let clock = Clock::new();
    let mut app = app(&clock);
    app.update(with_backlog(scene(&clock, 0), Backlog::NotReported));
    check("no_backlog_endpoint_80x24", &app, 80, 24);
}

#[test]
fn popups() {
    let clock = Clock::new();
    let mut app = degraded(&clock);
    key(&mut app, Key::Char('?'));
    check("help_80x24", &app, 80, 24);
    key(&mut app, Key::Esc);
    key(&mut app, Key::Char('3'));
    key(&mut app, Key::Enter);
    check("detail_120x40", &app, 120, 40);
}

#[test]
fn drill_menu_prompt_and_result() {
    let clock = Clock::new();
    let mut app = healthy(&clock, 3);
    key(&mut app, Key::Char('d'));
    check("drill_menu_80x24", &app, 80, 24);
    check("drill_menu_120x40", &app, 120, 40);
    key(&mut app, Key::Char('1'));
    check("drill_confirm_80x24", &app, 80, 24);
    key(&mut app, Key::Char('y'));
    let plan = app.drill.running.clone().expect("running");
    app.update(Action::DrillStarted {
        wall: wall0(),
        text: plan.kind.to_string(),
    });
    for k in 4..=6 {
        app.update(scene(&clock, k));
    }
    app.update(Action::DrillDone {
        wall: wall0(),
        report: Box::new(crate::drill::DrillReport {
            kind: plan.kind.clone(),
            elected: vec![(
                plan.affected[0].clone(),
                Some(std::time::Duration::from_millis(1_340)),
            )],
            probe_writes: 25,
            probe_failures: 9,
            probe_window: Some(std::time::Duration::from_millis(1_120)),
            error: None,
        }),
    });
    for k in 7..=8 {
        app.update(scene(&clock, k));
    }
    app.update(Action::Tick(clock.at(8_400)));
    check("drill_result_120x40", &app, 120, 40);
    check("drill_result_80x24", &app, 80, 24);
}

#[test]
fn scale_out_prompts() {
    let clock = Clock::new();
    let mut app = healthy(&clock, 2);
    key(&mut app, Key::Char('s'));
    for c in "4@10.0.0.4:11110".chars() {
        key(&mut app, Key::Char(c));
    }
    check("scale_input_80x24", &app, 80, 24);
    key(&mut app, Key::Esc);
    app.config.local_scale = true;
    key(&mut app, Key::Char('s'));
    check("scale_confirm_80x24", &app, 80, 24);
}
