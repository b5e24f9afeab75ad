//! The agent gateway: a TLS 1.3 listener (X25519MLKEM768 preferred) serving
//! `/agent/v1/*` with client certificates from the agent CA.
//!
//! Every request but enrolment must present a client certificate that this
//! control plane issued to a live (not revoked, not superseded) agent, and a
//! short-lived JWT bound to that agent id and certificate fingerprint. An
//! attacker without an agent's private key cannot pass the handshake as that
//! agent; an agent cannot act as another (the JWT and the certificate must
//! agree, and every query is scoped to the authenticated agent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use channel::api::{
    EnrolRequest, EnrolResponse, KeysRequest, KeysResponse, MetricsBatch, PollRequest,
    PollResponse, RenewRequest, RenewResponse, ResultRequest, TokenResponse,
};
use channel::token::RegistrationToken;
use control::agents::{self, AgentSession, Enrolment};
use control::ca::AgentCa;
use control::delivery::Delivery;
use control::store::Store;
use control::throttle::MemoryThrottle;
use control::{ControlError, Timestamp};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest request body on the gateway: a result envelope at the channel's
/// limit, with room for its JSON wrapper. The web side keeps its own, smaller
/// limit (`max_body_bytes`).
pub const MAX_BODY_BYTES: usize = channel::envelope::MAX_ENVELOPE_BYTES + 4096;

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

#[derive(Clone)]
pub struct GatewayState {
    pub store: Store,
    pub ca: Arc<AgentCa>,
    pub delivery: Arc<Delivery>,
    pub jwt_key: Arc<[u8]>,
    /// Failed enrolments per client address, counted in memory.
    pub enrol_throttle: Arc<MemoryThrottle>,
    /// The trusted-proxy option: header name and the proxies allowed to set it.
    pub proxy: Option<Arc<ProxyTrust>>,
    pub poll_timeout: Duration,
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

/// A gateway error: a status and a reason, never a secret.
#[derive(Debug)]
pub struct GatewayError(StatusCode, String);

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            Json(serde_json::json!({ "error": self.1 })),
        )
            .into_response()
    }
}

impl From<ControlError> for GatewayError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "agent gateway error");
            return GatewayError(status, "internal error".into());
        }
        tracing::info!(status = status.as_u16(), reason = %e, "agent request refused");
        GatewayError(status, e.to_string())
    }
}

