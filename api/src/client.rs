//! A typed async client over one or more node endpoints.
//!
//! Any node serves any request (it forwards to the right leader itself), so failing over is
//! simple: on a transport error the client tries the next endpoint. An API error (4xx/5xx
//! with a body) is an answer, not a transport failure, and is returned as is, except
//! `removed`: a node removed from the cluster serves nothing, so the next endpoint is tried
//! (and `removed` is the answer only when no endpoint did better).
//!
//! Endpoints may be `https://`: the server is verified against the system's roots, or only
//! against a private CA given to [`Client::new_with_ca`] (the CA of the nodes' `--tls-ca`).
//! TLS is rustls with the ring provider, installed as the process default the first time a
//! client is built (reqwest is built without a provider of its own; see [`install_crypto_provider`]).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorCode;
use crate::types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error body.
    #[error("{} ({}): {}", .0.status, .0.code, .0.msg)]
    Api(ApiError),
    /// No endpoint could be reached or none answered in time.
    #[error("no endpoint answered: {0}")]
    Unreachable(String),
    /// The answer was not the expected JSON.
    #[error("bad answer from {endpoint}: {reason}")]
    Decode { endpoint: String, reason: String },
    #[error("bad endpoint {0:?}")]
    BadEndpoint(String),
    /// The CA certificate could not be used (not PEM, no certificate in it).
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The stable error code for API errors; `unreachable` or `decode` otherwise.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Api(e) => &e.code,
            ClientError::Unreachable(_) => "unreachable",
            ClientError::Decode { .. } => "decode",
            ClientError::BadEndpoint(_) => "bad_endpoint",
            ClientError::Tls(_) => "tls",
        }
    }

    /// The node's [`ErrorCode`] when the node answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => e.error_code(),
            _ => None,
        }
    }
}

/// An error with its causes, e.g. "error sending request: ...: Connection refused".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Makes rustls' ring provider the process default, once; every reqwest client needs one (the
/// workspace builds reqwest with `rustls-no-provider`, and building a client without a default
/// provider panics). [`Client::new`] calls it; code that builds a `reqwest::Client` of its own
/// must call it first.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another default was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What `https://` endpoints are verified against.
enum Roots<'a> {
    /// No https endpoint: load nothing (the system's roots cost tens of ms per client in a
    /// debug build, and clients are built often: per request in tests, per poll in the
    /// dashboard).
    None,
    /// The system's roots (rustls-platform-verifier).
    System,
    /// These CA certificates only.
    Ca(&'a [reqwest::Certificate]),
}

/// How long an idle connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_millis(900);

/// The HTTP client under [`Client`]: `timeout` per request, servers verified against `roots`.
fn http_client(timeout: Duration, roots: Roots<'_>) -> Result<reqwest::Client, ClientError> {
    install_crypto_provider();
    let b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(256)
        // Below the nodes' `--header-timeout` (10 s by default, 2 s in the flood test), which
        // also closes idle keep-alive connections: a request then never goes out on a
        // connection the node is closing, which fails it with "connection closed before
        // message completed".
        .pool_idle_timeout(POOL_IDLE);
    let b = match roots {
        Roots::None => b.tls_certs_only(std::iter::empty()),
        Roots::System => b,
        Roots::Ca(ca) => b.tls_certs_only(ca.iter().cloned()),
    };
    b.build().map_err(|e| ClientError::Unreachable(chain(&e)))
}

/// Base URLs from `endpoints` (each may be a comma-separated list); a bare `host:port` gets
/// `http://`.
fn parse_endpoints(endpoints: &[String]) -> Result<Vec<reqwest::Url>, ClientError> {
    let endpoints = endpoints
        .iter()
        .flat_map(|e| e.split(','))
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            let with_scheme = if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            };
            reqwest::Url::parse(&with_scheme).map_err(|_| ClientError::BadEndpoint(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::BadEndpoint(String::new()));
    }
    Ok(endpoints)
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URLs like `http://127.0.0.1:5001`, tried in order.
    endpoints: Vec<reqwest::Url>,
    /// Sent as header `token` when set (WuKongIM's manager-token header).
    token: Option<String>,
}

