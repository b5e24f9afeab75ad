//! Sign-in with an OpenID Connect provider (Google by default; any provider
//! with discovery: Okta, Entra ID, Keycloak), with the `openidconnect` crate.
//! The rules about accounts are `control::sso`'s; this is the protocol.
//!
//! - `GET /auth/oidc/start` starts a sign-in; `GET /auth/oidc/start?link=T`
//!   starts linking the signed-in account, `T` being the one-time token the
//!   Settings page put in its link (`app::sso_page`), so another site cannot
//!   start a link for a signed-in browser. The start makes a `state`, a nonce
//!   and a PKCE verifier, keeps them (`control::sso::begin_flow`) bound to a
//!   fresh browser cookie (`ph_sso`, HttpOnly, path `/auth/`, 10 minutes), and
//!   sends the browser to the provider's authorization endpoint (authorization
//!   code flow, S256 PKCE, scopes `openid email profile`, `hd` when a hosted
//!   domain is set).
//! - `GET /auth/oidc/callback` takes the flow once, by `state` and the
//!   browser cookie; exchanges the code with the PKCE verifier and the client
//!   secret (HTTP Basic); validates the ID token (signature against the
//!   provider's keys, issuer, audience, expiry, nonce, and the access token's
//!   hash when present); requires the hosted domain when one is set; then
//!   signs in or links through `control::sso`.
//! - **Refusals** go back to the sign-in page (Settings for a link) with a
//!   sentence saying what was wrong, kept in the session for that one page,
//!   and are recorded (`control::sso::record_failure`, `record_unattributed`).
//! - **Discovery** is fetched on first use and kept for an hour (the
//!   provider's keys with it); a provider that cannot be reached refuses the
//!   sign-in with a sentence and is asked again next time.
//! - The HTTP client follows no redirects and trusts the public roots, plus
//!   `oidc_ca_file` when set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, SignatureVerificationError, StandardErrorResponse, StandardTokenResponse,
    TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tower_sessions::Session;

use app::context::{AppState, ClientIp, Cx};
use control::sso::{Identity, Provider, SsoFailure};

use crate::config::Config;

/// The browser cookie a flow is bound to.
const FLOW_COOKIE: &str = "ph_sso";
use control::sessions::keys::{SSO_ERROR as ERROR_KEY, SSO_LINK_TOKEN as LINK_TOKEN_KEY};
/// Provider metadata and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The provider must answer each request within this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Claims Google adds: `hd`, the Workspace domain of the account.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ProviderClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hd: Option<String>,
}
impl AdditionalClaims for ProviderClaims {}

type TokenFields = IdTokenFields<
    ProviderClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcClient = openidconnect::Client<
    ProviderClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StandardTokenResponse<TokenFields, CoreTokenType>,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The OpenID Connect settings, checked.
pub struct OidcSettings {
    issuer: IssuerUrl,
    client_id: String,
    client_secret: SecretString,
    label: String,
    hosted_domain: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("label", &self.label)
            .field("hosted_domain", &self.hosted_domain)
            .finish_non_exhaustive()
    }
}

