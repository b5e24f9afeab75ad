//! Test PKI and TLS clients: a CA with a certificate for localhost, and a
//! rustls client configuration that trusts one CA and offers chosen versions.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A CA, and a certificate it issued for localhost / 127.0.0.1 named `cn`:
/// (CA PEM, certificate PEM, key PEM).
pub fn test_pki(cn: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{cn} test CA"));
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name.push(DnType::CommonName, cn);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// A client (aws-lc-rs, no client certificate) that trusts `ca_pem` and
/// offers only `versions`.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub struct Handshake {
    pub version: rustls::ProtocolVersion,
    pub group: String,
    pub leaf: CertificateDer<'static>,
}

/// One TLS handshake with `addr` for the server name `name`, trusting
/// `ca_pem`, offering only `versions`.
pub async fn handshake(
    addr: &str,
    name: &str,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Handshake, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(ca_pem, versions))
        .connect(name, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    Ok(Handshake {
        version: conn.protocol_version().unwrap(),
        group: format!("{:?}", conn.negotiated_key_exchange_group().unwrap().name()),
        leaf: conn.peer_certificates().unwrap()[0].clone().into_owned(),
    })
}
