//! Smoke tests of the scale benches at tiny sizes: each runs `wkctl bench ... --output json`
//! on its own local cluster of real `wknode` processes (found next to `wkctl`) and checks that
//! the report decodes and says the work was done. No timing is asserted: figures go to
//! docs/PERFORMANCE.md, never into a pass/fail test.
//!
//! One bench at a time (a process-wide lock): clusters in parallel starve a 2-core machine.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::wknode_bin;
use serde::de::DeserializeOwned;
use wkctl::reports::{ActiveReport, CatchupReport, IdleReport, SendReport};

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `wkctl --output json bench ARGS` and returns its report.
fn bench<R: DeserializeOwned>(args: &[&str]) -> R {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("--- wkctl bench {}", args.join(" "));
    let out = Command::new(WKCTL)
        .args(["--output", "json", "bench"])
        .args(args)
        .env("WK_WKNODE", wknode_bin())
        .env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .output()
        .expect("running wkctl bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "wkctl bench {args:?} failed: {:?}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn catchup_small() {
    let r: CatchupReport = bench(&["catchup", "--users", "200", "--messages", "200"]);
    assert_eq!((r.users, r.messages), (200, 200));
    assert!(r.metadata_s > 0.0 && r.channel_s > 0.0, "{r:?}");
}

#[test]
fn idle_small() {
    let r: IdleReport = bench(&[
        "idle",
        "--channels",
        "50",
        "--active",
        "10",
        "--samples",
        "5",
        "--idle-timeout",
        "2s",
        "--window",
        "1s",
    ]);
    assert_eq!(r.channels, 50);
    assert_eq!((r.nodes.len(), r.nodes_settled.len()), (3, 3), "{r:?}");
    assert!(r.nodes[0].rss_mb > 0.0, "{r:?}");
    assert!(r.first_send.max_ms > 0.0, "{r:?}");
}

#[test]
fn send_routes_to_leaders() {
    let r: SendReport = bench(&[
        "send",
        "--local",
        "--channels",
        "4",
        "--inflight",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0s",
    ]);
    assert!(r.ops > 0 && r.errors == 0, "{r:?}");
}

#[test]
fn failover_active_small() {
    let r: ActiveReport = bench(&["failover", "--active", "12", "--rounds", "1"]);
    assert!(r.ok, "{r:?}");
    let round = &r.rounds[0];
    assert!(round.led > 0 && round.resolved == round.led, "{r:?}");
    assert!(round.all_led_ms.is_some(), "every channel led again: {r:?}");
}
