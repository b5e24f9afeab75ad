//! Server functions: thin edges. Each finds out who is asking, calls one
//! `control` function, and converts the result. No SQL and no rules here.

use control::{AuditEventView, InvitePreview, Me, SessionView, TeamView};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

#[cfg(feature = "ssr")]
fn parse<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, AppError> {
    raw.trim().parse().map_err(|_| {
        AppError::Invalid(format!(
            "`{}` is not a valid {what}.",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

/// The signed-in person, or `None` when signed out.
#[server(endpoint = "current-user")]
pub async fn current_user() -> Result<Option<Me>, AppError> {
    let cx = crate::context::cx().await?;
    if cx.user().await?.is_none() {
        return Ok(None);
    }
    let actor = cx.actor().await?;
    let orgs = control::access::orgs_of(&cx.state.store, actor.user()).await?;
    Ok(Some(Me {
        user_id: actor.user(),
        email: actor.email().to_string(),
        org: actor.org_view().clone(),
        orgs,
        mfa_due: actor.mfa_due(),
        sso_due: actor.sso_due(),
        unread_notices: control::notices::unread(&cx.state.store, actor.user()).await?,
    }))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Installation {
    /// No user yet: the setup form is available with the logged code.
    Open,
    /// Setup was completed; the page is gone.
    Done,
}

#[server(endpoint = "setup-state")]
pub async fn setup_state() -> Result<Installation, AppError> {
    let cx = crate::context::cx().await?;
    let open =
        cx.state.setup.is_open().await && control::accounts::setup_needed(&cx.state.store).await?;
    Ok(if open {
        Installation::Open
    } else {
        Installation::Done
    })
}

#[server(endpoint = "complete-setup")]
pub async fn complete_setup(
    code: String,
    org_name: String,
    email: String,
    password: String,
) -> Result<(), AppError> {
    use secrecy::SecretString;
    let cx = crate::context::cx().await?;
    let form = control::accounts::SetupForm {
        code: SecretString::from(code),
        org_name,
        email,
        password: SecretString::from(password),
    };
    let (user, org) =
        control::accounts::complete_setup(&cx.state.store, &cx.state.setup, form, &cx.meta, cx.now)
            .await?;
    cx.start_session(user, org, "password").await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "login")]
pub async fn login(email: String, password: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let done = control::accounts::login(
        &cx.state.store,
        &email,
        secrecy::SecretString::from(password),
        &cx.meta,
        cx.now,
    )
    .await?;
    match done {
        control::accounts::SignIn::Done(done) => {
            cx.finish_sign_in(done).await?;
            leptos_axum::redirect("/");
        }
        control::accounts::SignIn::SecondFactor(pending) => {
            cx.start_pending(pending).await?;
            leptos_axum::redirect("/login/code");
        }
    }
    Ok(())
}

#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    if let Ok(actor) = cx.actor().await {
        control::accounts::record_logout(&actor, cx.now).await?;
    }
    cx.session.flush().await?;
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(endpoint = "switch-org")]
pub async fn switch_org(org: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let (user, _) = cx.user().await?.ok_or_else(AppError::signed_out)?;
    let org = parse::<control::OrgId>(&org, "organisation")?;
    let actor =
        control::access::actor_in(&cx.state.store, user, org, cx.session_meta().await?).await?;
    cx.session
        .insert(control::sessions::keys::ORG, actor.org().0)
        .await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "team")]
pub async fn load_team() -> Result<TeamView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::team::team(&auth, cx.now).await?)
}

/// Returns the one-time invitation link.
#[server(endpoint = "invite-member")]
pub async fn invite_member(email: String, role: String) -> Result<String, AppError> {
    use secrecy::ExposeSecret;
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageMembers>()?;
    let role = parse::<control::Role>(&role, "role")?;
    let invite = control::team::invite(&auth, &email, role, cx.now).await?;
    Ok(format!(
        "{}/invite/{}",
        cx.state.public_url.trim_end_matches('/'),
        invite.token.expose_secret()
    ))
}

#[server(endpoint = "revoke-invite")]
pub async fn revoke_invite(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageMembers>()?;
    let id = parse::<control::InviteId>(&id, "invitation id")?;
    Ok(control::team::revoke_invite(&auth, id, cx.now).await?)
}

#[server(endpoint = "change-role")]
pub async fn change_role(user_id: String, role: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageMembers>()?;
    let user = parse::<control::UserId>(&user_id, "member id")?;
    let role = parse::<control::Role>(&role, "role")?;
    Ok(control::team::change_role(&auth, user, role, cx.now).await?)
}

