//! New sign-in notices: a sign-in from a device or a network not seen
//! before for the account tells its owner, in the dashboard and by email.
//!
//! - **Device and network.** The browser keeps a device cookie (256 random
//!   bits; the database holds a SHA-256 of it per account) and the client
//!   address is reduced to its network (`/24` for IPv4, `/48` for IPv6).
//!   After each complete sign-in ([`after_sign_in`]), a device not seen for
//!   the account, or a network not seen for it, makes a notice; the first
//!   sign-in of an account records both and tells nothing (there is nothing
//!   to compare with).
//! - **The notice** keeps when, the address, the browser and the method
//!   (password, with two-factor or not). With email set up it is mailed
//!   too, through the outbox, with a "this wasn't me" link: a one-time token
//!   (stored hashed) that works for [`DISOWN_TTL_SECS`].
//! - **"This wasn't me"** ([`disown_by_token`], or [`disown`] from the
//!   dashboard) signs out every session of the account, removes its links
//!   to identity providers (whoever it was may have come through one), and
//!   replaces its password with one nobody knows, so it must be reset; with
//!   email set up a reset link goes out at once. Audited as
//!   `user.sign_in_disowned`.

use secrecy::SecretString;
use serde_json::json;
use sqlx::Row;
use zeroize::Zeroizing;

use crate::access::{Actor, RequestMeta};
use crate::audit::{AuditAction, AuditActor};
use crate::crypto::{random_token, sha256_hex, token_hash};
use crate::mail::{self, Mail, MailKind};
use crate::secrets::Keyring;
use crate::store::{Store, Tx};
use crate::{ControlError, SignInNotice, Timestamp, UserId};

/// How long a "this wasn't me" link works.
pub const DISOWN_TTL_SECS: i64 = 7 * 86_400;
/// Notices kept per account (older ones are deleted).
pub const KEPT: i64 = 50;
const TOKEN_KIND: &str = "sign-in-disown";
const GONE: &str = "This link has expired or was already used.";

/// Where email links point, and whether email is sent at all.
#[derive(Clone, Copy, Debug)]
pub struct Mailing<'a> {
    pub ring: &'a Keyring,
    /// The dashboard's public base URL.
    pub base_url: &'a str,
    /// Whether an SMTP server is configured.
    pub enabled: bool,
}

/// A device cookie's value, as the browser holds it.
pub fn new_device_id() -> String {
    random_token(32)
}

/// Whether `raw` reads as a device id (64 hex digits).
pub fn valid_device_id(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The network of an address: the first three octets of IPv4 (`/24`),
/// the first three groups of IPv6 (`/48`); anything else as it is.
pub fn network_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(&v4.to_string()),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
        Err(_) => ip.to_string(),
    }
}

fn device_hash(user: UserId, device: &str) -> String {
    sha256_hex(format!("pilothouse device\0{}\0{device}", user.0))
}