impl Client {
    /// `endpoints` are base URLs; a bare `host:port` gets `http://`. `https://` endpoints are
    /// verified against the system's roots.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Client, ClientError> {
        Client::new_with_ca(endpoints, timeout, None)
    }

    /// Like [`Client::new`]; with `ca_pem`, `https://` endpoints are verified against the CA
    /// certificate(s) in it only (not the system's roots): the CA that signs the nodes'
    /// certificates (their `--tls-ca`).
    pub fn new_with_ca(
        endpoints: &[String],
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let endpoints = parse_endpoints(endpoints)?;
        let ca = match ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| ClientError::Tls(format!("bad CA certificate: {}", chain(&e))))?;
                if certs.is_empty() {
                    return Err(ClientError::Tls(
                        "no PEM certificate (-----BEGIN CERTIFICATE-----) in the CA file".into(),
                    ));
                }
                Some(certs)
            }
            None => None,
        };
        let roots = match &ca {
            Some(certs) => Roots::Ca(certs),
            None if endpoints.iter().any(|u| u.scheme() == "https") => Roots::System,
            None => Roots::None,
        };
        Ok(Client {
            http: http_client(timeout, roots)?,
            endpoints,
            token: None,
        })
    }

    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The endpoints in the order they are tried.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect()
    }

    /// The base URL of a node whose `http_addr` is as `/cluster/nodes` lists it (`HOST:PORT`),
    /// with the scheme of this client's first endpoint: `https://` when the cluster serves TLS.
    pub fn node_url(&self, http_addr: &str) -> String {
        if http_addr.contains("://") {
            return http_addr.to_string();
        }
        let scheme = self.endpoints.first().map_or("http", |u| u.scheme());
        format!("{scheme}://{http_addr}")
    }

    /// A client for one endpoint only (e.g. to ask one node about itself), with this client's
    /// token and TLS settings.
    pub fn only(&self, endpoint: &str) -> Result<Client, ClientError> {
        Ok(Client {
            http: self.http.clone(),
            endpoints: parse_endpoints(&[endpoint.to_string()])?,
            token: self.token.clone(),
        })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut last = String::from("no endpoint");
        let mut removed = None;
        for base in &self.endpoints {
            let mut url = base.clone();
            {
                let mut path = url
                    .path_segments_mut()
                    .map_err(|_| ClientError::BadEndpoint(base.to_string()))?;
                path.pop_if_empty();
                for s in segments {
                    path.push(s);
                }
            }
            let mut req = self.http.request(method.clone(), url.clone());
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(t) = &self.token {
                req = req.header("token", t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{base}: {}", chain(&e));
                    continue;
                }
            };
            let status = resp.status();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("{base}: {e}");
                    continue;
                }
            };
            if !status.is_success() {
                let e = api_error(status, &bytes);
                // A node removed from the cluster serves nothing: any other node may.
                if e.error_code() == Some(ErrorCode::Removed) {
                    removed = Some(e);
                    continue;
                }
                return Err(ClientError::Api(e));
            }
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                endpoint: base.to_string(),
                reason: e.to_string(),
            });
        }
        Err(match removed {
            Some(e) => ClientError::Api(e),
            None => ClientError::Unreachable(last),
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, &[], Some(body)).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        self.call::<(), T>(reqwest::Method::GET, path, query, None).await
    }

    /// `GET /cluster/snapshot` of the FIRST endpoint only (a snapshot is of one node's data, so
    /// there is no failover), streamed into `out`; the request may take up to `timeout`.
    /// Returns the bytes written. The caller checks the file (`snapshot::verify`).
    pub async fn snapshot_to(
        &self,
        out: &mut impl std::io::Write,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let base = self
            .endpoints
            .first()
            .ok_or_else(|| ClientError::BadEndpoint(String::new()))?;
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| ClientError::BadEndpoint(base.to_string()))?
            .pop_if_empty()
            .extend(["cluster", "snapshot"]);
        let mut req = self.http.get(url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.header("token", t);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable(format!("{base}: {}", chain(&e)));
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(unreachable)?;
            return Err(ClientError::Api(api_error(status, &bytes)));
        }
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Unreachable(format!("writing the snapshot: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(&["health"], &[]).await
    }

    pub async fn user_token(&self, req: &UserTokenReq) -> Result<Ok200, ClientError> {
        self.post(&["user", "token"], req).await
    }

    pub async fn channel_create(&self, req: &ChannelReq) -> Result<Ok200, ClientError> {
        self.post(&["channel"], req).await
    }

    pub async fn subscriber_add(&self, req: &SubscribersReq) -> Result<Ok200, ClientError> {
        self.post(&["channel", "subscriber_add"], req).await
    }

    pub async fn subscriber_remove(&self, req: &SubscribersReq) -> Result<Ok200, ClientError> {
        self.post(&["channel", "subscriber_remove"], req).await
    }

    /// `/channel/{endpoint}` for a sender list: `endpoint` is one of `blacklist_add`,
    /// `blacklist_remove`, `blacklist_set`, `whitelist_add`, `whitelist_remove`, `whitelist_set`.
    pub async fn sender_list(&self, endpoint: &str, req: &SenderListReq) -> Result<Ok200, ClientError> {
        self.post(&["channel", endpoint], req).await
    }

    pub async fn online_status(&self, uids: &[String]) -> Result<Vec<OnlineStatus>, ClientError> {
        self.post(&["user", "onlinestatus"], &uids).await
    }

    pub async fn channel_info(&self, req: &ChannelRef) -> Result<ChannelInfo, ClientError> {
        self.post(&["channel", "info"], req).await
    }

    pub async fn send(&self, req: &SendReq) -> Result<SendResp, ClientError> {
        self.post(&["message", "send"], req).await
    }

    pub async fn send_batch(&self, req: &SendBatchReq) -> Result<SendBatchResp, ClientError> {
        self.post(&["message", "sendbatch"], req).await
    }

    pub async fn sync(&self, req: &SyncReq) -> Result<SyncResp, ClientError> {
        self.post(&["channel", "messagesync"], req).await
    }

    pub async fn conversation_sync(
        &self,
        req: &ConversationSyncReq,
    ) -> Result<Vec<Conversation>, ClientError> {
        self.post(&["conversation", "sync"], req).await
    }

    /// `POST /conversations/{verb}`: `setUnread`, `clearUnread` or `delete`.
    pub async fn conversation_edit(&self, verb: &str, req: &ConversationReq) -> Result<Ok200, ClientError> {
        self.post(&["conversations", verb], req).await
    }

    pub async fn max_seq(&self, req: &ChannelRef) -> Result<MaxSeqResp, ClientError> {
        self.post(&["channel", "max_message_seq"], req).await
    }

    /// `GET /route?uid=`: the answering node's client gateway addresses.
    pub async fn route(&self, uid: &str) -> Result<RouteResp, ClientError> {
        self.get(&["route"], &[("uid", uid.to_string())]).await
    }

    pub async fn nodes(&self) -> Result<NodesResp, ClientError> {
        self.get(&["cluster", "nodes"], &[]).await
    }

    pub async fn channel_config(
        &self,
        channel_id: &str,
        channel_type: u8,
    ) -> Result<ChannelConfig, ClientError> {
        let t = channel_type.to_string();
        self.get(&["cluster", "channels", channel_id, &t, "config"], &[])
            .await
    }

    pub async fn channel_replicas(
        &self,
        channel_id: &str,
        channel_type: u8,
    ) -> Result<ChannelReplicas, ClientError> {
        let t = channel_type.to_string();
        self.get(&["cluster", "channels", channel_id, &t, "replicas"], &[])
            .await
    }

    /// Every replica re-reads and checks its copy of the channel (slow on a big channel).
    pub async fn channel_verify(
        &self,
        channel_id: &str,
        channel_type: u8,
    ) -> Result<ChannelVerify, ClientError> {
        let t = channel_type.to_string();
        self.get(&["cluster", "channels", channel_id, &t, "verify"], &[])
            .await
    }

    pub async fn join(&self, req: &JoinReq) -> Result<JoinResp, ClientError> {
        self.post(&["cluster", "join"], req).await
    }

    pub async fn backlog(&self, limit: u64) -> Result<Backlog, ClientError> {
        self.get(&["cluster", "backlog"], &[("limit", limit.to_string())])
            .await
    }

    pub async fn drain(&self, req: &DrainReq) -> Result<Ok200, ClientError> {
        self.post(&["cluster", "backlog", "drain"], req).await
    }

    pub async fn transfer_leader(
        &self,
        channel_id: &str,
        channel_type: u8,
        to: u64,
    ) -> Result<ChannelConfig, ClientError> {
        let t = channel_type.to_string();
        self.post(
            &["cluster", "channels", channel_id, &t, "transfer-leader"],
            &TransferLeaderReq { to },
        )
        .await
    }

    pub async fn evacuate(&self, node_id: u64) -> Result<EvacuateResp, ClientError> {
        self.post(&["cluster", "nodes", &node_id.to_string(), "evacuate"], &())
            .await
    }

    pub async fn remove_node(&self, node_id: u64, dry_run: bool) -> Result<RemoveNodeResp, ClientError> {
        self.post(
            &["cluster", "nodes", &node_id.to_string(), "remove"],
            &RemoveNodeReq { dry_run },
        )
        .await
    }

    /// Sent to the node that should suffer the fault (use [`Client::only`]).
    pub async fn drill(&self, req: &DrillReq) -> Result<Ok200, ClientError> {
        self.post(&["cluster", "drill"], req).await
    }

    /// The first `limit` channels (one page; a node serves at most 10,000 per page).
    pub async fn channels(&self, limit: u64) -> Result<ChannelList, ClientError> {
        self.channels_page(None, limit).await
    }

    /// One page of `GET /cluster/channels`: up to `limit` channels after the cursor `after`
    /// (the `next` of the previous page; `None`: from the start).
    pub async fn channels_page(&self, after: Option<&str>, limit: u64) -> Result<ChannelList, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        self.get(&["cluster", "channels"], &query).await
    }

    /// Up to `limit` channels, following the pages of `page` channels each; `total` is the
    /// last page's count and `next` the cursor after the last channel returned, if any.
    pub async fn channels_all(&self, limit: u64, page: u64) -> Result<ChannelList, ClientError> {
        let page = page.max(1);
        let mut out = ChannelList::default();
        let mut after: Option<String> = None;
        loop {
            let want = page.min(limit.saturating_sub(out.channels.len() as u64));
            if want == 0 {
                break;
            }
            let p = self.channels_page(after.as_deref(), want).await?;
            out.total = p.total;
            out.channels.extend(p.channels);
            out.next = p.next.clone();
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out)
    }
}

/// The error a non-2xx answer carries: the node's JSON error body, or (from anything else on
/// the way, e.g. a proxy) the status and the body as text.
fn api_error(status: reqwest::StatusCode, bytes: &[u8]) -> ApiError {
    serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| ApiError {
        status: status.as_u16(),
        msg: String::from_utf8_lossy(bytes).into_owned(),
        code: "http".into(),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_follow_the_endpoint_scheme() {
        let t = Duration::from_secs(1);
        let plain = Client::new(&["127.0.0.1:5001".into()], t).expect("client");
        assert_eq!(plain.node_url("127.0.0.1:5002"), "http://127.0.0.1:5002");
        let tls = Client::new(&["https://a:5001,https://b:5001".into()], t).expect("client");
        assert_eq!(tls.node_url("c:5001"), "https://c:5001");
        assert_eq!(tls.node_url("http://c:5001"), "http://c:5001");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let eps = ["https://127.0.0.1:5001".to_string()];
        let err = Client::new_with_ca(&eps, Duration::from_secs(1), Some(b"not a certificate\n"))
            .err()
            .expect("refused");
        assert_eq!(err.code(), "tls");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
