//! Sign-in with an identity provider: an OpenID Connect provider (Google by
//! default) or GitHub. The protocol runs in the server (`server/src/sso/`);
//! the rules about accounts are here.
//!
//! - **Flows.** A sign-in, link or invitation acceptance started at a
//!   provider is kept by [`begin_flow`] under the SHA-256 of its `state`,
//!   bound to the SHA-256 of a browser cookie, with its PKCE verifier and
//!   nonce, for [`FLOW_TTL_SECS`]; at most [`STARTS_PER_CLIENT`] per client
//!   address. [`take_flow`] deletes it in the statement that reads it, so a
//!   flow answers once: a replayed callback finds nothing.
//! - **Who an identity is.** The provider's stable subject, never its email:
//!   [`sign_in`] signs in the account an identity was linked to.
//! - **Linking.** An identity links to an account only while its owner is
//!   signed in and asked for it ([`link`]), and only when the provider vouches
//!   for the account's own email. A first SSO sign-in never takes over an
//!   existing account: with an email that has an account and no link, it is
//!   refused with the way to link.
//! - **Joining.** A first SSO sign-in with a verified email whose domain an
//!   organisation allows ([`add_join_domain`], Owners) makes an account
//!   without a password, a member of each such organisation with the role the
//!   domain gives (never Owner). Anyone else needs an invitation, which
//!   [`accept_invite`] accepts with an identity for the invited address.
//! - **Requiring SSO.** An Owner can require it ([`set_required`]); the
//!   refusal of password sessions is `crate::access`'s.
//! - **Failures** are recorded as `user.login_failed` with the reason and
//!   provider: in the organisations of the account they name when they name
//!   one ([`record_failure`]), otherwise in every organisation, at most once a
//!   minute per organisation and reason, since the provider is the
//!   installation's.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::access::{Actor, Authorized, ManageSignIn, ReadOrg, RequestMeta};
use crate::accounts::{
    insert_membership, normalize_email, record_in_each_org, LoggedIn, ANONYMOUS,
};
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::{random_token, token_hash};
use crate::store::{Store, Tx};
pub use crate::types::{JoinDomain, LinkedIdentity, SsoProvider as Provider};
use crate::{ControlError, OrgId, Role, Timestamp, UserId};

/// How long a started sign-in waits for the provider's answer.
pub const FLOW_TTL_SECS: i64 = 600;
/// Sign-ins started per client address: each keeps a row until it is
/// answered or expires, so starting is limited like failing.
pub const STARTS_PER_CLIENT: crate::throttle::Limit = crate::throttle::Limit {
    max_failures: 120,
    window_secs: 600,
};
/// Failures that name no account are recorded at most this often per
/// organisation and reason.
pub const UNATTRIBUTED_RECORD_EVERY_SECS: i64 = 60;
const STATE_KIND: &str = "sso-state";
const BROWSER_KIND: &str = "sso-browser";

/// Why an SSO sign-in or link was refused, as `user.login_failed` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsoFailure {
    /// No started flow has that `state`, it expired, or it was started in
    /// another browser.
    UnknownState,
    /// The provider refused or answered with an error.
    ProviderError,
    /// The ID token or the provider's answer failed validation (signature,
    /// issuer, audience, expiry, nonce).
    InvalidToken,
    /// The provider does not vouch for the email.
    UnverifiedEmail,
    /// The organisation or domain the installation restricts sign-in to.
    NotAllowed,
    /// An account has the email but no link to this identity.
    NotLinked,
}

impl SsoFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SsoFailure::UnknownState => "sso_unknown_state",
            SsoFailure::ProviderError => "sso_provider_error",
            SsoFailure::InvalidToken => "sso_invalid_token",
            SsoFailure::UnverifiedEmail => "sso_unverified_email",
            SsoFailure::NotAllowed => "sso_not_allowed",
            SsoFailure::NotLinked => "sso_not_linked",
        }
    }
}

