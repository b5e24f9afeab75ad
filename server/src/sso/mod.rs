//! Sign-in with an identity provider: an OpenID Connect provider ([`oidc`]:
//! Google by default, or any provider with discovery: Okta, Entra ID,
//! Keycloak) and GitHub ([`github`], OAuth 2). The rules about accounts are
//! `control::sso`'s; this is the protocol and its routes.
//!
//! - `GET /auth/{oidc|github}/start` starts a sign-in;
//!   `.../start?link=T` starts linking the signed-in account, `T` being the
//!   one-time token the Settings page put in its link (`app::sso_page`), so
//!   another site cannot start a link for a signed-in browser;
//!   `.../start?invite=TOKEN` accepts an invitation with the provider's
//!   identity (`control::sso::accept_invite`). The start
//!   makes a `state` (and for OpenID Connect a nonce) and a PKCE verifier,
//!   keeps them (`control::sso::begin_flow`) bound to a fresh browser cookie
//!   (`ph_sso`, HttpOnly, path `/auth/`, 10 minutes), and sends the browser
//!   to the provider's authorization endpoint. At most
//!   `control::sso::STARTS_PER_CLIENT` starts per client address (HTTP 429
//!   with `Retry-After` past it).
//! - `GET /auth/{oidc|github}/callback` takes the flow once, by `state` and
//!   the browser cookie; the provider's client exchanges the code and checks
//!   the answer, giving an identity; then it signs in or links through
//!   `control::sso`.
//! - **Refusals** go back to the sign-in page (Settings for a link) with a
//!   sentence saying what was wrong, kept in the session for that one page,
//!   and are recorded (`control::sso::record_failure`, `record_unattributed`).
//! - The HTTP clients follow no redirects, answer within 10 s, and trust the
//!   public roots plus the provider's `*_ca_file` when set.

pub mod github;
pub mod oidc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use app::context::{AppState, ClientIp, Cx};
use control::sessions::keys::{SSO_ERROR as ERROR_KEY, SSO_LINK_TOKEN as LINK_TOKEN_KEY};
use control::sso::{Identity, Provider, SsoFailure};

pub use github::{GitHub, GitHubSettings};
pub use oidc::{Oidc, OidcSettings};

/// The browser cookie a flow is bound to.
const FLOW_COOKIE: &str = "ph_sso";
/// The provider must answer each request within this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A bad SSO setting, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SsoConfigError(String);

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

/// What a provider's client gives the routes to start a flow.
struct Authorization {
    url: String,
    state: String,
    /// OpenID Connect's nonce; empty for GitHub.
    nonce: SecretString,
    verifier: SecretString,
}

/// An HTTP client for a provider: no redirects, a timeout, the public roots
/// and `ca_pem`.
fn http_client(ca_pem: Option<&[u8]>, setting: &str) -> Result<reqwest::Client, SsoConfigError> {
    let mut http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .user_agent("pilothouse-sso");
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem)
            .map_err(|e| SsoConfigError(format!("{setting}: {e}")))?;
        http = http.add_root_certificate(ca);
    }
    http.build()
        .map_err(|e| SsoConfigError(format!("cannot make an HTTPS client: {e}")))
}

/// Reads a CA file setting: a PEM certificate.
fn read_ca(
    path: Option<&std::path::Path>,
    setting: &str,
) -> Result<Option<Vec<u8>>, SsoConfigError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .map_err(|e| SsoConfigError(format!("cannot read {setting} {}: {e}", path.display())))?;
    if reqwest::Certificate::from_pem(&pem).is_err() {
        return Err(SsoConfigError(format!(
            "{setting} {} is not a PEM certificate",
            path.display()
        )));
    }
    Ok(Some(pem))
}

