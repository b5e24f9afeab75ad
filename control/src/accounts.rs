//! Accounts: first-run setup, email/password login, and scripted user creation.
//!
//! Setup is guarded by a one-time code printed to the server log, so nobody on
//! the network can claim a fresh installation before its operator does; once
//! any user exists, setup is closed for good. Login answers every failure with
//! the same message after the same work, and is throttled per account and per
//! client IP before any hashing happens. A failed login for an existing account
//! is recorded (`user.login_failed`) in every organisation the account belongs
//! to, by a task of its own after the answer is decided, so neither the
//! recording's work nor its failure changes the answer or its timing.

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::Row;
use tokio::sync::Mutex;

use crate::access::RequestMeta;
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::{secret_eq, token_hash};
use crate::store::{is_unique_violation, Store, Tx};
use crate::{password, throttle, ControlError, OrgId, Role, Timestamp, UserId};

pub use crate::mfa::SignIn;

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_ORG_NAME_CHARS: usize = 80;
const LOGIN_FAILED: &str = "Incorrect email or password.";

/// Normalises and checks an email address: trimmed, lower-case, one `@` with
/// something on both sides and a dot in the domain.
pub fn normalize_email(raw: &str) -> Result<String, ControlError> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(ControlError::invalid("Enter an email address."));
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(ControlError::invalid(format!(
            "The email address is too long (at most {MAX_EMAIL_CHARS} characters)."
        )));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(ControlError::invalid(
            "Enter a valid email address, like name@example.com.",
        ));
    }
    Ok(email)
}

pub fn validate_org_name(raw: &str) -> Result<String, ControlError> {
    let name = raw.trim().to_string();
    if name.is_empty() {
        return Err(ControlError::invalid("Enter an organisation name."));
    }
    if name.chars().count() > MAX_ORG_NAME_CHARS {
        return Err(ControlError::invalid(format!(
            "The organisation name is too long (at most {MAX_ORG_NAME_CHARS} characters)."
        )));
    }
    if name
        .chars()
        .any(|c| c.is_control() || crate::names::is_format_char(c))
    {
        return Err(ControlError::invalid(
            "The organisation name contains control or invisible formatting characters.",
        ));
    }
    Ok(name)
}

/// Whether the installation still needs its first Owner.
pub async fn setup_needed(store: &Store) -> Result<bool, ControlError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(store.pool())
        .await?;
    Ok(count == 0)
}

/// The one-time setup code of this process, kept only as a hash.
#[derive(Debug, Default)]
pub struct SetupGate {
    code_hash: Mutex<Option<String>>,
}

impl SetupGate {
    /// Opens the gate when no user exists yet. Returns the code to print to
    /// the operator's log (never anywhere else).
    pub async fn open(store: &Store) -> Result<(SetupGate, Option<SecretString>), ControlError> {
        if !setup_needed(store).await? {
            return Ok((SetupGate::default(), None));
        }
        let code = crate::crypto::random_token(16);
        let gate = SetupGate {
            code_hash: Mutex::new(Some(token_hash("setup", &code))),
        };
        Ok((gate, Some(SecretString::from(code))))
    }

    /// Whether a setup code is still waiting to be used.
    pub async fn is_open(&self) -> bool {
        self.code_hash.lock().await.is_some()
    }
}

pub struct SetupForm {
    pub code: SecretString,
    pub org_name: String,
    pub email: String,
    pub password: SecretString,
}

