//! The agent gateway: a TLS 1.3 listener (X25519MLKEM768 preferred) serving
//! `/agent/v1/*` with client certificates from the agent CA.
//!
//! Every request but enrolment must present a client certificate that this
//! control plane issued to a live (not revoked, not superseded) agent, and a
//! short-lived JWT bound to that agent id and certificate fingerprint. An
//! attacker without an agent's private key cannot pass the handshake as that
//! agent; an agent cannot act as another (the JWT and the certificate must
//! agree, and every query is scoped to the authenticated agent).

//!
//! - [`tls`]: the TLS 1.3 listener, its certificate (renewed while running)
//!   and the accept loop;
//! - [`auth`]: who is asking: the client certificate (or a trusted proxy's
//!   forwarded one) and the JWT bound to it;
//! - this module: the routes, each of which authenticates, calls one
//!   `control` function and converts the answer.

pub mod auth;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use channel::api::{
    EnrolRequest, EnrolResponse, KeysRequest, KeysResponse, MetricsBatch, PollRequest,
    PollResponse, RenewRequest, RenewResponse, ResultRequest, TokenResponse,
};
use channel::token::RegistrationToken;
use control::agents::{self, Enrolment};
use control::ca::AgentCa;
use control::delivery::Delivery;
use control::store::Store;
use control::throttle::MemoryThrottle;
use control::{ControlError, Timestamp};

pub use auth::{AgentAuth, AgentCert, PeerInfo, ProxyTrust, JWT_TTL_SECS};
pub use tls::{serve, tls_config, GatewayCert};

/// Largest request body on the gateway: a result envelope at the channel's
/// limit, with room for its JSON wrapper. The web side keeps its own, smaller
/// limit (`max_body_bytes`).
pub const MAX_BODY_BYTES: usize = channel::envelope::MAX_ENVELOPE_BYTES + 4096;

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
    /// The signed agent releases (`crate::install`), for self-updates.
    pub releases: std::path::PathBuf,
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
            ControlError::NotRecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ControlError::NotRecorded(cause) = &e {
            // The agent retries; its report was not recorded, so not taken.
            tracing::error!(error = %cause, "an agent's request could not be recorded");
            return GatewayError(status, e.to_string());
        }
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
    let token = auth::issue_token(&session, &state.jwt_key, Timestamp::now())?;
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
    let accepted = control::metrics::record_batch(
        &state.store,
        &session,
        &batch.samples,
        batch.health.as_ref(),
        Timestamp::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "accepted": accepted })))
}

/// A live output chunk of a running command; the answer says whether to cancel it.
async fn output(
    State(state): State<GatewayState>,
    Extension(peer): Extension<PeerInfo>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<channel::api::OutputRequest>,
) -> Result<Json<channel::api::OutputResponse>, GatewayError> {
    let cancel = state
        .delivery
        .accept_output(&session, &peer.tls_group, &req.chunk)
        .await?;
    Ok(Json(channel::api::OutputResponse { cancel }))
}

/// The binary of the release offered for `platform`, to an authenticated
/// agent. The agent checks it against the release manifest it was sent and
/// the release key it pinned.
async fn release(
    State(state): State<GatewayState>,
    AgentAuth(_session): AgentAuth,
    axum::extract::Path(platform): axum::extract::Path<String>,
) -> Result<Response, GatewayError> {
    if !channel::release::valid_platform(&platform) {
        return Err(GatewayError(
            StatusCode::BAD_REQUEST,
            "the platform is <arch>-<os>, such as x86_64-linux".into(),
        ));
    }
    let path = state.releases.join(&platform).join(crate::install::BINARY);
    crate::install::stream_file(&path).await.ok_or_else(|| {
        GatewayError(
            StatusCode::NOT_FOUND,
            format!("this control plane has no agent release for {platform}"),
        )
    })
}

async fn capabilities(
    State(state): State<GatewayState>,
    AgentAuth(session): AgentAuth,
    Json(req): Json<channel::api::CapabilitiesRequest>,
) -> Result<StatusCode, GatewayError> {
    let now = Timestamp::now();
    control::operations::settings::record_capabilities(
        &state.store,
        &session,
        &req.capabilities,
        now,
    )
    .await?;
    control::agents::updates::record_version(
        &state.store,
        &session,
        req.agent_version.as_deref(),
        req.update.as_ref(),
        now,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes(state: GatewayState) -> Router {
    Router::new()
        .route("/agent/v1/capabilities", post(capabilities))
        .route("/agent/v1/output", post(output))
        .route("/agent/v1/metrics", post(metrics))
        .route("/agent/v1/keys", post(keys))
        .route("/agent/v1/renew", post(renew))
        .route("/agent/v1/enrol", post(enrol))
        .route("/agent/v1/token", post(token))
        .route("/agent/v1/poll", post(poll))
        .route("/agent/v1/result", post(result))
        .route("/agent/v1/release/{platform}", get(release))
        .with_state(state)
}
