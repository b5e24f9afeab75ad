//! The control plane's internal agent CA.
//!
//! It issues short-lived TLS client certificates to agents from their CSRs and
//! the certificate of the agent gateway's TLS listener. Agents pin the SHA-256
//! of this CA's certificate (carried in their registration token), so a
//! man-in-the-middle without this key cannot pose as the control plane.
//!
//! The CA key is kept in the database, sealed under the master key
//! ([`crate::key_vault`]); it is made on first start. Nothing from a CSR but
//! its public key is used: names, validity and usages are ours, so an agent
//! cannot ask for a CA certificate or another agent's identity.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::crypto::{random_token, sha256_hex};
use crate::Timestamp;

/// Agent client certificates live this long; agents renew at two thirds.
pub const CLIENT_CERT_DAYS: i64 = 30;
/// Lifetime of the gateway's own TLS certificate; the gateway renews it while
/// running, well before it ends.
pub const SERVER_CERT_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the agent CA's {what} is not valid: {reason}")]
    Corrupt { what: &'static str, reason: String },
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
    /// A new CA: its key (PEM) and self-signed certificate (PEM), valid ten
    /// years from `now`.
    pub(crate) fn new_pem(now: Timestamp) -> Result<(Zeroizing<String>, String), CaError> {
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
        Ok((Zeroizing::new(key.serialize_pem()), cert.pem()))
    }

    /// A new CA, held in memory only (tests; the server's comes from
    /// [`crate::key_vault`]).
    pub fn generate(now: Timestamp) -> Result<AgentCa, CaError> {
        let (key_pem, cert_pem) = Self::new_pem(now)?;
        Self::from_pem(&key_pem, &cert_pem)
    }

    /// The CA from its key and certificate (PEM); refused when either does
    /// not parse or the certificate is not for that key.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<AgentCa, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Corrupt {
            what: "key",
            reason: e.to_string(),
        })?;
        let cert_der = rustls_pem_der(cert_pem).ok_or_else(|| CaError::Corrupt {
            what: "certificate",
            reason: "no PEM certificate".into(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::Corrupt {
                what: "certificate",
                reason: e.to_string(),
            })?;
        if &*parsed.public_key().subject_public_key.data != key.public_key_raw() {
            return Err(CaError::Corrupt {
                what: "certificate",
                reason: "it is not for the CA's key".into(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::Corrupt {
            what: "certificate",
            reason: e.to_string(),
        })?;
        Ok(AgentCa {
            cert_pem: cert_pem.to_string(),
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
    fn issues_client_certs_from_csrs() {
        let now = Timestamp::now();
        let (key_pem, cert_pem) = AgentCa::new_pem(now).unwrap();
        let ca = AgentCa::from_pem(&key_pem, &cert_pem).unwrap();
        let again = AgentCa::from_pem(&key_pem, &cert_pem).unwrap();
        assert_eq!(ca.pin(), again.pin(), "the same CA from the same PEM");

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
    }

    #[test]
    fn a_certificate_for_another_key_or_bad_pem_is_refused() {
        let now = Timestamp::now();
        let (key_pem, _) = AgentCa::new_pem(now).unwrap();
        let (_, other_cert) = AgentCa::new_pem(now).unwrap();
        let err = AgentCa::from_pem(&key_pem, &other_cert).unwrap_err();
        assert!(err.to_string().contains("not for the CA's key"), "{err}");
        let err = AgentCa::from_pem("not a key", &other_cert).unwrap_err();
        assert!(matches!(err, CaError::Corrupt { what: "key", .. }), "{err}");
        let err = AgentCa::from_pem(&key_pem, "not a certificate").unwrap_err();
        assert!(
            matches!(
                err,
                CaError::Corrupt {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
    }
}