/// Records a complete sign-in of `user` from `device` (a valid device id)
/// and the request's address, and makes a notice (mailed when email is set
/// up) if the device or the network is new for the account. Returns whether
/// it made one.
pub async fn after_sign_in(
    store: &Store,
    mailing: Mailing<'_>,
    user: UserId,
    device: &str,
    method: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<bool, ControlError> {
    let hash = device_hash(user, device);
    let network = network_of(&meta.ip);
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS any_seen, \
         SUM(CASE WHEN device_hash = $2 THEN 1 ELSE 0 END) AS device_seen, \
         SUM(CASE WHEN network = $3 THEN 1 ELSE 0 END) AS network_seen \
         FROM known_devices WHERE user_id = $1",
    )
    .bind(user.0)
    .bind(&hash)
    .bind(&network)
    .fetch_one(tx.conn())
    .await?;
    let any: i64 = row.try_get("any_seen")?;
    let device_seen = row.try_get::<Option<i64>, _>("device_seen")?.unwrap_or(0) > 0;
    let network_seen = row.try_get::<Option<i64>, _>("network_seen")?.unwrap_or(0) > 0;
    // One statement, so two sign-ins at once from the same place cannot
    // both insert.
    sqlx::query(
        "INSERT INTO known_devices (user_id, device_hash, network, first_seen_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (user_id, device_hash, network) \
         DO UPDATE SET last_seen_at = excluded.last_seen_at",
    )
    .bind(user.0)
    .bind(&hash)
    .bind(&network)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    let notify = any > 0 && !(device_seen && network_seen);
    if notify {
        notice(
            &mut tx,
            mailing,
            user,
            device_seen,
            network_seen,
            method,
            meta,
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(notify)
}

#[allow(clippy::too_many_arguments)]
async fn notice(
    tx: &mut Tx,
    mailing: Mailing<'_>,
    user: UserId,
    device_seen: bool,
    network_seen: bool,
    method: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<(), ControlError> {
    let id = format!("ntc_{}", random_token(12));
    let token = Zeroizing::new(random_token(32));
    let what = match (device_seen, network_seen) {
        (false, false) => "a new device on a new network",
        (false, true) => "a new device",
        _ => "a new network",
    };
    sqlx::query(
        "INSERT INTO sign_in_notices (id, user_id, created_at, ip, user_agent, method, what, token_hash, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(user.0)
    .bind(now.0)
    .bind(&meta.ip)
    .bind(&meta.user_agent)
    .bind(method)
    .bind(what)
    .bind(token_hash(TOKEN_KIND, &token))
    .bind(now.plus_secs(DISOWN_TTL_SECS).0)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "DELETE FROM sign_in_notices WHERE user_id = $1 AND id NOT IN \
         (SELECT id FROM sign_in_notices WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2)",
    )
    .bind(user.0)
    .bind(KEPT)
    .execute(tx.conn())
    .await?;
    if !mailing.enabled {
        return Ok(());
    }
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await?;
    let body = Zeroizing::new(format!(
        "Your Pilothouse account {email} was signed in to from {what}.\n\
         \n\
         When: {when}\n\
         Address: {ip}\n\
         Browser: {ua}\n\
         Method: {method}\n\
         \n\
         If this was you, there is nothing to do.\n\
         \n\
         If it was not you, open this link: it signs out every session of the account,\n\
         unlinks its Google or GitHub sign-in, and makes its password unusable until it\n\
         is reset (a reset link follows by email):\n\
         \n\
         {base}/not-me/{token}\n",
        when = now.display_utc(),
        ip = meta.ip,
        ua = meta.user_agent,
        base = mailing.base_url.trim_end_matches('/'),
        token = token.as_str(),
    ));
    mail::enqueue(
        tx,
        mailing.ring,
        MailKind::NewSignIn,
        &Mail {
            to: email,
            subject: "New sign-in to your Pilothouse account".into(),
            body,
        },
        now.plus_secs(mail::NOTICE_TTL_SECS),
        now,
    )
    .await?;
    Ok(())
}

/// The signed-in person's notices, newest first.
pub async fn list(actor: &Actor) -> Result<Vec<SignInNotice>, ControlError> {
    let rows = sqlx::query(
        "SELECT id, created_at, ip, user_agent, method, what, read_at, disowned_at FROM sign_in_notices \
         WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(actor.user().0)
    .fetch_all(actor.store().pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SignInNotice {
                id: r.try_get("id")?,
                at: Timestamp(r.try_get("created_at")?),
                ip: r.try_get("ip")?,
                user_agent: r.try_get("user_agent")?,
                method: r.try_get("method")?,
                what: r.try_get("what")?,
                read: r.try_get::<Option<i64>, _>("read_at")?.is_some(),
                disowned: r.try_get::<Option<i64>, _>("disowned_at")?.is_some(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Unread notices of `user` (the dashboard shows the count).
pub async fn unread(store: &Store, user: UserId) -> Result<i64, ControlError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM sign_in_notices WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user.0)
    .fetch_one(store.pool())
    .await?)
}

/// "This was me": the notice is read.
pub async fn acknowledge(actor: &Actor, id: &str, now: Timestamp) -> Result<(), ControlError> {
    let done = sqlx::query(
        "UPDATE sign_in_notices SET read_at = $1 WHERE id = $2 AND user_id = $3 AND read_at IS NULL",
    )
    .bind(now.0)
    .bind(id)
    .bind(actor.user().0)
    .execute(actor.store().pool())
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ControlError::not_found("No such unread notice."));
    }
    Ok(())
}

/// "This wasn't me" from the email's link (see the module notes). Works
/// once; returns the account's address.
pub async fn disown_by_token(
    store: &Store,
    mailing: Mailing<'_>,
    token: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<String, ControlError> {
    if token.len() > 128 {
        return Err(ControlError::not_found(GONE));
    }
    let unknown = unusable_password().await?;
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "UPDATE sign_in_notices SET disowned_at = $1, read_at = COALESCE(read_at, $1) \
         WHERE token_hash = $2 AND disowned_at IS NULL AND expires_at > $1 RETURNING id, user_id",
    )
    .bind(now.0)
    .bind(token_hash(TOKEN_KIND, token))
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Err(ControlError::not_found(GONE));
    };
    let (id, user): (String, i64) = (row.try_get("id")?, row.try_get("user_id")?);
    lock_out(
        store,
        tx,
        unknown,
        mailing,
        UserId(user),
        &id,
        "email link",
        meta,
        now,
    )
    .await
}

/// "This wasn't me" from the dashboard, for one of the signed-in person's
/// notices: this session ends with the others.
pub async fn disown(
    actor: &Actor,
    mailing: Mailing<'_>,
    id: &str,
    now: Timestamp,
) -> Result<String, ControlError> {
    let unknown = unusable_password().await?;
    let mut tx = actor.store().begin().await?;
    let done = sqlx::query(
        "UPDATE sign_in_notices SET disowned_at = $1, read_at = COALESCE(read_at, $1) \
         WHERE id = $2 AND user_id = $3 AND disowned_at IS NULL",
    )
    .bind(now.0)
    .bind(id)
    .bind(actor.user().0)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ControlError::not_found(
            "No such notice, or it was already reported.",
        ));
    }
    lock_out(
        actor.store(),
        tx,
        unknown,
        mailing,
        actor.user(),
        id,
        "dashboard",
        actor.meta(),
        now,
    )
    .await
}