/// A bad SSO setting, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SsoConfigError(String);

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl OidcSettings {
    /// The settings, or `None` when `oidc_client_id` is unset (no OIDC
    /// sign-in). The issuer must be `https://` (or `http://` on a loopback
    /// address, for a provider on this machine).
    pub fn from_config(config: &Config) -> Result<Option<OidcSettings>, SsoConfigError> {
        let bad = |m: String| Err(SsoConfigError(m));
        let Some(client_id) = config
            .oidc_client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
        else {
            if config.oidc_client_secret.is_some() || config.oidc_issuer.is_some() {
                return bad(
                    "oidc_issuer or oidc_client_secret is set but oidc_client_id is not: set it to turn on OpenID Connect sign-in".into(),
                );
            }
            return Ok(None);
        };
        let Some(client_secret) = config
            .oidc_client_secret
            .clone()
            .filter(|s| !s.expose_secret().trim().is_empty())
        else {
            return bad("oidc_client_id is set but oidc_client_secret is not: set it, or PILOTHOUSE_OIDC_CLIENT_SECRET_FILE to a file holding it".into());
        };
        let issuer = config
            .oidc_issuer
            .clone()
            .unwrap_or_else(|| GOOGLE_ISSUER.into());
        let issuer = issuer.trim().trim_end_matches('/').to_string();
        let loopback_http = issuer
            .strip_prefix("http://")
            .map(|rest| {
                let host = rest.split(['/', ':']).next().unwrap_or_default();
                host == "localhost" || host == "127.0.0.1" || rest.starts_with("[::1]")
            })
            .unwrap_or(false);
        if !issuer.starts_with("https://") && !loopback_http {
            return bad(format!(
                "oidc_issuer is {issuer}: it must be an https:// URL (http:// only on a loopback address)"
            ));
        }
        let issuer = match IssuerUrl::new(issuer.clone()) {
            Ok(u) => u,
            Err(e) => return bad(format!("oidc_issuer {issuer} is not a URL: {e}")),
        };
        let hosted_domain = match config.oidc_hosted_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(
                control::sso::normalize_domain(d)
                    .map_err(|e| SsoConfigError(format!("oidc_hosted_domain: {e}")))?,
            ),
        };
        let ca_pem = match &config.oidc_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    SsoConfigError(format!("cannot read oidc_ca_file {}: {e}", path.display()))
                })?;
                if reqwest::Certificate::from_pem(&pem).is_err() {
                    return bad(format!(
                        "oidc_ca_file {} is not a PEM certificate",
                        path.display()
                    ));
                }
                Some(pem)
            }
        };
        let label = config
            .oidc_label
            .clone()
            .map(|l| l.trim().chars().take(40).collect::<String>())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "Google".into());
        Ok(Some(OidcSettings {
            issuer,
            client_id,
            client_secret,
            label,
            hosted_domain,
            ca_pem,
        }))
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A refusal: what the audit log records and what the page says.
struct Refusal {
    failure: SsoFailure,
    message: String,
    /// The identity it names, when the provider's answer was valid.
    identity: Option<Identity>,
}

impl Refusal {
    fn new(failure: SsoFailure, message: impl Into<String>) -> Refusal {
        Refusal {
            failure,
            message: message.into(),
            identity: None,
        }
    }
}

