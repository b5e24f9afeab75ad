//! The control plane's internal agent CA.
//!
//! It issues short-lived TLS client certificates to agents from their CSRs and
//! the certificate of the agent gateway's TLS listener. Agents pin the SHA-256
//! of this CA's certificate (carried in their registration token), so a
//! man-in-the-middle without this key cannot pose as the control plane.
//!
//! The CA key lives in the data directory, mode 0600, created on first start;
//! start-up refuses a key file that others can read. Nothing from a CSR but its
//! public key is used: names, validity and usages are ours, so an agent cannot
//! ask for a CA certificate or another agent's identity.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::crypto::{random_token, sha256_hex};
use crate::Timestamp;

const CA_CERT_FILE: &str = "agent-ca.crt";
const CA_KEY_FILE: &str = "agent-ca.key";
/// Agent client certificates live this long; agents renew at two thirds.
pub const CLIENT_CERT_DAYS: i64 = 30;
/// Lifetime of the gateway's own TLS certificate; the gateway renews it while
/// running, well before it ends.
pub const SERVER_CERT_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`", path = .path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a valid CA file: {reason}", path = .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("the certificate request is not valid: {0}")]
    BadRequest(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate issued to an agent.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub pem: String,
    /// Hex SHA-256 of the DER certificate: how the gateway recognises it.
    pub fingerprint: String,
    pub serial: String,
    pub not_after: Timestamp,
}

pub struct AgentCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCa")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    crate::files::write_new_private(path, contents.as_bytes()).map_err(io(path))
}

fn to_offset(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.0.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> (SerialNumber, String) {
    // 16 random bytes with the top bit cleared: a positive 127-bit serial.
    let hex = random_token(16);
    let mut bytes = hex::decode(&hex).unwrap_or_default();
    if let Some(b) = bytes.first_mut() {
        *b &= 0x7f;
    }
    (SerialNumber::from_slice(&bytes), hex::encode(&bytes))
}

impl AgentCa {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path, now: Timestamp) -> Result<AgentCa, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "Pilothouse");
            dn.push(DnType::CommonName, "Pilothouse agent CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = to_offset(now.plus_secs(-3600));
            params.not_after = to_offset(now.plus_secs(10 * 365 * 86_400));
            params.serial_number = Some(random_serial().0);
            let cert = params.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        }
        let mode = fs::metadata(&key_path)
            .map_err(io(&key_path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::Permissions {
                path: key_path,
                mode,
            });
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let corrupt = |path: &Path, reason: String| CaError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| corrupt(&key_path, e.to_string()))?;
        let cert_der = rustls_pem_der(&cert_pem)
            .ok_or_else(|| corrupt(&cert_path, "no PEM certificate".into()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| corrupt(&cert_path, e.to_string()))?;
        Ok(AgentCa {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// Hex SHA-256 of the CA certificate (DER): the pin agents check.
    pub fn pin(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues an agent's client certificate from its CSR (PEM). Only the
    /// CSR's public key is used; its signature must verify.
    pub fn issue_client(
        &self,
        csr_pem: &str,
        agent_id: &str,
        now: Timestamp,
    ) -> Result<IssuedCert, CaError> {
        if csr_pem.len() > 16 * 1024 {
            return Err(CaError::BadRequest("the CSR is too large".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Pilothouse agents");
        dn.push(DnType::CommonName, agent_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:pilothouse:agent:{agent_id}")
                .try_into()
                .map_err(|_| CaError::BadRequest("agent id is not URI-safe".into()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after = now.plus_secs(CLIENT_CERT_DAYS * 86_400);
        params.not_before = to_offset(now.plus_secs(-300));
        params.not_after = to_offset(not_after);
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            fingerprint: sha256_hex(cert.der()),
            serial: serial_hex,
            not_after: Timestamp(not_after.0 - not_after.0.rem_euclid(1000)),
        })
    }

    /// A fresh certificate and key (PEM) for the gateway's TLS listener,
    /// valid for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        names: &[String],
        now: Timestamp,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Pilothouse agent gateway");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = to_offset(now.plus_secs(-300));
        params.not_after = to_offset(now.plus_secs(SERVER_CERT_DAYS * 86_400));
        params.serial_number = Some(random_serial().0);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The DER bytes of the first certificate in a PEM text.
fn rustls_pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| der.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_certs_from_csrs_and_keeps_its_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let ca = AgentCa::load_or_create(dir.path(), now).unwrap();
        let again = AgentCa::load_or_create(dir.path(), now).unwrap();
        assert_eq!(ca.pin(), again.pin(), "the CA is created once");
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        // The CSR asks to be a CA for another name: only its key is used.
        let agent_key = KeyPair::generate().unwrap();
        let mut wish = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        wish.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = wish.serialize_request(&agent_key).unwrap().pem().unwrap();
        let issued = ca.issue_client(&csr, "agt_1234", now).unwrap();
        assert_eq!(issued.fingerprint.len(), 64);
        assert!(issued.not_after > now.plus_secs(29 * 86_400));
        let der = rustls_pem_der(&issued.pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_flag = cert
            .basic_constraints()
            .unwrap()
            .map(|b| b.value.ca)
            .unwrap_or(false);
        assert!(!ca_flag, "never a CA, whatever the CSR asked");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
        );
        assert!(
            sans.contains("urn:pilothouse:agent:agt_1234") && !sans.contains("evil.example"),
            "{sans}"
        );
        assert_eq!(crate::crypto::sha256_hex(&der), issued.fingerprint);
        let issuer_der = ca.cert_der().to_vec();
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
        assert!(
            cert.verify_signature(Some(issuer.public_key())).is_ok(),
            "signed by the agent CA"
        );
        assert!(ca.issue_client("not a csr", "agt_1234", now).is_err());

        fs::set_permissions(
            dir.path().join(CA_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = AgentCa::load_or_create(dir.path(), now).unwrap_err();
        assert!(matches!(err, CaError::Permissions { .. }), "{err}");
    }
}
