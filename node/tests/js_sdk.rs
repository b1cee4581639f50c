//! The official WuKongIM JS SDK (`wukongimjssdk` 1.0.4 from npm, unchanged) against a real
//! 3-node cluster: `js_sdk/sdk_test.mjs` says what it checks (users on different nodes in a
//! group and person channels; the group's leader SIGKILLed while they talk, every acked
//! message delivered exactly once, live or through messagesync, in seq order; the user of the
//! dead node reconnecting through `/route` on another node; after a reconnect, the SDK's
//! conversation sync provider pointed at `/conversation/sync` shows every conversation's
//! unread count as the acked messages say, also after a `/conversations/clearUnread`).
//!
//! Prerequisites: Node.js 20+ and npm on PATH; the test runs `npm ci` in `node/tests/js_sdk`
//! when the packages are not there yet. Without them it fails under `CI=true` and prints a
//! skip line otherwise. The SDK is bundled with esbuild into the cluster's temp dir (SPEC §6:
//! its ES modules do not load in Node as published).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, skip_or_fail};
use tokio::process::Command;

/// The whole script: setup, two phases, a failover and the checks.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_js_sdk_talks_across_nodes_and_a_leader_kill() {
    common::init_tracing();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js_sdk");
    let esbuild = dir.join("node_modules/.bin/esbuild");
    let installed = || dir.join("node_modules/wukongimjssdk/package.json").exists() && esbuild.exists();
    if !installed() {
        // The packages pinned by package-lock.json, installed once (`.ci/run` does it first).
        let npm = Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"])
            .output()
            .await;
        if !npm.is_ok_and(|o| o.status.success()) || !installed() {
            skip_or_fail("`npm ci` in node/tests/js_sdk failed: npm and the npm registry are needed");
            return;
        }
    }
    if Command::new("node").arg("--version").output().await.is_err() {
        skip_or_fail("`node` (Node.js 20+) is not on PATH");
        return;
    }

    let cluster = Cluster::start(3).await;
    tracing::info!("--- bundling the SDK with esbuild");
    let bundle = cluster.dir().join("sdk.bundle.mjs");
    let out = Command::new(&esbuild)
        .current_dir(&dir)
        .args([
            "entry.mjs",
            "--bundle",
            "--platform=node",
            "--format=esm",
            "--log-level=warning",
        ])
        .arg(format!("--outfile={}", bundle.display()))
        .output()
        .await
        .expect("run esbuild");
    assert!(
        out.status.success(),
        "esbuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let nodes: Vec<serde_json::Value> = (1..=3)
        .map(|id| {
            let n = cluster.node(id);
            serde_json::json!({"id": id, "http": n.http_addr, "pid": n.pid().expect("running")})
        })
        .collect();
    tracing::info!("--- running sdk_test.mjs");
    let child = Command::new("node")
        .current_dir(&dir)
        .arg("sdk_test.mjs")
        .env("WK_JS_BUNDLE", &bundle)
        .env("WK_JS_CONFIG", serde_json::json!({ "nodes": nodes }).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the JS test finishes in time")
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    tracing::info!("sdk_test.mjs said:\n{stdout}");
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "the JS SDK test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
