//! The OpenID Connect client (the `openidconnect` crate): discovery at
//! `ISSUER/.well-known/openid-configuration`, fetched on first use and kept
//! for an hour with the provider's keys (fetched again at once when an ID
//! token names a key they lack, as after a key rotation); the authorization
//! code flow with S256 PKCE, `state` and nonce, scopes `openid email
//! profile`, and `hd` when a hosted domain is set; the code exchanged with
//! the client secret (HTTP Basic); the ID token checked (signature against
//! the provider's keys, issuer, audience, expiry, nonce, and the access
//! token's hash when present), then the hosted domain (`hd` claim) when one
//! is set. A provider that cannot be reached refuses the sign-in with a
//! sentence and is asked again next time.

use std::time::{Duration, Instant};

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

use control::sso::{Identity, Provider, SsoFailure};

use super::{describe, http_client, provider_url, read_ca, short, token_error};
use super::{Authorization, Refusal, SsoConfigError};
use crate::config::Config;

/// Provider metadata and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);

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
        let issuer = provider_url(
            config.oidc_issuer.as_deref().unwrap_or(GOOGLE_ISSUER),
            "oidc_issuer",
        )?;
        let issuer = IssuerUrl::new(issuer.clone())
            .map_err(|e| SsoConfigError(format!("oidc_issuer {issuer} is not a URL: {e}")))?;
        let hosted_domain = match config.oidc_hosted_domain.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(
                control::sso::normalize_domain(d)
                    .map_err(|e| SsoConfigError(format!("oidc_hosted_domain: {e}")))?,
            ),
        };
        let ca_pem = read_ca(config.oidc_ca_file.as_deref(), "oidc_ca_file")?;
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
        let http = http_client(settings.ca_pem.as_deref(), "oidc_ca_file")?;
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
    pub(super) async fn authorize(&self) -> Result<Authorization, Refusal> {
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
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: SecretString::from(nonce.secret().clone()),
            verifier: SecretString::from(verifier.secret().clone()),
        })
    }

    /// Exchanges `code` and checks the answer: the identity it vouches for.
    pub(super) async fn identity(
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
