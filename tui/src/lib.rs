//! `wk-tui`: the WuKong HA live dashboard (`wkctl top`, and the end of `wkctl demo` on a
//! terminal). It owns the terminal UI; it depends on the shared API crate only, never on node
//! internals.
//!
//! Layout:
//! - `event`: turns terminal input and ticks into [`event::Event`]s (an input thread); no state.
//! - `poller`: the only module that does I/O; polls the cluster through `wk_api::Client` and
//!   sends [`snapshot::Snapshot`]s, bounded by a deadline so a dead node never stalls it.
//! - `snapshot`: the plain data one poll produces.
//! - `drill`: the failover drills the `d` menu offers and what they measured (plain data).
//! - `scale`: the scale-out `s` performs and how a local cluster starts a node (plain data).
//! - `app`: all state, grouped per pane; [`app::App::update`] applies an [`app::Action`],
//!   does no I/O and reads no clock (time comes in actions), and returns the
//!   [`app::Effect`]s it wants performed.
//! - `ui`: pure render functions from `&App` to a frame; [`ui::render_text`] makes plain text.
//!
//! [`run`] ties them together: it owns the terminal (restored on exit, on error, on drop and
//! by a panic hook), the input thread and the poller task, and stops all three when it
//! returns or is dropped.

pub mod app;
pub mod drill;
pub mod event;
pub mod poller;
pub mod scale;
pub mod snapshot;
pub mod ui;

#[cfg(test)]
mod fixtures;

use std::io;
use std::time::{Duration, Instant};

use ratatui::DefaultTerminal;
use tokio::sync::mpsc;
use wk_api::Client;

pub use app::{Action, App, Effect};

/// How the dashboard runs.
#[derive(Clone)]
pub struct Options {
    /// Time between polls (`--refresh`).
    pub refresh: Duration,
    /// Shown in the header, e.g. the endpoints or `demo: 3 local nodes`.
    pub title: String,
    /// At most this many channels are listed (`GET /cluster/channels?limit=`).
    pub channel_limit: u64,
    /// At most this many channels' replicas are polled per refresh.
    pub replica_budget: usize,
    /// A whole poll that takes longer counts as "unreachable".
    pub deadline: Duration,
    /// Starts one more local node for `s` (`wkctl demo`); None against a remote cluster,
    /// where `s` asks for the `ID@ADDR` of a node started with `--seed`.
    pub launcher: Option<scale::Launcher>,
    /// The client for `POST /cluster/join`, which blocks until the node caught up: it needs
    /// a longer timeout than polls. None: the polling client.
    pub join_client: Option<Client>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("refresh", &self.refresh)
            .field("title", &self.title)
            .field("channel_limit", &self.channel_limit)
            .field("replica_budget", &self.replica_budget)
            .field("deadline", &self.deadline)
            .field("launcher", &self.launcher.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        let p = poller::PollConfig::default();
        Options {
            refresh: p.refresh,
            title: String::new(),
            channel_limit: p.channel_limit,
            replica_budget: p.replica_budget,
            deadline: p.deadline,
            launcher: None,
            join_client: None,
        }
    }
}

impl Options {
    fn poll_config(&self) -> poller::PollConfig {
        poller::PollConfig {
            refresh: self.refresh,
            channel_limit: self.channel_limit,
            replica_budget: self.replica_budget,
            deadline: self.deadline,
            ..poller::PollConfig::default()
        }
    }

    fn app_config(&self, client: &Client) -> app::Config {
        app::Config {
            refresh: self.refresh,
            title: if self.title.is_empty() {
                client.endpoints().join(",")
            } else {
                self.title.clone()
            },
            endpoint: client.endpoints().join(","),
            local_scale: self.launcher.is_some(),
        }
    }
}

/// How often the screen redraws without news (keeps the data's age current).
const UI_TICK: Duration = Duration::from_millis(250);

/// The terminal in raw mode on the alternate screen; restored when dropped. ratatui's init
/// also installs a panic hook that restores the terminal before the panic message prints.
struct TerminalGuard(DefaultTerminal);

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        let mut t = ratatui::try_init()?;
        t.hide_cursor()?;
        Ok(TerminalGuard(t))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// Runs the dashboard until the operator quits (q, Esc, Ctrl-C). Cancelling the future (e.g.
/// `wkctl demo` on SIGTERM) also restores the terminal and stops the poller.
pub async fn run(client: Client, opts: Options) -> io::Result<()> {
    let mut app = App::new(opts.app_config(&client), Instant::now());
    let (actions_tx, mut actions) = mpsc::channel::<Action>(16);
    let (events_tx, mut events) = mpsc::channel::<event::Event>(64);
    let join_client = opts.join_client.clone().unwrap_or_else(|| client.clone());
    let mut poller = poller::Poller::spawn(client, opts.poll_config(), actions_tx);
    let mut term = TerminalGuard::enter()?;
    let _input = event::Input::spawn(events_tx)?;
    let mut tick = tokio::time::interval(UI_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let focus_budget = opts.replica_budget / 2;
    loop {
        term.0.draw(|f| ui::draw(f, &app))?;
        let first = tokio::select! {
            a = actions.recv() => a,
            e = events.recv() => e.as_ref().and_then(event::action_for),
            _ = tick.tick() => Some(Action::Tick(Instant::now())),
        };
        let mut effects = app.update(Action::Tick(Instant::now()));
        if let Some(a) = first {
            effects.extend(app.update(a));
        }
        // Apply whatever else is queued before drawing again, so bursts draw once.
        while let Ok(a) = actions.try_recv() {
            effects.extend(app.update(a));
        }
        while let Ok(e) = events.try_recv() {
            if let Some(a) = event::action_for(&e) {
                effects.extend(app.update(a));
            }
        }
        if effects.contains(&Effect::Quit) {
            return Ok(());
        }
        for effect in effects {
            match effect {
                Effect::Quit => {}
                Effect::Refresh => poller.refresh_now(),
                Effect::Drill(plan) => poller.drill(plan),
                Effect::ScaleOut(req) => poller.scale_out(req, opts.launcher.clone(), join_client.clone()),
                Effect::Restart(node) => poller.restart(node, opts.launcher.clone()),
            }
        }
        poller.set(poller::Control {
            frozen: app.frozen,
            focus: app.focus_channels(focus_budget),
        });
    }
}

/// The terminal's size (columns, rows), if stdout is a terminal that reports one.
pub fn terminal_size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok().filter(|(w, h)| *w > 0 && *h > 0)
}

/// One poll rendered as plain text at `width` x `height` (`wkctl top --once`). The bool is
/// false when the cluster could not be reached (the text then says why).
pub async fn render_once(client: &Client, opts: &Options, width: u16, height: u16) -> (String, bool) {
    let mut app = App::new(opts.app_config(client), Instant::now());
    let action = poller::poll_once(client, &opts.poll_config(), &[], &mut 0).await;
    let ok = matches!(action, Action::Snapshot(_));
    // One frame: nothing is asked of a loop (there is none).
    let _ = app.update(action);
    let _ = app.update(Action::Tick(Instant::now()));
    (ui::render_text(&app, width, height), ok)
}
