//! `wk-tui`: the WuKong HA dashboard. **This is a stub** for the dashboard issue: it fixes the
//! module layout and the state/update split, not the terminal UI itself.
//!
//! Layout (the dashboard keeps it):
//! - `event`: turns input and ticks into [`event::Event`]s; no state.
//! - `poller`: the only module that does I/O; fetches snapshots through `wk_api::Client`.
//! - `app`: all state; [`app::App::update`] applies an [`app::Action`] and does no I/O.
//! - `ui`: pure render functions from `&App` to what is drawn.
//!
//! It depends on the shared API crate only, never on node internals. ratatui and crossterm
//! (workspace dependencies) come in with the real terminal front end.

pub mod app;
pub mod event;
pub mod poller;
pub mod ui;

pub use app::{Action, App};
