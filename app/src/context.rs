//! Server-side request context for server functions: the shared state, who is
//! asking, and where the request came from.

use std::sync::Arc;

use axum::Extension;
use control::access::{Actor, RequestMeta};
use control::accounts::SetupGate;
use control::sessions::keys;
use control::store::Store;
use control::{OrgId, Timestamp, UserId};
use leptos::prelude::*;
use tower_sessions::Session;

use crate::AppError;

/// State shared by every request, given to server functions through context.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub setup: Arc<SetupGate>,
    /// The dashboard's public base URL, used to build invitation links and
    /// the links in emails.
    pub public_url: String,
    /// Queues commands for agents and wakes their long-polls after the commit.
    pub delivery: Arc<control::delivery::Delivery>,
    /// SHA-256 pin of the agent CA, carried in registration tokens.
    pub ca_pin: String,
    /// `https://HOST:PORT` of the agent gateway, for the register command.
    pub agent_url: String,
    /// The audit public key (base64url) and its id, for customers to pin.
    pub audit_key: crate::api::AuditKeyView,
    /// The master key of the secrets at rest.
    pub secrets: Arc<control::secrets::Keyring>,
    /// The signed agent releases the gateway serves (for "Update agent").
    pub agent_releases: std::path::PathBuf,
    /// Whether email can be sent (SMTP configured): password reset by email
    /// is offered, and sign-in notices are mailed, only then.
    pub mail_enabled: bool,
    /// The identity providers the sign-in page offers.
    pub sso: crate::sso_page::SsoOffer,
}

/// The client's address as decided by the server (socket peer, or a trusted
/// proxy's header when configured). Inserted into request extensions.
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

/// The per-response CSP nonce chosen by the server's security-header layer.
#[derive(Clone, Debug)]
pub struct CspNonce(pub String);

pub struct Cx {
    pub state: AppState,
    pub session: Session,
    pub meta: RequestMeta,
    pub now: Timestamp,
    /// The browser's device cookie, when it sent a well-formed one.
    pub device: Option<String>,
}

/// The device cookie: which browser signed in, for new sign-in notices
/// (control::notices). HttpOnly, about 400 days.
pub const DEVICE_COOKIE: &str = "ph_device";
const DEVICE_COOKIE_SECS: i64 = 400 * 86_400;

pub async fn cx() -> Result<Cx, AppError> {
    let state = use_context::<AppState>().ok_or(AppError::Internal)?;
    let session: Session = leptos_axum::extract()
        .await
        .map_err(|_| AppError::Internal)?;
    let Extension(ClientIp(ip)) = leptos_axum::extract::<Extension<ClientIp>>()
        .await
        .unwrap_or(Extension(ClientIp(String::new())));
    let headers: axum::http::HeaderMap = leptos_axum::extract()
        .await
        .map_err(|_| AppError::Internal)?;
    Ok(Cx::from_parts(state, session, ip, &headers))
}