#[server(endpoint = "remove-member")]
pub async fn remove_member(user_id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ManageMembers>()?;
    let user = parse::<control::UserId>(&user_id, "member id")?;
    Ok(control::team::remove_member(&auth, user, cx.now).await?)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    pub invite: InvitePreview,
    /// The email of the signed-in user, if any.
    pub signed_in_as: Option<String>,
    /// The identity providers an invitation can be accepted with.
    pub offer: crate::sso_page::SsoOffer,
}

#[server(endpoint = "invite-details")]
pub async fn invite_details(token: String) -> Result<InviteInfo, AppError> {
    let cx = crate::context::cx().await?;
    let invite = control::team::preview_invite(&cx.state.store, &token, cx.now).await?;
    let signed_in_as = match cx.user().await? {
        Some(_) => cx.actor().await.ok().map(|a| a.email().to_string()),
        None => None,
    };
    Ok(InviteInfo {
        invite,
        signed_in_as,
        offer: cx.state.sso.clone(),
    })
}

/// Accepts an invitation: as the signed-in user, or by creating the invited
/// account with `password`.
#[server(endpoint = "accept-invite")]
pub async fn accept_invite(token: String, password: Option<String>) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let org = match cx.user().await? {
        Some((user, _)) => {
            control::team::accept_invite_signed_in(&cx.state.store, &token, user, &cx.meta, cx.now)
                .await?
        }
        None => {
            let password = password.ok_or_else(|| {
                AppError::Invalid("Choose a password for your new account.".into())
            })?;
            let (user, org) = control::team::accept_invite_new_account(
                &cx.state.store,
                &token,
                secrecy::SecretString::from(password),
                &cx.meta,
                cx.now,
            )
            .await?;
            cx.start_session(user, org, "password").await?;
            org
        }
    };
    cx.session
        .insert(control::sessions::keys::ORG, org.0)
        .await?;
    leptos_axum::redirect("/");
    Ok(())
}

#[server(endpoint = "my-sessions")]
pub async fn my_sessions() -> Result<Vec<SessionView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    Ok(control::sessions::list_own(&actor, cx.session.id(), cx.now).await?)
}

#[server(endpoint = "sign-out-others")]
pub async fn sign_out_others() -> Result<u64, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let current = cx.session.id().ok_or_else(AppError::signed_out)?;
    Ok(control::sessions::revoke_others(&actor, current, cx.now).await?)
}

/// The audit public key as Settings shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeyView {
    pub public_key: String,
    pub key_id: String,
}

/// The audit public key, for anyone signed in to pin (it verifies exports
/// offline; see `pilothouse audit verify`).
#[server(endpoint = "audit-key")]
pub async fn audit_key() -> Result<AuditKeyView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    actor.authorize::<control::access::ReadOrg>()?;
    Ok(cx.state.audit_key.clone())
}

/// The latest audit events, newest first, without the chain check (the
/// dashboard's short list; the Audit log page verifies the chain).
#[server(endpoint = "latest-audit-events")]
pub async fn latest_audit_events(limit: u32) -> Result<Vec<AuditEventView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::audit::latest(&auth, i64::from(limit.clamp(1, 100))).await?)
}

#[server(endpoint = "list-servers")]
pub async fn list_servers() -> Result<Vec<control::AgentView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::agents::list(&auth, cx.now).await?)
}

#[server(endpoint = "server-detail")]
pub async fn server_detail(id: String) -> Result<control::AgentView, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    Ok(control::agents::get(&auth, &id, cx.now).await?)
}

/// A new one-time registration token and the exact commands that use it.
/// Shown once to the person who asked; `Debug` leaves them out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewServerToken {
    pub token: String,
    /// Installs, registers and starts the agent (see `control::agents::install`).
    pub install: String,
    /// By hand: fetch the binary, its manifest and the release key.
    pub download: String,
    /// By hand: register an installed agent.
    pub command: String,
    pub expires_at: control::Timestamp,
}

