//! A stand-in for GitHub's OAuth and REST API endpoints
//! (`github_standin.mjs`, run by node on loopback): GitHub's servers cannot
//! be reached from this machine. It signs people in on a plain form (see
//! [`super::oidc::authorize`]) and answers `/login/oauth/access_token` and
//! `/api/v3/user`, `/user/emails`, `/user/memberships/orgs/ORG` as GitHub
//! Enterprise Server documents them.

#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{json, Value};
use tokio::process::Child;

pub struct GitHubStandIn {
    pub port: u16,
    /// `http://127.0.0.1:<port>`: the `github_url`; the API is at
    /// `<url>/api/v3` as on an Enterprise Server.
    pub url: String,
    child: Child,
}

/// A GitHub user: `emails` as `(email, primary, verified)`, `orgs` as
/// `(org, state)`.
pub fn user(id: u64, login: &str, emails: &[(&str, bool, bool)], orgs: &[(&str, &str)]) -> Value {
    json!({
        "id": id,
        "login": login,
        "emails": emails.iter().map(|(e, p, v)| json!({"email": e, "primary": p, "verified": v})).collect::<Vec<_>>(),
        "orgs": orgs.iter().map(|(o, s)| json!({"org": o, "state": s})).collect::<Vec<_>>(),
    })
}

impl GitHubStandIn {
    /// Starts the stand-in on `port` (0: any) for the OAuth app
    /// `client_id`/`client_secret` whose callback is `redirect_uri`.
    pub async fn start(
        port: u16,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        users: Vec<Value>,
    ) -> GitHubStandIn {
        let config = json!({
            "port": port,
            "client": {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri},
            "users": users,
        });
        let (child, ready) = super::oidc::spawn_script("github_standin.mjs", &config).await;
        let port = u16::try_from(ready["port"].as_u64().unwrap()).unwrap();
        GitHubStandIn {
            port,
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
