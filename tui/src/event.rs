//! Input and timer events, before they mean anything. The real front end will map crossterm
//! key events onto [`Key`]; the mapping to actions is pure and lives here.

use crate::app::Action;

/// A key the dashboard reacts to, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Esc,
    Up,
    Down,
    Tab,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key press.
    Key(Key),
    /// The refresh timer fired.
    Tick,
}

/// What an event asks for; `None` when the event means nothing.
pub fn action_for(event: &Event) -> Option<Action> {
    match event {
        Event::Tick => Some(Action::Tick),
        Event::Key(Key::Char('q')) | Event::Key(Key::Esc) => Some(Action::Quit),
        Event::Key(Key::Char('f')) => Some(Action::ToggleFreeze),
        Event::Key(Key::Char('?')) => Some(Action::ToggleHelp),
        Event::Key(_) => None,
    }
}
