//! Whatever a client sends to the HTTP API: arbitrary method, path, headers and body, driven
//! through the node's real router (`wknode::app`) over a real one-node cluster on a temp dir.
//! Every answer must be a response, never a panic, a hang or a 5xx: a single healthy node has
//! no reason to fail a request, so a 5xx means bad input reached somewhere it should not.
//!
//! Input format (so seeds are readable and mutate well): `METHOD PATH\n`, then `name: value`
//! header lines, a blank line, then the body. Lines the router could never receive (hyper
//! rejects an invalid method, URI or header before routing) are skipped.
//!
//! The client token is `fuzz` (seeds carry `token: fuzz`, so both sides of the check are
//! reached) and `/cluster/...` reads accept it; the operator actions need a random admin token,
//! so joins and removals (which can legitimately wedge a cluster) are reached only up to
//! authorisation.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    /// Holds the node's data dir for the life of the process.
    _dir: tempfile::TempDir,
}

static APP: LazyLock<App> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    // Unguessable per process: std's hasher keys are random.
    let admin = {
        use std::hash::BuildHasher;
        let key = || std::collections::hash_map::RandomState::new().hash_one(0u8);
        format!("{:016x}{:016x}", key(), key())
    };
    let cfg = wknode::config::Config::from_args(wknode::config::Args {
        node_id: Some(1),
        data_dir: Some(dir.path().to_path_buf()),
        http_addr: Some("127.0.0.1:0".into()),
        cluster_addr: Some("127.0.0.1:0".into()),
        api_token: Some("fuzz".into()),
        admin_token: Some(admin),
        public_cluster_read: true,
        // Fuzzed sends create channels; keep the running groups few.
        max_active_channels: Some(32),
        ..Default::default()
    })
    .expect("valid config");
    let router = rt.block_on(async {
        let node = wknode::cluster::Node::start(&cfg, "127.0.0.1:0".into(), "127.0.0.1:0".into())
            .await
            .expect("node starts");
        let router = wknode::app(&cfg, &node);
        // Serve only once the node leads its metadata group (a fresh node elects itself).
        for _ in 0..600 {
            let res = router
                .clone()
                .oneshot(Request::get("/health").body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .expect("body");
            let health: serde_json::Value = serde_json::from_slice(&body).expect("health JSON");
            if !health["meta_leader"].is_null() {
                return router;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the node never elected itself");
    });
    App {
        rt,
        router,
        _dir: dir,
    }
});

/// Split the input into a request the router could receive, or None.
fn parse(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).ok()?)
        .uri(path);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        req = req.header(name.trim(), value.trim());
    }
    req.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse(data) else { return };
    let app = &*APP;
    let what = format!("{} {}", req.method(), req.uri());
    app.rt.block_on(async {
        let res = tokio::time::timeout(Duration::from_secs(20), app.router.clone().oneshot(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer in 20 s"))
            .expect("axum routers are infallible");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .expect("response body");
        assert!(
            !status.is_server_error(),
            "{what}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    });
});
