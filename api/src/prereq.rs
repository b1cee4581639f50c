//! What a test does when something it needs is missing (root, tmux, `ip`, node and npm): the
//! node's and `wkctl`'s integration tests share this one rule.

/// A test whose prerequisite (`why` says which) is missing: under `CI=true` it fails, since a
/// test that passes without running proves nothing; elsewhere it prints a skip line and the
/// caller returns.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing under CI=true: {why}");
    }
    // Past the test harness's capture, so the skip shows in `cargo test`'s output.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}