/// The OpenID Connect client.
pub struct Oidc {
    settings: OidcSettings,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings, public_url: &str) -> Result<Oidc, SsoConfigError> {
        let redirect = RedirectUrl::new(format!(
            "{}/auth/oidc/callback",
            public_url.trim_end_matches('/')
        ))
        .map_err(|e| SsoConfigError(format!("public_url {public_url}: {e}")))?;
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .user_agent("pilothouse-sso");
        if let Some(pem) = &settings.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| SsoConfigError(format!("oidc_ca_file: {e}")))?;
            http = http.add_root_certificate(ca);
        }
        let http = http
            .build()
            .map_err(|e| SsoConfigError(format!("cannot make an HTTPS client: {e}")))?;
        Ok(Oidc {
            settings,
            redirect,
            http,
            metadata: Mutex::new(None),
        })
    }

    /// How the pages name the provider.
    pub fn label(&self) -> &str {
        self.settings.label()
    }

    async fn client(&self) -> Result<OidcClient, Refusal> {
        let metadata = {
            let mut cached = self.metadata.lock().await;
            match cached.as_ref() {
                Some((at, m)) if at.elapsed() < METADATA_TTL => m.clone(),
                _ => {
                    let m = CoreProviderMetadata::discover_async(
                        self.settings.issuer.clone(),
                        &self.http,
                    )
                    .await
                    .map_err(|e| {
                        tracing::warn!(issuer = %self.settings.issuer.as_str(), error = %describe(&e), "OpenID Connect discovery failed");
                        Refusal::new(
                            SsoFailure::ProviderError,
                            format!(
                                "{} cannot be reached right now, so sign-in with it is not possible. Try again in a minute.",
                                self.settings.label
                            ),
                        )
                    })?;
                    *cached = Some((Instant::now(), m.clone()));
                    m
                }
            }
        };
        Ok(OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// The provider's authorization URL for a new flow, with its state,
    /// nonce and PKCE verifier.
    async fn authorize(&self) -> Result<(String, CsrfToken, Nonce, PkceCodeVerifier), Refusal> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let Some(hd) = &self.settings.hosted_domain {
            request = request.add_extra_param("hd", hd.clone());
        }
        let (url, state, nonce) = request.url();
        Ok((url.to_string(), state, nonce, verifier))
    }

    /// Exchanges `code` and checks the answer: the identity it vouches for.
    async fn identity(
        &self,
        code: String,
        verifier: &SecretString,
        nonce: &SecretString,
    ) -> Result<Identity, Refusal> {
        let label = &self.settings.label;
        let mut client = self.client().await?;
        let request = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| {
                Refusal::new(
                    SsoFailure::ProviderError,
                    format!("{label} does not say where to exchange a sign-in code."),
                )
            })?;
        let tokens = request
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(error = %describe(&e), "OpenID Connect code exchange refused");
                Refusal::new(
                    SsoFailure::ProviderError,
                    format!(
                        "{label} did not accept the sign-in code ({}). Sign-in codes work once: start again.",
                        token_error(&e)
                    ),
                )
            })?;
        let invalid = |what: String| {
            tracing::warn!(reason = %what, "OpenID Connect ID token refused");
            Refusal::new(
                SsoFailure::InvalidToken,
                format!(
                    "The answer from {label} failed its checks ({what}), so nobody was signed in."
                ),
            )
        };
        let id_token = tokens
            .id_token()
            .ok_or_else(|| invalid("no ID token".into()))?;
        let nonce = Nonce::new(nonce.expose_secret().to_string());
        let stale = matches!(
            id_token.claims(&client.id_token_verifier(), &nonce),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
            ))
        );
        if stale {
            // Signed with a key discovery did not list: the provider may have
            // rotated its keys since. Fetch them again, once.
            *self.metadata.lock().await = None;
            client = self.client().await?;
        }
        let verifier_ = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier_, &nonce)
            .map_err(|e| invalid(claims_error(&e)))?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| invalid(short(&e.to_string())))?;
            let key = id_token
                .signing_key(&verifier_)
                .map_err(|e| invalid(short(&e.to_string())))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), alg, key)
                .map_err(|e| invalid(short(&e.to_string())))?;
            if actual != *expected {
                return Err(invalid("the access token does not match its hash".into()));
            }
        }
        let email = claims
            .email()
            .map(|e| e.as_str().to_string())
            .ok_or_else(|| {
                Refusal::new(
                    SsoFailure::UnverifiedEmail,
                    format!("{label} did not give an email address for this account, so it cannot sign in here."),
                )
            })?;
        let identity = Identity {
            provider: Provider::Oidc,
            subject: claims.subject().as_str().to_string(),
            email,
            email_verified: claims.email_verified() == Some(true),
            label: label.clone(),
        };
        if let Some(hd) = &self.settings.hosted_domain {
            let theirs = claims.additional_claims().hd.as_deref().unwrap_or_default();
            if !theirs.eq_ignore_ascii_case(hd) {
                return Err(Refusal {
                    failure: SsoFailure::NotAllowed,
                    message: format!("Only {hd} accounts of {label} can sign in here."),
                    identity: Some(identity),
                });
            }
        }
        Ok(identity)
    }
}

/// What was wrong with an ID token, in a few words.
fn claims_error(e: &ClaimsVerificationError) -> String {
    match e {
        ClaimsVerificationError::Expired(_) => "it has expired".into(),
        ClaimsVerificationError::InvalidAudience(_) => "it is meant for another client".into(),
        ClaimsVerificationError::InvalidIssuer(_) => "another issuer made it".into(),
        ClaimsVerificationError::InvalidNonce(_) => "it belongs to another sign-in".into(),
        ClaimsVerificationError::SignatureVerification(s) => {
            format!("its signature does not verify: {}", short(&s.to_string()))
        }
        other => short(&other.to_string()),
    }
}

