//! Pure render functions: `&App` in, what to draw out. The stub renders plain lines; the
//! dashboard will render ratatui widgets here and snapshot-test them with `TestBackend`.

use crate::app::App;

/// The header line: leader (or none), the data's age, and the frozen marker.
pub fn header(app: &App, now: std::time::Instant) -> String {
    let leader = match app.nodes.as_ref().and_then(|n| n.meta_leader) {
        Some(id) => format!("meta leader *{id}"),
        None if app.nodes.is_some() => "meta leader: NONE".to_string(),
        None => "waiting for the first snapshot".to_string(),
    };
    let age = app
        .taken_at
        .map(|t| format!("  data {}s old", now.saturating_duration_since(t).as_secs()))
        .unwrap_or_default();
    let frozen = if app.frozen { "  [FROZEN]" } else { "" };
    format!("{leader}{age}{frozen}")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::app::Action;

    #[test]
    fn header_shows_leader_age_and_freeze() {
        let mut app = App::default();
        let t0 = Instant::now();
        assert_eq!(header(&app, t0), "waiting for the first snapshot");
        app.update(Action::Snapshot {
            nodes: wk_api::NodesResp {
                meta_leader: Some(3),
                nodes: vec![],
            },
            at: t0,
        });
        app.update(Action::ToggleFreeze);
        assert_eq!(
            header(&app, t0 + Duration::from_secs(4)),
            "meta leader *3  data 4s old  [FROZEN]"
        );
    }
}
