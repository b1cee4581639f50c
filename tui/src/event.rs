//! Input and timer events, before they mean anything. A background thread turns crossterm
//! input into [`Event`]s; [`action_for`] maps events to [`Action`]s. What a key *does*
//! depends on the app's mode (typing `q` into the filter is not quitting), so that decision
//! lives in [`App::update`](crate::app::App::update), not here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::{self as ct, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::app::Action;

/// A key the dashboard reacts to, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    /// Ctrl-C: always quits (raw mode turns it into a key instead of SIGINT).
    CtrlC,
    Esc,
    Enter,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
    BackTab,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key press.
    Key(Key),
    /// The terminal changed size: redraw.
    Resize,
    /// The clock moved (the UI ticks a few times a second so the data's age stays current).
    Tick(Instant),
}

/// What an event asks for; `None` when the event means nothing.
pub fn action_for(event: &Event) -> Option<Action> {
    match event {
        Event::Key(k) => Some(Action::Key(*k)),
        Event::Resize => Some(Action::Redraw),
        Event::Tick(now) => Some(Action::Tick(*now)),
    }
}

/// Maps a crossterm key event onto [`Key`]; releases and unknown keys are `None`.
pub fn key_of(ev: &ct::KeyEvent) -> Option<Key> {
    if ev.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
    Some(match ev.code {
        KeyCode::Char('c') if ctrl => Key::CtrlC,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Esc => Key::Esc,
        KeyCode::Enter => Key::Enter,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        _ => return None,
    })
}

/// The input thread; dropping it stops the thread (within one poll interval) and joins it,
/// so no reader is left consuming the terminal after the dashboard exits.
pub struct Input {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the input thread blocks in one `poll` before it checks whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

impl Input {
    /// Starts reading terminal input; events go to `tx` until it closes or the handle drops.
    pub fn spawn(tx: mpsc::Sender<Event>) -> std::io::Result<Input> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wk-tui-input".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match ct::poll(INPUT_POLL) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(_) => break,
                    }
                    let event = match ct::read() {
                        Ok(ct::Event::Key(k)) => key_of(&k).map(Event::Key),
                        Ok(ct::Event::Resize(..)) => Some(Event::Resize),
                        Ok(_) => None,
                        Err(_) => break,
                    };
                    if let Some(e) = event
                        && tx.blocking_send(e).is_err()
                    {
                        break;
                    }
                }
            })?;
        Ok(Input {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossterm_keys_map_to_keys() {
        let press = |code, mods| ct::KeyEvent::new(code, mods);
        let cases = [
            (
                press(KeyCode::Char('q'), KeyModifiers::NONE),
                Some(Key::Char('q')),
            ),
            (press(KeyCode::Char('c'), KeyModifiers::CONTROL), Some(Key::CtrlC)),
            (press(KeyCode::Char('x'), KeyModifiers::CONTROL), None),
            (
                press(KeyCode::Char('G'), KeyModifiers::SHIFT),
                Some(Key::Char('G')),
            ),
            (press(KeyCode::Tab, KeyModifiers::NONE), Some(Key::Tab)),
            (press(KeyCode::BackTab, KeyModifiers::SHIFT), Some(Key::BackTab)),
            (press(KeyCode::F(1), KeyModifiers::NONE), None),
        ];
        for (ev, want) in cases {
            assert_eq!(key_of(&ev), want, "{ev:?}");
        }
        let mut release = press(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(key_of(&release), None);
    }

    #[test]
    fn events_map_to_actions() {
        let now = Instant::now();
        assert!(matches!(action_for(&Event::Tick(now)), Some(Action::Tick(t)) if t == now));
        assert!(matches!(action_for(&Event::Resize), Some(Action::Redraw)));
        assert!(matches!(
            action_for(&Event::Key(Key::Esc)),
            Some(Action::Key(Key::Esc))
        ));
    }
}