/// A one-line reason from a library error, without anything long.
fn short(s: &str) -> String {
    let s = s.lines().next().unwrap_or_default();
    if s.chars().count() > 160 {
        format!("{}...", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    short(&out)
}

/// The OAuth error code of a refused exchange (`invalid_grant`, ...), or a
/// word for a failure to reach the provider.
fn token_error<RE, T>(e: &openidconnect::RequestTokenError<RE, T>) -> String
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => {
            let code = serde_json::to_value(r)
                .ok()
                .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(String::from))
                .unwrap_or_else(|| "refused".into());
            short(&code)
        }
        openidconnect::RequestTokenError::Request(_) => "it could not be reached".into(),
        _ => "its answer could not be read".into(),
    }
}

/// What the SSO routes share.
#[derive(Clone)]
pub struct SsoState {
    pub app: AppState,
    pub oidc: Arc<Oidc>,
}

pub fn routes(state: SsoState) -> Router {
    Router::new()
        .route("/auth/oidc/start", get(start))
        .route("/auth/oidc/callback", get(callback))
        .with_state(state)
}

#[derive(Deserialize)]
pub struct StartQuery {
    link: Option<String>,
}

fn secure(state: &AppState) -> &'static str {
    if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// Back to the sign-in page (or Settings, for a link) with `message`.
