//! HTTPS for the test server: a throwaway certificate authority and a server certificate for
//! 127.0.0.1 and localhost, generated per test, so clients are tested with a custom CA bundle.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCertificates {
    /// The CA certificate to trust, PEM-encoded: what a client's CA bundle holds.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn generate() -> Result<TestCertificates, String> {
    let err = |e: &dyn std::fmt::Display| format!("generating test certificates: {e}");
    let ca_key = KeyPair::generate().map_err(|e| err(&e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fetchfs test CA");
    let ca = ca_params.self_signed(&ca_key).map_err(|e| err(&e))?;

    let server_key = KeyPair::generate().map_err(|e| err(&e))?;
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(|e| err(&e))?;
    let server_cert = server_params.signed_by(&server_key, &ca, &ca_key).map_err(|e| err(&e))?;

    let chain = vec![CertificateDer::from(server_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TestCertificates { ca_pem: ca.pem(), server_config: Arc::new(config) })
}
