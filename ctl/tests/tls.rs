//! `wkctl` against a node that serves HTTPS: `--endpoint https://... --tls-ca FILE` (or
//! `WK_TLS_CA`) trusts the node's CA; without it the node's certificate is refused. A
//! `--remote` drill reaches every node over HTTPS with the same CA. One real
//! one-node `wknode` (found next to `wkctl`: `cargo test --workspace` builds it) with a
//! certificate from a test CA made with rcgen.

mod common;
// The node tests' test CA (rcgen), shared rather than written twice.
#[path = "../../node/tests/common/tls.rs"]
#[allow(dead_code)]
mod pki;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{NodeGuard, spawn_ready, wknode_cmd};
use wk_api::{NodesResp, Security};

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");

/// Starts a one-node cluster with TLS (and `extra` flags); returns it and its HTTP address
/// from the ready line.
fn start_node(dir: &Path, ca: &Path, cert: &Path, key: &Path, extra: &[&str]) -> (NodeGuard, String) {
    let log = dir.join("node.log");
    let mut cmd = wknode_cmd(&log);
    cmd.args(extra)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--tls-ca")
        .arg(ca);
    let (child, rx) = spawn_ready(&mut cmd);
    let node = NodeGuard { child, log };
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the node printed its ready line");
    assert!(ready.tls, "{ready:?}");
    (node, ready.http_addr)
}

fn wkctl(args: &[&str], tls_ca_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(WKCTL);
    cmd.env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .env_remove("WK_TLS_CA");
    if let Some(ca) = tls_ca_env {
        cmd.env("WK_TLS_CA", ca);
    }
    cmd.args(args).output().expect("run wkctl")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cluster_status_over_https_with_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki::Pki::new(dir.path(), "cluster");
    let (ca, (cert, key)) = (pki.ca.clone(), pki.node_cert(1));
    let (_node, addr) = start_node(dir.path(), &ca, &cert, &key, &[]);
    let endpoint = format!("https://{addr}");
    let ca_arg = ca.display().to_string();

    eprintln!("--- --tls-ca: text status says TLS is on");
    // The one-node cluster elects itself right after its ready line; retry until it has.
    let out = common::wait_until(
        "a healthy cluster status over HTTPS",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let out = wkctl(
                &["--endpoint", &endpoint, "--tls-ca", &ca_arg, "cluster", "status"],
                None,
            );
            if out.status.code() == Some(0) {
                Ok(out)
            } else {
                Err(text(&out))
            }
        },
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().next().unwrap_or_default().ends_with("tls: on"),
        "{}",
        text(&out)
    );

    eprintln!("--- WK_TLS_CA and JSON output");
    let out = wkctl(
        &["--endpoint", &endpoint, "--output", "json", "cluster", "status"],
        Some(&ca),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let nodes: NodesResp = serde_json::from_slice(&out.stdout).expect("NodesResp JSON");
    assert_eq!(
        nodes.security,
        Some(Security {
            tls: true,
            insecure: false
        })
    );

    eprintln!("--- without the CA the node's certificate is refused");
    let out = wkctl(&["--endpoint", &endpoint, "cluster", "status"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        text(&out)
    );

    eprintln!("--- a CA file that is not PEM is a clear error");
    let out = wkctl(
        &[
            "--endpoint",
            &endpoint,
            "--tls-ca",
            &key.display().to_string(),
            "cluster",
            "status",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-ca"),
        "{}",
        text(&out)
    );
}

#[test]
fn remote_drill_over_https_with_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki::Pki::new(dir.path(), "cluster");
    let (ca, (cert, key)) = (pki.ca.clone(), pki.node_cert(1));
    let (_node, addr) = start_node(dir.path(), &ca, &cert, &key, &["--allow-drills"]);
    let endpoint = format!("https://{addr}");
    // A slow disk is the one remote drill a one-node cluster can take (isolating its only
    // node leaves nobody to watch).
    let scenario = dir.path().join("slow.toml");
    std::fs::write(
        &scenario,
        "name = \"tls-slow-disk\"\nnodes = 1\n[workload]\nchannels = 1\nwarmup = \"300ms\"\n\
         settle = \"300ms\"\n[[steps]]\nkind = \"slow-disk\"\nnode = 1\ndelay = \"5ms\"\nfor = \"300ms\"\n",
    )
    .expect("write scenario");
    let artifacts = dir.path().join("drill");
    // Before the fix the drill trusted only the system's roots and dialled the nodes over
    // plain http://, so it failed at its first request.
    let out = wkctl(
        &[
            "--endpoint",
            &endpoint,
            "--tls-ca",
            &ca.display().to_string(),
            "drill",
            "run",
            &scenario.display().to_string(),
            "--remote",
            "--artifacts",
            &artifacts.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PASS"),
        "{}",
        text(&out)
    );
}
