//! Password reset by email.
//!
//! - **Asking.** [`request`] takes an email address and answers the same
//!   way, at once, whether or not an account has it: the work (a token, the
//!   message) happens in a task of its own afterwards ([`issue`]). Requests
//!   are throttled per address asked for and per client, counted whether or
//!   not the account exists, so the throttle tells nothing either.
//! - **The token.** 256 random bits, mailed as a link
//!   (`/reset-password/<token>`) through the outbox ([`crate::mail`]), sealed
//!   there. The database keeps only its SHA-256; it expires after
//!   [`TOKEN_TTL_SECS`] and works once.
//! - **Using it.** [`reset`] spends the token with one conditional `UPDATE`
//!   (two requests racing with one token: one wins), sets the new password
//!   (the same rules as at setup), ends every session of the account, spends
//!   its other reset tokens and clears its failed sign-ins, all in one
//!   transaction, audited as `user.password_reset`. Two-factor sign-in, if
//!   on, still applies at the next sign-in.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use zeroize::Zeroizing;

use crate::access::RequestMeta;
use crate::accounts::{record_in_each_org, set_password_hash};
use crate::audit::{AuditAction, AuditActor};
use crate::crypto::{random_token, token_hash};
use crate::mail::{self, Mail, MailKind};
use crate::secrets::Keyring;
use crate::store::Store;
use crate::throttle::{self, Limit};
use crate::{password, ControlError, Timestamp, UserId};

/// How long a reset link works.
pub const TOKEN_TTL_SECS: i64 = 1800;
/// Reset requests per address asked for, per hour.
pub const PER_ACCOUNT: Limit = Limit {
    max_failures: 5,
    window_secs: 3600,
};
/// Reset requests per client address, per hour.
pub const PER_CLIENT: Limit = Limit {
    max_failures: 20,
    window_secs: 3600,
};
/// What every request is answered with.
pub const REQUESTED: &str = "If an account has that address, a link to choose a new password is on its way to it. It works once, for 30 minutes.";
const GONE: &str =
    "This link has expired or was already used. Ask for a new one from the sign-in page.";
const TOKEN_KIND: &str = "password-reset";

/// Asks for a reset link for `email`. The answer is [`REQUESTED`] (or a
/// throttle refusal) whether or not an account has the address; the link is
/// made and queued by a task of its own ([`issue`]), whose failure is logged.
pub async fn request(
    store: &Store,
    ring: std::sync::Arc<Keyring>,
    email: &str,
    meta: &RequestMeta,
    base_url: &str,
    now: Timestamp,
) -> Result<&'static str, ControlError> {
    let email = crate::accounts::normalize_email(email)?;
    // Every request counts against both limits; none is given back.
    let _counted = throttle::reserve(
        store,
        &[
            (&format!("reset-ip:{}", meta.ip), PER_CLIENT),
            (&format!("reset:{email}"), PER_ACCOUNT),
        ],
        now,
    )
    .await?;
    let (store, meta, base_url) = (store.clone(), meta.clone(), base_url.to_string());
    let task = async move {
        if let Err(e) = issue(&store, &ring, &email, &meta, &base_url, now).await {
            tracing::warn!(error = %e, "a password reset link could not be queued");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(tracing::Instrument::in_current_span(task));
        }
        Err(_) => tracing::warn!("a password reset was not queued: no async runtime"),
    }
    Ok(REQUESTED)
}

/// Makes a reset token for the account with `email`, if there is one, and
/// queues its link in the same transaction, audited as
/// `user.password_reset_requested` in each of the account's organisations.
/// Returns whether there was an account. [`request`] runs this in the
/// background.
pub async fn issue(
    store: &Store,
    ring: &Keyring,
    email: &str,
    meta: &RequestMeta,
    base_url: &str,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let mut tx = store.begin().await?;
    let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(tx.conn())
        .await?;
    let Some(user) = user else {
        return Ok(false);
    };
    let token = Zeroizing::new(random_token(32));
    let expires = now.plus_secs(TOKEN_TTL_SECS);
    sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at, ip) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(TOKEN_KIND, &token))
    .bind(user)
    .bind(now.0)
    .bind(expires.0)
    .bind(&meta.ip)
    .execute(tx.conn())
    .await?;
    let body = Zeroizing::new(format!(
        "Someone asked to reset the password of the Pilothouse account {email}.\n\
         \n\
         When: {when}\n\
         From: {ip}\n\
         Browser: {ua}\n\
         \n\
         To choose a new password, open this link within 30 minutes. It works once:\n\
         \n\
         {base}/reset-password/{token}\n\
         \n\
         A new password signs out every session of the account.\n\
         If it was not you, ignore this message: your password stays as it is.\n",
        when = now.display_utc(),
        ip = meta.ip,
        ua = meta.user_agent,
        base = base_url.trim_end_matches('/'),
        token = token.as_str(),
    ));
    mail::enqueue(
        &mut tx,
        ring,
        MailKind::PasswordReset,
        &Mail {
            to: email.to_string(),
            subject: "Reset your Pilothouse password".into(),
            body,
        },
        expires,
        now,
    )
    .await?;
    let actor = AuditActor {
        user: None,
        label: "anonymous".into(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    record_in_each_org(
        &mut tx,
        &actor,
        UserId(user),
        AuditAction::PasswordResetRequested,
        email,
        json!({ "expires_at": expires.0 }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The address a reset token is for, while it works (the reset page shows it).
pub async fn email_for(store: &Store, token: &str, now: Timestamp) -> Result<String, ControlError> {
    if token.len() > 128 {
        return Err(ControlError::not_found(GONE));
    }
    let email: Option<String> = sqlx::query_scalar(
        "SELECT u.email FROM password_resets r JOIN users u ON u.id = r.user_id \
         WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > $2",
    )
    .bind(token_hash(TOKEN_KIND, token))
    .bind(now.0)
    .fetch_optional(store.pool())
    .await?;
    email.ok_or_else(|| ControlError::not_found(GONE))
}

/// Sets a new password with a reset token (see the module notes). Returns
/// how many sessions ended.
pub async fn reset(
    store: &Store,
    token: &str,
    new: SecretString,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<u64, ControlError> {
    let email = email_for(store, token, now).await?;
    password::validate_new(new.expose_secret(), &email)?;
    let hash = password::hash(new).await?;
    let mut tx = store.begin().await?;
    let user: Option<i64> = sqlx::query_scalar(
        "UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         RETURNING user_id",
    )
    .bind(now.0)
    .bind(token_hash(TOKEN_KIND, token))
    .fetch_optional(tx.conn())
    .await?;
    let Some(user) = user else {
        return Err(ControlError::not_found(GONE));
    };
    let user = UserId(user);
    set_password_hash(&mut tx, user, &hash, true, now).await?;
    let ended = crate::sessions::end_for(&mut tx, user, None).await?;
    throttle::clear(&mut tx, &throttle::account_key(&email)).await?;
    let actor = AuditActor {
        user: Some(user),
        label: email.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    record_in_each_org(
        &mut tx,
        &actor,
        user,
        AuditAction::PasswordReset,
        &format!("user:{}", user.0),
        json!({ "sessions_ended": ended }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}