impl Cx {
    /// A request's context from its parts: the shared state, its session,
    /// the client's address as the edge decided it, and its headers (for the
    /// browser). Plain axum handlers (downloads) build theirs this way.
    pub fn from_parts(
        state: AppState,
        session: Session,
        ip: String,
        headers: &axum::http::HeaderMap,
    ) -> Cx {
        let ua = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let device = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == DEVICE_COOKIE)
            .map(|(_, v)| v.to_string())
            .filter(|v| control::notices::valid_device_id(v));
        Cx {
            state,
            session,
            meta: RequestMeta::new(ip, ua),
            now: Timestamp::now(),
            device,
        }
    }

    /// The signed-in user, if the session is valid and within its absolute lifetime.
    pub async fn user(&self) -> Result<Option<(UserId, Option<OrgId>)>, AppError> {
        let Some(user) = self.session.get::<i64>(keys::USER).await? else {
            return Ok(None);
        };
        let created = self.session.get::<i64>(keys::CREATED).await?.unwrap_or(0);
        if Timestamp(created).plus_secs(control::sessions::ABSOLUTE_SECS) <= self.now {
            self.session.flush().await?;
            return Ok(None);
        }
        let org = self.session.get::<i64>(keys::ORG).await?.map(OrgId);
        Ok(Some((UserId(user), org)))
    }

    /// The request's metadata with how its session signed in (SSO or not).
    pub async fn session_meta(&self) -> Result<control::access::RequestMeta, AppError> {
        let mut meta = self.meta.clone();
        let method = self.session.get::<String>(keys::METHOD).await?;
        meta.sso = method
            .as_deref()
            .and_then(control::SsoProvider::parse)
            .is_some();
        Ok(meta)
    }

    /// The signed-in actor, or `Unauthenticated`.
    pub async fn actor(&self) -> Result<Actor, AppError> {
        let (user, org) = self.user().await?.ok_or_else(AppError::signed_out)?;
        let meta = self.session_meta().await?;
        match control::access::actor(&self.state.store, user, org, meta).await {
            Ok(actor) => {
                if Some(actor.org()) != org {
                    self.session.insert(keys::ORG, actor.org().0).await?;
                }
                Ok(actor)
            }
            Err(control::ControlError::Unauthenticated(_)) => {
                self.session.flush().await?;
                Err(AppError::signed_out())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Holds a password sign-in that waits for its two-factor code, under a
    /// new session id, signed out until the code is right.
    pub async fn start_pending(&self, pending: control::mfa::Pending) -> Result<(), AppError> {
        self.session.cycle_id().await?;
        self.session.clear().await;
        self.session
            .insert(keys::PENDING_USER, pending.user.0)
            .await?;
        self.session
            .insert(keys::PENDING_ORG, pending.org.0)
            .await?;
        self.session.insert(keys::PENDING_AT, pending.at.0).await?;
        Ok(())
    }

    /// The sign-in this session holds for its two-factor code, if any.
    pub async fn pending_sign_in(&self) -> Result<Option<control::mfa::Pending>, AppError> {
        let user = self.session.get::<i64>(keys::PENDING_USER).await?;
        let org = self.session.get::<i64>(keys::PENDING_ORG).await?;
        let at = self.session.get::<i64>(keys::PENDING_AT).await?;
        Ok(match (user, org, at) {
            (Some(user), Some(org), Some(at)) => Some(control::mfa::Pending {
                user: UserId(user),
                org: OrgId(org),
                at: Timestamp(at),
            }),
            _ => None,
        })
    }

    /// Where email links point and whether email goes out.
    pub fn mailing(&self) -> control::notices::Mailing<'_> {
        control::notices::Mailing {
            ring: &self.state.secrets,
            base_url: &self.state.public_url,
            enabled: self.state.mail_enabled,
        }
    }

    /// Completes a sign-in: records the device and network (telling the
    /// account's owner when either is new), renews the device cookie, and
    /// starts the session.
    pub async fn finish_sign_in(&self, done: control::accounts::LoggedIn) -> Result<(), AppError> {
        let cookie = self.sign_in_cookie(done).await?;
        if let (Some(response), Ok(value)) = (
            use_context::<leptos_axum::ResponseOptions>(),
            axum::http::HeaderValue::from_str(&cookie),
        ) {
            response.append_header(axum::http::header::SET_COOKIE, value);
        }
        Ok(())
    }

    /// [`Self::finish_sign_in`] for a plain axum handler: does the same and
    /// returns the device cookie (a `Set-Cookie` value) for the response.
    pub async fn sign_in_cookie(
        &self,
        done: control::accounts::LoggedIn,
    ) -> Result<String, AppError> {
        let device = self
            .device
            .clone()
            .unwrap_or_else(control::notices::new_device_id);
        control::notices::after_sign_in(
            &self.state.store,
            self.mailing(),
            done.user,
            &device,
            done.method,
            &self.meta,
            self.now,
        )
        .await?;
        let secure = if self.state.public_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        self.start_session(done.user, done.org, done.method).await?;
        Ok(format!(
            "{DEVICE_COOKIE}={device}; Path=/; Max-Age={DEVICE_COOKIE_SECS}; HttpOnly; SameSite=Lax{secure}"
        ))
    }

    /// Starts a signed-in session under a new id (no fixation across login),
    /// remembering how it signed in (`password`, `oidc`, ...: an
    /// organisation may require SSO).
    pub async fn start_session(
        &self,
        user: UserId,
        org: OrgId,
        method: &str,
    ) -> Result<(), AppError> {
        self.session.cycle_id().await?;
        self.session.clear().await;
        self.session.insert(keys::USER, user.0).await?;
        self.session.insert(keys::METHOD, method).await?;
        self.session.insert(keys::ORG, org.0).await?;
        self.session.insert(keys::CREATED, self.now.0).await?;
        self.session.insert(keys::IP, &self.meta.ip).await?;
        self.session.insert(keys::UA, &self.meta.user_agent).await?;
        Ok(())
    }
}