/// The hash of a password nobody knows: only a reset opens the account again.
async fn unusable_password() -> Result<String, ControlError> {
    crate::password::hash(SecretString::from(random_token(32))).await
}

/// Ends every session of `user`, sets the password hash to `unknown`, removes
/// its links to identity providers, queues a reset link (with email), and
/// records `user.sign_in_disowned`; commits `tx`.
#[allow(clippy::too_many_arguments)]
async fn lock_out(
    store: &Store,
    mut tx: Tx,
    unknown: String,
    mailing: Mailing<'_>,
    user: UserId,
    notice: &str,
    via: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<String, ControlError> {
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await?;
    crate::accounts::set_password_hash(&mut tx, user, &unknown, false, now).await?;
    let ended = crate::sessions::end_for(&mut tx, user, None).await?;
    // Whoever it was may have come through a linked provider: those links go
    // too (the owner links again after the reset).
    let unlinked = sqlx::query("DELETE FROM user_identities WHERE user_id = $1")
        .bind(user.0)
        .execute(tx.conn())
        .await?
        .rows_affected();
    let actor = AuditActor {
        user: Some(user),
        label: email.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    crate::accounts::record_in_each_org(
        &mut tx,
        &actor,
        user,
        AuditAction::SignInDisowned,
        &format!("user:{}", user.0),
        json!({ "notice": notice, "via": via, "sessions_ended": ended, "identities_unlinked": unlinked }),
        now,
    )
    .await?;
    tx.commit().await?;
    // The reset link is a change of its own: the lock-out stands if it
    // fails, and "Forgot your password?" makes another.
    if mailing.enabled {
        if let Err(e) =
            crate::password_reset::issue(store, mailing.ring, &email, meta, mailing.base_url, now)
                .await
        {
            tracing::warn!(error = %e, "after a disowned sign-in, the reset link could not be queued");
        }
    }
    Ok(email)
}
