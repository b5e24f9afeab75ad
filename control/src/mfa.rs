//! Two-factor sign-in for password accounts: a TOTP authenticator (RFC 6238:
//! HMAC-SHA1, six digits, 30-second steps, as every authenticator app reads
//! an `otpauth://` QR code) and ten one-time recovery codes.
//!
//! - **Enrolment.** [`begin_enrolment`] makes a new 160-bit seed and shows it
//!   once, as a QR code (SVG drawn here) and as text. It is not in force until
//!   [`confirm_enrolment`] checks a code from the app; that also makes the
//!   recovery codes, shown once.
//! - **At rest.** The seed is sealed like a secret ([`crate::secrets`]): its
//!   own data key, wrapped by the master key, which the database never holds.
//!   A master-key rotation re-wraps it. Recovery codes (80 random bits each)
//!   are stored as SHA-256 hashes only.
//! - **Sign-in.** After the right password, an account with two-factor on is
//!   not signed in: [`crate::accounts::login`] answers
//!   [`SignIn::SecondFactor`], and [`verify_sign_in`] finishes it with a code
//!   from the app or a recovery code.
//! - **Replay.** A TOTP code is accepted one step either side of now (phone
//!   clocks drift), and only for a step after the last one accepted: a code
//!   seen once, or an older one, is refused. The check and the update of the
//!   last step are one conditional `UPDATE`, so two requests racing with the
//!   same code cannot both pass; a recovery code is spent the same way.
//! - **Throttle.** Wrong codes count against the account ([`throttle::MFA`],
//!   stricter than passwords: a code has a million values, not a password's
//!   guessing space) and against the client address, reserved before the
//!   check as [`crate::accounts::login`] does, and are audited as
//!   `user.login_failed` with reason `wrong_code`.
//! - **Turning it off** needs the password again, and is refused while an
//!   organisation where the person is an Owner or Admin requires it.
//! - **Requiring it.** An Owner can require it of every Owner and Admin of
//!   the organisation ([`set_required`]), once they have it on themselves;
//!   [`crate::access`] then refuses such a person everything but setting it
//!   up.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::SecretString;
use serde_json::json;
use sha1::Sha1;
use sqlx::Row;
use zeroize::Zeroizing;

use crate::access::{Actor, Authorized, Capability, ManageOwners, RequestMeta};
use crate::accounts::LoggedIn;
use crate::audit::{self, AuditAction, AuditActor, Event};
use crate::crypto::sha256_hex;
use crate::secrets::{Keyring, Sealed};
use crate::store::{Store, Tx};
use crate::throttle;
use crate::{ControlError, MfaView, OrgId, Role, Timestamp, TotpSetup, UserId};

/// The roles an organisation's two-factor requirement applies to.
pub const REQUIRABLE_ROLES: [Role; 2] = [Role::Owner, Role::Admin];
/// Seconds per TOTP step.
pub const STEP_SECS: i64 = 30;
/// Digits in a TOTP code.
pub const DIGITS: usize = 6;
/// Steps either side of now whose codes are accepted.
pub const WINDOW_STEPS: i64 = 1;
/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// How long a password sign-in waits for its second factor.
pub const PENDING_SECS: i64 = 300;
/// The issuer an authenticator app shows next to the account.
pub const ISSUER: &str = "Pilothouse";
/// Bytes of a TOTP seed (RFC 4226 recommends 160 bits).
const SEED_BYTES: usize = 20;
/// Bytes of a recovery code (80 bits: 16 base32 characters).
const RECOVERY_BYTES: usize = 10;
/// What a seed's sealing is bound to besides its row.
const SEED_CONTEXT: &str = "totp seed";
/// Shown for every refused code: a wrong one, a used one, an old one.
pub const WRONG_CODE: &str =
    "That code is not right, or it was already used. Enter the current code from your authenticator app, or one of your recovery codes.";

/// RFC 4226 HOTP: the `DIGITS`-digit code of `seed` at `counter`.
pub fn hotp(seed: &[u8], counter: u64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(seed) else {
        // HMAC takes a key of any length.
        unreachable!("HMAC accepts every key length")
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:0width$}", bin % 10u32.pow(DIGITS as u32), width = DIGITS)
}

/// The TOTP step of `now`.
pub fn step_at(now: Timestamp) -> i64 {
    now.0.div_euclid(STEP_SECS * 1000)
}

