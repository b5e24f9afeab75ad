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
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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

/// Deployments behind a TLS-terminating proxy: the proxy verifies the agent's
/// certificate and passes its fingerprint in a header. Believed only from the
/// listed addresses, and only when the connection itself carries no client
/// certificate (a certificate on the connection always wins).
#[derive(Debug)]
pub struct ProxyTrust {
    pub header: axum::http::HeaderName,
    pub from: Vec<std::net::IpAddr>,
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

fn forwarded_fingerprint(parts: &Parts, proxy: &ProxyTrust) -> Result<String, GatewayError> {
    let from = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let value = parts
        .headers
        .get(&proxy.header)
        .and_then(|v| v.to_str().ok());
    match (from, value) {
        (Some(ip), Some(v)) if proxy.from.contains(&ip) => {
            let v = v.trim().to_ascii_lowercase();
            if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(v)
            } else {
                Err(unauthorized(
                    "the proxy's certificate fingerprint header is malformed",
                ))
            }
        }
        (Some(ip), Some(_)) => {
            tracing::warn!(peer = %ip, "ignored a certificate fingerprint header from an untrusted address");
            Err(unauthorized("a client certificate is required"))
        }
        _ => Err(unauthorized("a client certificate is required")),
    }
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
/// certificate fingerprint and TLS group attached to every request.
pub async fn serve(listener: TcpListener, config: ServerConfig, router: Router) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "agent gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "agent TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
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
            let service = TowerToHyperService::new(
                router
                    .layer(Extension(peer))
                    .layer(Extension(ConnectInfo(addr))),
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(peer = %addr, error = %e, "agent connection ended");
            }
        });
    }
}