/// Creates the first Owner and organisation. The code is consumed on success.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn complete_setup(
    store: &Store,
    gate: &SetupGate,
    form: SetupForm,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<(UserId, OrgId), ControlError> {
    let client = throttle::client_key(&meta.ip);
    throttle::check(store, &client, throttle::CLIENT, now).await?;
    let mut slot = gate.code_hash.lock().await;
    if !setup_needed(store).await? {
        *slot = None;
    }
    let Some(expected) = slot.as_ref() else {
        return Err(ControlError::conflict(
            "Setup has already been completed. Sign in instead.",
        ));
    };
    let given = token_hash("setup", form.code.expose_secret());
    if !secret_eq(given.as_bytes(), expected.as_bytes()) {
        let mut tx = store.begin().await?;
        throttle::record(&mut tx, &client, now).await?;
        tx.commit().await?;
        return Err(ControlError::Unauthenticated(
            "That setup code is not valid. Copy it from the server log.".into(),
        ));
    }
    let org_name = validate_org_name(&form.org_name)?;
    let email = normalize_email(&form.email)?;
    password::validate_new(form.password.expose_secret(), &email)?;
    let hash = password::hash(form.password).await?;

    let mut tx = store.begin().await?;
    // Another replica may have completed setup meanwhile.
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(tx.conn())
        .await?;
    if users > 0 {
        *slot = None;
        return Err(ControlError::conflict(
            "Setup has already been completed. Sign in instead.",
        ));
    }
    let org = insert_org(&mut tx, &org_name, now).await?;
    let user = insert_user(&mut tx, &email, &hash, now).await?;
    insert_membership(&mut tx, org, user, Role::Owner, now).await?;
    let actor = AuditActor {
        user: Some(user),
        label: email.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            org,
            AuditAction::SetupCompleted,
            format!("org:{}", org.0),
            json!({ "org_name": org_name, "owner": email }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    *slot = None;
    Ok((user, org))
}

/// The result of a successful login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedIn {
    pub user: UserId,
    pub org: OrgId,
    /// How: `password`, `password+totp` or `password+recovery_code`.
    pub method: &'static str,
}

/// Email/password login. An account with two-factor sign-in on is not signed
/// in by its password alone: the answer is [`SignIn::SecondFactor`], and
/// [`crate::mfa::verify_sign_in`] finishes it.
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn login(
    store: &Store,
    email: &str,
    password: SecretString,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<SignIn, ControlError> {
    if password.expose_secret().chars().count() > password::MAX_CHARS {
        return Err(ControlError::invalid(format!(
            "The password is too long (at most {} characters).",
            password::MAX_CHARS
        )));
    }
    // A malformed email still costs the same and counts against the client.
    let email = email.trim().to_lowercase();
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(ControlError::invalid(format!(
            "The email address is too long (at most {MAX_EMAIL_CHARS} characters)."
        )));
    }
    let account = throttle::account_key(&email);
    let client = throttle::client_key(&meta.ip);
    // The attempt counts as a failure from here until it succeeds.
    let reservation = reserve_attempt(
        store,
        &[(&client, throttle::CLIENT), (&account, throttle::ACCOUNT)],
        &email,
        meta,
        now,
    )
    .await?;

    let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(store.pool())
        .await?;
    let (user, stored) = match row {
        Some(r) => (
            Some(UserId(r.try_get("id")?)),
            Some(r.try_get::<String, _>("password_hash")?),
        ),
        None => (None, None),
    };
    let ok = password::verify(password, stored).await?;
    let Some(user) = user.filter(|_| ok) else {
        if user.is_some() {
            spawn_failure_record(store, &email, FailedLogin::WrongPassword, meta, now);
        } else {
            // An email that matches no account belongs to no organisation, so
            // no audit log can hold the attempt: it goes to the server log
            // only. Without the email: an unknown "email" is often a password
            // typed into the wrong field.
            tracing::info!(ip = %meta.ip, "sign-in failed: no account with that email");
        }
        return Err(ControlError::Unauthenticated(LOGIN_FAILED.into()));
    };
    let mut tx = store.begin().await?;
    // An account without an organisation gets the answer a wrong password
    // gets: the form does not reveal that the password was right.
    let Some(org) = first_org(&mut tx, user).await? else {
        return Err(ControlError::Unauthenticated(LOGIN_FAILED.into()));
    };
    throttle::release(&mut tx, reservation).await?;
    throttle::clear(&mut tx, &account).await?;
    if crate::mfa::enabled(&mut tx, user).await? {
        tx.commit().await?;
        return Ok(SignIn::SecondFactor(crate::mfa::Pending {
            user,
            org,
            at: now,
        }));
    }
    let actor = AuditActor {
        user: Some(user),
        label: email.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            org,
            AuditAction::LoginSucceeded,
            format!("user:{}", user.0),
            json!({}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(SignIn::Done(LoggedIn {
        user,
        org,
        method: "password",
    }))
}

/// Checks the signed-in person's password again before a sensitive change
/// (turning two-factor off). Throttled as a sign-in: a wrong password counts
/// against the account and the client address, and is audited as
/// `user.login_failed`.
pub async fn confirm_password(
    actor: &crate::access::Actor,
    password: SecretString,
    now: Timestamp,
) -> Result<(), ControlError> {
    checked_password(actor, password, now).await.map(drop)
}

/// [`confirm_password`], returning the stored hash it matched.
async fn checked_password(
    actor: &crate::access::Actor,
    password: SecretString,
    now: Timestamp,
) -> Result<String, ControlError> {
    if password.expose_secret().chars().count() > password::MAX_CHARS {
        return Err(ControlError::invalid("That password is not right."));
    }
    let store = actor.store();
    let email = actor.email().to_string();
    let account = throttle::account_key(&email);
    let client = throttle::client_key(&actor.meta().ip);
    let reservation = reserve_attempt(
        store,
        &[(&client, throttle::CLIENT), (&account, throttle::ACCOUNT)],
        &email,
        actor.meta(),
        now,
    )
    .await?;
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(actor.user().0)
        .fetch_one(store.pool())
        .await?;
    if !password::verify(password, Some(stored.clone())).await? {
        spawn_failure_record(store, &email, FailedLogin::WrongPassword, actor.meta(), now);
        return Err(ControlError::invalid("That password is not right."));
    }
    let mut tx = store.begin().await?;
    throttle::release(&mut tx, reservation).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Changes the signed-in person's password: the current one first (checked
/// and throttled like a sign-in), the new one by the same rules as at setup.
/// Every other session of the account ends in the same transaction, and
/// `user.password_changed` is recorded in each organisation the account
/// belongs to. Two changes racing from the same old password: one wins, the
/// other is refused. Returns how many other sessions ended.
pub async fn change_password(
    actor: &crate::access::Actor,
    current: SecretString,
    new: SecretString,
    keep: &tower_sessions::session::Id,
    now: Timestamp,
) -> Result<u64, ControlError> {
    password::validate_new(new.expose_secret(), actor.email())?;
    if new.expose_secret() == current.expose_secret() {
        return Err(ControlError::invalid(
            "The new password is the same as the current one.",
        ));
    }
    let old_hash = checked_password(actor, current, now).await?;
    let new_hash = password::hash(new).await?;
    let user = actor.user();
    let mut tx = actor.store().begin().await?;
    let changed =
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(&new_hash)
            .bind(user.0)
            .bind(&old_hash)
            .execute(tx.conn())
            .await?
            .rows_affected();
    if changed != 1 {
        return Err(ControlError::Conflict(
            "The password was changed a moment ago from elsewhere. Sign in again with the new one if it was you."
                .into(),
        ));
    }
    let ended = crate::sessions::end_for(&mut tx, user, Some(keep)).await?;
    record_in_each_org(
        &mut tx,
        &actor.audit_actor(),
        user,
        AuditAction::PasswordChanged,
        &format!("user:{}", user.0),
        json!({ "other_sessions_ended": ended }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}

/// Sets `user`'s password hash in `tx`; the account's outstanding reset
/// links stop working. `chosen`: the hash is of a password someone chose
/// (a reset, the CLI), so the account now signs in with a password too; not
/// for a hash of a password nobody knows (a lock-out).
pub(crate) async fn set_password_hash(
    tx: &mut Tx,
    user: UserId,
    hash: &str,
    chosen: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "UPDATE users SET password_hash = $1, \
         password_sign_in = CASE WHEN $2 = 1 THEN 1 ELSE password_sign_in END WHERE id = $3",
    )
    .bind(hash)
    .bind(i64::from(chosen))
    .bind(user.0)
    .execute(tx.conn())
    .await?;
    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now.0)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Records `action` about `user`'s account, with `target` and `details`, in
/// each organisation the account belongs to, in `tx`.
pub(crate) async fn record_in_each_org(
    tx: &mut Tx,
    actor: &AuditActor,
    user: UserId,
    action: AuditAction,
    target: &str,
    details: serde_json::Value,
    now: Timestamp,
) -> Result<(), ControlError> {
    let orgs: Vec<i64> =
        sqlx::query_scalar("SELECT org_id FROM memberships WHERE user_id = $1 ORDER BY org_id")
            .bind(user.0)
            .fetch_all(tx.conn())
            .await?;
    for org in orgs {
        audit::append(
            tx,
            actor,
            Event::new(OrgId(org), action, target, details.clone()),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Reserves a sign-in attempt against `keys` ([`throttle::reserve`]); a
/// throttled one is recorded as `user.login_failed` for `email`.
pub(crate) async fn reserve_attempt(
    store: &Store,
    keys: &[(&str, throttle::Limit)],
    email: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<throttle::Reservation, ControlError> {
    let reserved = throttle::reserve(store, keys, now).await;
    if matches!(reserved, Err(ControlError::Throttled(_))) {
        spawn_failure_record(store, email, FailedLogin::Throttled, meta, now);
    }
    reserved
}

/// Why a sign-in for an existing account failed, as `user.login_failed`
/// records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedLogin {
    WrongPassword,
    /// The right password, then a wrong, used or stale two-factor code.
    WrongCode,
    /// Refused before the password was checked: too many recent failures for
    /// the account or the client address.
    Throttled,
}

impl FailedLogin {
    pub fn as_str(self) -> &'static str {
        match self {
            FailedLogin::WrongPassword => "wrong_password",
            FailedLogin::WrongCode => "wrong_code",
            FailedLogin::Throttled => "throttled",
        }
    }
}

/// A throttled attempt is recorded at most once per this many seconds per
/// account and organisation: throttled attempts cost no hashing and are not
/// limited themselves, and audit events are never deleted, so each one must
/// not add a row.
pub const THROTTLED_RECORD_EVERY_SECS: i64 = 60;

/// Records a failed login for `email` from a task of its own: the caller
/// answers at once, the same way whether the account exists, and whether the
/// recording succeeds. A recording failure is logged.
pub(crate) fn spawn_failure_record(
    store: &Store,
    email: &str,
    reason: FailedLogin,
    meta: &RequestMeta,
    now: Timestamp,
) {
    let (store, email, meta) = (store.clone(), email.to_string(), meta.clone());
    let task = async move {
        if let Err(e) = record_failed_login(&store, &email, reason, &meta, now).await {
            tracing::warn!(error = %e, reason = reason.as_str(), "a failed sign-in could not be recorded in the audit log");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(tracing::Instrument::in_current_span(task));
        }
        Err(_) => tracing::warn!(
            reason = reason.as_str(),
            "a failed sign-in was not recorded: no async runtime"
        ),
    }
}

/// Records `user.login_failed` for the account with `email` in every
/// organisation it belongs to, in one transaction, with the client's address
/// and browser; the target is the email, the details only the reason (never
/// anything of the password). An email with no account, or an account in no
/// organisation, records nothing. Returns how many events were written.
pub async fn record_failed_login(
    store: &Store,
    email: &str,
    reason: FailedLogin,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<usize, ControlError> {
    let orgs: Vec<i64> = sqlx::query_scalar(
        "SELECT m.org_id FROM users u JOIN memberships m ON m.user_id = u.id \
         WHERE u.email = $1 ORDER BY m.org_id",
    )
    .bind(email)
    .fetch_all(store.pool())
    .await?;
    if orgs.is_empty() {
        tracing::debug!(
            reason = reason.as_str(),
            "failed sign-in for an account in no organisation: nothing to record"
        );
        return Ok(0);
    }
    let actor = AuditActor {
        user: None,
        label: ANONYMOUS.into(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    let mut tx = store.begin().await?;
    let mut events = Vec::with_capacity(orgs.len());
    for org in orgs.into_iter().map(OrgId) {
        if reason == FailedLogin::Throttled
            && recently_recorded(
                &mut tx,
                org,
                email,
                reason.as_str(),
                THROTTLED_RECORD_EVERY_SECS,
                now,
            )
            .await?
        {
            continue;
        }
        events.push((
            actor.clone(),
            Event::new(
                org,
                AuditAction::LoginFailed,
                email,
                json!({ "reason": reason.as_str() }),
            ),
        ));
    }
    let written = events.len();
    audit::append_many(&mut tx, events, now).await?;
    tx.commit().await?;
    Ok(written)
}

/// How the audit log names whoever attempted a sign-in that failed: they are
/// not known to be the account's owner.
pub const ANONYMOUS: &str = "anonymous";

/// Whether the organisation recorded a `user.login_failed` about `target`
/// with `reason` in the last `every_secs` (among its latest such events).
/// Takes the organisation's audit lock first, so concurrent attempts see
/// each other.
pub(crate) async fn recently_recorded(
    tx: &mut Tx,
    org: OrgId,
    target: &str,
    reason: &str,
    every_secs: i64,
    now: Timestamp,
) -> Result<bool, ControlError> {
    tx.lock_org(org).await?;
    let recent: Vec<String> = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE org_id = $1 AND target = $2 AND action = $3 \
         AND at > $4 ORDER BY seq DESC LIMIT 20",
    )
    .bind(org.0)
    .bind(target)
    .bind(AuditAction::LoginFailed.as_str())
    .bind(now.plus_secs(-every_secs).0)
    .fetch_all(tx.conn())
    .await?;
    Ok(recent.iter().any(|details| {
        serde_json::from_str::<serde_json::Value>(details)
            .ok()
            .and_then(|d| d.get("reason").and_then(|r| r.as_str()).map(String::from))
            .as_deref()
            == Some(reason)
    }))
}

/// Records a logout in the organisation the session was working in.
pub async fn record_logout(
    actor: &crate::access::Actor,
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut tx = actor.store().begin().await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::LoggedOut,
            format!("user:{}", actor.user().0),
            json!({}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `pilothouse admin add-user`: creates the organisation if missing and a user
/// in it with the given role. For scripted setups; audited as the CLI.
pub async fn add_user_cli(
    op: &crate::access::Operator,
    org_name: &str,
    email: &str,
    role: Role,
    password: SecretString,
    now: Timestamp,
) -> Result<(UserId, OrgId), ControlError> {
    let org_name = validate_org_name(org_name)?;
    let email = normalize_email(email)?;
    password::validate_new(password.expose_secret(), &email)?;
    let hash = password::hash(password).await?;
    let actor = AuditActor::cli();

    let mut tx = op.store().begin().await?;
    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
        .bind(&org_name)
        .fetch_optional(tx.conn())
        .await?;
    let org = match existing {
        Some(id) => OrgId(id),
        None => {
            let org = insert_org(&mut tx, &org_name, now).await?;
            audit::append(
                &mut tx,
                &actor,
                Event::new(
                    org,
                    AuditAction::OrgCreated,
                    format!("org:{}", org.0),
                    json!({ "name": org_name }),
                ),
                now,
            )
            .await?;
            org
        }
    };
    let user = insert_user(&mut tx, &email, &hash, now).await?;
    insert_membership(&mut tx, org, user, role, now).await?;
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            org,
            AuditAction::UserCreated,
            format!("user:{}", user.0),
            json!({ "email": email, "role": role.as_str() }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((user, org))
}

/// Sets a new password for the account with `email` from the command line
/// (the operator's way in when nobody can receive a reset link). Every
/// session of the account ends, its failed sign-ins are cleared, and
/// `user.password_reset` is recorded in each of its organisations with the
/// CLI as actor. Two-factor sign-in, if on, stays on.
pub async fn set_password_cli(
    op: &crate::access::Operator,
    email: &str,
    password: SecretString,
    now: Timestamp,
) -> Result<u64, ControlError> {
    let email = normalize_email(email)?;
    password::validate_new(password.expose_secret(), &email)?;
    let hash = password::hash(password).await?;
    let mut tx = op.store().begin().await?;
    let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(tx.conn())
        .await?;
    let Some(user) = user else {
        return Err(ControlError::not_found(format!(
            "No account has the address {email}."
        )));
    };
    let user = UserId(user);
    set_password_hash(&mut tx, user, &hash, true, now).await?;
    let ended = crate::sessions::end_for(&mut tx, user, None).await?;
    throttle::clear(&mut tx, &throttle::account_key(&email)).await?;
    record_in_each_org(
        &mut tx,
        &AuditActor::cli(),
        user,
        AuditAction::PasswordReset,
        &format!("user:{}", user.0),
        json!({ "sessions_ended": ended, "by": "cli" }),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}

/// Maps a unique-constraint violation to a clear `Conflict`, anything else to itself.
fn conflict_if_unique(message: &'static str) -> impl FnOnce(sqlx::Error) -> ControlError {
    move |e| {
        if is_unique_violation(&e) {
            ControlError::conflict(message)
        } else {
            e.into()
        }
    }
}

/// The organisation a sign-in lands in: the account's oldest membership.
pub(crate) async fn first_org(tx: &mut Tx, user: UserId) -> Result<Option<OrgId>, ControlError> {
    let org: Option<i64> = sqlx::query_scalar(
        "SELECT org_id FROM memberships WHERE user_id = $1 ORDER BY created_at, org_id LIMIT 1",
    )
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await?;
    Ok(org.map(OrgId))
}

pub(crate) async fn insert_org(
    tx: &mut Tx,
    name: &str,
    now: Timestamp,
) -> Result<OrgId, ControlError> {
    let id = sqlx::query_scalar("INSERT INTO orgs (name, created_at) VALUES ($1, $2) RETURNING id")
        .bind(name)
        .bind(now.0)
        .fetch_one(tx.conn())
        .await
        .map_err(conflict_if_unique(
            "An organisation with that name already exists.",
        ))?;
    Ok(OrgId(id))
}

pub(crate) async fn insert_user(
    tx: &mut Tx,
    email: &str,
    hash: &str,
    now: Timestamp,
) -> Result<UserId, ControlError> {
    let id = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(email)
    .bind(hash)
    .bind(now.0)
    .fetch_one(tx.conn())
    .await
    .map_err(conflict_if_unique(
        "An account with that email already exists.",
    ))?;
    Ok(UserId(id))
}

pub(crate) async fn insert_membership(
    tx: &mut Tx,
    org: OrgId,
    user: UserId,
    role: Role,
    now: Timestamp,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org.0)
    .bind(user.0)
    .bind(role.as_str())
    .bind(now.0)
    .execute(tx.conn())
    .await
    .map_err(conflict_if_unique(
        "That person is already a member of this organisation.",
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
