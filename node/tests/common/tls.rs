//! Test certificates made with rcgen: a CA, and node certificates signed by it for
//! `127.0.0.1` and `localhost` (usable as server and client certificates), as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A test CA and the directory its files go to.
pub struct Pki {
    dir: PathBuf,
    /// Short name, in file names and subjects (`cluster`, `stranger`).
    name: String,
    /// The CA certificate, PEM: what `--tls-ca` points at.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`; its certificate is written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wukong test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write the CA certificate");
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes node `id`'s certificate and key (`<name>-node-<id>.pem`, `.key`); returns their
    /// paths.
    pub fn node_cert(&self, id: u64) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wukong node {id}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("node certificate");
        let stem = self.dir.join(format!("{}-node-{id}", self.name));
        let (cert_path, key_path) = (stem.with_extension("pem"), stem.with_extension("key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the node certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the node key");
        (cert_path, key_path)
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` for node `id`, trusting this CA.
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let (cert, key) = self.node_cert(id);
        tls_args(&cert, &key, &self.ca)
    }
}

/// The three TLS flags.
pub fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)]
        .into_iter()
        .flat_map(|(flag, p)| [flag.to_string(), p.display().to_string()])
        .collect()
}
