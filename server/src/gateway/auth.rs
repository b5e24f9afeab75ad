//! Who is asking on the gateway: an agent session from the client
//! certificate on the connection (or one a trusted proxy forwarded and this
//! module verified), and for every route but `/token` a short-lived JWT bound
//! to that agent and certificate.
//!
//! Past this module an attacker without an agent's certificate key cannot act
//! as that agent: not with another agent's JWT (the JWT names the certificate),
//! not with a forwarded-certificate header (only a listed proxy holding the
//! shared secret may send one, and the certificate must verify against the
//! agent CA), and not with a revoked or superseded certificate (`control`
//! refuses those).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use control::agents::{self, AgentSession};
use control::ca::AgentCa;
use control::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};

use super::{unauthorized, GatewayError, GatewayState};

/// JWTs for agents live this long; agents refresh them over mTLS.
pub const JWT_TTL_SECS: i64 = 300;
const JWT_AUDIENCE: &str = "pilothouse-agent-gateway";

/// What the TLS layer learned about the connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Hex SHA-256 of the client certificate, if one was presented.
    pub cert_fingerprint: Option<String>,
    /// The negotiated key exchange group, e.g. `X25519MLKEM768`.
    pub tls_group: String,
}

/// Deployments behind a TLS-terminating proxy (nginx, HAProxy): the proxy
/// checks the agent's certificate and forwards it whole, URL-escaped, in
/// `cert_header`, and proves itself with a shared secret in `secret_header`.
/// The header is believed only from the listed addresses, only with the
/// secret (compared in constant time), and only for a certificate that
/// verifies against the agent CA here; a certificate on the connection itself
/// always wins.
pub struct ProxyTrust {
    pub cert_header: axum::http::HeaderName,
    pub secret_header: axum::http::HeaderName,
    /// Hex SHA-256 of the shared secret: compared hashed, so the comparison
    /// takes the same time whatever the length of the guess.
    pub secret_hash: String,
    pub from: Vec<std::net::IpAddr>,
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl std::fmt::Debug for ProxyTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyTrust")
            .field("cert_header", &self.cert_header)
            .field("secret_header", &self.secret_header)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl ProxyTrust {
    /// The proxy settings, with the agent CA as the only root for forwarded certificates.
    pub fn new(
        ca: &AgentCa,
        cert_header: &str,
        secret_header: &str,
        secret: &str,
        from: Vec<std::net::IpAddr>,
    ) -> Result<Self, String> {
        let header = |name: &str, what: &str| {
            axum::http::HeaderName::try_from(name.trim())
                .map_err(|_| format!("{what} `{name}` is not a valid header name"))
        };
        let secret = secret.trim();
        if secret.chars().count() < 32 {
            return Err("the agent proxy secret must be at least 32 characters".into());
        }
        if from.is_empty() {
            return Err(
                "agent_cert_header needs agent_trusted_proxies (the proxies' addresses)".into(),
            );
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .map_err(|e| format!("agent CA certificate: {e}"))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        Ok(Self {
            cert_header: header(cert_header, "agent_cert_header")?,
            secret_header: header(secret_header, "agent_proxy_secret_header")?,
            secret_hash: control::crypto::sha256_hex(secret.as_bytes()),
            from,
            verifier,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// SHA-256 fingerprint of the certificate the token is bound to.
    cnf: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// A JWT for the session's agent, bound to the certificate it presented.
pub(super) fn issue_token(
    session: &AgentSession,
    key: &[u8],
    now: Timestamp,
) -> Result<String, GatewayError> {
    let now = now.0 / 1000;
    let claims = Claims {
        sub: session.agent().0.clone(),
        cnf: session.fingerprint().to_string(),
        aud: JWT_AUDIENCE.into(),
        iat: now,
        exp: now + JWT_TTL_SECS,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .map_err(|e| control::ControlError::internal(e).into())
}

/// An agent authenticated by certificate (and, for [`AgentAuth`], by JWT).
pub struct AgentCert(pub AgentSession);

impl FromRequestParts<GatewayState> for AgentCert {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<PeerInfo>()
            .ok_or_else(|| unauthorized("no TLS connection information"))?;
        let fingerprint = match (&peer.cert_fingerprint, &state.proxy) {
            (Some(fp), _) => fp.clone(),
            (None, Some(proxy)) => forwarded_fingerprint(parts, proxy)?,
            (None, None) => return Err(unauthorized("a client certificate is required")),
        };
        let session = agents::authenticate(&state.store, &fingerprint, Timestamp::now()).await?;
        Ok(AgentCert(session))
    }
}

/// `%XX` escapes decoded; anything else kept as it is (nginx's
/// `$ssl_client_escaped_cert`). `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The fingerprint of the certificate a trusted proxy forwarded, after
/// checking where the request came from, the proxy's secret, and the
/// certificate itself against the agent CA.
fn forwarded_fingerprint(parts: &Parts, proxy: &ProxyTrust) -> Result<String, GatewayError> {
    let from = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let header =
        |name: &axum::http::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let Some(cert) = header(&proxy.cert_header) else {
        return Err(unauthorized("a client certificate is required"));
    };
    match from {
        Some(ip) if proxy.from.contains(&ip) => {}
        other => {
            tracing::warn!(peer = ?other, "ignored a forwarded certificate from an address that is not a trusted proxy");
            return Err(unauthorized("a client certificate is required"));
        }
    }
    let given =
        control::crypto::sha256_hex(header(&proxy.secret_header).unwrap_or_default().as_bytes());
    if !control::crypto::secret_eq(given.as_bytes(), proxy.secret_hash.as_bytes()) {
        tracing::warn!(peer = ?from, "a forwarded certificate without the proxy's secret");
        return Err(unauthorized("the proxy did not authenticate itself"));
    }
    let pem = percent_decode(cert)
        .ok_or_else(|| unauthorized("the forwarded certificate is malformed"))?;
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|_| unauthorized("the forwarded certificate is malformed"))?;
    proxy
        .verifier
        .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
        .map_err(|_| {
            unauthorized("the forwarded certificate was not issued by the agent CA or has expired")
        })?;
    Ok(control::crypto::sha256_hex(der.as_ref()))
}

/// An agent authenticated by certificate and JWT.
pub struct AgentAuth(pub AgentSession);

impl FromRequestParts<GatewayState> for AgentAuth {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let AgentCert(session) = AgentCert::from_request_parts(parts, state).await?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("a bearer token is required"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[JWT_AUDIENCE]);
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&state.jwt_key),
            &validation,
        )
        .map_err(|e| unauthorized(&format!("the bearer token is not valid ({e})")))?
        .claims;
        if claims.sub != session.agent().0 || claims.cnf != session.fingerprint() {
            return Err(unauthorized(
                "the bearer token belongs to another agent or certificate",
            ));
        }
        Ok(AgentAuth(session))
    }
}
