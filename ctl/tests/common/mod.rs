//! Helpers shared by the CLI's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// The `wknode` binary next to `wkctl` (`cargo test --workspace` builds both).
pub fn wknode_bin() -> PathBuf {
    let wkctl = env!("CARGO_BIN_EXE_wkctl");
    let p = Path::new(wkctl).with_file_name(format!("wknode{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} is missing: `cargo test --workspace` builds it (or `cargo build -p wknode`)",
        p.display()
    );
    p
}

/// A base port such that `base..base+n` is free (checked by binding; a race is possible but
/// unlikely, and the failure would name the port).
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if base > 60000 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {n} free ports found");
}