fn unauthorized(reason: &str) -> GatewayError {
    tracing::info!(reason, "agent request refused");
    GatewayError(StatusCode::UNAUTHORIZED, reason.to_string())
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

async fn enrol(
    State(state): State<GatewayState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<EnrolRequest>,
) -> Result<Json<EnrolResponse>, GatewayError> {
    let token: RegistrationToken = req.token.parse().map_err(|e: channel::token::TokenError| {
        GatewayError(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let meta = control::access::RequestMeta::new(
        addr.ip().to_string(),
        &format!("pilothouse-agent/{}", req.agent_version),
    );
    let enrolled = agents::enrol(
        &state.store,
        &state.ca,
        &state.enrol_throttle,
        Enrolment {
            token,
            csr_pem: req.csr_pem,
            identity_key: req.identity_key,
            kem_key: req.kem_key,
            hostname: req.hostname,
            agent_version: req.agent_version,
        },
        &meta,
        Timestamp::now(),
    )
    .await?;
    tracing::info!(agent = %enrolled.agent, "agent enrolled");
    let keys = state.delivery.keys();
    Ok(Json(EnrolResponse {
        agent_id: enrolled.agent.0,
        client_cert_pem: enrolled.cert.pem,
        ca_cert_pem: state.ca.cert_pem().to_string(),
        cert_not_after: enrolled.cert.not_after.0,
        command_verifying_key: keys.signing.verifying_key().clone(),
        control_kem_key: keys.kem.public_key().clone(),
    }))
}

async fn token(
    State(state): State<GatewayState>,
    AgentCert(session): AgentCert,
) -> Result<Json<TokenResponse>, GatewayError> {
    let now = Timestamp::now().0 / 1000;
    let claims = Claims {
        sub: session.agent().0.clone(),
        cnf: session.fingerprint().to_string(),
        aud: JWT_AUDIENCE.into(),
        iat: now,
        exp: now + JWT_TTL_SECS,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&state.jwt_key),
    )
    .map_err(ControlError::internal)?;
    Ok(Json(TokenResponse {
        token,
        expires_in_secs: JWT_TTL_SECS,
    }))
}

/// The long-poll: pending commands at once, or after a wake-up, or none at the timeout.
async fn poll(
    State(state): State<GatewayState>,
    Extension(peer): Extension<PeerInfo>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<PollRequest>,
) -> Result<Json<PollResponse>, GatewayError> {
    let wait = req
        .wait_secs
        .map(Duration::from_secs)
        .unwrap_or(state.poll_timeout)
        .min(state.poll_timeout);
    let commands = state.delivery.poll(session, &peer.tls_group, wait).await?;
    Ok(Json(PollResponse { commands }))
}

async fn result(
    State(state): State<GatewayState>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<ResultRequest>,
) -> Result<StatusCode, GatewayError> {
    state.delivery.accept_result(&session, &req.result).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn keys(
    State(state): State<GatewayState>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<KeysRequest>,
) -> Result<Json<KeysResponse>, GatewayError> {
    let cert = agents::accept_key_registration(
        &state.store,
        &state.ca,
        &session,
        &req.registration,
        req.csr_pem.as_deref(),
        Timestamp::now(),
    )
    .await?;
    tracing::info!(agent = %session.agent(), new_cert = cert.is_some(), "agent registered new keys");
    Ok(Json(KeysResponse {
        cert_not_after: cert.as_ref().map(|c| c.not_after.0),
        client_cert_pem: cert.map(|c| c.pem),
    }))
}

async fn renew(
    State(state): State<GatewayState>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<RenewRequest>,
) -> Result<Json<RenewResponse>, GatewayError> {
    let cert = agents::renew_cert(
        &state.store,
        &state.ca,
        &session,
        &req.csr_pem,
        &req.renewal,
        Timestamp::now(),
    )
    .await?;
    Ok(Json(RenewResponse {
        client_cert_pem: cert.pem,
        cert_not_after: cert.not_after.0,
    }))
}

async fn metrics(
    State(state): State<GatewayState>,
    AgentAuth(session): AgentAuth,
    Json(batch): Json<MetricsBatch>,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let accepted =
        control::metrics::record(&state.store, &session, &batch.samples, Timestamp::now()).await?;
    Ok(Json(serde_json::json!({ "accepted": accepted })))
}

pub fn routes(state: GatewayState) -> Router {
    Router::new()
        .route("/agent/v1/metrics", post(metrics))
        .route("/agent/v1/keys", post(keys))
        .route("/agent/v1/renew", post(renew))
        .route("/agent/v1/enrol", post(enrol))
        .route("/agent/v1/token", post(token))
        .route("/agent/v1/poll", post(poll))
        .route("/agent/v1/result", post(result))
        .with_state(state)
}

/// TLS 1.3 only, client certificates from the agent CA requested (required
/// for everything but enrolment, which the handlers enforce).
pub fn tls_config(ca: &AgentCa, names: &[String], now: Timestamp) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .map_err(|e| format!("agent CA certificate: {e}"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let (cert_pem, key_pem) = ca.issue_server(names, now).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("gateway certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("gateway key: {e}"))?;
    let chain = vec![cert, CertificateDer::from(ca.cert_der().to_vec())];
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("gateway TLS: {e}"))
}

/// Accepts TLS connections and serves `router` on each, with the peer's
/// certificate fingerprint and TLS group attached to every request, under the
/// listener's connection limits. A TLS handshake must finish within 10 s.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    router: Router,
    limits: crate::listen::Limits,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let accept = move |tcp: tokio::net::TcpStream, addr: SocketAddr| {
        let (acceptor, router) = (acceptor.clone(), router.clone());
        async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "agent TLS handshake refused");
                        return None;
                    }
                    Err(_) => return None,
                };
            let (_, conn) = tls.get_ref();
            let peer = PeerInfo {
                cert_fingerprint: conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| control::crypto::sha256_hex(c.as_ref())),
                tls_group: conn
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
                    .unwrap_or_default(),
            };
            let router = router
                .layer(Extension(peer))
                .layer(Extension(ConnectInfo(addr)));
            Some((tls, router))
        }
    };
    // Held long-polls are not drained: agents reconnect to the next process.
    crate::listen::serve(listener, limits, accept, std::future::pending()).await;
}