/// RFC 4648's base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, no padding (how authenticator apps take a seed).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Reads what [`base32`] writes (upper case, no padding); `None` for any
/// other character.
pub fn decode_base32(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = BASE32.iter().position(|a| *a == c)? as u32;
        buffer = ((buffer << 5) | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app reads from the QR code.
pub fn otpauth_uri(email: &str, seed_base32: &str) -> String {
    let label: String = form_urlencoded_component(&format!("{ISSUER}:{email}"));
    format!(
        "otpauth://totp/{label}?secret={seed_base32}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}"
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn form_urlencoded_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as a QR code (error correction M), an SVG document of black
/// squares on white with the four-module quiet zone, scaled by its viewBox.
pub fn qr_svg(text: &str) -> Result<String, ControlError> {
    use qrcodegen::{QrCode, QrCodeEcc};
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium)
        .map_err(|_| ControlError::Internal("the QR code could not be drawn".into()))?;
    let border = 4;
    let size = qr.size() + 2 * border;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"QR code for your authenticator app\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

/// A recovery code as shown: 16 base32 characters in groups of four.
fn new_recovery_code() -> String {
    let mut bytes = [0u8; RECOVERY_BYTES];
    OsRng.fill_bytes(&mut bytes);
    let plain = base32(&bytes);
    plain
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// What a typed code is, once spaces and dashes are gone.
enum Code {
    Totp(String),
    Recovery(String),
    Malformed,
}

fn classify(raw: &str) -> Code {
    let plain: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    if plain.len() == DIGITS && plain.bytes().all(|b| b.is_ascii_digit()) {
        Code::Totp(plain)
    } else if plain.len() == RECOVERY_BYTES * 8 / 5
        && plain
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    {
        Code::Recovery(plain)
    } else {
        Code::Malformed
    }
}

fn recovery_hash(user: UserId, plain: &str) -> String {
    sha256_hex(format!("pilothouse recovery code\0{}\0{plain}", user.0))
}

/// The step within the window around `now` whose code is `code` and that is
/// later than `after`, if any.
fn matching_step(seed: &[u8], code: &str, now: Timestamp, after: i64) -> Option<i64> {
    let current = step_at(now);
    (current - WINDOW_STEPS..=current + WINDOW_STEPS)
        .filter(|s| *s > after && *s >= 0)
        .find(|s| {
            let expected = hotp(seed, *s as u64);
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into()
        })
}

/// A user's TOTP row.
struct TotpRow {
    id: String,
    sealed: Sealed,
    confirmed: bool,
    last_step: i64,
}

async fn totp_row(tx: &mut Tx, user: UserId) -> Result<Option<TotpRow>, ControlError> {
    let row = sqlx::query(
        "SELECT id, master_key_id, wrapped_key, ciphertext, confirmed_at, last_step FROM user_totp WHERE user_id = $1",
    )
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await?;
    row.map(|r| {
        Ok(TotpRow {
            id: r.try_get("id")?,
            sealed: Sealed {
                key_id: r.try_get("master_key_id")?,
                wrapped_key: r.try_get("wrapped_key")?,
                ciphertext: r.try_get("ciphertext")?,
            },
            confirmed: r.try_get::<Option<i64>, _>("confirmed_at")?.is_some(),
            last_step: r.try_get("last_step")?,
        })
    })
    .transpose()
}

fn seed_of(ring: &Keyring, row: &TotpRow) -> Result<Zeroizing<Vec<u8>>, ControlError> {
    crate::secrets::open_own(ring, &row.id, SEED_CONTEXT, &row.sealed).map_err(|e| {
        // Names the row, never the seed.
        ControlError::Internal(e.to_string().into())
    })
}

/// Whether `user` has two-factor sign-in on (enrolment confirmed).
pub async fn enabled(tx: &mut Tx, user: UserId) -> Result<bool, ControlError> {
    let on: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM user_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
    )
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await?;
    Ok(on.is_some())
}

/// The signed-in person's two-factor state, for their account page.
pub async fn status(actor: &Actor) -> Result<MfaView, ControlError> {
    let mut tx = actor.store().begin().await?;
    let on = enabled(&mut tx, actor.user()).await?;
    let left = recovery_codes_left(&mut tx, actor.user()).await?;
    let org_requires = org_requires(&mut tx, actor.org()).await?;
    tx.commit().await?;
    Ok(MfaView {
        enabled: on,
        recovery_codes_left: if on { left } else { 0 },
        org_requires,
        required: org_requires && REQUIRABLE_ROLES.contains(&actor.role()),
        can_require: ManageOwners::allows(actor.role()),
    })
}

async fn recovery_codes_left(tx: &mut Tx, user: UserId) -> Result<i64, ControlError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user.0)
    .fetch_one(tx.conn())
    .await?)
}

async fn org_requires(tx: &mut Tx, org: OrgId) -> Result<bool, ControlError> {
    let on: i64 = sqlx::query_scalar("SELECT require_mfa FROM orgs WHERE id = $1")
        .bind(org.0)
        .fetch_one(tx.conn())
        .await?;
    Ok(on != 0)
}

/// Requires two-factor sign-in of the organisation's Owners and Admins, or
/// stops requiring it (Owner). To turn it on the Owner must have it on
/// themselves. Audited as `org.mfa_requirement_changed` with how many Owners
/// and Admins do not have it yet (they can do nothing else until they do).
#[tracing::instrument(skip_all, err(level = "info"))]
pub async fn set_required(
    auth: &Authorized<'_, ManageOwners>,
    on: bool,
    now: Timestamp,
) -> Result<(), ControlError> {
    let actor = auth.actor();
    let mut tx = auth.store().begin().await?;
    actor.recheck::<ManageOwners>(&mut tx).await?;
    if on && !enabled(&mut tx, actor.user()).await? {
        return Err(ControlError::Conflict(
            "Turn on two-factor sign-in for yourself first (above), then require it of others."
                .into(),
        ));
    }
    if org_requires(&mut tx, actor.org()).await? == on {
        return Err(ControlError::Conflict(if on {
            "Two-factor sign-in is already required for Owners and Admins.".into()
        } else {
            "Two-factor sign-in is already not required.".into()
        }));
    }
    sqlx::query("UPDATE orgs SET require_mfa = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(actor.org().0)
        .execute(tx.conn())
        .await?;
    let without: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships m WHERE m.org_id = $1 AND m.role IN ('owner', 'admin') AND NOT EXISTS \
         (SELECT 1 FROM user_totp t WHERE t.user_id = m.user_id AND t.confirmed_at IS NOT NULL)",
    )
    .bind(actor.org().0)
    .fetch_one(tx.conn())
    .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::MfaRequirementChanged,
            format!("org:{}", actor.org().0),
            json!({ "required": on, "roles": ["owner", "admin"], "without_two_factor": without }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Starts enrolment: a new seed, sealed, not yet in force (an earlier
/// unconfirmed one is replaced). Refused while two-factor is on.
pub async fn begin_enrolment(
    actor: &Actor,
    ring: &Keyring,
    now: Timestamp,
) -> Result<TotpSetup, ControlError> {
    let user = actor.user();
    let mut tx = actor.store().begin().await?;
    if enabled(&mut tx, user).await? {
        return Err(ControlError::Conflict(
            "Two-factor sign-in is already on. Turn it off first to set up another authenticator."
                .into(),
        ));
    }
    sqlx::query("DELETE FROM user_totp WHERE user_id = $1")
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
    OsRng.fill_bytes(seed.as_mut_slice());
    let id = format!("totp_{}", crate::crypto::random_token(16));
    let sealed =
        crate::secrets::seal_own(&mut tx, ring, &id, SEED_CONTEXT, seed.as_slice()).await?;
    sqlx::query(
        "INSERT INTO user_totp (id, user_id, master_key_id, wrapped_key, ciphertext, created_at, last_step) \
         VALUES ($1, $2, $3, $4, $5, $6, -1)",
    )
    .bind(&id)
    .bind(user.0)
    .bind(&sealed.key_id)
    .bind(&sealed.wrapped_key)
    .bind(&sealed.ciphertext)
    .bind(now.0)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    let secret = Zeroizing::new(base32(seed.as_slice()));
    let uri = Zeroizing::new(otpauth_uri(actor.email(), &secret));
    Ok(TotpSetup {
        qr_svg: qr_svg(&uri)?,
        secret: secret.to_string(),
    })
}

/// Confirms enrolment with a code from the app: two-factor is on from here,
/// and the ten recovery codes returned are the only time they are shown.
/// Audited as `user.mfa_enabled` in the actor's organisation.
pub async fn confirm_enrolment(
    actor: &Actor,
    ring: &Keyring,
    code: &str,
    now: Timestamp,
) -> Result<Vec<String>, ControlError> {
    let user = actor.user();
    let mut tx = actor.store().begin().await?;
    let row = totp_row(&mut tx, user).await?;
    let Some(row) = row.filter(|r| !r.confirmed) else {
        return Err(ControlError::invalid(
            "There is no authenticator set-up to confirm. Start again with \"Set up\".",
        ));
    };
    let Code::Totp(code) = classify(code) else {
        return Err(ControlError::invalid(format!(
            "Enter the {DIGITS}-digit code your authenticator app shows."
        )));
    };
    let seed = seed_of(ring, &row)?;
    let Some(step) = matching_step(&seed, &code, now, row.last_step) else {
        return Err(ControlError::invalid(
            "That code is not right. Check that the app shows Pilothouse and that this device's clock is set automatically, then enter the current code.",
        ));
    };
    let updated = sqlx::query(
        "UPDATE user_totp SET confirmed_at = $1, last_step = $2 WHERE id = $3 AND confirmed_at IS NULL",
    )
    .bind(now.0)
    .bind(step)
    .bind(&row.id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(ControlError::Conflict(
            "Two-factor sign-in was turned on from another tab.".into(),
        ));
    }
    let codes = replace_recovery_codes(&mut tx, user, now).await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::MfaEnabled,
            format!("user:{}", user.0),
            json!({ "method": "totp", "recovery_codes": RECOVERY_CODES }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(codes)
}

async fn replace_recovery_codes(
    tx: &mut Tx,
    user: UserId,
    now: Timestamp,
) -> Result<Vec<String>, ControlError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let code = new_recovery_code();
        let Code::Recovery(plain) = classify(&code) else {
            unreachable!("a new recovery code reads as one")
        };
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(user.0)
        .bind(recovery_hash(user, &plain))
        .bind(now.0)
        .execute(tx.conn())
        .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// Turns two-factor sign-in off, after checking the password again (a wrong
/// one counts against the account as a sign-in would). Audited as
/// `user.mfa_disabled`.
pub async fn disable(
    actor: &Actor,
    password: SecretString,
    now: Timestamp,
) -> Result<(), ControlError> {
    crate::accounts::confirm_password(actor, password, now).await?;
    let user = actor.user();
    let mut tx = actor.store().begin().await?;
    if !enabled(&mut tx, user).await? {
        return Err(ControlError::Conflict(
            "Two-factor sign-in is already off.".into(),
        ));
    }
    let requiring: Option<String> = sqlx::query_scalar(
        "SELECT o.name FROM memberships m JOIN orgs o ON o.id = m.org_id \
         WHERE m.user_id = $1 AND m.role IN ('owner', 'admin') AND o.require_mfa = 1 ORDER BY o.id LIMIT 1",
    )
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(org) = requiring {
        return Err(ControlError::Conflict(format!(
            "{org} requires two-factor sign-in for Owners and Admins, so it stays on."
        )));
    }
    sqlx::query("DELETE FROM user_totp WHERE user_id = $1")
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    audit::append(
        &mut tx,
        &actor.audit_actor(),
        Event::new(
            actor.org(),
            AuditAction::MfaDisabled,
            format!("user:{}", user.0),
            json!({}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A password sign-in waiting for its second factor: who, and when the
/// password was right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub user: UserId,
    pub org: OrgId,
    pub at: Timestamp,
}

/// How a sign-in goes on after the right password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a sign-in that needs a second factor is not a session yet"]
pub enum SignIn {
    /// Signed in.
    Done(LoggedIn),
    /// The account has two-factor on: [`verify_sign_in`] with a code.
    SecondFactor(Pending),
}

/// Finishes a sign-in with a TOTP code or a recovery code. Throttled and
/// audited like a password; a success is audited as `user.login` with the
/// method.
pub async fn verify_sign_in(
    store: &Store,
    ring: &Keyring,
    pending: Pending,
    code: &str,
    meta: &RequestMeta,
    now: Timestamp,
) -> Result<LoggedIn, ControlError> {
    if pending.at.plus_secs(PENDING_SECS) <= now {
        return Err(ControlError::Unauthenticated(
            "The sign-in took too long. Enter your email and password again.".into(),
        ));
    }
    if code.chars().count() > 64 {
        return Err(ControlError::invalid("That is not a code."));
    }
    let user = pending.user;
    let account = format!("mfa:{}", user.0);
    let client = throttle::client_key(&meta.ip);
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user.0)
        .fetch_optional(store.pool())
        .await?;
    let Some(email) = email else {
        return Err(ControlError::Unauthenticated(
            "The sign-in took too long. Enter your email and password again.".into(),
        ));
    };
    let reservation = crate::accounts::reserve_attempt(
        store,
        &[(&client, throttle::CLIENT), (&account, throttle::MFA)],
        &email,
        meta,
        now,
    )
    .await?;
    let mut tx = store.begin().await?;
    let method = match classify(code) {
        Code::Totp(code) => {
            let row = totp_row(&mut tx, user).await?.filter(|r| r.confirmed);
            match row {
                Some(row) => {
                    let seed = seed_of(ring, &row)?;
                    match matching_step(&seed, &code, now, row.last_step) {
                        // The step moves forward only if no other request
                        // took it (or a later one) first.
                        Some(step) => (sqlx::query(
                            "UPDATE user_totp SET last_step = $1 WHERE id = $2 AND last_step < $1",
                        )
                        .bind(step)
                        .bind(&row.id)
                        .execute(tx.conn())
                        .await?
                        .rows_affected()
                            == 1)
                            .then_some("totp"),
                        None => None,
                    }
                }
                None => None,
            }
        }
        Code::Recovery(plain) => (sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now.0)
        .bind(user.0)
        .bind(recovery_hash(user, &plain))
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1)
            .then_some("recovery_code"),
        Code::Malformed => None,
    };
    let Some(method) = method else {
        drop(tx);
        crate::accounts::spawn_failure_record(
            store,
            &email,
            crate::accounts::FailedLogin::WrongCode,
            meta,
            now,
        );
        return Err(ControlError::Unauthenticated(WRONG_CODE.into()));
    };
    throttle::release(&mut tx, reservation).await?;
    throttle::clear(&mut tx, &account).await?;
    let left = recovery_codes_left(&mut tx, user).await?;
    let actor = AuditActor {
        user: Some(user),
        label: email,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    audit::append(
        &mut tx,
        &actor,
        Event::new(
            pending.org,
            AuditAction::LoginSucceeded,
            format!("user:{}", user.0),
            json!({ "second_factor": method, "recovery_codes_left": left }),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(LoggedIn {
        user,
        org: pending.org,
        method: if method == "totp" {
            "password+totp"
        } else {
            "password+recovery_code"
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 seed, the last six of its eight digits.
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        let seed = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000i64, "353130"),
        ] {
            let step = step_at(Timestamp(time * 1000));
            assert_eq!(hotp(seed, step as u64), code, "T = {time}");
        }
    }

    #[test]
    fn base32_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(plain.as_bytes()), encoded);
            assert_eq!(decode_base32(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn codes_are_told_apart() {
        assert!(matches!(classify(" 123 456 "), Code::Totp(c) if c == "123456"));
        assert!(
            matches!(classify("abcd-efgh-2345-67ab"), Code::Recovery(c) if c == "ABCDEFGH234567AB")
        );
        assert!(matches!(classify("12345"), Code::Malformed));
        assert!(matches!(classify("abcd-efgh-2345-6781"), Code::Malformed));
        let fresh = new_recovery_code();
        assert_eq!(fresh.len(), 19, "{fresh}");
        assert!(matches!(classify(&fresh), Code::Recovery(_)));
    }

    #[test]
    fn only_a_later_step_in_the_window_matches() {
        let seed = b"12345678901234567890";
        let now = Timestamp(1_111_111_111_000);
        let step = step_at(now);
        let code = hotp(seed, step as u64);
        assert_eq!(matching_step(seed, &code, now, -1), Some(step));
        assert_eq!(matching_step(seed, &code, now, step), None, "replayed");
        let previous = hotp(seed, (step - 1) as u64);
        assert_eq!(matching_step(seed, &previous, now, -1), Some(step - 1));
        let stale = hotp(seed, (step - 2) as u64);
        assert_eq!(
            matching_step(seed, &stale, now, -1),
            None,
            "outside the window"
        );
    }

    #[test]
    fn the_uri_and_qr_code_carry_the_seed() {
        let uri = otpauth_uri("a+b@example.com", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Pilothouse%3Aa%2Bb%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Pilothouse&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("h1v1h-1z"));
    }
}
