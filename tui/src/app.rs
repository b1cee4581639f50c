//! All dashboard state and the one place it changes: [`App::update`], which does no I/O so
//! it is tested directly.

use std::time::Instant;

use wk_api::NodesResp;

/// Everything that can change the dashboard's state.
#[derive(Debug, Clone)]
pub enum Action {
    /// A new cluster view from the poller, with when it was taken (to show its age).
    Snapshot {
        nodes: NodesResp,
        at: Instant,
    },
    /// The poller could not get a view.
    PollFailed(String),
    /// The refresh timer fired.
    Tick,
    /// Stop or resume taking new snapshots (the freeze key).
    ToggleFreeze,
    ToggleHelp,
    Quit,
}

#[derive(Debug, Default)]
pub struct App {
    /// The last cluster view, kept while polls fail so the screen does not go blank.
    pub nodes: Option<NodesResp>,
    /// When `nodes` was taken: the UI shows its age.
    pub taken_at: Option<Instant>,
    /// The last poll error, cleared by the next good snapshot.
    pub last_error: Option<String>,
    /// While frozen, snapshots are ignored so the operator can read a moving cluster.
    pub frozen: bool,
    pub show_help: bool,
    /// Set by `Quit`; the run loop exits when it sees it.
    pub should_quit: bool,
}

impl App {
    pub fn update(&mut self, action: Action) {
        match action {
            Action::Snapshot { nodes, at } => {
                if !self.frozen {
                    self.nodes = Some(nodes);
                    self.taken_at = Some(at);
                    self.last_error = None;
                }
            }
            Action::PollFailed(e) => {
                if !self.frozen {
                    self.last_error = Some(e);
                }
            }
            Action::Tick => {}
            Action::ToggleFreeze => self.frozen = !self.frozen,
            Action::ToggleHelp => self.show_help = !self.show_help,
            Action::Quit => self.should_quit = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Key, action_for};

    fn view(leader: u64) -> NodesResp {
        NodesResp {
            meta_leader: Some(leader),
            nodes: vec![],
        }
    }

    #[test]
    fn snapshots_errors_freeze_and_quit() {
        let mut app = App::default();
        app.update(Action::Snapshot {
            nodes: view(1),
            at: Instant::now(),
        });
        assert_eq!(app.nodes.as_ref().and_then(|n| n.meta_leader), Some(1));

        app.update(Action::PollFailed("unreachable".into()));
        assert_eq!(app.last_error.as_deref(), Some("unreachable"));
        assert!(app.nodes.is_some(), "a failed poll keeps the last view");

        app.update(action_for(&Event::Key(Key::Char('f'))).expect("f freezes"));
        app.update(Action::Snapshot {
            nodes: view(2),
            at: Instant::now(),
        });
        assert_eq!(app.nodes.as_ref().and_then(|n| n.meta_leader), Some(1), "frozen");

        app.update(Action::ToggleFreeze);
        app.update(Action::Snapshot {
            nodes: view(2),
            at: Instant::now(),
        });
        assert_eq!(app.nodes.as_ref().and_then(|n| n.meta_leader), Some(2));
        assert_eq!(app.last_error, None);

        assert_eq!(action_for(&Event::Key(Key::Down)).map(|_| ()), None);
        app.update(action_for(&Event::Key(Key::Char('q'))).expect("q quits"));
        assert!(app.should_quit);
    }
}
