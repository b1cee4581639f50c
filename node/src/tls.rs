//! Optional TLS (rustls, ring provider) for the HTTP listener and the cluster transport, from
//! `--tls-cert`, `--tls-key` and `--tls-ca` (all three or none; `config` enforces that).
//!
//! - **HTTP**: the node presents its certificate chain; clients are not asked for one (the
//!   `token` header authenticates them, TLS only protects it on the wire).
//! - **Cluster transport**: mutual TLS. The accepting node requires a client certificate that
//!   chains to `--tls-ca`; the connecting node verifies the other's certificate against
//!   `--tls-ca` and the host of the cluster address it dialled (an IP address must be an IP
//!   SAN, a name a DNS SAN). The node's one certificate plays both roles, so if it lists
//!   extended key usages it needs `serverAuth` and `clientAuth`. The certificate does not bind a
//!   node id: any holder of a CA-signed certificate who also knows `--cluster-secret` is a peer.
//!   The cluster-secret handshake still runs, inside TLS.
//!
//! Invariant: everything is read and checked once, at start ([`Tls::load`]): an unreadable or
//! oversized file, bad PEM, a key that does not match the certificate, or a CA file without a
//! certificate is an error there, never a panic and never later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Certificates and keys are small; a bigger file is a mistake (a wrong path), not a chain.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Where the PEM files are, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (leaf first), for HTTP and for the cluster transport.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs every node's certificate: peers must chain to it.
    pub ca: PathBuf,
}

/// The loaded TLS settings; cheap to clone (the rustls configs are shared).
#[derive(Clone)]
pub struct Tls {
    pub files: TlsFiles,
    /// HTTP: server authentication only.
    http: Arc<ServerConfig>,
    /// Cluster transport, accepting side: a client certificate from `--tls-ca` is required.
    peer_server: Arc<ServerConfig>,
    /// Cluster transport, connecting side: verifies the peer against `--tls-ca`, presents ours.
    peer_client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configs hold the private key: show where it came from, nothing else.
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    if meta.len() > MAX_PEM_FILE {
        bail!(
            "{flag} {}: {} bytes is too large for a PEM file",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

fn certs(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        );
    }
    Ok(certs)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_pem("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "--tls-key {}: no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it",
            path.display()
        ),
        e => anyhow::anyhow!("--tls-key {}: bad PEM: {e}", path.display()),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Read and check the three files and build the rustls configurations.
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let chain = certs("--tls-cert", &files.cert)?;
        let key = key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in certs("--tls-ca", &files.ca)? {
            roots
                .add(ca)
                .with_context(|| format!("--tls-ca {}: not a usable CA certificate", files.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let versions = |e: rustls::Error| anyhow::anyhow!("TLS protocol versions: {e}");
        let with_key = |e: rustls::Error| {
            anyhow::anyhow!(
                "--tls-cert {} with --tls-key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        };

        let mut http = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(with_key)?;
        // The node speaks HTTP/1.1 only.
        http.alpn_protocols = vec![b"http/1.1".to_vec()];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .with_context(|| format!("--tls-ca {}", files.ca.display()))?;
        let peer_server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(with_key)?;
        let peer_client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(with_key)?;
        Ok(Tls {
            files,
            http: Arc::new(http),
            peer_server: Arc::new(peer_server),
            peer_client: Arc::new(peer_client),
        })
    }

    /// Wraps accepted HTTP connections.
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.http.clone())
    }

    /// The cluster transport's TLS: both sides of mutual TLS.
    pub fn peer(&self) -> PeerTls {
        PeerTls {
            acceptor: TlsAcceptor::from(self.peer_server.clone()),
            connector: TlsConnector::from(self.peer_client.clone()),
        }
    }
}

/// Mutual TLS for the cluster transport (`raft::network`).
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

/// The name a peer's certificate must carry: the host of its cluster address `HOST:PORT`
/// (`[v6]:PORT` too), as an IP address or a DNS name.
pub fn server_name(addr: &str) -> std::io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: {host:?} is not a host name for TLS: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a node certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
    fn write_certs(dir: &Path) -> TlsFiles {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let node_key = rcgen::KeyPair::generate().expect("node key");
        let node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("node params")
            .signed_by(&node_key, &issuer)
            .expect("node cert");
        let files = TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.cert, node.pem()).expect("write cert");
        std::fs::write(&files.key, node_key.serialize_pem()).expect("write key");
        std::fs::write(&files.ca, ca_cert.pem()).expect("write ca");
        files
    }

    #[test]
    fn loads_good_files_and_explains_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_certs(dir.path());
        let tls = Tls::load(files.clone()).expect("valid files");
        assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let other_key = dir.path().join("other.key");
        std::fs::write(
            &other_key,
            rcgen::KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("write");
        let missing = dir.path().join("missing.pem");
        for (files, want) in [
            (
                TlsFiles {
                    cert: garbage.clone(),
                    ..files.clone()
                },
                "--tls-cert",
            ),
            (
                TlsFiles {
                    key: garbage.clone(),
                    ..files.clone()
                },
                "no PEM private key",
            ),
            (
                TlsFiles {
                    ca: garbage.clone(),
                    ..files.clone()
                },
                "no PEM certificate",
            ),
            (
                TlsFiles {
                    key: other_key.clone(),
                    ..files.clone()
                },
                "--tls-key",
            ),
            (
                TlsFiles {
                    ca: missing.clone(),
                    ..files.clone()
                },
                "missing.pem",
            ),
        ] {
            let err = Tls::load(files.clone()).expect_err(want);
            assert!(format!("{err:#}").contains(want), "{files:?}: {err:#}");
        }
    }

    #[test]
    fn server_names_from_cluster_addresses() {
        for addr in ["127.0.0.1:11110", "[::1]:11110", "node-1.wukong:11110"] {
            server_name(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        }
        assert!(server_name("bad name!:1").is_err());
    }
}