/// Checks a provider URL setting: `https://`, or `http://` on a loopback
/// address (a provider on this machine); no trailing slash.
fn provider_url(raw: &str, setting: &str) -> Result<String, SsoConfigError> {
    let url = raw.trim().trim_end_matches('/').to_string();
    let loopback_http = url
        .strip_prefix("http://")
        .map(|rest| {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            host == "localhost" || host == "127.0.0.1" || rest.starts_with("[::1]")
        })
        .unwrap_or(false);
    if !(url.starts_with("https://") || loopback_http) || reqwest::Url::parse(&url).is_err() {
        return Err(SsoConfigError(format!(
            "{setting} is {url}: it must be an https:// URL (http:// only on a loopback address)"
        )));
    }
    Ok(url)
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
/// word for a failure to reach the provider. GitHub answers a refusal with
/// HTTP 200 and `{"error": ...}`, which the library reads as a token
/// response that does not parse: its code is taken from the body.
fn token_error<RE, T>(e: &oauth2::RequestTokenError<RE, T>) -> String
where
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponse + 'static,
{
    let code_in = |v: serde_json::Value| {
        v.get("error")
            .and_then(|c| c.as_str())
            .map(|c| short(c).chars().filter(|c| c.is_ascii_graphic()).collect())
    };
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => serde_json::to_value(r)
            .ok()
            .and_then(code_in)
            .unwrap_or_else(|| "refused".into()),
        oauth2::RequestTokenError::Parse(_, body) => serde_json::from_slice(body)
            .ok()
            .and_then(code_in)
            .unwrap_or_else(|| "its answer could not be read".into()),
        oauth2::RequestTokenError::Request(_) => "it could not be reached".into(),
        _ => "its answer could not be read".into(),
    }
}

/// What the SSO routes share: the configured providers.
#[derive(Clone)]
pub struct SsoState {
    pub app: AppState,
    pub oidc: Option<Arc<Oidc>>,
    pub github: Option<Arc<GitHub>>,
}

/// A configured provider.
#[derive(Clone)]
enum Idp {
    Oidc(Arc<Oidc>),
    GitHub(Arc<GitHub>),
}

impl Idp {
    fn provider(&self) -> Provider {
        match self {
            Idp::Oidc(_) => Provider::Oidc,
            Idp::GitHub(_) => Provider::GitHub,
        }
    }

    fn label(&self) -> &str {
        match self {
            Idp::Oidc(o) => o.label(),
            Idp::GitHub(g) => g.label(),
        }
    }

    async fn authorize(&self) -> Result<Authorization, Refusal> {
        match self {
            Idp::Oidc(o) => o.authorize().await,
            Idp::GitHub(g) => Ok(g.authorize()),
        }
    }

    async fn identity(
        &self,
        code: String,
        verifier: &SecretString,
        nonce: &SecretString,
    ) -> Result<Identity, Refusal> {
        match self {
            Idp::Oidc(o) => o.identity(code, verifier, nonce).await,
            Idp::GitHub(g) => g.identity(code, verifier).await,
        }
    }
}

impl SsoState {
    /// The provider a path names, when configured.
    fn idp(&self, name: &str) -> Option<Idp> {
        match Provider::parse(name)? {
            Provider::Oidc => self.oidc.clone().map(Idp::Oidc),
            Provider::GitHub => self.github.clone().map(Idp::GitHub),
        }
    }
}

pub fn routes(state: SsoState) -> Router {
    Router::new()
        .route("/auth/{provider}/start", get(start))
        .route("/auth/{provider}/callback", get(callback))
        .with_state(state)
}

#[derive(Deserialize)]
pub struct StartQuery {
    link: Option<String>,
    /// Accept this invitation (its token) with the provider's identity.
    invite: Option<String>,
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

fn not_offered() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "This sign-in method is not offered here.",
    )
}

/// The provider a route names and the request's context, or `None` when the
/// provider is not configured.
fn prelude(
    s: &SsoState,
    provider: &str,
    session: &Session,
    client: Option<Extension<ClientIp>>,
    headers: &HeaderMap,
) -> Option<(Idp, Cx)> {
    let idp = s.idp(provider)?;
    let ip = client.map(|Extension(ClientIp(ip))| ip).unwrap_or_default();
    Some((
        idp,
        Cx::from_parts(s.app.clone(), session.clone(), ip, headers),
    ))
}

