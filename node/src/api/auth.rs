//! Who may call what. Three classes of endpoint:
//! - the WuKongIM client API: needs `--api-token` (or the admin token) when one is set;
//! - read-only `/cluster/...` (GET): needs `--admin-token` when one is set, or the client
//!   token with `--public-cluster-read`;
//! - operator actions (`/cluster/...` POST: joins, removals, transfers, drains, drills) and
//!   `GET /cluster/snapshot` (it holds every user's token): the admin token only.
//!
//! `/health` is open (load balancers and readiness probes). Tokens travel in header `token`,
//! as WuKongIM's manager token does; failures are answered 401, logged without the token, and
//! counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Secret;
use crate::error::NodeError;

#[derive(Debug, Default)]
pub struct Auth {
    pub api: Option<Secret>,
    pub admin: Option<Secret>,
    pub public_cluster_read: bool,
    /// Requests refused for a missing or wrong token.
    pub failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    Client,
    ClusterRead,
    ClusterWrite,
}

fn classify(method: &Method, path: &str) -> Class {
    if path == "/health" {
        Class::Open
    } else if path == "/cluster" || path.starts_with("/cluster/") {
        if method == Method::GET && path != "/cluster/snapshot" {
            Class::ClusterRead
        } else {
            Class::ClusterWrite
        }
    } else {
        Class::Client
    }
}

impl Auth {
    fn allows(&self, class: Class, token: Option<&str>) -> bool {
        let is = |s: &Option<Secret>| matches!((s, token), (Some(s), Some(t)) if s.matches(t));
        match class {
            Class::Open => true,
            Class::Client => self.api.is_none() || is(&self.api) || is(&self.admin),
            Class::ClusterRead => {
                self.admin.is_none() || is(&self.admin) || (self.public_cluster_read && is(&self.api))
            }
            Class::ClusterWrite => self.admin.is_none() || is(&self.admin),
        }
    }
}

pub async fn authorize(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let class = classify(req.method(), req.uri().path());
    let token = req.headers().get("token").and_then(|v| v.to_str().ok());
    if auth.allows(class, token) {
        return next.run(req).await;
    }
    auth.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(method = %req.method(), path = req.uri().path(), token_present = token.is_some(), "refused: missing or wrong token");
    let what = if matches!(class, Class::Client) {
        "client"
    } else {
        "admin"
    };
    super::ApiErr(NodeError::Unauthorized(format!(
        "missing or wrong {what} token (header `token`)"
    )))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(api: Option<&str>, admin: Option<&str>, public: bool) -> Auth {
        Auth {
            api: api.and_then(|s| Secret::new(s.into())),
            admin: admin.and_then(|s| Secret::new(s.into())),
            public_cluster_read: public,
            failures: AtomicU64::new(0),
        }
    }

    /// (api token, admin token, public read, method, path, sent token, allowed)
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        bool,
        Method,
        &'static str,
        Option<&'static str>,
        bool,
    );

    #[test]
    fn access_table() {
        let cases: &[Case] = &[
            (None, None, false, Method::POST, "/message/send", None, true),
            (Some("c"), None, false, Method::POST, "/message/send", None, false),
            (
                Some("c"),
                None,
                false,
                Method::POST,
                "/message/send",
                Some("c"),
                true,
            ),
            (
                Some("c"),
                Some("a"),
                false,
                Method::POST,
                "/message/send",
                Some("a"),
                true,
            ),
            (
                Some("c"),
                Some("a"),
                false,
                Method::POST,
                "/message/send",
                Some("x"),
                false,
            ),
            (Some("c"), Some("a"), false, Method::GET, "/health", None, true),
            (
                Some("c"),
                Some("a"),
                false,
                Method::GET,
                "/cluster/nodes",
                Some("c"),
                false,
            ),
            (
                Some("c"),
                Some("a"),
                true,
                Method::GET,
                "/cluster/nodes",
                Some("c"),
                true,
            ),
            (
                Some("c"),
                Some("a"),
                true,
                Method::POST,
                "/cluster/join",
                Some("c"),
                false,
            ),
            (
                Some("c"),
                Some("a"),
                true,
                Method::POST,
                "/cluster/join",
                Some("a"),
                true,
            ),
            (
                None,
                Some("a"),
                false,
                Method::POST,
                "/cluster/drill",
                None,
                false,
            ),
            // The snapshot holds every user's token: admin only, even with public reads.
            (
                Some("c"),
                Some("a"),
                true,
                Method::GET,
                "/cluster/snapshot",
                Some("c"),
                false,
            ),
            (
                Some("c"),
                Some("a"),
                true,
                Method::GET,
                "/cluster/snapshot",
                Some("a"),
                true,
            ),
            (
                None,
                Some("a"),
                false,
                Method::POST,
                "/channel/messagesync",
                None,
                true,
            ),
            (
                Some("c"),
                Some("a"),
                false,
                Method::GET,
                "/clusterfoo",
                Some("c"),
                true,
            ),
        ];
        for (api, admin, public, method, path, token, want) in cases {
            let a = auth(*api, *admin, *public);
            assert_eq!(
                a.allows(classify(method, path), *token),
                *want,
                "{api:?} {admin:?} {public} {method} {path} {token:?}"
            );
        }
    }

    #[test]
    fn secrets_compare_exactly_and_never_print() {
        let s = Secret::new("hunter2".into()).expect("non-empty");
        assert!(s.matches("hunter2") && !s.matches("hunter") && !s.matches("hunter22"));
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert!(Secret::new(String::new()).is_none());
    }
}
