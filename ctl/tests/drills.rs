//! The scripted failover suite: one test per scenario in `testdata/drills/`, each
//! running `wkctl drill run <scenario> --output json` as an operator would, on its own local
//! cluster of real `wknode` processes (found next to `wkctl`: `cargo test --workspace` builds
//! it), and asserting the safety verdict: nothing acknowledged lost, duplicated, reordered,
//! and the replicas consistent.
//!
//! The tests hold one process-wide lock: clusters running in parallel starve a 2-core machine
//! and turn timing into noise. Each run's artifacts (history, report, node logs) stay in
//! `target/tmp/drills/<scenario>` for inspection.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use wkctl::reports::DrillReport;

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");

/// One drill at a time (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/drills")
        .join(format!("{name}.toml"))
}

fn drill(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let wknode = common::wknode_bin();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drills").join(name);
    let _ = std::fs::remove_dir_all(&artifacts);
    eprintln!("--- drill {name}");
    let started = Instant::now();
    let out = Command::new(WKCTL)
        .args(["--output", "json", "drill", "run"])
        .arg(scenario(name))
        .arg("--artifacts")
        .arg(&artifacts)
        .env("WK_WKNODE", &wknode)
        .env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .output()
        .expect("running wkctl drill run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    let report: DrillReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drill {name}: no JSON report ({e}); exit {:?}; stdout:\n{}\nartifacts: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            artifacts.display()
        )
    });
    let s = &report.safety;
    eprintln!(
        "drill {name} in {:?}: {} checked, lost {}, duplicated {}, reordered {}, inconsistent {}; faults {:?}; {}",
        started.elapsed(),
        s.acked,
        s.lost,
        s.duplicated,
        s.reordered,
        s.inconsistent,
        report.faults,
        report.verdict
    );
    for (k, n) in [
        ("lost", s.lost),
        ("misplaced", s.misplaced),
        ("duplicated", s.duplicated),
        ("reordered", s.reordered),
        ("inconsistent", s.inconsistent),
        ("seq_gaps", s.seq_gaps),
    ] {
        assert_eq!(n, 0, "drill {name}: {k} = {n}; report in {}", artifacts.display());
    }
    assert!(s.acked > 0, "drill {name}: nothing acknowledged");
    assert_eq!(
        report.verdict,
        "PASS",
        "drill {name}: {:?}; artifacts in {}",
        report.reasons,
        artifacts.display()
    );
    assert_eq!(out.status.code(), Some(0), "drill {name}: PASS exits 0");
}

#[test]
fn leader_kill_x3() {
    drill("leader-kill-x3");
}

#[test]
fn follower_kill() {
    drill("follower-kill");
}

#[test]
fn leader_pause() {
    drill("leader-pause");
}

#[test]
fn minority_isolate() {
    drill("minority-isolate");
}

#[test]
fn leader_isolate() {
    drill("leader-isolate");
}

#[test]
fn disk_loss() {
    drill("disk-loss");
}

#[test]
fn join_under_load() {
    drill("join-under-load");
}

#[test]
fn remove_under_load() {
    drill("remove-under-load");
}

#[test]
fn full_restart() {
    drill("full-restart");
}

#[test]
fn rolling_restart() {
    drill("rolling-restart");
}
