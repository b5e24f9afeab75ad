//! Sign-in with GitHub (or GitHub Enterprise Server): OAuth 2 with the
//! `oauth2` crate. The authorization code flow with `state` and S256 PKCE,
//! scopes `read:user user:email` (plus `read:org` when sign-in is limited to
//! an organisation); the code exchanged with the client secret in the
//! request body. Then the REST API with the access token: `GET /user` for
//! the account's stable numeric id, `GET /user/emails` for its primary email
//! and whether GitHub verified it, and, when `github_org` is set,
//! `GET /user/memberships/orgs/ORG`, which must say `active`. The token is
//! used for these calls only and never stored.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use control::sso::{Identity, Provider, SsoFailure};

use super::{describe, http_client, provider_url, read_ca, short, token_error};
use super::{Authorization, Refusal, SsoConfigError};
use crate::config::Config;

pub const GITHUB_URL: &str = "https://github.com";
pub const GITHUB_API_URL: &str = "https://api.github.com";

type GitHubClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The GitHub settings, checked.
pub struct GitHubSettings {
    client_id: String,
    client_secret: SecretString,
    /// Where people sign in: `https://github.com`, or an Enterprise Server.
    web_url: String,
    /// The REST API: `https://api.github.com`, or `WEB/api/v3`.
    api_url: String,
    org: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for GitHubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSettings")
            .field("client_id", &self.client_id)
            .field("web_url", &self.web_url)
            .field("api_url", &self.api_url)
            .field("org", &self.org)
            .finish_non_exhaustive()
    }
}

impl GitHubSettings {
    /// The settings, or `None` when `github_client_id` is unset (no GitHub
    /// sign-in).
    pub fn from_config(config: &Config) -> Result<Option<GitHubSettings>, SsoConfigError> {
        let bad = |m: String| Err(SsoConfigError(m));
        let Some(client_id) = config
            .github_client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
        else {
            if config.github_client_secret.is_some() {
                return bad("github_client_secret is set but github_client_id is not: set it to turn on GitHub sign-in".into());
            }
            return Ok(None);
        };
        let Some(client_secret) = config
            .github_client_secret
            .clone()
            .filter(|s| !s.expose_secret().trim().is_empty())
        else {
            return bad("github_client_id is set but github_client_secret is not: set it, or PILOTHOUSE_GITHUB_CLIENT_SECRET_FILE to a file holding it".into());
        };
        let web_url = provider_url(
            config.github_url.as_deref().unwrap_or(GITHUB_URL),
            "github_url",
        )?;
        let api_url = match config.github_api_url.as_deref() {
            Some(api) => provider_url(api, "github_api_url")?,
            None if web_url == GITHUB_URL => GITHUB_API_URL.to_string(),
            // GitHub Enterprise Server serves its API under /api/v3.
            None => format!("{web_url}/api/v3"),
        };
        let org = match config.github_org.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(org)
                if org.len() <= 39
                    && org.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !org.starts_with('-') =>
            {
                Some(org.to_string())
            }
            Some(org) => {
                return bad(format!(
                    "github_org is {org}: a GitHub organisation name is letters, digits and hyphens"
                ))
            }
        };
        Ok(Some(GitHubSettings {
            client_id,
            client_secret,
            web_url,
            api_url,
            org,
            ca_pem: read_ca(config.github_ca_file.as_deref(), "github_ca_file")?,
        }))
    }
}