/// What a provider vouched for, after the server checked its answer.
#[derive(Clone, Debug)]
pub struct Identity {
    pub provider: Provider,
    /// The provider's stable id for the person (`sub`, GitHub's user id).
    pub subject: String,
    pub email: String,
    /// The provider says the person controls `email`.
    pub email_verified: bool,
    /// How pages name the provider ("Google", "GitHub").
    pub label: String,
}

/// A started flow, as [`take_flow`] gives it back.
pub struct Flow {
    pub provider: Provider,
    pub verifier: SecretString,
    pub nonce: SecretString,
    /// A link flow: the signed-in account that asked for it.
    pub link_user: Option<UserId>,
    /// Accepting an invitation: its stored token hash
    /// ([`crate::team::invite_hash`]).
    pub invite_hash: Option<String>,
}

/// A new browser-binding value for a flow's cookie (256 bits, hex).
pub fn new_browser_binding() -> String {
    random_token(32)
}

/// Keeps a started flow until the provider answers (see the module notes).
/// At most [`STARTS_PER_CLIENT`] per client address (`ip`), counted whether
/// or not they finish; flows that expired unanswered are deleted here.
#[allow(clippy::too_many_arguments)]
pub async fn begin_flow(
    store: &Store,
    provider: Provider,
    state: &str,
    browser: &str,
    verifier: &SecretString,
    nonce: &SecretString,
    link_user: Option<UserId>,
    invite_hash: Option<&str>,
    ip: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let key = format!("sso-start:{ip}");
    // Never given back: every start counts.
    let _counted = crate::throttle::reserve(store, &[(&key, STARTS_PER_CLIENT)], now).await?;
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM sso_flows WHERE expires_at <= $1")
        .bind(now.0)
        .execute(tx.conn())
        .await?;
    sqlx::query(
        "INSERT INTO sso_flows (state_hash, browser_hash, provider, verifier, nonce, link_user, \
         invite_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(token_hash(STATE_KIND, state))
    .bind(token_hash(BROWSER_KIND, browser))
    .bind(provider.as_str())
    .bind(verifier.expose_secret())
    .bind(nonce.expose_secret())
    .bind(link_user.map(|u| u.0))
    .bind(invite_hash)
    .bind(now.0)
    .bind(now.plus_secs(FLOW_TTL_SECS).0)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The page's answer to a callback whose flow is unknown.
pub const UNKNOWN_STATE: &str = "This sign-in was already used, has expired, or was started in another browser. Start again from the sign-in page.";

/// Takes the flow `state` names, once: the row is deleted as it is read, so
/// of two callbacks with one `state` at most one gets it. It must be
/// `provider`'s, unexpired, and started in the browser that holds `browser`.
pub async fn take_flow(
    store: &Store,
    provider: Provider,
    state: &str,
    browser: Option<&str>,
    now: Timestamp,
) -> Result<Flow, ControlError> {
    let row = sqlx::query(
        "DELETE FROM sso_flows WHERE state_hash = $1 \
         RETURNING browser_hash, provider, verifier, nonce, link_user, invite_hash, expires_at",
    )
    .bind(token_hash(STATE_KIND, state))
    .fetch_optional(store.pool())
    .await?;
    let gone = || ControlError::Unauthenticated(UNKNOWN_STATE.into());
    let row = row.ok_or_else(gone)?;
    let stored: String = row.try_get("browser_hash")?;
    let same_browser = browser.is_some_and(|b| {
        crate::crypto::secret_eq(token_hash(BROWSER_KIND, b).as_bytes(), stored.as_bytes())
    });
    let expires_at: i64 = row.try_get("expires_at")?;
    let stored_provider: String = row.try_get("provider")?;
    if !same_browser || expires_at <= now.0 || stored_provider != provider.as_str() {
        return Err(gone());
    }
    Ok(Flow {
        provider,
        verifier: SecretString::from(row.try_get::<String, _>("verifier")?),
        nonce: SecretString::from(row.try_get::<String, _>("nonce")?),
        link_user: row.try_get::<Option<i64>, _>("link_user")?.map(UserId),
        invite_hash: row.try_get("invite_hash")?,
    })
}

fn actor_for(user: Option<UserId>, label: &str, meta: &RequestMeta) -> AuditActor {
    AuditActor {
        user,
        label: label.to_string(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    }
}

/// [`verified_email`], recording a refusal.
async fn vouched_email(
    store: &Store,
    identity: &Identity,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<String, ControlError> {
    match verified_email(identity) {
        Ok(email) => Ok(email),
        Err(e) => {
            record_failure(store, identity, SsoFailure::UnverifiedEmail, meta, now).await;
            Err(e)
        }
    }
}

fn verified_email(identity: &Identity) -> Result<String, ControlError> {
    if !identity.email_verified {
        return Err(ControlError::forbidden(format!(
            "{} does not say that {} is a verified address of yours. Verify it with {} first.",
            identity.label, identity.email, identity.label
        )));
    }
    normalize_email(&identity.email)
}

/// Signs in with `identity`: the account it is linked to, or, for an email
/// no account has, a new account in each organisation that lets its domain
/// join. Refused (and recorded) otherwise; see the module notes.
pub async fn sign_in(
    store: &Store,
    identity: &Identity,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<LoggedIn, ControlError> {
    let email = vouched_email(store, identity, meta, now).await?;
    let mut tx = store.begin().await?;
    let linked: Option<i64> = sqlx::query_scalar(
        "SELECT user_id FROM user_identities WHERE provider = $1 AND subject = $2",
    )
    .bind(identity.provider.as_str())
    .bind(&identity.subject)
    .fetch_optional(tx.conn())
    .await?;
    let user = match linked.map(UserId) {
        Some(user) => {
            sqlx::query(
                "UPDATE user_identities SET email = $1, last_used_at = $2 \
                 WHERE provider = $3 AND subject = $4",
            )
            .bind(&email)
            .bind(now.0)
            .bind(identity.provider.as_str())
            .bind(&identity.subject)
            .execute(tx.conn())
            .await?;
            user
        }
        None => {
            let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                .bind(&email)
                .fetch_optional(tx.conn())
                .await?;
            if existing.is_some() {
                drop(tx);
                record_failure(store, identity, SsoFailure::NotLinked, meta, now).await;
                return Err(ControlError::conflict(format!(
                    "An account with {email} already exists, and it is not linked to this {label} account. \
                     Sign in with your password, then link {label} in Settings -> Sign-in methods.",
                    label = identity.label
                )));
            }
            match join_by_domain(&mut tx, identity, &email, meta, now).await? {
                Some(user) => user,
                None => {
                    drop(tx);
                    tracing::info!(
                        provider = identity.provider.as_str(),
                        ip = %meta.ip,
                        "SSO sign-in refused: no account, invitation or joinable domain for the email"
                    );
                    return Err(ControlError::forbidden(format!(
                        "No account uses {email}, and no organisation here lets people from its domain join. \
                         Ask an Owner of your organisation for an invitation."
                    )));
                }
            }
        }
    };
    let Some(org) = crate::accounts::first_org(&mut tx, user).await? else {
        return Err(ControlError::forbidden(
            "Your account is not a member of any organisation.",
        ));
    };
    audit::append(
        &mut tx,
        &actor_for(Some(user), &email, meta),
        Event::new(
            org,
            AuditAction::LoginSucceeded,
            format!("user:{}", user.0),
            json!({ "method": identity.provider.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(LoggedIn {
        user,
        org,
        method: identity.provider.as_str(),
    })
}

/// A new account for `email` in each organisation that lets its domain join,
/// or `None` when none does.
async fn join_by_domain(
    tx: &mut Tx,
    identity: &Identity,
    email: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<Option<UserId>, ControlError> {
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    let rows =
        sqlx::query("SELECT org_id, role FROM org_join_domains WHERE domain = $1 ORDER BY org_id")
            .bind(domain)
            .fetch_all(tx.conn())
            .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let user = insert_sso_user(tx, identity, email, now).await?;
    let actor = actor_for(Some(user), email, meta);
    for row in rows {
        let org = OrgId(row.try_get("org_id")?);
        let role: Role = crate::access::parse_role(&row.try_get::<String, _>("role")?)?;
        insert_membership(tx, org, user, role, now).await?;
        audit::append(
            tx,
            &actor,
            Event::new(
                org,
                AuditAction::UserCreated,
                format!("user:{}", user.0),
                json!({ "email": email, "via": identity.provider.as_str() }),
            ),
            now,
        )
        .await?;
        audit::append(
            tx,
            &actor,
            Event::new(
                org,
                AuditAction::MemberAdded,
                format!("user:{}", user.0),
                json!({ "email": email, "role": role.as_str(), "via": "join_domain", "domain": domain }),
            ),
            now,
        )
        .await?;
    }
    Ok(Some(user))
}

/// A new account for `email` that signs in through `identity`: its
/// password is one nobody knows, until a reset sets one.
async fn insert_sso_user(
    tx: &mut Tx,
    identity: &Identity,
    email: &str,
    now: Timestamp,
) -> Result<UserId, ControlError> {
    let unknown = crate::password::hash(SecretString::from(random_token(32))).await?;
    let user: i64 = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash, created_at, password_sign_in) \
         VALUES ($1, $2, $3, 0) RETURNING id",
    )
    .bind(email)
    .bind(&unknown)
    .bind(now.0)
    .fetch_one(tx.conn())
    .await
    .map_err(|e| match crate::store::is_unique_violation(&e) {
        true => ControlError::conflict("An account with that email was just made. Sign in again."),
        false => e.into(),
    })?;
    let user = UserId(user);
    insert_identity(tx, identity, user, email, now).await?;
    Ok(user)
}

/// Accepts the invitation stored as `invite_hash` with `identity`: the
/// provider must vouch for the invited address, and no account may have it
/// yet (one that does signs in and accepts). Makes an account without a
/// password, linked to the identity, a member with the invitation's role,
/// and signs it in; audited as `user.created`, `invite.accepted` and
/// `user.login` in the invitation's organisation.
pub async fn accept_invite(
    store: &Store,
    invite_hash: &str,
    identity: &Identity,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<LoggedIn, ControlError> {
    let email = vouched_email(store, identity, meta, now).await?;
    let mut tx = store.begin().await?;
    let invite = crate::team::find_invite_hashed(tx.conn(), invite_hash, now).await?;
    if invite.email != email {
        return Err(ControlError::forbidden(format!(
            "This invitation is for {}; that {} account is {email}. Accept it with an account of the invited address.",
            invite.email, identity.label
        )));
    }
    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(tx.conn())
        .await?;
    if existing.is_some() {
        return Err(ControlError::conflict(format!(
            "An account with {email} already exists: sign in with it, then open the invitation again."
        )));
    }
    let user = insert_sso_user(&mut tx, identity, &email, now).await?;
    let actor = actor_for(Some(user), &email, meta);
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            invite.org,
            AuditAction::UserCreated,
            format!("user:{}", user.0),
            json!({ "email": email, "via": identity.provider.as_str() }),
        ),
        now,
    )
    .await?;
    crate::team::finish_accept(&mut tx, &invite, user, &actor, now).await?;
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            invite.org,
            AuditAction::LoginSucceeded,
            format!("user:{}", user.0),
            json!({ "method": identity.provider.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(LoggedIn {
        user,
        org: invite.org,
        method: identity.provider.as_str(),
    })
}

async fn insert_identity(
    tx: &mut Tx,
    identity: &Identity,
    user: UserId,
    email: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO user_identities (provider, subject, user_id, email, created_at, last_used_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(identity.provider.as_str())
    .bind(&identity.subject)
    .bind(user.0)
    .bind(email)
    .bind(now.0)
    .execute(tx.conn())
    .await
    .map_err(|e| match crate::store::is_unique_violation(&e) {
        true => ControlError::conflict(format!(
            "This {} account is already linked to an account here, or yours already has a {} account linked.",
            identity.label, identity.label
        )),
        false => e.into(),
    })?;
    Ok(())
}

/// Links `identity` to `user`, who is signed in and started the link. The
/// provider must vouch for the account's own email. Audited as
/// `user.identity_linked` in each of the account's organisations.
pub async fn link(
    store: &Store,
    user: UserId,
    identity: &Identity,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<(), ControlError> {
    let vouched = vouched_email(store, identity, meta, now).await?;
    let mut tx = store.begin().await?;
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ControlError::Unauthenticated("Please sign in.".into()))?;
    if vouched != email {
        drop(tx);
        record_failure(store, identity, SsoFailure::NotAllowed, meta, now).await;
        return Err(ControlError::forbidden(format!(
            "That {label} account is {vouched}; yours here is {email}. Link a {label} account with your own address.",
            label = identity.label
        )));
    }
    let linked_to: Option<i64> = sqlx::query_scalar(
        "SELECT user_id FROM user_identities WHERE provider = $1 AND subject = $2",
    )
    .bind(identity.provider.as_str())
    .bind(&identity.subject)
    .fetch_optional(tx.conn())
    .await?;
    if linked_to == Some(user.0) {
        return Err(ControlError::conflict(format!(
            "This {} account is already linked to yours.",
            identity.label
        )));
    }
    insert_identity(&mut tx, identity, user, &email, now).await?;
    record_in_each_org(
        &mut tx,
        &actor_for(Some(user), &email, meta),
        user,
        AuditAction::IdentityLinked,
        &format!("user:{}", user.0),
        json!({ "provider": identity.provider.as_str() }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the signed-in person's link to `provider`. Refused when it is
/// their only way to sign in (no password, no other link). Audited as
/// `user.identity_unlinked` in each of the account's organisations.
pub async fn unlink(actor: &Actor, provider: Provider, now: Timestamp) -> Result<(), ControlError> {
    let mut tx = actor.store().begin().await?;
    let password: i64 = sqlx::query_scalar("SELECT password_sign_in FROM users WHERE id = $1")
        .bind(actor.user().0)
        .fetch_one(tx.conn())
        .await?;
    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_identities WHERE user_id = $1 AND provider <> $2",
    )
    .bind(actor.user().0)
    .bind(provider.as_str())
    .fetch_one(tx.conn())
    .await?;
    if password == 0 && others == 0 {
        return Err(ControlError::conflict(
            "This is your only way to sign in. Set a password first (sign out, then \"Forgot your password?\").",
        ));
    }
    let removed = sqlx::query("DELETE FROM user_identities WHERE user_id = $1 AND provider = $2")
        .bind(actor.user().0)
        .bind(provider.as_str())
        .execute(tx.conn())
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ControlError::not_found("No such sign-in method is linked."));
    }
    record_in_each_org(
        &mut tx,
        &actor.audit_actor(),
        actor.user(),
        AuditAction::IdentityUnlinked,
        &format!("user:{}", actor.user().0),
        json!({ "provider": provider.as_str() }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The signed-in person's sign-in methods: whether they have a password, and
/// their linked identities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInMethods {
    pub password: bool,
    pub identities: Vec<LinkedIdentity>,
}

pub async fn methods(actor: &Actor) -> Result<SignInMethods, ControlError> {
    let pool = actor.store().pool();
    let password: i64 = sqlx::query_scalar("SELECT password_sign_in FROM users WHERE id = $1")
        .bind(actor.user().0)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query(
        "SELECT provider, email, created_at, last_used_at FROM user_identities \
         WHERE user_id = $1 ORDER BY provider",
    )
    .bind(actor.user().0)
    .fetch_all(pool)
    .await?;
    let mut identities = Vec::with_capacity(rows.len());
    for row in rows {
        let raw: String = row.try_get("provider")?;
        let Some(provider) = Provider::parse(&raw) else {
            continue;
        };
        identities.push(LinkedIdentity {
            provider,
            email: row.try_get("email")?,
            linked_at: Timestamp(row.try_get("created_at")?),
            last_used_at: row
                .try_get::<Option<i64>, _>("last_used_at")?
                .map(Timestamp),
        });
    }
    Ok(SignInMethods {
        password: password == 1,
        identities,
    })
}

pub async fn join_domains(auth: &Authorized<'_, ReadOrg>) -> Result<Vec<JoinDomain>, ControlError> {
    let rows = sqlx::query(
        "SELECT domain, role, created_at FROM org_join_domains WHERE org_id = $1 ORDER BY domain",
    )
    .bind(auth.actor().org().0)
    .fetch_all(auth.store().pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(JoinDomain {
                domain: row.try_get("domain")?,
                role: crate::access::parse_role(&row.try_get::<String, _>("role")?)?,
                added_at: Timestamp(row.try_get("created_at")?),
            })
        })
        .collect()
}

/// Checks and normalises an email domain (`example.com`): letters, digits
/// and hyphens in dot-separated labels, at least two labels.
pub fn normalize_domain(raw: &str) -> Result<String, ControlError> {
    let domain = raw.trim().trim_start_matches('@').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(ControlError::invalid(format!(
            "`{}` is not an email domain (like example.com).",
            raw.trim().chars().take(60).collect::<String>()
        )));
    }
    Ok(domain)
}

/// Lets people with a verified email at `domain` join the organisation at
/// their first SSO sign-in, as `role` (not Owner). Owners only; audited as
/// `org.join_domain_added`.
pub async fn add_join_domain(
    auth: &Authorized<'_, ManageSignIn>,
    domain: &str,
    role: Role,
    now: Timestamp,
) -> Result<(), ControlError> {
    let domain = normalize_domain(domain)?;
    if role == Role::Owner {
        return Err(ControlError::invalid(
            "People who join by their email domain cannot be Owners: choose Admin, Member or Viewer.",
        ));
    }
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageSignIn>(&mut tx).await?;
    sqlx::query(
        "INSERT INTO org_join_domains (org_id, domain, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(actor.org().0)
    .bind(&domain)
    .bind(role.as_str())
    .bind(now.0)
    .execute(tx.conn())
    .await
    .map_err(|e| match crate::store::is_unique_violation(&e) {
        true => ControlError::conflict(format!("{domain} is already allowed to join.")),
        false => e.into(),
    })?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::JoinDomainAdded,
            format!("org:{}", actor.org().0),
            json!({ "domain": domain, "role": role.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Stops `domain`'s people joining at their first SSO sign-in (members who
/// joined stay). Owners only; audited as `org.join_domain_removed`.
pub async fn remove_join_domain(
    auth: &Authorized<'_, ManageSignIn>,
    domain: &str,
    now: Timestamp,
) -> Result<(), ControlError> {
    let domain = normalize_domain(domain)?;
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageSignIn>(&mut tx).await?;
    let removed = sqlx::query("DELETE FROM org_join_domains WHERE org_id = $1 AND domain = $2")
        .bind(actor.org().0)
        .bind(&domain)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ControlError::not_found(format!(
            "{domain} is not among the domains that may join."
        )));
    }
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::JoinDomainRemoved,
            format!("org:{}", actor.org().0),
            json!({ "domain": domain }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a refused SSO sign-in or link for the account `identity` names
/// (by its link, else by its email) in each of its organisations; one that
/// names no account goes to [`record_unattributed`]. Never fails the caller:
/// a recording failure is logged.
pub async fn record_failure(
    store: &Store,
    identity: &Identity,
    reason: SsoFailure,
    meta: &RequestMeta,
    now: Timestamp,
) {
    let result = async {
        let mut tx = store.begin().await?;
        let user: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM user_identities WHERE provider = $1 AND subject = $2 \
             UNION SELECT id FROM users WHERE email = $3 LIMIT 1",
        )
        .bind(identity.provider.as_str())
        .bind(&identity.subject)
        .bind(identity.email.trim().to_lowercase())
        .fetch_optional(tx.conn())
        .await?;
        let Some(user) = user.map(UserId) else {
            drop(tx);
            return record_unattributed(store, identity.provider, reason, meta, now).await;
        };
        record_in_each_org(
            &mut tx,
            &actor_for(None, ANONYMOUS, meta),
            user,
            AuditAction::LoginFailed,
            &format!("user:{}", user.0),
            json!({ "reason": reason.as_str(), "provider": identity.provider.as_str() }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, ControlError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, reason = reason.as_str(), "a refused SSO sign-in could not be recorded in the audit log");
    }
}

/// Records a refused SSO sign-in that names no account (a wrong `state`, an
/// invalid token) in every organisation, at most once per
/// [`UNATTRIBUTED_RECORD_EVERY_SECS`] per organisation and reason, target
/// `sso:<provider>`.
pub async fn record_unattributed(
    store: &Store,
    provider: Provider,
    reason: SsoFailure,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<(), ControlError> {
    tracing::warn!(provider = provider.as_str(), reason = reason.as_str(), ip = %meta.ip, "SSO sign-in refused");
    let orgs: Vec<i64> = sqlx::query_scalar("SELECT id FROM orgs ORDER BY id")
        .fetch_all(store.pool())
        .await?;
    let target = format!("sso:{}", provider.as_str());
    let actor = actor_for(None, ANONYMOUS, meta);
    let mut tx = store.begin().await?;
    for org in orgs.into_iter().map(OrgId) {
        if crate::accounts::recently_recorded(
            &mut tx,
            org,
            &target,
            reason.as_str(),
            UNATTRIBUTED_RECORD_EVERY_SECS,
            now,
        )
        .await?
        {
            continue;
        }
        audit::append(
            &mut tx,
            &actor,
            Event::new(
                org,
                AuditAction::LoginFailed,
                &target,
                json!({ "reason": reason.as_str(), "provider": provider.as_str() }),
            ),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the organisation requires SSO of its members.
pub async fn required(auth: &Authorized<'_, ReadOrg>) -> Result<bool, ControlError> {
    let on: i64 = sqlx::query_scalar("SELECT require_sso FROM orgs WHERE id = $1")
        .bind(auth.actor().org().0)
        .fetch_one(auth.store().pool())
        .await?;
    Ok(on == 1)
}

/// Requires (or stops requiring) SSO of the organisation's members: a
/// session signed in with a password is then refused every capability there,
/// Owners excepted (see `crate::access`). `offered`: this server offers at
/// least one identity provider; without one the requirement is refused, as
/// nobody could meet it. Owners only; audited as
/// `org.sso_requirement_changed` with how many non-Owner members have no
/// linked identity yet.
pub async fn set_required(
    auth: &Authorized<'_, ManageSignIn>,
    on: bool,
    offered: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    if on && !offered {
        return Err(ControlError::conflict(
            "This server offers no identity provider (set oidc_client_id or github_client_id), so nobody could meet the requirement.",
        ));
    }
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageSignIn>(&mut tx).await?;
    let current: i64 = sqlx::query_scalar("SELECT require_sso FROM orgs WHERE id = $1")
        .bind(actor.org().0)
        .fetch_one(tx.conn())
        .await?;
    if (current == 1) == on {
        return Err(ControlError::conflict(if on {
            "Signing in through an identity provider is already required."
        } else {
            "Signing in through an identity provider is already not required."
        }));
    }
    sqlx::query("UPDATE orgs SET require_sso = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(actor.org().0)
        .execute(tx.conn())
        .await?;
    let unlinked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships m WHERE m.org_id = $1 AND m.role <> 'owner' \
         AND NOT EXISTS (SELECT 1 FROM user_identities i WHERE i.user_id = m.user_id)",
    )
    .bind(actor.org().0)
    .fetch_one(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::SsoRequirementChanged,
            format!("org:{}", actor.org().0),
            json!({ "required": on, "members_without_a_linked_identity": unlinked }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
