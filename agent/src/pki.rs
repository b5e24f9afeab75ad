//! TLS for the agent: the rustls client configurations, the CA pin check used at
//! registration, and the agent's TLS client key and certificate requests.
//!
//! Every configuration uses the aws-lc-rs provider explicitly, TLS 1.3 only, with
//! X25519MLKEM768 offered first (X25519 and P-256 remain for a server without
//! ML-KEM). After registration the agent trusts exactly one root, the agent CA it
//! received and checked against the pin; the platform's root store is never used.
//!
//! Past this module an attacker between agent and control plane, including one
//! holding a certificate from a public CA for the control plane's host name, cannot
//! complete a handshake: at registration the chain must contain the pinned CA and
//! the leaf must verify under it for the host name; afterwards the leaf must verify
//! under the stored CA. What it does not cover: a stolen agent CA key, or a wrong
//! pin typed by the operator (then the agent trusts the CA the wrong pin names).

use crate::token::CaPin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The sentence shown when the server's chain does not carry the pinned CA.
pub const PIN_MISMATCH: &str = "the server's CA does not match the pin in the token";

/// Errors building TLS material. The strings name what failed, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0} is not a valid PEM certificate")]
    BadCertificate(&'static str),
    #[error("the TLS private key is not a valid PEM private key")]
    BadKey,
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Mismatch(&'static str),
    #[error("the issued client certificate does not verify under the agent CA: {0}")]
    Untrusted(String),
    #[error("cannot generate the TLS key or certificate request: {0}")]
    Generate(#[from] rcgen::Error),
}

/// aws-lc-rs with the key-exchange groups in the agent's order of preference.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
        aws_lc_rs::kx_group::SECP256R1,
    ];
    Arc::new(p)
}

fn tls13_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, PkiError> {
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?)
}

/// Checks, at registration, that the server's chain carries the pinned CA and
/// that the leaf is issued by it for the host name. Signature checks of the
/// handshake use the provider's algorithms.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    mismatch: Arc<AtomicBool>,
}

impl PinnedCaVerifier {
    /// A verifier for `pin`. The returned flag is set when a handshake failed
    /// because no certificate in the chain matched the pin.
    pub fn new(pin: CaPin, provider: Arc<CryptoProvider>) -> (Self, Arc<AtomicBool>) {
        let mismatch = Arc::new(AtomicBool::new(false));
        let v = Self {
            pin,
            provider,
            mismatch: mismatch.clone(),
        };
        (v, mismatch)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| CaPin::of_der(c) == self.pin);
        let Some(ca) = pinned else {
            self.mismatch.store(true, Ordering::SeqCst);
            return Err(rustls::Error::General(PIN_MISMATCH.into()));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The configuration for `POST /agent/v1/enrol`: no client certificate, the server
/// authenticated by the pin. The flag reports a pin mismatch.
pub fn enrol_config(pin: CaPin) -> Result<(ClientConfig, Arc<AtomicBool>), PkiError> {
    let provider = provider();
    let (verifier, mismatch) = PinnedCaVerifier::new(pin, provider.clone());
    let config = tls13_builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, mismatch))
}