/// The GitHub client.
pub struct GitHub {
    settings: GitHubSettings,
    client: GitHubClient,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Membership {
    state: String,
}

impl GitHub {
    pub fn new(settings: GitHubSettings, public_url: &str) -> Result<GitHub, SsoConfigError> {
        let url = |u: String, what: &str| {
            reqwest::Url::parse(&u).map_err(|e| SsoConfigError(format!("{what} {u}: {e}")))
        };
        let client = BasicClient::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                settings.client_secret.expose_secret().to_string(),
            ))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(AuthUrl::from_url(url(
                format!("{}/login/oauth/authorize", settings.web_url),
                "github_url",
            )?))
            .set_token_uri(TokenUrl::from_url(url(
                format!("{}/login/oauth/access_token", settings.web_url),
                "github_url",
            )?))
            .set_redirect_uri(RedirectUrl::from_url(url(
                format!("{}/auth/github/callback", public_url.trim_end_matches('/')),
                "public_url",
            )?));
        let http = http_client(settings.ca_pem.as_deref(), "github_ca_file")?;
        Ok(GitHub {
            settings,
            client,
            http,
        })
    }

    /// How the pages name it.
    pub fn label(&self) -> &str {
        "GitHub"
    }

    pub(super) fn authorize(&self) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("read:user".into()))
            .add_scope(Scope::new("user:email".into()))
            .set_pkce_challenge(challenge);
        if self.settings.org.is_some() {
            request = request.add_scope(Scope::new("read:org".into()));
        }
        let (url, state) = request.url();
        Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: SecretString::from(String::new()),
            verifier: SecretString::from(verifier.secret().clone()),
        }
    }

    /// A GET of the REST API with the access token: the status and body.
    async fn api(&self, token: &str, path: &str) -> Result<(u16, String), Refusal> {
        let res = self
            .http
            .get(format!("{}{path}", self.settings.api_url))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %describe(&e), "GitHub API unreachable");
                Refusal::new(
                    SsoFailure::ProviderError,
                    "GitHub cannot be reached right now, so sign-in with it is not possible. Try again in a minute.",
                )
            })?;
        let status = res.status().as_u16();
        let body = res.text().await.map_err(|e| {
            Refusal::new(
                SsoFailure::ProviderError,
                format!(
                    "GitHub's answer could not be read ({}).",
                    short(&e.to_string())
                ),
            )
        })?;
        Ok((status, body))
    }

    fn unexpected(path: &str, status: u16) -> Refusal {
        tracing::warn!(path, status, "GitHub API answered unexpectedly");
        Refusal::new(
            SsoFailure::ProviderError,
            format!("GitHub did not answer as expected ({path}: HTTP {status}). Start again."),
        )
    }

    /// Exchanges `code` and asks the API who it is.
    pub(super) async fn identity(
        &self,
        code: String,
        verifier: &SecretString,
    ) -> Result<Identity, Refusal> {
        let tokens = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(error = %describe(&e), "GitHub code exchange refused");
                Refusal::new(
                    SsoFailure::ProviderError,
                    format!(
                        "GitHub did not accept the sign-in code ({}). Sign-in codes work once: start again.",
                        token_error(&e)
                    ),
                )
            })?;
        let token = tokens.access_token().secret();
        let (status, body) = self.api(token, "/user").await?;
        if status != 200 {
            return Err(Self::unexpected("/user", status));
        }
        let user: User =
            serde_json::from_str(&body).map_err(|_| Self::unexpected("/user", status))?;
        let (status, body) = self.api(token, "/user/emails").await?;
        if status != 200 {
            return Err(Self::unexpected("/user/emails", status));
        }
        let emails: Vec<Email> =
            serde_json::from_str(&body).map_err(|_| Self::unexpected("/user/emails", status))?;
        let primary = emails.into_iter().find(|e| e.primary).ok_or_else(|| {
            Refusal::new(
                SsoFailure::UnverifiedEmail,
                "GitHub gave no primary email address for this account, so it cannot sign in here.",
            )
        })?;
        let identity = Identity {
            provider: Provider::GitHub,
            subject: user.id.to_string(),
            email: primary.email,
            email_verified: primary.verified,
            label: "GitHub".into(),
        };
        if let Some(org) = &self.settings.org {
            let path = format!("/user/memberships/orgs/{org}");
            let (status, body) = self.api(token, &path).await?;
            let active = status == 200
                && serde_json::from_str::<Membership>(&body).is_ok_and(|m| m.state == "active");
            if !active {
                if !matches!(status, 200 | 403 | 404) {
                    return Err(Self::unexpected(&path, status));
                }
                return Err(Refusal {
                    failure: SsoFailure::NotAllowed,
                    message: format!(
                        "Only members of the GitHub organisation {org} can sign in here with GitHub."
                    ),
                    identity: Some(identity),
                });
            }
        }
        Ok(identity)
    }
}