impl std::fmt::Debug for NewServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewServerToken")
            .field("token", &"[redacted]")
            .field("install", &"[redacted]")
            .field("command", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[server(endpoint = "create-registration-token")]
pub async fn create_registration_token() -> Result<NewServerToken, AppError> {
    use secrecy::ExposeSecret;
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    let new = control::agents::create_registration_token(
        &auth,
        &cx.state.ca_pin,
        control::agents::DEFAULT_TOKEN_TTL_SECS,
        cx.now,
    )
    .await?;
    let token = new.token.expose_secret().to_string();
    // The token goes in on standard input: an argument would show in `ps`
    // to every user of the server while the command runs (printf is a
    // shell builtin, so it does not).
    let commands = control::agents::install::install_commands(&cx.state.agent_url, &token)
        .ok_or(AppError::Internal)?;
    Ok(NewServerToken {
        install: commands.one_line,
        download: commands.download,
        command: commands.register,
        token,
        expires_at: new.expires_at,
    })
}

/// The dashboard's Servers card.
#[server(endpoint = "fleet-summary")]
pub async fn fleet_summary() -> Result<control::FleetSummary, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    Ok(control::agents::summary(&auth, cx.now).await?)
}

/// The organisation's registration tokens (never their secrets): Owners and
/// Admins only.
#[server(endpoint = "registration-tokens")]
pub async fn registration_tokens() -> Result<Vec<control::RegistrationTokenView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    Ok(control::agents::list_registration_tokens(&auth, cx.now).await?)
}

#[server(endpoint = "revoke-registration-token")]
pub async fn revoke_registration_token(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::agents::ManageAgents>()?;
    let id: i64 = parse(&id, "registration token id")?;
    Ok(control::agents::revoke_registration_token(&auth, id, cx.now).await?)
}

/// Queues a ping for the server and returns the command id.
#[server(endpoint = "ping-server")]
pub async fn ping_server(id: String) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    Ok(cx.state.delivery.ping(&auth, &id, cx.now).await?.0)
}

#[server(endpoint = "command-state")]
pub async fn command_state(id: String) -> Result<control::CommandOutcome, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id = control::CommandId::parse(&id)
        .ok_or_else(|| AppError::NotFound("No such command.".into()))?;
    Ok(control::commands::command_state(&auth, &id, cx.now).await?)
}

#[server(endpoint = "revoke-server")]
pub async fn revoke_server(id: String) -> Result<(), AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    cx.state.delivery.revoke(&auth, &id, cx.now).await?;
    Ok(())
}

/// Chart data for a server: `range` is `hour` or `day`.
#[server(endpoint = "server-metrics")]
pub async fn server_metrics(
    id: String,
    range: String,
) -> Result<Vec<control::MetricPoint>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    let secs = match range.as_str() {
        "hour" => 3600,
        "day" => 86_400,
        _ => return Err(AppError::Invalid("The range is `hour` or `day`.".into())),
    };
    Ok(control::metrics::series(&auth, &id, secs, cx.now).await?)
}

/// Asks the server's agent to make and register new keys.
#[server(endpoint = "rotate-keys")]
pub async fn rotate_keys(id: String) -> Result<String, AppError> {
    key_action(id, control::agents::KeyAction::RotateKeys).await
}

/// Asks an agent in classical fallback to register an ML-KEM (X-Wing) key.
#[server(endpoint = "activate-pqc")]
pub async fn activate_pqc(id: String) -> Result<String, AppError> {
    key_action(id, control::agents::KeyAction::ActivatePqc).await
}

#[cfg(feature = "ssr")]
async fn key_action(id: String, action: control::agents::KeyAction) -> Result<String, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth =
        actor.authorize_on::<control::agents::ManageAgents>(&crate::ops_api::agent_target(&id))?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    let command = cx
        .state
        .delivery
        .request_key_action(&auth, &id, action, cx.now)
        .await?;
    Ok(command.0)
}

#[server(endpoint = "recent-commands")]
pub async fn recent_commands(id: String) -> Result<Vec<control::CommandView>, AppError> {
    let cx = crate::context::cx().await?;
    let actor = cx.actor().await?;
    let auth = actor.authorize::<control::access::ReadOrg>()?;
    let id =
        control::AgentId::parse(&id).ok_or_else(|| AppError::NotFound("No such server.".into()))?;
    Ok(control::commands::recent_commands(&auth, &id, 10, cx.now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_not_in_its_debug_output() {
        let t = NewServerToken {
            token: "pht1_0123456789abcdef0123456789abcdef_00".into(),
            install: "printf '%s\\n' 'pht1_0123456789abcdef0123456789abcdef_00' | sh -c".into(),
            download: String::new(),
            command: "printf '%s\\n' 'pht1_0123456789abcdef0123456789abcdef_00' | pilothouse-agent register".into(),
            expires_at: control::Timestamp(0),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