/// The agent's TLS client identity: its certificate and private key, PEM.
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// The configuration for every call after registration: mutual TLS, the stored
/// agent CA as the only root, HTTP/2 offered (one connection carries the
/// long-poll and every other call at once) with HTTP/1.1 as the fallback.
pub fn mtls_config(ca_pem: &str, identity: &TlsIdentity) -> Result<ClientConfig, PkiError> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|_| PkiError::BadCertificate("the CA certificate"))?)?;
        any = true;
    }
    if !any {
        return Err(PkiError::BadCertificate("the CA certificate"));
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| PkiError::BadCertificate("the client certificate"))?;
    if chain.is_empty() {
        return Err(PkiError::BadCertificate("the client certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|_| PkiError::BadKey)?;
    let mut config = tls13_builder(provider())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A fresh TLS client key (ECDSA P-256) and a CSR for it, signed by it.
pub struct TlsKeyRequest {
    pub key_pem: Zeroizing<String>,
    pub csr_pem: String,
    /// DER SubjectPublicKeyInfo of the key, to check the issued certificate.
    pub spki_der: Vec<u8>,
}

/// Generates a TLS key and a CSR whose subject common name is `common_name`.
pub fn new_tls_key(common_name: &str) -> Result<TlsKeyRequest, PkiError> {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let csr = params.serialize_request(&key)?;
    Ok(TlsKeyRequest {
        key_pem: Zeroizing::new(key.serialize_pem()),
        csr_pem: csr.pem()?,
        spki_der: key.subject_public_key_info(),
    })
}

/// Checks a client certificate the control plane issued: it must carry the key
/// the agent generated (`spki_der`) and verify under the agent CA as a TLS client
/// certificate now. Returns what the agent needs to know about it.
pub fn check_client_cert(
    ca_pem: &str,
    cert_pem: &str,
    spki_der: &[u8],
) -> Result<crate::x509::CertInfo, PkiError> {
    let info = crate::x509::CertInfo::from_pem(cert_pem)
        .map_err(|_| PkiError::BadCertificate("the issued client certificate"))?;
    if info.spki_der != spki_der {
        return Err(PkiError::Mismatch(
            "the issued client certificate does not carry the agent's new TLS key",
        ));
    }
    let mut chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
    let leaf = chain
        .next()
        .and_then(Result::ok)
        .ok_or(PkiError::BadCertificate("the issued client certificate"))?;
    let intermediates: Vec<CertificateDer<'static>> = chain.filter_map(Result::ok).collect();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|_| PkiError::BadCertificate("the CA certificate"))?)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    verifier
        .verify_client_cert(&leaf, &intermediates, UnixTime::now())
        .map_err(|e| PkiError::Untrusted(e.to_string()))?;
    Ok(info)
}

/// Hex SHA-256 of a CSR's PEM text: the `tls_cert_fingerprint` of a key registration.
pub fn csr_fingerprint(csr_pem: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(csr_pem.as_bytes()))
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Pki {
        ca_der: CertificateDer<'static>,
        leaf_der: CertificateDer<'static>,
    }

    fn pki(host: &str) -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Pki {
            ca_der: ca.der().clone(),
            leaf_der: leaf.der().clone(),
        }
    }

    fn verify(
        pin: CaPin,
        p: &Pki,
        chain: &[CertificateDer<'static>],
        host: &'static str,
    ) -> (Result<ServerCertVerified, rustls::Error>, bool) {
        let (v, flag) = PinnedCaVerifier::new(pin, provider());
        let name = ServerName::try_from(host).unwrap();
        let r = v.verify_server_cert(&p.leaf_der, chain, &name, &[], UnixTime::now());
        (r, flag.load(Ordering::SeqCst))
    }

    #[test]
    fn accepts_the_pinned_ca_and_refuses_another() {
        let p = pki("cp.example");
        let chain = [p.ca_der.clone()];
        let good = CaPin::of_der(&p.ca_der);
        let (r, mismatch) = verify(good, &p, &chain, "cp.example");
        assert!(r.is_ok(), "{r:?}");
        assert!(!mismatch);

        let wrong = CaPin::of_der(b"some other CA");
        let (r, mismatch) = verify(wrong, &p, &chain, "cp.example");
        assert_eq!(
            r.unwrap_err().to_string(),
            format!("unexpected error: {PIN_MISMATCH}")
        );
        assert!(mismatch);
    }

    #[test]
    fn the_leaf_must_be_issued_by_the_pinned_ca_for_the_host() {
        let p = pki("cp.example");
        let other = pki("cp.example");
        let pin = CaPin::of_der(&p.ca_der);
        // The pinned CA is in the chain, but the leaf comes from another CA.
        let forged = Pki {
            ca_der: p.ca_der.clone(),
            leaf_der: other.leaf_der.clone(),
        };
        let (r, mismatch) = verify(pin, &forged, std::slice::from_ref(&p.ca_der), "cp.example");
        assert!(r.is_err());
        assert!(!mismatch);
        // Right CA, wrong host name.
        let (r, _) = verify(pin, &p, std::slice::from_ref(&p.ca_der), "evil.example");
        assert!(r.is_err());
        // The leaf alone, with the CA missing from the chain, cannot match the pin.
        let (r, mismatch) = verify(pin, &p, &[], "cp.example");
        assert!(r.is_err());
        assert!(mismatch);
    }

    #[test]
    fn configs_offer_ml_kem_first() {
        let (config, _) = enrol_config(CaPin::of_der(b"x")).unwrap();
        assert_eq!(
            config.crypto_provider().kx_groups[0].name(),
            rustls::NamedGroup::X25519MLKEM768
        );
    }

    #[test]
    fn csr_carries_the_generated_key() {
        let req = new_tls_key("agt_1").unwrap();
        assert!(req
            .csr_pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(req.key_pem.contains("PRIVATE KEY"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(parsed.public_key.subject_public_key_info(), req.spki_der);
        assert_eq!(csr_fingerprint(&req.csr_pem).len(), 64);
    }
}