async fn start(
    State(s): State<SsoState>,
    Path(provider): Path<String>,
    session: Session,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some((idp, cx)) = prelude(&s, &provider, &session, client, &headers) else {
        return not_offered();
    };
    let user = match cx.user().await {
        Ok(u) => u.map(|(u, _)| u),
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut invite_hash = None;
    let (link_user, back) = match q.link.as_deref() {
        None => {
            if user.is_some() {
                return Redirect::to("/").into_response();
            }
            if let Some(token) = q.invite.as_deref() {
                // Checked now, so a dead invitation is refused before the
                // provider; checked again when it is accepted.
                if let Err(e) = control::team::preview_invite(&s.app.store, token, cx.now).await {
                    return refuse_to(&session, "/login", &e.to_string()).await;
                }
                invite_hash = Some(control::team::invite_hash(token));
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
    let auth = match idp.authorize().await {
        Ok(v) => v,
        Err(r) => return refuse_to(&session, back, &r.message).await,
    };
    let browser = control::sso::new_browser_binding();
    if let Err(e) = control::sso::begin_flow(
        &s.app.store,
        idp.provider(),
        &auth.state,
        &browser,
        &auth.verifier,
        &auth.nonce,
        link_user,
        invite_hash.as_deref(),
        &cx.meta.ip,
        cx.now,
    )
    .await
    {
        return match e {
            control::ControlError::Throttled(wait) => {
                let secs = wait.as_secs().max(1);
                let mut res = plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too many sign-ins were started from your address. Try again in {secs} seconds."),
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
                res
            }
            e => plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    let cookie = format!(
        "{FLOW_COOKIE}={browser}; Path=/auth/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        control::sso::FLOW_TTL_SECS,
        secure(&s.app)
    );
    let mut response = Redirect::to(&auth.url).into_response();
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
    Path(provider): Path<String>,
    session: Session,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some((idp, cx)) = prelude(&s, &provider, &session, client, &headers) else {
        return not_offered();
    };
    let mut response = finish(&idp, &cx, q, flow_cookie(&headers)).await;
    let clear = format!(
        "{FLOW_COOKIE}=; Path=/auth/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        secure(&s.app)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn finish(idp: &Idp, cx: &Cx, q: CallbackQuery, browser: Option<String>) -> Response {
    let store = &cx.state.store;
    let provider = idp.provider();
    let label = idp.label().to_string();
    let Some(state) = q.state.filter(|v| !v.is_empty() && v.len() <= 512) else {
        record(cx, provider, None, SsoFailure::UnknownState).await;
        return refuse_to(&cx.session, "/login", control::sso::UNKNOWN_STATE).await;
    };
    let flow =
        match control::sso::take_flow(store, provider, &state, browser.as_deref(), cx.now).await {
            Ok(flow) => flow,
            Err(control::ControlError::Unauthenticated(m)) => {
                record(cx, provider, None, SsoFailure::UnknownState).await;
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
        record(cx, provider, None, SsoFailure::ProviderError).await;
        return refuse_to(
            &cx.session,
            back,
            &format!("{label} did not sign you in: {why}."),
        )
        .await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 2048) else {
        record(cx, provider, None, SsoFailure::ProviderError).await;
        return refuse_to(
            &cx.session,
            back,
            &format!("{label} sent no sign-in code. Start again."),
        )
        .await;
    };
    let identity = match idp.identity(code, &flow.verifier, &flow.nonce).await {
        Ok(identity) => identity,
        Err(r) => {
            record(cx, provider, r.identity.as_ref(), r.failure).await;
            return refuse_to(&cx.session, back, &r.message).await;
        }
    };
    match flow.link_user {
        Some(user) => {
            let signed_in = cx.user().await.ok().flatten().map(|(u, _)| u);
            if signed_in != Some(user) {
                record(cx, provider, Some(&identity), SsoFailure::UnknownState).await;
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
        None => match signed_in_or_accepted(store, &flow, &identity, cx).await {
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

/// Signs in with `identity`, or accepts the flow's invitation with it.
async fn signed_in_or_accepted(
    store: &control::store::Store,
    flow: &control::sso::Flow,
    identity: &Identity,
    cx: &Cx,
) -> Result<control::accounts::LoggedIn, control::ControlError> {
    match &flow.invite_hash {
        Some(invite) => {
            control::sso::accept_invite(store, invite, identity, &cx.meta, cx.now).await
        }
        None => control::sso::sign_in(store, identity, &cx.meta, cx.now).await,
    }
}

/// Records a refusal: for the account `identity` names, else unattributed.
async fn record(cx: &Cx, provider: Provider, identity: Option<&Identity>, failure: SsoFailure) {
    match identity {
        Some(identity) => {
            control::sso::record_failure(&cx.state.store, identity, failure, &cx.meta, cx.now).await
        }
        None => {
            if let Err(e) = control::sso::record_unattributed(
                &cx.state.store,
                provider,
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