async fn refuse_to(session: &Session, to: &str, message: &str) -> Response {
    if let Err(e) = session.insert(ERROR_KEY, message).await {
        tracing::warn!(error = %e, "the session could not keep an SSO refusal");
    }
    Redirect::to(to).into_response()
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

async fn start(
    State(s): State<SsoState>,
    session: Session,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let ip = client.map(|Extension(ClientIp(ip))| ip).unwrap_or_default();
    let cx = Cx::from_parts(s.app.clone(), session.clone(), ip, &headers);
    let user = match cx.user().await {
        Ok(u) => u.map(|(u, _)| u),
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let (link_user, back) = match q.link.as_deref() {
        None => {
            if user.is_some() {
                return Redirect::to("/").into_response();
            }
            (None, "/login")
        }
        Some(token) => {
            let Some(user) = user else {
                return refuse_to(
                    &session,
                    "/login",
                    "Sign in first, then link from Settings.",
                )
                .await;
            };
            let expected = session
                .remove::<String>(LINK_TOKEN_KEY)
                .await
                .ok()
                .flatten();
            let same = expected
                .is_some_and(|e| control::crypto::secret_eq(e.as_bytes(), token.as_bytes()));
            if !same {
                return refuse_to(
                    &session,
                    "/settings",
                    "That link was not from this Settings page (or was already used). Use the Link button again.",
                )
                .await;
            }
            (Some(user), "/settings")
        }
    };
    let (url, state, nonce, verifier) = match s.oidc.authorize().await {
        Ok(v) => v,
        Err(r) => return refuse_to(&session, back, &r.message).await,
    };
    let browser = control::sso::new_browser_binding();
    if let Err(e) = control::sso::begin_flow(
        &s.app.store,
        Provider::Oidc,
        state.secret(),
        &browser,
        &SecretString::from(verifier.secret().to_string()),
        &SecretString::from(nonce.secret().to_string()),
        link_user,
        cx.now,
    )
    .await
    {
        return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let cookie = format!(
        "{FLOW_COOKIE}={browser}; Path=/auth/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        control::sso::FLOW_TTL_SECS,
        secure(&s.app)
    );
    let mut response = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn flow_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == FLOW_COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn callback(
    State(s): State<SsoState>,
    session: Session,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let ip = client.map(|Extension(ClientIp(ip))| ip).unwrap_or_default();
    let cx = Cx::from_parts(s.app.clone(), session.clone(), ip, &headers);
    let mut response = finish(&s, &cx, q, flow_cookie(&headers)).await;
    let clear = format!(
        "{FLOW_COOKIE}=; Path=/auth/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        secure(&s.app)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn finish(s: &SsoState, cx: &Cx, q: CallbackQuery, browser: Option<String>) -> Response {
    let store = &s.app.store;
    let label = s.oidc.settings.label.clone();
    let Some(state) = q.state.filter(|v| !v.is_empty() && v.len() <= 512) else {
        record(cx, None, SsoFailure::UnknownState).await;
        return refuse_to(&cx.session, "/login", control::sso::UNKNOWN_STATE).await;
    };
    let flow =
        match control::sso::take_flow(store, Provider::Oidc, &state, browser.as_deref(), cx.now)
            .await
        {
            Ok(flow) => flow,
            Err(control::ControlError::Unauthenticated(m)) => {
                record(cx, None, SsoFailure::UnknownState).await;
                return refuse_to(&cx.session, "/login", &m).await;
            }
            Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    let back = if flow.link_user.is_some() {
        "/settings"
    } else {
        "/login"
    };
    if let Some(error) = q.error {
        let why = q
            .error_description
            .map(|d| short(&d))
            .unwrap_or_else(|| short(&error));
        record(cx, None, SsoFailure::ProviderError).await;
        return refuse_to(
            &cx.session,
            back,
            &format!("{label} did not sign you in: {why}."),
        )
        .await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 2048) else {
        record(cx, None, SsoFailure::ProviderError).await;
        return refuse_to(
            &cx.session,
            back,
            &format!("{label} sent no sign-in code. Start again."),
        )
        .await;
    };
    let identity = match s.oidc.identity(code, &flow.verifier, &flow.nonce).await {
        Ok(identity) => identity,
        Err(r) => {
            record(cx, r.identity.as_ref(), r.failure).await;
            return refuse_to(&cx.session, back, &r.message).await;
        }
    };
    match flow.link_user {
        Some(user) => {
            let signed_in = cx.user().await.ok().flatten().map(|(u, _)| u);
            if signed_in != Some(user) {
                record(cx, Some(&identity), SsoFailure::UnknownState).await;
                return refuse_to(
                    &cx.session,
                    "/login",
                    "The account that started this link is no longer signed in here. Sign in and link again.",
                )
                .await;
            }
            match control::sso::link(store, user, &identity, &cx.meta, cx.now).await {
                Ok(()) => Redirect::to("/settings").into_response(),
                Err(e) => refuse_to(&cx.session, "/settings", &e.to_string()).await,
            }
        }
        None => match control::sso::sign_in(store, &identity, &cx.meta, cx.now).await {
            Ok(done) => match cx.sign_in_cookie(done).await {
                Ok(cookie) => {
                    let mut response = Redirect::to("/").into_response();
                    if let Ok(v) = HeaderValue::from_str(&cookie) {
                        response.headers_mut().append(header::SET_COOKIE, v);
                    }
                    response
                }
                Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            },
            Err(control::ControlError::Unavailable(e)) => {
                tracing::warn!(error = %e, "SSO sign-in: the database is unavailable");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable. Try again in a minute.",
                )
            }
            Err(e) => refuse_to(&cx.session, "/login", &e.to_string()).await,
        },
    }
}

/// Records a refusal: for the account `identity` names, else unattributed.
async fn record(cx: &Cx, identity: Option<&Identity>, failure: SsoFailure) {
    match identity {
        Some(identity) => {
            control::sso::record_failure(&cx.state.store, identity, failure, &cx.meta, cx.now).await
        }
        None => {
            if let Err(e) = control::sso::record_unattributed(
                &cx.state.store,
                Provider::Oidc,
                failure,
                &cx.meta,
                cx.now,
            )
            .await
            {
                tracing::warn!(error = %e, reason = failure.as_str(), "a refused SSO sign-in could not be recorded");
            }
        }
    }
}
